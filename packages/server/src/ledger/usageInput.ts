import { invalidInput } from '../domain/errors.ts';

export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
export const MAX_TAGS = 32;
export const MAX_TAG_LENGTH = 128;
export const MAX_METADATA_BYTES = 16 * 1024;

/**
 * PostgreSQL text cannot hold NUL, and no key or tag needs control or format characters: DEL and
 * the C1 controls (Cc), right-to-left overrides and zero-width characters (Cf), line and paragraph
 * separators, which would make two keys that look alike differ, or a tag display as another.
 */
const CONTROL_CHARACTERS = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

export function assertIdempotencyKey(key: string): string {
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH || CONTROL_CHARACTERS.test(key)) {
    throw invalidInput(`idempotencyKey must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} printable characters`, 'idempotencyKey');
  }
  return key;
}

/** Free text kept as given (names, reasons), but never NUL, which PostgreSQL text refuses. */
export function assertStorableText(value: string, field: string): string {
  if (value.includes('\u0000')) throw invalidInput(`${field} must not contain NUL characters`, field);
  return value;
}

/** Tags are sorted and de-duplicated: the same set is the same request, whatever its order. */
export function normalizeTags(tags: readonly string[] | null | undefined): string[] {
  const list = [...new Set(tags ?? [])];
  if (list.length > MAX_TAGS) throw invalidInput(`at most ${MAX_TAGS} tags`, 'tags');
  for (const tag of list) {
    if (tag.length === 0 || tag.length > MAX_TAG_LENGTH || CONTROL_CHARACTERS.test(tag)) {
      throw invalidInput(`each tag must be 1-${MAX_TAG_LENGTH} printable characters`, 'tags');
    }
  }
  return list.sort();
}

export function assertMetadata(metadata: unknown): unknown {
  if (metadata === undefined || metadata === null) return null;
  const json = JSON.stringify(metadata);
  if (Buffer.byteLength(json, 'utf8') > MAX_METADATA_BYTES) throw invalidInput(`metadata must be at most ${MAX_METADATA_BYTES} bytes of JSON`, 'metadata');
  // jsonb refuses the NUL character (\u0000) anywhere in its strings.
  if (json.includes('\\u0000')) throw invalidInput('metadata must not contain NUL characters', 'metadata');
  return metadata;
}
