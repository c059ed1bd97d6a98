import type { Tx } from '../db/transaction.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { SpendRefusal } from './authorizeSpend.ts';

/** recordUsage and reserveCredits keep their keys apart, as their charges do (usage events, reservations). */
export type RefusedRequestKind = 'usage' | 'reservation';

export const DEFAULT_REFUSAL_TTL_HOURS = 24;

/**
 * The first definite answer for a key is its answer. A charge is remembered forever (its event or
 * hold); a refusal is remembered here, in the transaction that decided it under the account lock,
 * so that a late duplicate (a client's retry on another instance, a frozen instance waking up after
 * a top-up) gets the same refusal instead of being charged. A client that wants to try again after
 * a top-up sends a new key.
 */
export async function rememberRefusal(
  tx: Tx,
  refused: { accountId: string; kind: RefusedRequestKind; idempotencyKey: string; requestHash: string; refusal: SpendRefusal; at: Date },
): Promise<void> {
  await tx.$executeRaw`
    INSERT INTO refused_requests (account_id, kind, idempotency_key, request_hash, refusal, created_at)
    VALUES (${refused.accountId}, ${refused.kind}, ${refused.idempotencyKey}, ${refused.requestHash}, ${JSON.stringify(refused.refusal)}::jsonb, ${refused.at})
    ON CONFLICT DO NOTHING`;
}

/**
 * The stored refusal of a key (under the account lock), or null. The same key with another request
 * is IDEMPOTENCY_CONFLICT, as for a charged key.
 */
export async function storedRefusal(
  tx: Tx,
  request: { accountId: string; kind: RefusedRequestKind; idempotencyKey: string; requestHash: string },
): Promise<SpendRefusal | null> {
  const [row] = await tx.$queryRaw<Array<{ request_hash: string; refusal: SpendRefusal }>>`
    SELECT request_hash, refusal FROM refused_requests
    WHERE account_id = ${request.accountId} AND kind = ${request.kind} AND idempotency_key = ${request.idempotencyKey}`;
  if (!row) return null;
  if (row.request_hash !== request.requestHash) {
    throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${request.idempotencyKey} was already used with a different request`);
  }
  return row.refusal;
}

/** Forgets refusals older than `before` (the job runner, every few minutes). */
export async function purgeRefusals(prisma: PrismaClient, before: Date): Promise<number> {
  return prisma.$executeRaw`DELETE FROM refused_requests WHERE created_at < ${before}`;
}
