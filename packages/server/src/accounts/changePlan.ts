import { findPlanByCode, getPlanById, type PlanRecord } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { renewIfPeriodEnded } from '../periods/dueWork.ts';
import { grantPeriodAllocations } from './accounts.ts';
import { lockAccount, type LockedAccount } from './lockAccount.ts';

export type PlanChangeTiming = 'IMMEDIATELY' | 'AT_PERIOD_END';

export interface ChangePlanCommand {
  accountId: string;
  planCode: string;
  timing?: PlanChangeTiming | null;
}

/** Price per month, so monthly and yearly plans compare. */
function monthlyPrice(plan: PlanRecord): number {
  return plan.interval === 'YEAR' ? plan.price.amount / 12 : plan.price.amount;
}

/**
 * Moves an account to another plan. Without an explicit timing, a plan with a higher monthly price
 * is an upgrade and applies now; anything else is a downgrade and waits for the period end (the
 * `pendingPlan`), so credits already granted stay usable until then and the rollover rule of the new
 * plan cuts the balance at renewal. An upgrade grants the new plan's full allocation at once for the
 * rest of the period, expiring with it, on top of what is left (no time proration of credits); the
 * period and its anniversary stay as they are. Changing to the current plan cancels a pending change.
 */
export async function changePlan(tx: Tx, clock: Clock, command: ChangePlanCommand): Promise<LockedAccount> {
  const next = await findPlanByCode(tx, command.planCode);
  if (!next) throw new BillingError(ErrorCode.PLAN_NOT_FOUND, `plan ${command.planCode} not found`);
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
  await tx.account.update({ where: { id: account.id }, data: { planId: next.id, pendingPlanId: null } });
  const seats = await tx.seat.findMany({ where: { accountId: account.id, removedAt: null }, select: { id: true }, orderBy: { createdAt: 'asc' } });
  await grantPeriodAllocations(tx, account, next, seats.map((seat) => seat.id), account.now);
  return { ...account, planId: next.id, pendingPlanId: null };
}
