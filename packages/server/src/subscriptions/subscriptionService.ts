import type { Logger } from 'pino';
import type Stripe from 'stripe';
import { changePlan, type PlanChangeTiming } from '../accounts/changePlan.ts';
import { findAccountState, type LockedAccount } from '../accounts/lockAccount.ts';
import { lockAccount } from '../accounts/lockAccount.ts';
import { findPlanByCode, getPlanById, type PlanRecord } from '../catalog/plans.ts';
import { inTransaction, type Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { assertIdempotencyKey } from '../ledger/usageInput.ts';
import { assertRedirectUrl } from '../stripe/purchases.ts';
import type { StripeEventHook } from '../stripe/purchaseService.ts';
import type { StripeGateway } from '../stripe/stripeGateway.ts';
import { StripeBilling, subscriptionFacts, subscriptionOfInvoice, type SubscriptionFacts } from './stripeBilling.ts';
import { stripeIdOf } from '../stripe/paymentMatching.ts';
import {
  endSubscription,
  isLive,
  markInvoicePaid,
  markPastDue,
  markUnpaid,
  readSubscription,
  scheduleEnd,
  startSubscription,
  type SubscriptionPolicy,
} from './subscriptions.ts';

export interface SubscriptionCheckoutRecord {
  id: string;
  accountId: string;
  planId: string;
  status: 'PENDING' | 'COMPLETED' | 'EXPIRED';
  checkoutUrl: string | null;
  createdAt: Date;
  completedAt: Date | null;
}

export interface SubscribeCommand {
  accountId: string;
  planCode: string;
  successUrl: string;
  cancelUrl: string;
  idempotencyKey: string;
}

export interface PaidPlanChange {
  accountId: string;
  planCode: string;
  timing?: PlanChangeTiming | null;
}


/** Price per month, so monthly and yearly plans compare (as changePlan compares them). */
function monthlyPrice(plan: PlanRecord): number {
  return plan.interval === 'YEAR' ? plan.price.amount / 12 : plan.price.amount;
}

function toCheckoutRecord(row: {
  id: string;
  accountId: string;
  planId: string;
  status: string;
  checkoutUrl: string | null;
  createdAt: Date;
  completedAt: Date | null;
}): SubscriptionCheckoutRecord {
  return { ...row, status: row.status as SubscriptionCheckoutRecord['status'] };
}

/**
 * Plans sold through Stripe Billing: linking plans to Prices, subscribing through Checkout, paid plan
 * changes, cancellation, test clocks mirrored in Stripe, and the webhook events of subscriptions and
 * their invoices. As with purchases, intent is recorded before Stripe is called, every call carries
 * an idempotency key derived from our ids, no call is made inside a transaction, and an event acts
 * only on the objects we recorded (the Checkout Session, then the subscription it created, then the
 * invoices of that subscription).
 */
export class SubscriptionService {
  private readonly billing: StripeBilling | null;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly clock: Clock,
    gateway: StripeGateway | null,
    private readonly logger: Logger,
    readonly policy: SubscriptionPolicy,
  ) {
    this.billing = gateway ? new StripeBilling(gateway) : null;
  }

  private requireBilling(): StripeBilling {
    if (!this.billing) throw new BillingError(ErrorCode.STRIPE_NOT_CONFIGURED, 'plans cannot be sold: STRIPE_SECRET_KEY is not configured');
    return this.billing;
  }

  /**
   * Stripe's answer sorted as the gateway sorts it: a refusal for good (4xx other than 409 and 429)
   * is the caller's (PAYMENT_DECLINED for a card, INVALID_INPUT otherwise, with Stripe's code); a
   * network failure, 5xx, 409 or 429 is STRIPE_UNAVAILABLE, to retry.
   */
  private async callStripe<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof BillingError) throw error;
      const { statusCode, code, message } = error as { statusCode?: number; code?: string; message?: string };
      if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500 && statusCode !== 409 && statusCode !== 429) {
        throw new BillingError(statusCode === 402 ? ErrorCode.PAYMENT_DECLINED : ErrorCode.INVALID_INPUT, `Stripe refused the request: ${message ?? code ?? statusCode}`, {
          stripeCode: code ?? null,
        });
      }
      this.logger.warn({ err: error }, 'Stripe call failed');
      throw new BillingError(ErrorCode.STRIPE_UNAVAILABLE, 'Stripe could not be reached; retry');
    }
  }

  /**
   * Links a plan to a recurring Stripe Price: the one given (which must bill the plan's price,
   * currency and interval), or one created now from the plan (idempotent on the plan and its price).
   */
  async linkPlanToStripePrice(planCode: string, stripePriceId: string | null | undefined): Promise<PlanRecord> {
    const billing = this.requireBilling();
    const plan = await findPlanByCode(this.prisma, planCode);
    if (!plan) throw new BillingError(ErrorCode.PLAN_NOT_FOUND, `plan ${planCode} not found`);
    let priceId: string;
    if (stripePriceId) {
      if (stripePriceId.length > 255 || !/^price_[A-Za-z0-9_]+$/.test(stripePriceId)) throw invalidInput('stripePriceId must be a Stripe Price id (price_…)', 'stripePriceId');
      const price = await this.callStripe(() => billing.retrievePrice(stripePriceId)).catch((error: unknown) => {
        throw error instanceof BillingError ? invalidInput(`Stripe has no usable price ${stripePriceId}`, 'stripePriceId') : error;
      });
      const interval = plan.interval === 'YEAR' ? 'year' : 'month';
      if (price.recurring?.interval !== interval || price.recurring.interval_count !== 1) {
        throw invalidInput(`price ${price.id} must recur every ${interval}, as plan ${plan.code} does`, 'stripePriceId');
      }
      if (price.currency.toUpperCase() !== plan.price.currency || price.unit_amount !== plan.price.amount) {
        throw invalidInput(`price ${price.id} bills ${price.unit_amount} ${price.currency}, plan ${plan.code} costs ${plan.price.amount} ${plan.price.currency}`, 'stripePriceId');
      }
      priceId = price.id;
    } else {
      priceId = (await this.callStripe(() => billing.createPlanPrice(plan))).id;
    }
    await this.prisma.plan.update({ where: { id: plan.id }, data: { stripePriceId: priceId } });
    return { ...plan, stripePriceId: priceId };
  }

  /** The account's Stripe customer, created once; an account on a test clock gets one on the Stripe test clock mirroring it. */
  private async ensureCustomer(billing: StripeBilling, accountId: string): Promise<string> {
    const account = await this.prisma.account.findUniqueOrThrow({ where: { id: accountId }, select: { name: true, stripeCustomerId: true, testClockId: true } });
    if (account.stripeCustomerId) return account.stripeCustomerId;
    let stripeTestClockId: string | null = null;
    if (account.testClockId) {
      const testClock = await this.prisma.testClock.findUniqueOrThrow({ where: { id: account.testClockId } });
      stripeTestClockId = testClock.stripeTestClockId ?? (await billing.createTestClock(testClock.id, testClock.frozenTime));
      await this.prisma.testClock.updateMany({ where: { id: testClock.id, stripeTestClockId: null }, data: { stripeTestClockId } });
      stripeTestClockId = (await this.prisma.testClock.findUniqueOrThrow({ where: { id: testClock.id } })).stripeTestClockId;
    }
    const customerId = await billing.createCustomer(accountId, account.name, stripeTestClockId);
    await this.prisma.account.updateMany({ where: { id: accountId, stripeCustomerId: null }, data: { stripeCustomerId: customerId } });
    return (await this.prisma.account.findUniqueOrThrow({ where: { id: accountId }, select: { stripeCustomerId: true } })).stripeCustomerId ?? customerId;
  }

  /**
   * Starts a subscription-mode Checkout for the account and the plan's Stripe Price. The account is
   * on the plan once Stripe confirms (checkout.session.completed). The same idempotency key and input
   * return the same Checkout.
   */
  async subscribeToPlan(command: SubscribeCommand): Promise<SubscriptionCheckoutRecord> {
    const billing = this.requireBilling();
    const idempotencyKey = assertIdempotencyKey(command.idempotencyKey);
    const successUrl = assertRedirectUrl(command.successUrl, 'successUrl', 'to subscribe');
    const cancelUrl = assertRedirectUrl(command.cancelUrl, 'cancelUrl', 'to subscribe');
    const { checkout, plan } = await inTransaction(this.prisma, async (tx) => {
      const plan = await findPlanByCode(tx, command.planCode);
      if (!plan) throw new BillingError(ErrorCode.PLAN_NOT_FOUND, `plan ${command.planCode} not found`);
      const account = await lockAccount(tx, this.clock, command.accountId);
      const previous = await tx.subscriptionCheckout.findUnique({ where: { accountId_idempotencyKey: { accountId: account.id, idempotencyKey } } });
      if (previous) {
        if (previous.planId !== plan.id || previous.successUrl !== successUrl || previous.cancelUrl !== cancelUrl) {
          throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${idempotencyKey} was already used with a different subscription checkout`);
        }
        return { checkout: previous, plan };
      }
      if (!plan.stripePriceId) throw new BillingError(ErrorCode.PLAN_NOT_SOLD_THROUGH_STRIPE, `plan ${plan.code} is not linked to a Stripe Price`, { planCode: plan.code });
      if (isLive(await readSubscription(tx, account.id))) {
        throw new BillingError(ErrorCode.SUBSCRIPTION_EXISTS, 'the account already has a subscription: change its plan with changePlan, or cancel it first');
      }
      const checkout = await tx.subscriptionCheckout.create({
        data: { accountId: account.id, planId: plan.id, idempotencyKey, successUrl, cancelUrl, createdAt: account.now },
      });
      return { checkout, plan };
    });
    if (checkout.status !== 'PENDING' || checkout.checkoutUrl) return toCheckoutRecord(checkout);
    const priceId = plan.stripePriceId;
    if (!priceId) throw new BillingError(ErrorCode.PLAN_NOT_SOLD_THROUGH_STRIPE, `plan ${plan.code} is not linked to a Stripe Price`, { planCode: plan.code });
    const customerId = await this.callStripe(() => this.ensureCustomer(billing, checkout.accountId));
    const session = await this.callStripe(() =>
      billing.createSubscriptionCheckout({ checkoutId: checkout.id, accountId: checkout.accountId, customerId, priceId, planCode: plan.code, successUrl, cancelUrl }),
    );
    await this.prisma.subscriptionCheckout.updateMany({ where: { id: checkout.id, checkoutSessionId: null }, data: { checkoutSessionId: session.id, checkoutUrl: session.url } });
    return toCheckoutRecord(await this.prisma.subscriptionCheckout.findUniqueOrThrow({ where: { id: checkout.id } }));
  }

  /**
   * A plan change of an account with a live subscription to a plan sold through Stripe goes through
   * the subscription; anything else returns null (changePlan as before: the operator's, or a
   * self-serve plan's). An upgrade (or IMMEDIATELY) updates the subscription with Stripe's proration
   * invoiced at once (`always_invoice`, `pending_if_incomplete`): the new plan applies, and its
   * credits are granted, when that invoice is paid, exactly once, whether the call's answer or the
   * invoice.paid webhook tells first. A downgrade (or AT_PERIOD_END) changes the price from the next
   * renewal (`proration_behavior=none`) and the plan at the period end. The anchor stays unchanged;
   * a change of interval (which Stripe re-anchors at once) is refused. So is a change, by any key, to
   * a plan not sold through Stripe while the subscription lives: Stripe would go on charging the old
   * plan's price for a plan the ledger no longer grants (or grant the new plan's credits for the old
   * price); cancelling the subscription first ends it at the period end (SUBSCRIPTION_FREE_PLAN_CODE).
   */
  async changePlanThroughStripe(command: PaidPlanChange): Promise<LockedAccount | null> {
    if (!this.billing) return null;
    const billing = this.billing;
    const target = await findPlanByCode(this.prisma, command.planCode);
    const subscription = await readSubscription(this.prisma, command.accountId);
    if (!target || !isLive(subscription)) return null;
    const account = await findAccountState(this.prisma, this.clock, command.accountId);
    if (!account) return null;
    const current = await getPlanById(this.prisma, account.planId);
    if (!target.stripePriceId) {
      if (target.id === current.id) return null;
      throw new BillingError(
        ErrorCode.PLAN_NOT_SOLD_THROUGH_STRIPE,
        `the account pays for its plan through a Stripe subscription and plan ${target.code} is not linked to a Stripe Price: link it (linkPlanToStripePrice) or cancel the subscription first`,
        { planCode: target.code },
      );
    }
    if (subscription.status !== 'ACTIVE') throw invalidInput('the subscription has an unpaid invoice: pay it before changing plans', 'planCode');
    if (subscription.cancelAtPeriodEnd) throw invalidInput('the subscription ends at the period end: subscribe again after it ends to change plans', 'planCode');
    if (target.interval !== current.interval) {
      throw invalidInput(`plan ${target.code} bills every ${target.interval.toLowerCase()}, the subscription every ${current.interval.toLowerCase()}: cancel and subscribe to change the interval`, 'planCode');
    }
    const awaiting = await this.prisma.subscriptionChange.findFirst({ where: { accountId: account.id, kind: 'UPGRADE', status: 'PENDING' } });
    if (awaiting) {
      // Stripe's answer to this upgrade was lost before its invoice was recorded: the same request
      // again (the same idempotency key, so Stripe answers what it did) records it and applies it if paid.
      if (awaiting.stripeInvoiceId === null && awaiting.toPlanId === target.id) return this.sendPriceChange(billing, account, subscription, awaiting.id, target, 'IMMEDIATELY');
      throw invalidInput('an upgrade is waiting for its invoice to be paid', 'planCode');
    }
    if (target.id === current.id) {
      // Back to the plan in force: a pending downgrade is called off, in Stripe too (no proration).
      return account.pendingPlanId ? this.updatePrice(billing, account, subscription, current, target, 'AT_PERIOD_END') : account;
    }
    const timing = command.timing ?? (monthlyPrice(target) > monthlyPrice(current) ? 'IMMEDIATELY' : 'AT_PERIOD_END');
    return this.updatePrice(billing, account, subscription, current, target, timing);
  }

  private async updatePrice(
    billing: StripeBilling,
    account: LockedAccount,
    subscription: { stripeSubscriptionId: string; stripeSubscriptionItemId: string },
    current: PlanRecord,
    target: PlanRecord,
    timing: PlanChangeTiming,
  ): Promise<LockedAccount> {
    const change = await this.prisma.subscriptionChange.create({
      data: {
        accountId: account.id,
        kind: timing === 'IMMEDIATELY' ? 'UPGRADE' : 'DOWNGRADE',
        fromPlanId: current.id,
        toPlanId: target.id,
        stripeSubscriptionId: subscription.stripeSubscriptionId,
        createdAt: account.now,
      },
    });
    return this.sendPriceChange(billing, account, subscription, change.id, target, timing);
  }

  /** Sends a recorded plan change to Stripe (idempotent on the change) and records or applies what Stripe answered. */
  private async sendPriceChange(
    billing: StripeBilling,
    account: LockedAccount,
    subscription: { stripeSubscriptionId: string; stripeSubscriptionItemId: string },
    changeId: string,
    target: PlanRecord,
    timing: PlanChangeTiming,
  ): Promise<LockedAccount> {
    const priceId = target.stripePriceId ?? '';
    const result = await this.callStripe(() =>
      billing.changeSubscriptionPrice({
        changeId,
        subscriptionId: subscription.stripeSubscriptionId,
        itemId: subscription.stripeSubscriptionItemId,
        priceId,
        proration: timing === 'IMMEDIATELY' ? 'always_invoice' : 'none',
      }),
    );
    if (timing === 'AT_PERIOD_END') {
      return inTransaction(this.prisma, async (tx) => {
        await tx.subscriptionChange.update({ where: { id: changeId }, data: { status: 'APPLIED', appliedAt: account.now } });
        return changePlan(tx, this.clock, { accountId: account.id, planCode: target.code, timing: 'AT_PERIOD_END', actorRole: 'ADMIN' });
      });
    }
    const invoice = result.invoice;
    if (!invoice) throw new Error(`Stripe answered the update of ${subscription.stripeSubscriptionId} without its proration invoice`);
    await this.prisma.subscriptionChange.update({
      where: { id: changeId },
      data: { stripeInvoiceId: invoice.id, invoiceUrl: invoice.hostedInvoiceUrl, amountDue: invoice.amountDue, currency: invoice.currency.toUpperCase() },
    });
    if (invoice.status === 'paid') {
      await inTransaction(this.prisma, (tx) => this.applyPaidChange(tx, changeId, { amountPaid: invoice.amountPaid, currency: invoice.currency }));
    }
    const state = await findAccountState(this.prisma, this.clock, account.id);
    if (!state) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${account.id} not found`);
    return state;
  }

  /** Applies a paid upgrade once: the plan changes now and grants what it allocates beyond the period's grants. */
  private async applyPaidChange(tx: Tx, changeId: string, paid: { amountPaid: number; currency: string }): Promise<void> {
    const pending = await tx.subscriptionChange.findUniqueOrThrow({ where: { id: changeId } });
    const account = await lockAccount(tx, this.clock, pending.accountId);
    const [row] = await tx.$queryRaw<Array<{ status: string }>>`SELECT status FROM subscription_changes WHERE id = ${changeId} FOR UPDATE`;
    if (row?.status !== 'PENDING') return;
    if (pending.amountDue !== null && (paid.amountPaid !== pending.amountDue || paid.currency.toUpperCase() !== pending.currency)) {
      this.logger.warn({ changeId, paid, amountDue: pending.amountDue, currency: pending.currency }, 'paid amount does not match the plan change invoice; not applied');
      return;
    }
    const plan = await getPlanById(tx, pending.toPlanId);
    await changePlan(tx, this.clock, { accountId: pending.accountId, planCode: plan.code, timing: 'IMMEDIATELY', actorRole: 'ADMIN' });
    await tx.subscriptionChange.update({ where: { id: changeId }, data: { status: 'APPLIED', appliedAt: account.now } });
  }

  /** Ends the subscription at the period end, in Stripe and here (to the free plan, or usage refused after). */
  async cancelSubscription(accountId: string): Promise<LockedAccount> {
    const billing = this.requireBilling();
    const subscription = await readSubscription(this.prisma, accountId);
    if (!isLive(subscription)) throw new BillingError(ErrorCode.NOT_SUBSCRIBED, 'the account has no subscription that bills');
    if (!subscription.cancelAtPeriodEnd) {
      await this.callStripe(() => billing.cancelAtPeriodEnd(subscription.stripeSubscriptionId, subscription.stripeSubscriptionId));
    }
    return inTransaction(this.prisma, (tx) => scheduleEnd(tx, this.clock, accountId, this.policy));
  }

  /** After our test clock moved: the Stripe test clock mirroring it moves too, so Stripe renews at the same instants. */
  async afterTestClockAdvanced(testClockId: string, to: Date): Promise<void> {
    if (!this.billing) return;
    const billing = this.billing;
    const clock = await this.prisma.testClock.findUnique({ where: { id: testClockId }, select: { stripeTestClockId: true } });
    if (!clock?.stripeTestClockId) return;
    const stripeTestClockId = clock.stripeTestClockId;
    await this.callStripe(() => billing.advanceTestClock(stripeTestClockId, to));
  }

  // -------------------------------------------------------------------------------------------
  // Webhooks

  /** This service's share of the Stripe webhook (PurchaseService.handleWebhook calls it for every event). */
  asEventHook(): StripeEventHook {
    return {
      prepare: (event) => this.prepareEvent(event),
      apply: (tx, event, prepared) => this.applyEvent(tx, event, prepared as SubscriptionFacts | null),
    };
  }

  /** Outside the webhook's transaction: the subscription a completed subscription-mode Checkout created. */
  async prepareEvent(event: Stripe.Event): Promise<SubscriptionFacts | null> {
    if (event.type !== 'checkout.session.completed' && event.type !== 'checkout.session.async_payment_succeeded') return null;
    const session = event.data.object;
    const subscriptionId = stripeIdOf(session.subscription);
    if (session.mode !== 'subscription' || !subscriptionId) return null;
    const checkout = await this.prisma.subscriptionCheckout.findUnique({ where: { checkoutSessionId: session.id } });
    if (!checkout || checkout.status !== 'PENDING' || !this.billing) return null;
    const billing = this.billing;
    return billing.retrieveSubscription(subscriptionId);
  }

  /**
   * Applies an event about subscriptions in the webhook's transaction. Returns true when the event
   * was about subscriptions alone (nothing else needs it); invoice events return false, so that
   * other handlers (stored invoices) see them too.
   */
  async applyEvent(tx: Tx, event: Stripe.Event, prepared: SubscriptionFacts | null): Promise<boolean> {
    switch (event.type) {
      case 'checkout.session.completed':
      case 'checkout.session.async_payment_succeeded':
      case 'checkout.session.expired': {
        const session = event.data.object;
        if (session.mode !== 'subscription') return false;
        await this.applyCheckoutSession(tx, event, session, prepared);
        return true;
      }
      case 'customer.subscription.created':
      case 'customer.subscription.updated':
      case 'customer.subscription.deleted': {
        await this.applySubscription(tx, event.type, event.data.object);
        return true;
      }
      case 'invoice.paid':
      case 'invoice.payment_failed':
      case 'invoice.voided': {
        await this.applyInvoice(tx, event, event.data.object);
        return false;
      }
      default:
        return false;
    }
  }

  private mismatch(event: Stripe.Event, objectId: string, reason: string): void {
    this.logger.warn({ stripeEventId: event.id, eventType: event.type, stripeObjectId: objectId, mismatch: reason }, 'Stripe event does not match the subscription it concerns; acknowledged, nothing changed');
  }

  private async applyCheckoutSession(tx: Tx, event: Stripe.Event, session: Stripe.Checkout.Session, prepared: SubscriptionFacts | null): Promise<void> {
    const checkout = await tx.subscriptionCheckout.findUnique({ where: { checkoutSessionId: session.id }, include: { account: { select: { stripeCustomerId: true } } } });
    if (!checkout) return this.mismatch(event, session.id, 'no subscription checkout recorded this session');
    const [locked] = await tx.$queryRaw<Array<{ status: string }>>`SELECT status FROM subscription_checkouts WHERE id = ${checkout.id} FOR UPDATE`;
    if (locked?.status !== 'PENDING') return;
    const customerId = stripeIdOf(session.customer);
    if (!customerId || customerId !== checkout.account.stripeCustomerId) return this.mismatch(event, session.id, 'customer');
    if (event.type === 'checkout.session.expired') {
      await tx.subscriptionCheckout.update({ where: { id: checkout.id }, data: { status: 'EXPIRED' } });
      return;
    }
    if (session.payment_status !== 'paid' && session.payment_status !== 'no_payment_required') return;
    const subscriptionId = stripeIdOf(session.subscription);
    // The prepared read ran before this transaction; without it (Stripe unreachable) Stripe redelivers.
    if (!subscriptionId || !prepared || prepared.id !== subscriptionId) throw new Error(`the subscription of checkout session ${session.id} could not be read from Stripe`);
    if (prepared.customerId !== customerId) return this.mismatch(event, session.id, 'subscription customer');
    const account = await startSubscription(tx, this.clock, {
      accountId: checkout.accountId,
      planId: checkout.planId,
      subscriptionId,
      itemId: prepared.itemId,
      anchor: new Date(prepared.billingCycleAnchor * 1000),
    });
    await tx.subscriptionCheckout.update({ where: { id: checkout.id }, data: { status: 'COMPLETED', stripeSubscriptionId: subscriptionId, completedAt: account.now } });
    if (prepared.cancelAtPeriodEnd) await scheduleEnd(tx, this.clock, checkout.accountId, this.policy);
  }

  private async applySubscription(tx: Tx, type: string, object: Stripe.Subscription): Promise<void> {
    const account = await tx.account.findUnique({ where: { stripeSubscriptionId: object.id }, select: { id: true, stripeCustomerId: true } });
    // A subscription not recorded yet is bound by its Checkout's completion, which reads it afresh.
    if (!account) return;
    const facts = subscriptionFacts(object);
    if (facts.customerId !== account.stripeCustomerId) return;
    if (type === 'customer.subscription.deleted' || facts.status === 'canceled' || facts.status === 'incomplete_expired') {
      await endSubscription(tx, this.clock, account.id, object.id, this.policy);
      return;
    }
    if (facts.status === 'past_due' && facts.latestInvoiceId) await markPastDue(tx, this.clock, account.id, facts.latestInvoiceId, this.policy);
    if (facts.status === 'unpaid') await markUnpaid(tx, this.clock, account.id, facts.latestInvoiceId, this.policy);
    if (facts.cancelAtPeriodEnd) {
      const subscription = await readSubscription(tx, account.id);
      if (subscription && !subscription.cancelAtPeriodEnd && subscription.status !== 'CANCELED') await scheduleEnd(tx, this.clock, account.id, this.policy);
    }
  }

  private async applyInvoice(tx: Tx, event: Stripe.Event, invoice: Stripe.Invoice): Promise<void> {
    const subscriptionId = subscriptionOfInvoice(invoice);
    const invoiceId = invoice.id;
    if (!subscriptionId || !invoiceId) return;
    const customerId = stripeIdOf(invoice.customer);
    const account = await tx.account.findUnique({ where: { stripeSubscriptionId: subscriptionId }, select: { id: true, stripeCustomerId: true } });
    if (account && account.stripeCustomerId !== customerId) return this.mismatch(event, invoiceId, 'customer');
    if (event.type === 'invoice.paid') {
      if (invoice.billing_reason === 'subscription_update' && account) {
        const change = await tx.subscriptionChange.findUnique({ where: { stripeInvoiceId: invoiceId } });
        if (change) {
          await this.applyPaidChange(tx, change.id, { amountPaid: invoice.amount_paid, currency: invoice.currency });
        } else {
          const unrecorded = await tx.subscriptionChange.findFirst({ where: { stripeSubscriptionId: subscriptionId, kind: 'UPGRADE', status: 'PENDING', stripeInvoiceId: null } });
          // Paid before the update's answer recorded its invoice: Stripe delivers it again, after.
          if (unrecorded) throw new Error(`invoice.paid ${invoiceId} arrived before plan change ${unrecorded.id} recorded its invoice`);
        }
      }
      // The first invoice may be paid before the Checkout binds the subscription: remembered against the customer's account.
      const owner = account ?? (customerId ? await tx.account.findUnique({ where: { stripeCustomerId: customerId }, select: { id: true } }) : null);
      if (owner) await markInvoicePaid(tx, this.clock, owner.id, invoiceId);
      return;
    }
    if (!account) return;
    if (event.type === 'invoice.voided') {
      await tx.subscriptionChange.updateMany({ where: { stripeInvoiceId: invoiceId, status: 'PENDING' }, data: { status: 'FAILED' } });
      return;
    }
    // A failed upgrade invoice leaves the subscription as it was (a pending update): not a renewal debt.
    if (invoice.billing_reason === 'subscription_update') return;
    await markPastDue(tx, this.clock, account.id, invoiceId, this.policy);
  }
}
