import { createHash } from 'node:crypto';

/** JSON with object keys sorted, so that equal inputs hash equally whatever their key order. */
function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, entry]) => entry !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([key, entry]) => `${JSON.stringify(key)}:${canonicalJson(entry)}`).join(',')}}`;
}

/** The fingerprint of a request, stored beside its idempotency key to tell a retry from a conflict. */
export function hashRequest(input: unknown): string {
  return createHash('sha256').update(canonicalJson(input)).digest('hex');
}
