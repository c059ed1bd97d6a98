import { changePlan } from '../accounts/changePlan.ts';
import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { grantAllocationTopUps } from '../accounts/periodAllocationBound.ts';
import { raiseAlert } from '../alerts/alerts.ts';
import { findPlanByCode, getPlanById } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { Prisma } from '../generated/prisma/client.ts';
import { computeBillingPeriod } from '../periods/billingPeriod.ts';
import { processDueWork, renewIfPeriodEnded } from '../periods/dueWork.ts';
import { notifyBalanceChanged } from '../realtime/events.ts';
import type { UsageRefusalReason } from '../accounts/usageRefusal.ts';

export type SubscriptionStatus = 'INCOMPLETE' | 'ACTIVE' | 'PAST_DUE' | 'UNPAID' | 'CANCELED';


export interface SubscriptionPolicy {
  /** How long after a renewal payment fails usage goes on (SUBSCRIPTION_GRACE_PERIOD_HOURS). */
  graceMs: number;
  /** The plan a subscription that ends moves the account to (SUBSCRIPTION_FREE_PLAN_CODE); null: none. */
  freePlanCode: string | null;
}

/** An account's Stripe subscription as stored. */
export interface AccountSubscription {
  accountId: string;
  stripeCustomerId: string | null;
  stripeSubscriptionId: string | null;
  stripeSubscriptionItemId: string | null;
  status: SubscriptionStatus | null;
  cancelAtPeriodEnd: boolean;
  pastDueSince: Date | null;
  pastDueInvoiceId: string | null;
  usageRefusedFrom: Date | null;
  usageRefusedReason: UsageRefusalReason | null;
}

const SUBSCRIPTION_SELECT = {
  id: true,
  stripeCustomerId: true,
  stripeSubscriptionId: true,
  stripeSubscriptionItemId: true,
  subscriptionStatus: true,
  subscriptionCancelAtPeriodEnd: true,
  pastDueSince: true,
  pastDueInvoiceId: true,
  usageRefusedFrom: true,
  usageRefusedReason: true,
} as const;

export async function readSubscription(tx: Tx, accountId: string): Promise<AccountSubscription | null> {
  const row = await tx.account.findUnique({ where: { id: accountId }, select: SUBSCRIPTION_SELECT });
  if (!row) return null;
  return {
    accountId: row.id,
    stripeCustomerId: row.stripeCustomerId,
    stripeSubscriptionId: row.stripeSubscriptionId,
    stripeSubscriptionItemId: row.stripeSubscriptionItemId,
    status: row.subscriptionStatus,
    cancelAtPeriodEnd: row.subscriptionCancelAtPeriodEnd,
    pastDueSince: row.pastDueSince,
    pastDueInvoiceId: row.pastDueInvoiceId,
    usageRefusedFrom: row.usageRefusedFrom,
    usageRefusedReason: row.usageRefusedReason as UsageRefusalReason | null,
  };
}

/** A subscription that still bills: plan changes and cancellation go through Stripe. */
export function isLive(subscription: AccountSubscription | null): subscription is AccountSubscription & { stripeSubscriptionId: string; stripeSubscriptionItemId: string } {
  return (
    subscription !== null &&
    subscription.stripeSubscriptionId !== null &&
    subscription.stripeSubscriptionItemId !== null &&
    (subscription.status === 'ACTIVE' || subscription.status === 'PAST_DUE' || subscription.status === 'UNPAID')
  );
}

/** Clears what an unpaid renewal set: the subscription is active again and usage resumes. */
const CLEAR_PAST_DUE = { pastDueSince: null, pastDueInvoiceId: null } as const;

/**
 * A period grant whose expiry an operator set (changeGrantExpiry) keeps it when a subscription
 * starts: the correction is the operator's explicit word on that grant (an extension promised to
 * the customer), which the start's reset of the period's expiries would otherwise undo silently
 * while the correction row still showed the operator's date. Renewals leave it alone the same way.
 */
const NOT_MOVED_BY_OPERATOR = Prisma.sql`NOT EXISTS (SELECT 1 FROM corrections c WHERE c.grant_id = grants.id AND c.kind = 'EXPIRY')`;

/**
 * The subscription of a completed subscription-mode Checkout starts: the account moves to the plan,
 * and a new period starts at the subscription's billing cycle anchor, so the account's anniversary
 * is Stripe's. The period in progress ends there (its plan grants expire, the rollover rule of a plan
 * change carries what it allows, then the plan's allocation is granted: periods/dueWork.ts). When the
 * anchor is not after the start of the period in progress (the subscription began the instant the
 * period did, or the confirmation came after a renewal of ours), the account adopts that period: the
 * plan applies now and grants what it allocates beyond what the period has granted
 * (periodAllocationBound.ts).
 */
