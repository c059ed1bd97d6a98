import type { FeatureRecord } from '../catalog/features.ts';
import type { PlanRecord } from '../catalog/plans.ts';
import { computeDraws, type Draw, type SpendableGrant } from './consumptionOrder.ts';

export interface ActiveSeat {
  id: string;
  canUseSharedPool: boolean;
}

export type BalanceRefusal =
  | { kind: 'insufficientCredits'; creditType: string; required: number; available: number }
  | { kind: 'featureNotAvailable'; featureKey: string };

export interface BalanceAuthorized {
  kind: 'authorized';
  draws: Draw[];
  overage: number;
  /** The shared pool's spendable credits after the spend, when the spend drew from it (else null). */
  sharedAfter: number | null;
  /** The shared pool's spendable credits before the spend. */
  sharedBefore: number;
}

export type BalanceDecision = BalanceAuthorized | BalanceRefusal;

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

/**
 * The balance half of authorizeSpend's decision (the database's hot path mirrors it), kept free of
 * the database so fast unit tests and mutation testing can drive it: the plan must enable the
 * feature; a feature that requires a positive balance needs credits left; the grants in consumption
 * order must cover the cost, or PAY_AS_YOU_GO overage must fit under the period's cap (only for
 * seats allowed the shared pool: overage is the account's).
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
  return { kind: 'authorized', draws, overage, sharedAfter: sharedDrawn > 0 || overage > 0 ? sharedBefore - sharedDrawn : null, sharedBefore };
}
