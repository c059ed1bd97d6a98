import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { newId } from '../domain/ids.ts';
import { notifyBalanceChanged } from '../realtime/events.ts';

export type GrantSource = 'PLAN' | 'SEAT' | 'ROLLOVER' | 'PURCHASE' | 'AUTO_TOP_UP' | 'BONUS' | 'TRIAL' | 'ADJUSTMENT';

/**
 * Priority by source when the grant does not say: among grants with the same expiry, trial and
 * included credits burn before rolled-over ones, and those before bonus and purchased credits.
 */
export const DEFAULT_PRIORITY: Record<GrantSource, number> = {
  TRIAL: 10,
  PLAN: 20,
  SEAT: 20,
  ROLLOVER: 30,
  BONUS: 40,
  ADJUSTMENT: 40,
  AUTO_TOP_UP: 50,
  PURCHASE: 50,
};

export interface GrantRecord {
  id: string;
  accountId: string;
  seatId: string | null;
  creditType: string;
  source: GrantSource;
  amount: number;
  remaining: number;
  priority: number;
  effectiveAt: Date;
  expiresAt: Date | null;
  createdAt: Date;
}

export interface GrantRow {
  id: string;
  account_id: string;
  seat_id: string | null;
  credit_type: string;
  source: GrantSource;
  amount: bigint;
  remaining: bigint;
  priority: number;
  effective_at: Date;
  expires_at: Date | null;
  created_at: Date;
}

export const GRANT_COLUMNS = `id, account_id, seat_id, credit_type, source::text AS source, amount, remaining, priority,
  effective_at, expires_at, created_at`;

export function toGrantRecord(row: GrantRow): GrantRecord {
  return {
    id: row.id,
    accountId: row.account_id,
    seatId: row.seat_id,
    creditType: row.credit_type,
    source: row.source,
    amount: toCredits(row.amount),
    remaining: toCredits(row.remaining),
    priority: row.priority,
    effectiveAt: row.effective_at,
    expiresAt: row.expires_at,
    createdAt: row.created_at,
  };
}

export interface NewGrant {
  accountId: string;
  seatId: string | null;
  creditType: string;
  source: GrantSource;
  amount: number;
  priority?: number;
  effectiveAt: Date;
  expiresAt: Date | null;
  periodStart?: Date | null;
  idempotencyKey?: string | null;
  requestHash?: string | null;
}

/**
 * Writes a grant and its GRANT ledger entry in one statement. The caller holds the account lock and
 * has validated the amount (the table's CHECKs refuse a non-positive one anyway).
 */
export async function insertGrant(tx: Tx, grant: NewGrant, now: Date): Promise<GrantRecord> {
  const id = newId();
  const priority = grant.priority ?? DEFAULT_PRIORITY[grant.source];
  const amount = BigInt(grant.amount);
  await tx.$executeRaw`
    WITH inserted AS (
      INSERT INTO grants (id, account_id, seat_id, credit_type, source, amount, remaining, priority, effective_at,
                          expires_at, period_start, idempotency_key, request_hash, created_at)
      VALUES (${id}, ${grant.accountId}, ${grant.seatId}, ${grant.creditType}, ${grant.source}::"GrantSource",
              ${amount}, ${amount}, ${priority}, ${grant.effectiveAt}, ${grant.expiresAt}, ${grant.periodStart ?? null},
              ${grant.idempotencyKey ?? null}, ${grant.requestHash ?? null}, ${now})
      RETURNING id
    )
    INSERT INTO ledger_entries (account_id, grant_id, type, credits, created_at)
    SELECT ${grant.accountId}, id, 'GRANT'::"LedgerEntryType", ${amount}, ${now} FROM inserted`;
  notifyBalanceChanged(tx, grant.accountId, grant.creditType);
  return {
    id,
    accountId: grant.accountId,
    seatId: grant.seatId,
    creditType: grant.creditType,
    source: grant.source,
    amount: grant.amount,
    remaining: grant.amount,
    priority,
    effectiveAt: grant.effectiveAt,
    expiresAt: grant.expiresAt,
    createdAt: now,
  };
}