export async function startSubscription(
  tx: Tx,
  clock: Clock,
  input: { accountId: string; planId: string; subscriptionId: string; itemId: string; anchor: Date },
): Promise<LockedAccount> {
  let account = await renewIfPeriodEnded(tx, await lockAccount(tx, clock, input.accountId));
  const plan = await getPlanById(tx, input.planId);
  const current = await getPlanById(tx, account.planId);
  const periodGrants = { accountId: account.id, periodStart: account.currentPeriodStart };
  if (input.anchor.getTime() > account.currentPeriodStart.getTime()) {
    const cut = input.anchor;
    await tx.$executeRaw`
      UPDATE grants SET expires_at = ${cut}
      WHERE account_id = ${periodGrants.accountId} AND period_start = ${periodGrants.periodStart} AND expired_at IS NULL
        AND source IN ('PLAN', 'SEAT', 'ROLLOVER') AND expires_at > ${cut} AND ${NOT_MOVED_BY_OPERATOR}`;
    await tx.account.update({
      where: { id: account.id },
      data: { pendingPlanId: plan.id, periodAnchor: cut, periodIndex: -1, currentPeriodEnd: cut },
    });
    account = await processDueWork(tx, { ...account, pendingPlanId: plan.id, periodAnchor: cut, periodIndex: -1, currentPeriodEnd: cut }, new Date(Math.max(cut.getTime(), account.now.getTime())));
  } else {
    let { currentPeriodEnd, periodAnchor, periodIndex } = account;
    if (plan.interval !== current.interval) {
      currentPeriodEnd = computeBillingPeriod(account.currentPeriodStart, plan.interval, 0).end;
      periodAnchor = account.currentPeriodStart;
      periodIndex = 0;
      await tx.$executeRaw`
        UPDATE grants SET expires_at = ${currentPeriodEnd}
        WHERE account_id = ${periodGrants.accountId} AND period_start = ${periodGrants.periodStart} AND expired_at IS NULL
          AND source IN ('PLAN', 'SEAT', 'ROLLOVER') AND ${NOT_MOVED_BY_OPERATOR}`;
    }
    await tx.account.update({ where: { id: account.id }, data: { planId: plan.id, pendingPlanId: null, periodAnchor, periodIndex, currentPeriodEnd } });
    account = { ...account, planId: plan.id, pendingPlanId: null, periodAnchor, periodIndex, currentPeriodEnd };
    const seats = await tx.seat.findMany({ where: { accountId: account.id, removedAt: null }, select: { id: true }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] });
    const seatIds = seats.map((seat) => seat.id);
    await grantAllocationTopUps(tx, account, plan, { shared: true, seatIds, activeSeats: seatIds.length }, account.now);
  }
  await tx.account.update({
    where: { id: account.id },
    data: {
      stripeSubscriptionId: input.subscriptionId,
      stripeSubscriptionItemId: input.itemId,
      subscriptionStatus: 'ACTIVE',
      subscriptionCancelAtPeriodEnd: false,
      ...CLEAR_PAST_DUE,
      usageRefusedFrom: null,
      usageRefusedReason: null,
    },
  });
  for (const allocation of plan.allocations) notifyBalanceChanged(tx, account.id, allocation.creditType);
  return account;
}

/**
 * A renewal invoice of the subscription failed (`invoice.payment_failed`, or the subscription turned
 * `past_due`): the subscription is PAST_DUE from now (the account's clock), an alert is raised once
 * per invoice, and new usage is refused from the end of the grace period. A later failure of the
 * same debt keeps the first instant (retries do not extend the grace), and a failure of an invoice
 * already seen paid (a late delivery) changes nothing.
 */
export async function markPastDue(tx: Tx, clock: Clock, accountId: string, invoiceId: string, policy: SubscriptionPolicy): Promise<void> {
  const account = await lockAccount(tx, clock, accountId);
  const paid = await tx.subscriptionInvoicePaid.findUnique({ where: { invoiceId } });
  if (paid) return;
  const subscription = await readSubscription(tx, accountId);
  if (!subscription || subscription.status === 'CANCELED') return;
  if (subscription.status === 'PAST_DUE' || subscription.status === 'UNPAID') return;
  const refusedFrom = new Date(account.now.getTime() + policy.graceMs);
  await tx.account.update({
    where: { id: accountId },
    data: {
      subscriptionStatus: 'PAST_DUE',
      pastDueSince: account.now,
      pastDueInvoiceId: invoiceId,
      // An ended subscription's refusal (earlier) stays; otherwise the grace period's end.
      ...(subscription.usageRefusedReason === 'SUBSCRIPTION_ENDED' ? {} : { usageRefusedFrom: refusedFrom, usageRefusedReason: 'PAYMENT_OVERDUE' }),
    },
  });
  await raiseAlert(tx, {
    accountId,
    kind: 'SUBSCRIPTION_PAST_DUE',
    creditType: null,
    threshold: null,
    message: `the subscription payment failed (invoice ${invoiceId}); usage continues until ${refusedFrom.toISOString()}, then is refused until the invoice is paid`,
    periodStart: account.currentPeriodStart,
    dedupeKey: `subscription-past-due:${invoiceId}`,
    at: account.now,
  });
}

