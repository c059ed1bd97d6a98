import type { FeatureRecord } from '../catalog/features.ts';
import type { PlanRecord } from '../catalog/plans.ts';

export interface Draw {
  grantId: string;
  credits: number;
}

/**
 * A grant the spender may draw from, as the database's `spendable_draws` answers it (migration
 * 20261203081000_one_definition_of_debits, the one definition of which grants pay and in what
 * order, which the one-statement paths use too): listed in consumption order, with what the spend
 * draws from it.
 */
export interface SpendableGrant {
  id: string;
  seatId: string | null;
  remaining: number;
  draw: number;
}

/** The database's `debit_coverage` of the spend: whether the grants alone pay for it, and if not, why. */
export type DebitCoverage = 'covered' | 'short' | 'empty';

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
  /** The grants the spender may draw from (the seat's own and, unless barred, the shared ones), in consumption order. */
  grants: SpendableGrant[];
  coverage: DebitCoverage;
  /** Overage already used this period; asked only when the grants fall short. */
  overageUsed: () => Promise<number>;
}

/**
 * The balance half of authorizeSpend's decision, kept free of the database so fast unit tests and
 * mutation testing can drive it. Which grants pay, in what order, and whether they cover the spend
 * is the database's answer (SpendContext), the same the one-statement paths charge by; here: the
 * plan must enable the feature; a feature that requires a positive balance needs credits left; a
 * shortfall is refused, or goes into PAY_AS_YOU_GO overage under the period's cap (only for seats
 * allowed the shared pool: overage is the account's).
 */
export async function decideBalance(context: SpendContext, request: SpendRequest): Promise<BalanceDecision> {
  const { feature, seat, cost } = request;
  const { plan, grants } = context;
  if (!plan.featureKeys.includes(feature.key)) return { kind: 'featureNotAvailable', featureKey: feature.key };
  const available = grants.reduce((sum, grant) => sum + grant.remaining, 0);
  if (context.coverage === 'empty') {
    return { kind: 'insufficientCredits', creditType: feature.creditType, required: Math.max(cost, 1), available };
  }
  const draws = grants.filter((grant) => grant.draw > 0).map((grant) => ({ grantId: grant.id, credits: grant.draw }));
  let overage = 0;
  if (context.coverage === 'short') {
    const shortfall = cost - draws.reduce((sum, draw) => sum + draw.credits, 0);
    const overageAllowed =
      request.allowOverage && plan.overagePolicy === 'PAY_AS_YOU_GO' && plan.maxOverageCredits !== null && (seat === null || seat.canUseSharedPool);
    const overageUsed = overageAllowed ? await context.overageUsed() : 0;
    if (!overageAllowed || overageUsed + shortfall > (plan.maxOverageCredits ?? 0)) {
      const headroom = overageAllowed ? Math.max(0, (plan.maxOverageCredits ?? 0) - overageUsed) : 0;
      return { kind: 'insufficientCredits', creditType: feature.creditType, required: cost, available: available + headroom };
    }
    overage = shortfall;
  }
  const shared = grants.filter((grant) => grant.seatId === null);
  const sharedDrawn = shared.reduce((sum, grant) => sum + grant.draw, 0);
  const sharedBefore = shared.reduce((sum, grant) => sum + grant.remaining, 0);
  return { kind: 'authorized', draws, overage, sharedAfter: sharedDrawn > 0 || overage > 0 ? sharedBefore - sharedDrawn : null, sharedBefore };
}
