import type Stripe from 'stripe';
import type { StripeGateway } from '../stripe/stripeGateway.ts';
import { stripeIdOf } from '../stripe/paymentMatching.ts';

/** What the product keeps of a Stripe subscription. */
export interface SubscriptionFacts {
  id: string;
  customerId: string;
  status: Stripe.Subscription.Status;
  /** Unix seconds: the instant its billing cycle is anchored on. */
  billingCycleAnchor: number;
  itemId: string;
  priceId: string;
  cancelAtPeriodEnd: boolean;
  latestInvoiceId: string | null;
}

export interface InvoiceFacts {
  id: string;
  status: Stripe.Invoice.Status | null;
  amountDue: number;
  amountPaid: number;
  currency: string;
  hostedInvoiceUrl: string | null;
}


export function subscriptionFacts(subscription: Stripe.Subscription): SubscriptionFacts {
  const item = subscription.items.data[0];
  if (!item) throw new Error(`Stripe subscription ${subscription.id} has no item`);
  return {
    id: subscription.id,
    customerId: stripeIdOf(subscription.customer) ?? '',
    status: subscription.status,
    billingCycleAnchor: subscription.billing_cycle_anchor,
    itemId: item.id,
    priceId: item.price.id,
    cancelAtPeriodEnd: subscription.cancel_at_period_end,
    latestInvoiceId: stripeIdOf(subscription.latest_invoice),
  };
}

export function invoiceFacts(invoice: Stripe.Invoice): InvoiceFacts {
  return {
    id: invoice.id ?? '',
    status: invoice.status,
    amountDue: invoice.amount_due,
    amountPaid: invoice.amount_paid,
    currency: invoice.currency,
    hostedInvoiceUrl: invoice.hosted_invoice_url ?? null,
  };
}

/** The subscription an invoice belongs to, or null for an invoice of none. */
export function subscriptionOfInvoice(invoice: Stripe.Invoice): string | null {
  return stripeIdOf(invoice.parent?.subscription_details?.subscription ?? null);
}

/**
 * The Stripe Billing calls of plans sold through Stripe, through the official client. Like the
 * purchase calls, each carries an idempotency key derived from our own ids, and none is made inside
 * a database transaction.
 */
export class StripeBilling {
  constructor(private readonly gateway: StripeGateway) {}

  private get client(): Stripe {
    return this.gateway.client;
  }

  /** A recurring Price for the plan's price and interval (with a Product named after the plan). */
  async createPlanPrice(plan: { id: string; code: string; name: string; interval: 'MONTH' | 'YEAR'; price: { amount: number; currency: string } }): Promise<Stripe.Price> {
    const interval = plan.interval === 'YEAR' ? 'year' : 'month';
    const currency = plan.price.currency.toLowerCase();
    return this.client.prices.create(
      {
        currency,
        unit_amount: plan.price.amount,
        recurring: { interval },
        product_data: { name: plan.name, metadata: { plan_code: plan.code } },
        metadata: { plan_code: plan.code },
      },
      { idempotencyKey: `price:${plan.id}:${plan.price.amount}:${currency}:${interval}` },
    );
  }

  retrievePrice(priceId: string): Promise<Stripe.Price> {
    return this.client.prices.retrieve(priceId);
  }

  /** A Stripe test clock at the given time, mirroring one of ours (key: our clock and its time). */
  async createTestClock(testClockId: string, frozenTime: Date): Promise<string> {
    const seconds = Math.floor(frozenTime.getTime() / 1000);
    const clock = await this.client.testHelpers.testClocks.create(
      { frozen_time: seconds, name: `billing test clock ${testClockId}` },
      { idempotencyKey: `test-clock:${testClockId}:${seconds}` },
    );
    return clock.id;
  }

  /** Moves a mirrored Stripe test clock to `to`, unless it is there already (a retried advance). */
  async advanceTestClock(stripeTestClockId: string, to: Date): Promise<void> {
    const seconds = Math.floor(to.getTime() / 1000);
    const clock = await this.client.testHelpers.testClocks.retrieve(stripeTestClockId);
    if (clock.frozen_time >= seconds) return;
    await this.client.testHelpers.testClocks.advance(stripeTestClockId, { frozen_time: seconds });
  }

  /** The account's customer; on a test clock, it lives by the Stripe test clock mirroring it. */
  async createCustomer(accountId: string, accountName: string, stripeTestClockId: string | null): Promise<string> {
    const customer = await this.client.customers.create(
      { name: accountName, metadata: { account_id: accountId }, ...(stripeTestClockId ? { test_clock: stripeTestClockId } : {}) },
      // Without a clock, the same request and key as a purchase's first customer (either may come first).
      { idempotencyKey: stripeTestClockId ? `customer:${accountId}:${stripeTestClockId}` : `customer:${accountId}` },
    );
    return customer.id;
  }

  async createSubscriptionCheckout(input: {
    checkoutId: string;
    accountId: string;
    customerId: string;
    priceId: string;
    planCode: string;
    successUrl: string;
    cancelUrl: string;
  }): Promise<{ id: string; url: string }> {
    const metadata = { subscription_checkout_id: input.checkoutId, account_id: input.accountId, plan_code: input.planCode };
    const session = await this.client.checkout.sessions.create(
      {
        mode: 'subscription',
        customer: input.customerId,
        client_reference_id: input.checkoutId,
        line_items: [{ price: input.priceId, quantity: 1 }],
        success_url: input.successUrl,
        cancel_url: input.cancelUrl,
        metadata,
        subscription_data: { metadata },
      },
      { idempotencyKey: `subscription-checkout:${input.checkoutId}` },
    );
    if (!session.url) throw new Error(`Stripe returned checkout session ${session.id} without a url`);
    return { id: session.id, url: session.url };
  }

  async retrieveSubscription(subscriptionId: string): Promise<SubscriptionFacts> {
    return subscriptionFacts(await this.client.subscriptions.retrieve(subscriptionId));
  }

  /**
   * Moves the subscription's item to another price, keeping the billing cycle anchor. `always_invoice`
   * invoices the proration now and, with `pending_if_incomplete`, applies the change only once that
   * invoice is paid; `none` changes the price from the next renewal on (a downgrade at the period end).
   */
  async changeSubscriptionPrice(input: {
    changeId: string;
    subscriptionId: string;
    itemId: string;
    priceId: string;
    proration: 'always_invoice' | 'none';
  }): Promise<{ subscription: SubscriptionFacts; invoice: InvoiceFacts | null }> {
    const subscription = await this.client.subscriptions.update(
      input.subscriptionId,
      {
        items: [{ id: input.itemId, price: input.priceId }],
        proration_behavior: input.proration,
        billing_cycle_anchor: { type: 'unchanged' },
        ...(input.proration === 'always_invoice' ? { payment_behavior: 'pending_if_incomplete' as const } : {}),
        expand: ['latest_invoice'],
      },
      { idempotencyKey: `subscription-change:${input.changeId}` },
    );
    const latest = subscription.latest_invoice;
    const invoice = input.proration === 'always_invoice' && latest && typeof latest !== 'string' ? invoiceFacts(latest) : null;
    return { subscription: subscriptionFacts(subscription), invoice };
  }

  async cancelAtPeriodEnd(subscriptionId: string, requestId: string): Promise<SubscriptionFacts> {
    return subscriptionFacts(
      await this.client.subscriptions.update(subscriptionId, { cancel_at_period_end: true }, { idempotencyKey: `subscription-cancel:${requestId}` }),
    );
  }
}
