import { invalidInput } from '../domain/errors.ts';

export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
export const MAX_TAGS = 32;
export const MAX_TAG_LENGTH = 128;
export const MAX_METADATA_BYTES = 16 * 1024;

export function assertIdempotencyKey(key: string): string {
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw invalidInput(`idempotencyKey must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} characters`, 'idempotencyKey');
  }
  return key;
}

/** Tags are sorted and de-duplicated: the same set is the same request, whatever its order. */
export function normalizeTags(tags: readonly string[] | null | undefined): string[] {
  const list = [...new Set(tags ?? [])];
  if (list.length > MAX_TAGS) throw invalidInput(`at most ${MAX_TAGS} tags`, 'tags');
  for (const tag of list) {
    if (tag.length === 0 || tag.length > MAX_TAG_LENGTH || /[\u0000-\u001f]/.test(tag)) {
      throw invalidInput(`each tag must be 1-${MAX_TAG_LENGTH} printable characters`, 'tags');
    }
  }
  return list.sort();
}

export function assertMetadata(metadata: unknown): unknown {
  if (metadata === undefined || metadata === null) return null;
  const size = Buffer.byteLength(JSON.stringify(metadata), 'utf8');
  if (size > MAX_METADATA_BYTES) throw invalidInput(`metadata must be at most ${MAX_METADATA_BYTES} bytes of JSON`, 'metadata');
  return metadata;
}
