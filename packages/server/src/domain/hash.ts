import { createHash } from 'node:crypto';

/**
 * JSON with object keys sorted (in code-unit order), so that equal inputs hash equally whatever
 * their key order; undefined members are left out. Built by concatenation, without the arrays of
 * entries a map and join would allocate: a batch hashes a thousand usages per request.
 */
function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) {
    let out = '[';
    for (let index = 0; index < value.length; index += 1) out += (index === 0 ? '' : ',') + canonicalJson(value[index]);
    return `${out}]`;
  }
  const record = value as Record<string, unknown>;
  let out = '{';
  for (const key of Object.keys(record).sort()) {
    const entry = record[key];
    if (entry === undefined) continue;
    out += `${out.length === 1 ? '' : ','}${JSON.stringify(key)}:${canonicalJson(entry)}`;
  }
  return `${out}}`;
}

/** The fingerprint of a request, stored beside its idempotency key to tell a retry from a conflict. */
export function hashRequest(input: unknown): string {
  return createHash('sha256').update(canonicalJson(input)).digest('hex');
}
