import type { Logger } from 'pino';
import type Stripe from 'stripe';
import { inTransaction } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { findRecordedPurchase, paymentMismatch, paymentOfIntent, paymentOfSession, type StripePayment } from './paymentMatching.ts';
import { completePurchase, failPurchase, findPurchase, type TopUpPurchaseRecord } from './purchases.ts';
import type { StripeGateway } from './stripeGateway.ts';

/**
 * Stripe keeps an idempotency key 24 hours: before that, an off-session payment is resumed by
 * replaying its key (PurchaseService.retryStalePending); after, only a search can say whether it
 * was charged, and a replay could charge twice.
 */
export const IDEMPOTENCY_KEY_LIFETIME_MS = 23 * 3_600_000;

/** A Checkout Session lives at most 24 hours: a purchase whose session was never recorded cannot be paid after that. */
const CHECKOUT_LIFETIME_MS = 24 * 3_600_000;

/** Purchases asked about per pass. */
const BATCH = 50;

export interface ReconcileOptions {
  prisma: PrismaClient;
  clock: Clock;
  gateway: StripeGateway;
  logger: Logger;
  /** A purchase still PENDING this long after it started (on its account's clock) is checked against Stripe. */
  afterMs: number;
}

export interface ReconcileOutcome {
  checked: number;
  completed: number;
  failed: number;
}

const idOf = (value: string | { id: string } | null | undefined): string | null => (value ? (typeof value === 'string' ? value : value.id) : null);

/**
 * The reconciliation job: purchases still PENDING `afterMs` after they started are checked against
 * Stripe (their Checkout Session, or their PaymentIntent) and completed or failed as Stripe says, so
 * that a lost webhook never leaves a paid purchase ungranted. Runners on any number of instances
 * claim disjoint purchases (`FOR UPDATE SKIP LOCKED`, then a lease: the next check of the same
 * purchase waits half its age, from `afterMs` to an hour); whatever races it (a webhook, another
 * runner, the synchronous charge), a purchase is granted once, by completePurchase under the
 * account lock.
 */
export class PurchaseReconciler {
  constructor(private readonly options: ReconcileOptions) {}

  async runOnce(): Promise<ReconcileOutcome> {
    const { prisma, clock, afterMs } = this.options;
    const now = clock.now();
    const claimed = await prisma.$queryRaw<Array<{ id: string; age_ms: number }>>`
      WITH due AS (
        SELECT p.id, coalesce(tc.frozen_time, ${now}) AS account_now
        FROM top_up_purchases p
        JOIN accounts a ON a.id = p.account_id
        LEFT JOIN test_clocks tc ON tc.id = a.test_clock_id
        WHERE p.status IN ('PENDING', 'REQUIRES_ACTION')
          AND (p.reconcile_not_before IS NULL OR p.reconcile_not_before <= ${now})
          AND p.created_at <= coalesce(tc.frozen_time, ${now}) - ${afterMs} * interval '1 millisecond'
        ORDER BY p.created_at
        LIMIT ${BATCH}
        FOR UPDATE OF p SKIP LOCKED
      )
      UPDATE top_up_purchases t
      SET reconcile_not_before = ${now}::timestamp
        + greatest(${afterMs} * interval '1 millisecond', least((due.account_now - t.created_at) / 2, interval '1 hour'))
      FROM due WHERE t.id = due.id
      RETURNING t.id, (extract(epoch FROM due.account_now - t.created_at) * 1000)::float8 AS age_ms`;
    const outcome: ReconcileOutcome = { checked: claimed.length, completed: 0, failed: 0 };
    for (const { id, age_ms: ageMs } of claimed) {
      try {
        const result = await this.reconcile(id, ageMs);
        if (result?.status === 'COMPLETED') outcome.completed += 1;
        if (result?.status === 'FAILED') outcome.failed += 1;
      } catch (error) {
        // Stripe unreachable or a conflict: the lease brings it back later.
        this.options.logger.warn({ err: error, purchaseId: id }, 'purchase reconciliation failed; it will be tried again');
      }
    }
    return outcome;
  }

