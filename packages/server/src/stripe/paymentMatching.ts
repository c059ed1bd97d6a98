import type Stripe from 'stripe';
import type { Tx } from '../db/transaction.ts';

/** What a Stripe object (a Checkout Session or a PaymentIntent) says was paid, by whom, for what. */
export interface StripePayment {
  kind: 'checkout_session' | 'payment_intent';
  id: string;
  /** Minor units collected. */
  amount: number | null;
  currency: string | null;
  customerId: string | null;
  /** The purchase and account the object names in its metadata or client_reference_id, if any. */
  claimedPurchaseId: string | null;
  claimedAccountId: string | null;
}

/** The id of a Stripe reference, which Stripe gives as an id or, when expanded, as the object. */
export function stripeIdOf(value: string | { id: string } | null | undefined): string | null {
  if (!value) return null;
  return typeof value === 'string' ? value : value.id;
}

export function paymentOfSession(session: Stripe.Checkout.Session): StripePayment {
  return {
    kind: 'checkout_session',
    id: session.id,
    amount: session.amount_total,
    currency: session.currency,
    customerId: stripeIdOf(session.customer),
    claimedPurchaseId: session.metadata?.purchase_id ?? session.client_reference_id ?? null,
    claimedAccountId: session.metadata?.account_id ?? null,
  };
}

export function paymentOfIntent(intent: Stripe.PaymentIntent): StripePayment {
  return {
    kind: 'payment_intent',
    id: intent.id,
    amount: intent.amount_received,
    currency: intent.currency,
    customerId: stripeIdOf(intent.customer),
    claimedPurchaseId: intent.metadata?.purchase_id ?? null,
    claimedAccountId: intent.metadata?.account_id ?? null,
  };
}

/** A purchase as the matching needs it: what it recorded of Stripe, and its account's customer. */
export interface RecordedPurchase {
  id: string;
  accountId: string;
  amount: number;
  currency: string;
  checkoutSessionId: string | null;
  paymentIntentId: string | null;
  stripeCustomerId: string | null;
}

/**
 * The purchase that recorded this Stripe object's id (the Checkout Session we created for it, or the
 * PaymentIntent recorded when it was paid). Ids the object merely claims (metadata,
 * client_reference_id) never select a purchase: anyone able to start a payment on the same Stripe
 * account (a Payment Link takes client_reference_id from its URL) could name any purchase.
 */
export async function findRecordedPurchase(tx: Tx, payment: Pick<StripePayment, 'kind' | 'id'>): Promise<RecordedPurchase | null> {
  const where = payment.kind === 'checkout_session' ? { checkoutSessionId: payment.id } : { paymentIntentId: payment.id };
  const purchase = await tx.topUpPurchase.findUnique({ where, include: { account: { select: { stripeCustomerId: true } } } });
  if (!purchase) return null;
  return {
    id: purchase.id,
    accountId: purchase.accountId,
    amount: purchase.amount,
    currency: purchase.currency,
    checkoutSessionId: purchase.checkoutSessionId,
    paymentIntentId: purchase.paymentIntentId,
    stripeCustomerId: purchase.account.stripeCustomerId,
  };
}

/**
 * Why the Stripe object may not settle the purchase, or null when it may: it must be the object
 * recorded for the purchase, for the purchase's amount and currency, paid by its account's Stripe
 * customer, and whatever purchase or account it names must be that one.
 */
export function paymentMismatch(purchase: RecordedPurchase | null, payment: StripePayment): string | null {
  if (!purchase) return `no purchase recorded ${payment.kind} ${payment.id}`;
  const recorded = payment.kind === 'checkout_session' ? purchase.checkoutSessionId : purchase.paymentIntentId;
  if (recorded !== payment.id) return `purchase ${purchase.id} recorded ${payment.kind} ${recorded ?? 'none'}, not ${payment.id}`;
  if (payment.amount !== purchase.amount) return `amount ${payment.amount ?? 'none'} is not the purchase's ${purchase.amount}`;
  if (payment.currency?.toUpperCase() !== purchase.currency.toUpperCase()) return `currency ${payment.currency ?? 'none'} is not the purchase's ${purchase.currency}`;
  if (purchase.stripeCustomerId === null || payment.customerId !== purchase.stripeCustomerId) {
    return `customer ${payment.customerId ?? 'none'} is not the Stripe customer of account ${purchase.accountId}`;
  }
  if (payment.claimedAccountId !== null && payment.claimedAccountId !== purchase.accountId) return `it names account ${payment.claimedAccountId}`;
  if (payment.claimedPurchaseId !== null && payment.claimedPurchaseId !== purchase.id) return `it names purchase ${payment.claimedPurchaseId}`;
  return null;
}