/** Stripe gave up collecting (`unpaid`): the subscription stays refused until an invoice is paid. */
export async function markUnpaid(tx: Tx, clock: Clock, accountId: string, invoiceId: string | null, policy: SubscriptionPolicy): Promise<void> {
  if (invoiceId) await markPastDue(tx, clock, accountId, invoiceId, policy);
  await tx.account.updateMany({ where: { id: accountId, subscriptionStatus: 'PAST_DUE' }, data: { subscriptionStatus: 'UNPAID' } });
}

/**
 * An invoice of the account's subscription was paid: it is remembered (so that its failure delivered
 * late is stale), and if it was the unpaid one the subscription is ACTIVE again and usage resumes.
 */
export async function markInvoicePaid(tx: Tx, clock: Clock, accountId: string, invoiceId: string): Promise<void> {
  const account = await lockAccount(tx, clock, accountId);
  await tx.subscriptionInvoicePaid.upsert({ where: { invoiceId }, create: { invoiceId, accountId, paidAt: account.now }, update: {} });
  const subscription = await readSubscription(tx, accountId);
  if (!subscription || subscription.pastDueInvoiceId !== invoiceId) return;
  await tx.account.update({
    where: { id: accountId },
    data: {
      ...CLEAR_PAST_DUE,
      ...(subscription.status === 'PAST_DUE' || subscription.status === 'UNPAID' ? { subscriptionStatus: 'ACTIVE' } : {}),
      ...(subscription.usageRefusedReason === 'PAYMENT_OVERDUE' ? { usageRefusedFrom: null, usageRefusedReason: null } : {}),
    },
  });
}

/**
 * The subscription will end at the period end (cancelSubscription): the account then moves to the
 * free plan (a pending change, applied by the renewal), or, without one, new usage is refused from
 * the period end.
 */
export async function scheduleEnd(tx: Tx, clock: Clock, accountId: string, policy: SubscriptionPolicy): Promise<LockedAccount> {
  const account = await renewIfPeriodEnded(tx, await lockAccount(tx, clock, accountId));
  const freePlan = policy.freePlanCode ? await findPlanByCode(tx, policy.freePlanCode) : null;
  if (policy.freePlanCode && !freePlan) throw new BillingError(ErrorCode.PLAN_NOT_FOUND, `the free plan ${policy.freePlanCode} (SUBSCRIPTION_FREE_PLAN_CODE) does not exist`);
  await tx.account.update({
    where: { id: accountId },
    data: {
      subscriptionCancelAtPeriodEnd: true,
      ...(freePlan
        ? { pendingPlanId: freePlan.id === account.planId ? null : freePlan.id }
        : { pendingPlanId: null, usageRefusedFrom: account.currentPeriodEnd, usageRefusedReason: 'SUBSCRIPTION_ENDED' }),
    },
  });
  return { ...account, pendingPlanId: freePlan && freePlan.id !== account.planId ? freePlan.id : null };
}

/**
 * Stripe ended the subscription (`customer.subscription.deleted`: at the period end after a
 * cancellation, or when collection gave up): CANCELED. With a free plan the account moves to it now
 * (as a downgrade that applies now: nothing more is granted this period); without one new usage is
 * refused from now (or the earlier instant already set).
 */
export async function endSubscription(tx: Tx, clock: Clock, accountId: string, subscriptionId: string, policy: SubscriptionPolicy): Promise<void> {
  const account = await renewIfPeriodEnded(tx, await lockAccount(tx, clock, accountId));
  const subscription = await readSubscription(tx, accountId);
  if (!subscription || subscription.stripeSubscriptionId !== subscriptionId || subscription.status === 'CANCELED') return;
  await tx.account.update({ where: { id: accountId }, data: { subscriptionStatus: 'CANCELED', subscriptionCancelAtPeriodEnd: false } });
  const freePlan = policy.freePlanCode ? await findPlanByCode(tx, policy.freePlanCode) : null;
  if (freePlan) {
    await changePlan(tx, clock, { accountId, planCode: freePlan.code, timing: 'IMMEDIATELY', actorRole: 'ADMIN' });
    await tx.account.update({ where: { id: accountId }, data: { ...CLEAR_PAST_DUE, usageRefusedFrom: null, usageRefusedReason: null } });
    return;
  }
  const from = subscription.usageRefusedFrom && subscription.usageRefusedFrom.getTime() < account.now.getTime() ? subscription.usageRefusedFrom : account.now;
  await tx.account.update({ where: { id: accountId }, data: { usageRefusedFrom: from, usageRefusedReason: 'SUBSCRIPTION_ENDED' } });
}
