import type { LockedAccount } from '../accounts/lockAccount.ts';
import type { PlanRecord } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { FeatureRecord } from '../catalog/features.ts';
import {
  decideBalance,
  type ActiveSeat,
  type BalanceAuthorized,
  type BalanceRefusal,
  type DebitCoverage,
  type SpendableGrant,
  type SpendRequest,
} from './balanceDecision.ts';
import { checkSpendLimits, type SpendLimitRecord } from './spendLimits.ts';

export type SpendRefusal = BalanceRefusal | { kind: 'spendLimitExceeded'; spendLimit: SpendLimitRecord };

export type SpendDecision =
  | (BalanceAuthorized & {
      /** Spend limits this spend uses up. */
      limitsReached: SpendLimitRecord[];
    })
  | SpendRefusal;

interface SpendPoolRow {
  grants: Array<{ id: string; seatId: string | null; remaining: number | string; draw: number | string }>;
  coverage: DebitCoverage;
}

/**
 * What a spend of `cost` would draw, as of the account's now: the database's one definition of
 * which grants the spender may draw from, in what order, what each gives (`spendable_draws`) and
 * whether they cover the spend (`debit_coverage`), the same the one-statement paths charge by.
 */
export async function loadSpendPool(
  tx: Tx,
  account: LockedAccount,
  feature: Pick<FeatureRecord, 'key' | 'creditType' | 'requiresPositiveBalance'>,
  seat: ActiveSeat | null,
  cost: number,
): Promise<{ grants: SpendableGrant[]; coverage: DebitCoverage }> {
  const includeShared = seat === null || seat.canUseSharedPool;
  const [row] = await tx.$queryRaw<SpendPoolRow[]>`
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', grant_id, 'seatId', seat_id, 'remaining', remaining::text, 'draw', credits::text)
                              ORDER BY position), '[]'::jsonb) AS grants,
           debit_coverage(coalesce(sum(remaining), 0)::bigint, 0, ${BigInt(cost)}, ${feature.requiresPositiveBalance}) AS coverage
    FROM spendable_draws(${account.id}, ${feature.creditType}, ${account.now}::timestamp(3), ${seat?.id ?? null}::text, ${includeShared},
                         ${feature.key}, ${BigInt(cost)})`;
  if (!row) throw new Error('an aggregate returned no row');
  const grants = typeof row.grants === 'string' ? (JSON.parse(row.grants) as SpendPoolRow['grants']) : row.grants;
  return {
    grants: grants.map((grant) => ({ id: grant.id, seatId: grant.seatId, remaining: toCredits(BigInt(grant.remaining)), draw: toCredits(BigInt(grant.draw)) })),
    coverage: row.coverage,
  };
}

export async function getActiveSeat(tx: Tx, accountId: string, seatId: string): Promise<ActiveSeat> {
  const seat = await tx.seat.findFirst({ where: { id: seatId, accountId, removedAt: null } });
  if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${seatId} not found in this account`);
  return { id: seat.id, canUseSharedPool: seat.canUseSharedPool };
}

async function loadOverageUsed(tx: Tx, account: LockedAccount, creditType: string): Promise<number> {
  const [row] = await tx.$queryRaw<Array<{ used: bigint }>>`
    SELECT overage AS used FROM period_usage_totals
    WHERE account_id = ${account.id} AND period_start = ${account.currentPeriodStart} AND credit_type = ${creditType}`;
  return toCredits(row?.used);
}

/**
 * Decides whether a spend may happen, under the account lock, and which grants pay: the balance
 * decision (decideBalance), then no spend limit may be exceeded. Refusals say why and write nothing.
 */
export async function authorizeSpend(tx: Tx, account: LockedAccount, plan: PlanRecord, request: SpendRequest): Promise<SpendDecision> {
  const pool = await loadSpendPool(tx, account, request.feature, request.seat, request.cost);
  const decision = await decideBalance({ plan, ...pool, overageUsed: () => loadOverageUsed(tx, account, request.feature.creditType) }, request);
  if (decision.kind !== 'authorized') return decision;
  const limits = await checkSpendLimits(
    tx,
    account,
    { creditType: request.feature.creditType, featureKey: request.feature.key, seatId: request.seat?.id ?? null, tags: request.tags },
    request.cost,
  );
  if (limits.exceeded) return { kind: 'spendLimitExceeded', spendLimit: limits.exceeded };
  return { ...decision, limitsReached: limits.reached };
}
