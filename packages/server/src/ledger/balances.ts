import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { Prisma } from '../generated/prisma/client.ts';

/** What a customer sees of one pool, all derived from grants, holds and usage of the current period. */
export interface BalanceRecord {
  creditType: string;
  /** Spendable now: unexpired, effective grants' remaining credits (holds already taken out). */
  available: number;
  /** Held by open reservations. */
  reserved: number;
  /** Included credits granted for the current period (plan and per-seat grants). */
  periodAllocation: number;
  /** Credits charged this period, net of refunds, overage included. */
  periodUsed: number;
  percentUsed: number;
  /** Available credits that expire by the end of the current period unless spent. */
  expiringAtPeriodEnd: number;
  /** Credits charged beyond the balance this period under PAY_AS_YOU_GO. */
  overageUsed: number;
  nextExpiry: Date | null;
}

export interface BalanceScope {
  accountId: string;
  planId: string;
  currentPeriodStart: Date;
  currentPeriodEnd: Date;
  now: Date;
}

interface BalanceRow {
  credit_type: string;
  available: bigint;
  reserved: bigint;
  period_allocation: bigint;
  period_used: bigint;
  expiring: bigint;
  overage: bigint;
  next_expiry: Date | null;
}

export function computePercentUsed(periodUsed: number, periodAllocation: number): number {
  if (periodAllocation <= 0) return periodUsed > 0 ? 100 : 0;
  return Math.round((periodUsed / periodAllocation) * 10_000) / 100;
}

/**
 * Balances of every credit type the account has (its plan's allocations and any grant), or of one.
 * One query: grants, open holds and this period's usage aggregated in the database.
 */
export async function loadBalances(tx: Tx, scope: BalanceScope, creditType?: string): Promise<BalanceRecord[]> {
  const onlyType = creditType === undefined ? Prisma.sql`` : Prisma.sql`AND credit_type = ${creditType}`;
  const rows = await tx.$queryRaw<BalanceRow[]>`
    WITH types AS (
      SELECT credit_type FROM grants WHERE account_id = ${scope.accountId} ${onlyType}
      UNION SELECT credit_type FROM plan_allocations WHERE plan_id = ${scope.planId} ${onlyType}
    ),
    g AS (
      SELECT credit_type,
        sum(remaining) FILTER (WHERE effective_at <= ${scope.now} AND (expires_at IS NULL OR expires_at > ${scope.now})) AS available,
        sum(amount) FILTER (WHERE source IN ('PLAN', 'SEAT') AND period_start = ${scope.currentPeriodStart}) AS period_allocation,
        sum(remaining) FILTER (WHERE effective_at <= ${scope.now} AND expires_at > ${scope.now}
                               AND expires_at <= ${scope.currentPeriodEnd}) AS expiring,
        min(expires_at) FILTER (WHERE remaining > 0 AND effective_at <= ${scope.now} AND expires_at > ${scope.now}) AS next_expiry
      FROM grants WHERE account_id = ${scope.accountId} ${onlyType}
      GROUP BY credit_type
    ),
    r AS (
      SELECT credit_type, sum(held) AS reserved FROM reservations
      WHERE account_id = ${scope.accountId} AND status = 'HELD' ${onlyType} GROUP BY credit_type
    ),
    u AS (
      SELECT credit_type, used AS period_used, overage FROM period_usage_totals
      WHERE account_id = ${scope.accountId} AND period_start = ${scope.currentPeriodStart} ${onlyType}
    )
    SELECT types.credit_type,
      coalesce(g.available, 0)::bigint AS available,
      coalesce(r.reserved, 0)::bigint AS reserved,
      coalesce(g.period_allocation, 0)::bigint AS period_allocation,
      coalesce(u.period_used, 0)::bigint AS period_used,
      coalesce(g.expiring, 0)::bigint AS expiring,
      coalesce(u.overage, 0)::bigint AS overage,
      g.next_expiry
    FROM types
    LEFT JOIN g ON g.credit_type = types.credit_type
    LEFT JOIN r ON r.credit_type = types.credit_type
    LEFT JOIN u ON u.credit_type = types.credit_type
    ORDER BY types.credit_type`;
  return rows.map((row) => {
    const periodAllocation = toCredits(row.period_allocation);
    const periodUsed = toCredits(row.period_used);
    return {
      creditType: row.credit_type,
      available: toCredits(row.available),
      reserved: toCredits(row.reserved),
      periodAllocation,
      periodUsed,
      percentUsed: computePercentUsed(periodUsed, periodAllocation),
      expiringAtPeriodEnd: toCredits(row.expiring),
      overageUsed: toCredits(row.overage),
      nextExpiry: row.next_expiry,
    };
  });
}

/** The balance of one credit type, zero everywhere when the account has never had any. */
export async function loadBalance(tx: Tx, scope: BalanceScope, creditType: string): Promise<BalanceRecord> {
  const [balance] = await loadBalances(tx, scope, creditType);
  return (
    balance ?? {
      creditType,
      available: 0,
      reserved: 0,
      periodAllocation: 0,
      periodUsed: 0,
      percentUsed: 0,
      expiringAtPeriodEnd: 0,
      overageUsed: 0,
      nextExpiry: null,
    }
  );
}
