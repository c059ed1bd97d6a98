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
  /** Minor units of costCurrency one credit cost (exact decimal text). */
  unitCost: string;
  costCurrency: string | null;
  funding: GrantFunding;
  /** The features this grant pays for; empty: every feature of its credit type. */
  featureKeys: string[];
  /** Why the operator granted it (grantCredits, adjustCredits). */
  reason: string | null;
  /** The operator's JSON (at most MAX_METADATA_BYTES). */
  metadata: unknown;
  /** When voidGrant removed what was left of it. */
  voidedAt: Date | null;
}

export type GrantFunding = 'PAID' | 'PROMOTIONAL';

/**
 * What the credits of a new grant cost, when the caller knows better than the grants_cost_basis
 * trigger's rule (migration grant_cost_basis): a purchase's price, an operator's choice.
 */
export interface GrantCost {
  /** What the whole grant cost, in minor units (one credit: this ÷ amount). */
  totalAmount?: number | null;
  /** Minor units per credit. */
  unitCost?: number | null;
  currency: string | null;
  funding?: GrantFunding | null;
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
  unit_cost: string;
  cost_currency: string | null;
  funding: GrantFunding;
  feature_keys: string[] | null;
  reason: string | null;
  metadata: unknown;
  voided_at: Date | null;
}

export const GRANT_COLUMNS = `id, account_id, seat_id, credit_type, source::text AS source, amount, remaining, priority,
  effective_at, expires_at, created_at, unit_cost::text AS unit_cost, cost_currency, funding::text AS funding, feature_keys,
  reason, metadata, voided_at`;

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
    unitCost: row.unit_cost,
    costCurrency: row.cost_currency,
    funding: row.funding,
    featureKeys: row.feature_keys ?? [],
    reason: row.reason,
    metadata: row.metadata ?? null,
    voidedAt: row.voided_at,
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
  /** Left out: the trigger's rule by source (plan share, rollover average, zero). */
  cost?: GrantCost | null;
  /** Only these features may spend it (spendable_grants); left out or empty: every feature. */
  featureKeys?: readonly string[] | null;
  reason?: string | null;
  metadata?: unknown;
  /** The grant's id when the caller must know it first (a correction row names it before the grant exists). */
  id?: string;
  /**
   * How its credits enter the ledger: a GRANT entry (issued credits), or an ADJUST entry of the
   * operator's correction (adjustCredits), which the finance reports count as adjusted, not issued.
   */
  entry?: { type: 'GRANT' } | { type: 'ADJUST'; correctionId: string };
}

/**
 * Writes a grant and its GRANT ledger entry in one statement. The caller holds the account lock and
 * has validated the amount (the table's CHECKs refuse a non-positive one anyway).
 */
export async function insertGrant(tx: Tx, grant: NewGrant, now: Date): Promise<GrantRecord> {
  const id = grant.id ?? newId();
  const entry = grant.entry ?? { type: 'GRANT' };
  const metadata = grant.metadata === null || grant.metadata === undefined ? null : JSON.stringify(grant.metadata);
  const priority = grant.priority ?? DEFAULT_PRIORITY[grant.source];
  const amount = BigInt(grant.amount);
  const cost = grant.cost;
  const totalCost = cost?.totalAmount ?? null;
  const [basis] = await tx.$queryRaw<Array<{ unit_cost: string; cost_currency: string | null; funding: GrantFunding }>>`
    WITH inserted AS (
      INSERT INTO grants (id, account_id, seat_id, credit_type, source, amount, remaining, priority, effective_at,
                          expires_at, period_start, idempotency_key, request_hash, created_at, unit_cost, cost_currency, funding,
                          feature_keys, reason, metadata)
      VALUES (${id}, ${grant.accountId}, ${grant.seatId}, ${grant.creditType}, ${grant.source}::"GrantSource",
              ${amount}, ${amount}, ${priority}, ${grant.effectiveAt}, ${grant.expiresAt}, ${grant.periodStart ?? null},
              ${grant.idempotencyKey ?? null}, ${grant.requestHash ?? null}, ${now},
              coalesce(${totalCost}::numeric(40,20) / ${amount}, ${cost?.unitCost ?? null}::numeric(40,20)),
              ${cost?.currency ?? null}, ${cost?.funding ?? null}::"GrantFunding", ${[...(grant.featureKeys ?? [])]}::text[],
              ${grant.reason ?? null}, ${metadata}::jsonb)
      RETURNING id, unit_cost::text AS unit_cost, cost_currency, funding::text AS funding
    ),
    entry AS (
      INSERT INTO ledger_entries (account_id, grant_id, type, credits, correction_id, created_at)
      SELECT ${grant.accountId}, id, ${entry.type}::"LedgerEntryType", ${amount}, ${entry.type === 'ADJUST' ? entry.correctionId : null}, ${now}
      FROM inserted
    )
    SELECT unit_cost, cost_currency, funding FROM inserted`;
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
    unitCost: basis!.unit_cost,
    costCurrency: basis!.cost_currency,
    funding: basis!.funding,
    featureKeys: [...(grant.featureKeys ?? [])],
    reason: grant.reason ?? null,
    metadata: grant.metadata ?? null,
    voidedAt: null,
  };
}
