import type Stripe from 'stripe';

export interface StripeSettings {
  secretKey: string;
  webhookSecret: string;
  /** Where the official client sends requests (a local Stripe-compatible server in tests). */
  apiBase?: string;
}

/** A card or payment refusal: the purchase failed and is not worth retrying as it is. */
export class PaymentDeclined extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'PaymentDeclined';
  }
}

/**
 * The Stripe calls the product makes, through the official client. Every call carries an
 * idempotency key derived from our own ids, so that a retry after a crash or a timeout can never
 * create a second customer, session or charge. None of these is ever called inside a database
 * transaction.
 */
export class StripeGateway {
  readonly client: Stripe;

  /** The official client is loaded only once Stripe is configured: without it, it is never resident. */
  static async create(settings: StripeSettings): Promise<StripeGateway> {
    const { default: StripeClient } = await import('stripe');
    return new StripeGateway(settings, StripeClient);
  }

  private constructor(
    readonly settings: StripeSettings,
    private readonly stripe: typeof Stripe,
  ) {
    const base = settings.apiBase ? new URL(settings.apiBase) : null;
    this.client = new stripe(settings.secretKey, {
      maxNetworkRetries: 2,
      timeout: 20_000,
      ...(base
        ? {
            host: base.hostname,
            port: base.port || (base.protocol === 'http:' ? 80 : 443),
            protocol: base.protocol === 'http:' ? 'http' : 'https',
          }
        : {}),
    });
  }

  async createCustomer(accountId: string, accountName: string): Promise<string> {
    const customer = await this.client.customers.create(
      { name: accountName, metadata: { account_id: accountId } },
      { idempotencyKey: `customer:${accountId}` },
    );
    return customer.id;
  }

  async createCheckoutSession(input: {
    purchaseId: string;
    accountId: string;
    customerId: string;
    packName: string;
    unitAmount: number;
    currency: string;
    quantity: number;
    successUrl: string;
    cancelUrl: string;
  }): Promise<{ id: string; url: string }> {
    const metadata = { purchase_id: input.purchaseId, account_id: input.accountId };
    const session = await this.client.checkout.sessions.create(
      {
        mode: 'payment',
        customer: input.customerId,
        client_reference_id: input.purchaseId,
        line_items: [
          {
            quantity: input.quantity,
            price_data: { currency: input.currency.toLowerCase(), unit_amount: input.unitAmount, product_data: { name: input.packName } },
          },
        ],
        success_url: input.successUrl,
        cancel_url: input.cancelUrl,
        metadata,
        payment_intent_data: { metadata },
      },
      { idempotencyKey: `checkout:${input.purchaseId}` },
    );
    if (!session.url) throw new Error(`Stripe returned checkout session ${session.id} without a url`);
    return { id: session.id, url: session.url };
  }

  /**
   * Charges the customer's default payment method without them present (partners, auto top-up).
   * A decline throws PaymentDeclined; other failures (network, Stripe down) throw as they are and
   * may be retried with the same purchase, hence the same idempotency key.
   */
  async chargeOffSession(input: { purchaseId: string; accountId: string; customerId: string; amount: number; currency: string }): Promise<string> {
    const customer = await this.client.customers.retrieve(input.customerId);
    const paymentMethod = customer.deleted ? null : customer.invoice_settings?.default_payment_method;
    const paymentMethodId = typeof paymentMethod === 'string' ? paymentMethod : (paymentMethod?.id ?? null);
    if (!paymentMethodId) throw new PaymentDeclined('payment_method_required', 'the customer has no default payment method for off-session payments');
    try {
      const intent = await this.client.paymentIntents.create(
        {
          amount: input.amount,
          currency: input.currency.toLowerCase(),
          customer: input.customerId,
          payment_method: paymentMethodId,
          off_session: true,
          confirm: true,
          metadata: { purchase_id: input.purchaseId, account_id: input.accountId },
        },
        { idempotencyKey: `payment:${input.purchaseId}` },
      );
      if (intent.status !== 'succeeded') throw new PaymentDeclined(intent.status, `payment ${intent.id} is ${intent.status}`);
      return intent.id;
    } catch (error) {
      if (error instanceof this.stripe.errors.StripeCardError) {
        throw new PaymentDeclined(error.decline_code ?? error.code ?? 'card_declined', error.message);
      }
      throw error;
    }
  }

  /** Verifies the signature over the raw body (default tolerance, 300 s) and parses the event. */
  constructEvent(rawBody: Buffer | string, signature: string): Stripe.Event {
    return this.client.webhooks.constructEvent(rawBody, signature, this.settings.webhookSecret);
  }
}
