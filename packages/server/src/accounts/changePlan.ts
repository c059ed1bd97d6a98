import type { Actor } from '../auth/access.ts';
import { findPlanByCode, getPlanById, type PlanRecord } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { renewIfPeriodEnded } from '../periods/dueWork.ts';
import { lockAccount, type LockedAccount } from './lockAccount.ts';
import { grantAllocationTopUps } from './periodAllocationBound.ts';

export type PlanChangeTiming = 'IMMEDIATELY' | 'AT_PERIOD_END';

export interface ChangePlanCommand {
  accountId: string;
  planCode: string;
  timing?: PlanChangeTiming | null;
  /** The role of the key asking (see mayChangePlanTo). */
  actorRole: Actor['role'];
}

/**
 * Whether a key of this role may move an account to `plan` without paying: the operator (ADMIN) to
 * any plan; a customer (ACCOUNT) only to a plan the operator made self-serve, since a change grants
 * credits nobody has paid for; a SEAT key never. A change paid through the account's Stripe
 * subscription is decided by subscriptions/subscriptionService.ts before this is asked.
 */
export function mayChangePlanTo(actorRole: Actor['role'], plan: Pick<PlanRecord, 'selfServe'>): boolean {
  return actorRole === 'ADMIN' || (actorRole === 'ACCOUNT' && plan.selfServe);
}

/** Price per month, so monthly and yearly plans compare. */
function monthlyPrice(plan: PlanRecord): number {
  return plan.interval === 'YEAR' ? plan.price.amount / 12 : plan.price.amount;
}

/**
 * Moves an account to another plan. Without an explicit timing, a plan with a higher monthly price
 * is an upgrade and applies now; anything else is a downgrade and waits for the period end (the
 * `pendingPlan`), so credits already granted stay usable until then and the rollover rule of the new
 * plan cuts the balance at renewal. A change that applies now grants, for the rest of the period and
 * expiring with it, only what the new plan allocates beyond what the period has already granted
 * (periodAllocationBound.ts): an upgrade the difference, a downgrade nothing, so no sequence of
 * changes within a period grants more than the largest allocation among the plans held in it. The
 * period in progress keeps its start and end; a change of interval moves the anniversary to the
 * period's end, from which the new interval's periods run. Changing to the current plan cancels a
 * pending change.
 */
export async function changePlan(tx: Tx, clock: Clock, command: ChangePlanCommand): Promise<LockedAccount> {
  const next = await findPlanByCode(tx, command.planCode);
  if (!next) throw new BillingError(ErrorCode.PLAN_NOT_FOUND, `plan ${command.planCode} not found`);
  if (!mayChangePlanTo(command.actorRole, next)) {
    throw new BillingError(ErrorCode.FORBIDDEN, `plan ${next.code} is not self-serve: only the operator (an ADMIN key) can move an account to it`);
  }
  const account = await renewIfPeriodEnded(tx, await lockAccount(tx, clock, command.accountId));
  const current = await getPlanById(tx, account.planId);
  if (next.id === current.id) {
    await tx.account.update({ where: { id: account.id }, data: { pendingPlanId: null } });
    return { ...account, pendingPlanId: null };
  }
  const timing = command.timing ?? (monthlyPrice(next) > monthlyPrice(current) ? 'IMMEDIATELY' : 'AT_PERIOD_END');
  if (timing === 'AT_PERIOD_END') {
    await tx.account.update({ where: { id: account.id }, data: { pendingPlanId: next.id } });
    return { ...account, pendingPlanId: next.id };
  }
  // Renewal computes the next period as the (index + 1)-th of the anchor in the plan's interval. The
  // anchor and index of the old interval would place it years off (or in the past); anchored on the
  // end of the period in progress, as the period before index 0, the next one starts at that end.
  const reanchor = next.interval !== current.interval;
  const periodAnchor = reanchor ? account.currentPeriodEnd : account.periodAnchor;
  const periodIndex = reanchor ? -1 : account.periodIndex;
  await tx.account.update({ where: { id: account.id }, data: { planId: next.id, pendingPlanId: null, periodAnchor, periodIndex } });
  const seats = await tx.seat.findMany({ where: { accountId: account.id, removedAt: null }, select: { id: true }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] });
  const seatIds = seats.map((seat) => seat.id);
  await grantAllocationTopUps(tx, account, next, { shared: true, seatIds, activeSeats: seatIds.length }, account.now);
  return { ...account, planId: next.id, pendingPlanId: null, periodAnchor, periodIndex };
}