  private async reconcile(purchaseId: string, ageMs: number): Promise<TopUpPurchaseRecord | null> {
    const { gateway } = this.options;
    const purchase = await findPurchase(this.options.prisma, purchaseId);
    // REQUIRES_ACTION: the customer authenticates in a Checkout Session, whose webhook may be lost too.
    if (!purchase || (purchase.status !== 'PENDING' && purchase.status !== 'REQUIRES_ACTION')) return purchase;
    if (purchase.checkoutSessionId) return this.applySession(purchase, await gateway.retrieveCheckoutSession(purchase.checkoutSessionId));
    if (!purchase.offSession) {
      // The session was never recorded, so its URL never reached the customer: nobody can pay it.
      if (ageMs < CHECKOUT_LIFETIME_MS) return purchase;
      return this.fail(purchase.id, 'checkout_not_started', 'no Checkout Session was recorded for the purchase');
    }
    if (purchase.paymentIntentId) return this.applyIntent(purchase, await gateway.retrievePaymentIntent(purchase.paymentIntentId));
    // Younger ones are resumed with their idempotency key by the stale-purchase retry.
    if (ageMs < IDEMPOTENCY_KEY_LIFETIME_MS) return purchase;
    const intents = await gateway.searchPaymentIntentsOfPurchase(purchase.id);
    const intent = intents.find((candidate) => candidate.status === 'succeeded') ?? intents[0];
    if (!intent) return this.fail(purchase.id, 'payment_not_started', 'Stripe has no payment for the purchase');
    return this.applyIntent(purchase, intent);
  }

  private async applySession(purchase: TopUpPurchaseRecord, session: Stripe.Checkout.Session): Promise<TopUpPurchaseRecord | null> {
    if (session.status === 'expired') return this.fail(purchase.id, 'checkout_expired', 'the Checkout Session expired unpaid');
    if (session.status !== 'complete' || (session.payment_status !== 'paid' && session.payment_status !== 'no_payment_required')) return purchase;
    const payment = paymentOfSession(session);
    return this.complete(purchase, payment, idOf(session.payment_intent));
  }

  private async applyIntent(purchase: TopUpPurchaseRecord, intent: Stripe.PaymentIntent): Promise<TopUpPurchaseRecord | null> {
    if (intent.status === 'canceled') return this.fail(purchase.id, 'payment_canceled', `payment ${intent.id} was canceled`);
    if (intent.status === 'requires_payment_method') {
      const error = intent.last_payment_error;
      return this.fail(purchase.id, error?.decline_code ?? error?.code ?? 'payment_failed', error?.message ?? `payment ${intent.id} failed`);
    }
    // Processing, or waiting for the customer (authentication): Stripe has not decided yet.
    if (intent.status !== 'succeeded') return purchase;
    const payment = paymentOfIntent(intent);
    return this.complete(purchase, payment, intent.id);
  }

  /**
   * Completes the purchase when the object Stripe answered settles it (paymentMatching.ts). A
   * PaymentIntent found by search was never recorded; it must name this purchase and its account
   * (metadata only we set, through the secret key), besides amount, currency and customer.
   */
  private async complete(purchase: TopUpPurchaseRecord, payment: StripePayment, paymentIntentId: string | null): Promise<TopUpPurchaseRecord | null> {
    return inTransaction(this.options.prisma, async (tx) => {
      const recorded = await findRecordedPurchase(tx, payment);
      const found = payment.kind === 'payment_intent' && purchase.paymentIntentId === null;
      const candidate =
        recorded ??
        (found && payment.claimedPurchaseId === purchase.id && payment.claimedAccountId === purchase.accountId
          ? await this.recordedWith(tx, purchase, payment.id)
          : null);
      if (candidate && candidate.id !== purchase.id) return findPurchase(tx, purchase.id);
      const mismatch = paymentMismatch(candidate, payment);
      if (mismatch !== null) {
        this.options.logger.warn({ purchaseId: purchase.id, stripeObjectId: payment.id, mismatch }, 'Stripe object does not match the pending purchase; left pending');
        return findPurchase(tx, purchase.id);
      }
      return completePurchase(tx, this.options.clock, purchase.id, paymentIntentId);
    });
  }

  private async recordedWith(tx: Parameters<typeof findRecordedPurchase>[0], purchase: TopUpPurchaseRecord, paymentIntentId: string) {
    const account = await tx.account.findUniqueOrThrow({ where: { id: purchase.accountId }, select: { stripeCustomerId: true } });
    return {
      id: purchase.id,
      accountId: purchase.accountId,
      amount: purchase.amount.amount,
      currency: purchase.amount.currency,
      checkoutSessionId: purchase.checkoutSessionId,
      paymentIntentId: purchase.paymentIntentId ?? paymentIntentId,
      stripeCustomerId: account.stripeCustomerId,
    };
  }

  private fail(purchaseId: string, code: string, message: string): Promise<TopUpPurchaseRecord | null> {
    return inTransaction(this.options.prisma, (tx) => failPurchase(tx, this.options.clock, purchaseId, code, message));
  }
}
