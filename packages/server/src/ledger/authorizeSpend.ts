import type { LockedAccount } from '../accounts/lockAccount.ts';
import type { FeatureRecord } from '../catalog/features.ts';
import type { PlanRecord } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { computeDraws, type Draw, type SpendableGrant } from './consumptionOrder.ts';
import { checkSpendLimits, type SpendLimitRecord } from './spendLimits.ts';

export interface ActiveSeat {
  id: string;
  canUseSharedPool: boolean;
}

export type SpendRefusal =
  | { kind: 'insufficientCredits'; creditType: string; required: number; available: number }
  | { kind: 'featureNotAvailable'; featureKey: string }
  | { kind: 'spendLimitExceeded'; spendLimit: SpendLimitRecord };

export type SpendDecision =
  | {
      kind: 'authorized';
      draws: Draw[];
      overage: number;
      /** The shared pool's spendable credits after the spend, when the spend drew from it (else null). */
      sharedAfter: number | null;
      /** Spend limits this spend uses up. */
      limitsReached: SpendLimitRecord[];
    }
  | SpendRefusal;

interface SpendableGrantRow {
  id: string;
  seat_id: string | null;
  remaining: bigint;
  expires_at: Date | null;
  priority: number;
  created_at: Date;
}

/**
 * The grants a debit may draw from, as of the account's now: the seat's own, then (unless the seat
 * is barred from it) the shared pool. Expired and not-yet-effective grants are never spendable,
 * whether or not the expiry job has run.
 */
export async function loadSpendableGrants(tx: Tx, account: LockedAccount, creditType: string, seat: ActiveSeat | null): Promise<SpendableGrant[]> {
  const includeShared = seat === null || seat.canUseSharedPool;
  const rows = await tx.$queryRaw<SpendableGrantRow[]>`
    SELECT id, seat_id, remaining, expires_at, priority, created_at FROM grants
    WHERE account_id = ${account.id} AND credit_type = ${creditType} AND remaining > 0
      AND effective_at <= ${account.now} AND (expires_at IS NULL OR expires_at > ${account.now})
      AND ((seat_id IS NULL AND ${includeShared}) OR seat_id = ${seat?.id ?? null})`;
  return rows.map((row) => ({
    id: row.id,
    seatId: row.seat_id,
    remaining: toCredits(row.remaining),
    expiresAt: row.expires_at,
    priority: row.priority,
    createdAt: row.created_at,
  }));
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

export interface SpendRequest {
  feature: FeatureRecord;
  seat: ActiveSeat | null;
  cost: number;
  tags: readonly string[];
  /** Holds take only what grants can cover; usage may go into overage where the plan allows it. */
  allowOverage: boolean;
}

export interface SpendContext {
  plan: Pick<PlanRecord, 'featureKeys' | 'overagePolicy' | 'maxOverageCredits'>;
  /** The pool's unexpired grants the spender may draw from (the seat's own and, unless barred, the shared ones). */
  grants: SpendableGrant[];
  /** Overage already used this period; asked only when the grants fall short. */
  overageUsed: () => Promise<number>;
}

export type BalanceDecision = Exclude<SpendDecision, { kind: 'spendLimitExceeded' }>;

/**
 * The balance half of authorizeSpend's decision (the database's hot path mirrors it): the plan must
 * enable the feature; a feature that requires a positive balance needs credits left; the grants in
 * consumption order must cover the cost, or PAY_AS_YOU_GO overage must fit under the period's cap
 * (only for seats allowed the shared pool: overage is the account's).
 */
export async function decideBalance(context: SpendContext, request: SpendRequest): Promise<BalanceDecision> {
  const { feature, seat, cost } = request;
  const { plan, grants } = context;
  if (!plan.featureKeys.includes(feature.key)) return { kind: 'featureNotAvailable', featureKey: feature.key };
  const available = grants.reduce((sum, grant) => sum + grant.remaining, 0);
  if (feature.requiresPositiveBalance && available <= 0) {
    return { kind: 'insufficientCredits', creditType: feature.creditType, required: Math.max(cost, 1), available };
  }
  const { draws, shortfall } = computeDraws(grants, cost);
  let overage = 0;
  if (shortfall > 0) {
    const overageAllowed =
      request.allowOverage && plan.overagePolicy === 'PAY_AS_YOU_GO' && plan.maxOverageCredits !== null && (seat === null || seat.canUseSharedPool);
    const overageUsed = overageAllowed ? await context.overageUsed() : 0;
    if (!overageAllowed || overageUsed + shortfall > (plan.maxOverageCredits ?? 0)) {
      const headroom = overageAllowed ? Math.max(0, (plan.maxOverageCredits ?? 0) - overageUsed) : 0;
      return { kind: 'insufficientCredits', creditType: feature.creditType, required: cost, available: available + headroom };
    }
    overage = shortfall;
  }
  const sharedIds = new Set(grants.filter((grant) => grant.seatId === null).map((grant) => grant.id));
  const sharedDrawn = draws.filter((draw) => sharedIds.has(draw.grantId)).reduce((sum, draw) => sum + draw.credits, 0);
  const sharedBefore = grants.filter((grant) => grant.seatId === null).reduce((sum, grant) => sum + grant.remaining, 0);
  return {
    kind: 'authorized',
    draws,
    overage,
    sharedAfter: sharedDrawn > 0 || overage > 0 ? sharedBefore - sharedDrawn : null,
    limitsReached: [],
  };
}

/**
 * Decides whether a spend may happen, under the account lock, and which grants pay: the balance
 * decision above, then no spend limit may be exceeded. Refusals say why and write nothing.
 */
export async function authorizeSpend(tx: Tx, account: LockedAccount, plan: PlanRecord, request: SpendRequest): Promise<SpendDecision> {
  const grants = await loadSpendableGrants(tx, account, request.feature.creditType, request.seat);
  const decision = await decideBalance({ plan, grants, overageUsed: () => loadOverageUsed(tx, account, request.feature.creditType) }, request);
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
