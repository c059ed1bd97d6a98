import type Stripe from 'stripe';

export interface StripeSettings {
  secretKey: string;
  webhookSecret: string;
  /** Where the official client sends requests (a local Stripe-compatible server in tests). */
  apiBase?: string;
  /** Where Stripe's hosted pages send the customer back when the request named no URL (STRIPE_RETURN_URL). */
  returnUrl?: string;
}

/**
 * Stripe refused the request for good (HTTP 4xx other than 409 and 429): a declined card, an invalid
 * request, an amount below Stripe's minimum, a customer that no longer exists. Sending the same
 * request again would get the same answer, so the purchase fails with Stripe's code.
 */
export class StripeRefusal extends Error {
  constructor(
    /** Stripe's code: the decline code of a declined card (`insufficient_funds`), else the error code (`amount_too_small`). */
    readonly code: string,
    message: string,
    /** A card refusal (402) rather than a request Stripe found invalid. */
    readonly declined: boolean,
  ) {
    super(message);
    this.name = 'StripeRefusal';
  }
}

/** Stripe could not be reached or answered 5xx, 409 or 429: the same request may succeed later. */
export class StripeUnavailable extends Error {
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = 'StripeUnavailable';
  }
}

/**
 * An off-session payment that needs the customer (strong customer authentication): Stripe answered
 * `authentication_required`, or the PaymentIntent is `requires_action`. Nothing was charged.
 */
export class PaymentNeedsAuthentication extends Error {
  constructor(
    readonly paymentIntentId: string | null,
    readonly code: string,
  ) {
    super(`payment ${paymentIntentId ?? ''} needs the customer to authenticate it (${code})`);
    this.name = 'PaymentNeedsAuthentication';
  }
}

/** What a saved card shows: brand, last four digits and expiry, never more. */
export interface CardSummary {
  stripeId: string;
  brand: string;
  last4: string;
  expMonth: number;
  expYear: number;
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

  /**
   * Runs one Stripe call and sorts its failure: network failures, 5xx, 409 (a concurrent request
   * with the same idempotency key, or a lock) and 429 are StripeUnavailable, to retry with the same
   * key; any other Stripe answer is a StripeRefusal. Errors that are not Stripe's pass as they are.
   */
  private async call<T>(request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (error) {
      throw this.classify(error);
    }
  }

  private classify(error: unknown): unknown {
    if (!(error instanceof this.stripe.errors.StripeError)) return error;
    const status = error.statusCode;
    if (error instanceof this.stripe.errors.StripeConnectionError || status === undefined || status >= 500 || status === 409 || status === 429) {
      return new StripeUnavailable(error.message, { cause: error });
    }
    if (error instanceof this.stripe.errors.StripeCardError) {
      if (error.code === 'authentication_required' || error.decline_code === 'authentication_required') {
        return new PaymentNeedsAuthentication(error.payment_intent?.id ?? null, 'authentication_required');
      }
      return new StripeRefusal(error.decline_code ?? error.code ?? 'card_declined', error.message, true);
    }
    return new StripeRefusal(error.code ?? error.type, error.message, false);
  }

  async createCustomer(accountId: string, accountName: string): Promise<string> {
    const customer = await this.call(() =>
      this.client.customers.create({ name: accountName, metadata: { account_id: accountId } }, { idempotencyKey: `customer:${accountId}` }),
    );
    return customer.id;
  }

  /**
   * A Checkout Session in payment mode for a purchase (the pack's, or one to complete a payment that
   * needs authentication). With savePaymentMethod the card is saved for later off-session payments
   * (setup_future_usage=off_session, as Stripe recommends for cards charged later without the customer).
   */
  async createCheckoutSession(input: {
    purchaseId: string;
    accountId: string;
    customerId: string;
    packName: string;
    unitAmount: number;
    currency: string;
    quantity: number;
    successUrl: string | null;
    cancelUrl: string | null;
    savePaymentMethod: boolean;
    idempotencyKey: string;
  }): Promise<{ id: string; url: string }> {
    const metadata = { purchase_id: input.purchaseId, account_id: input.accountId };
    const session = await this.call(() =>
      this.client.checkout.sessions.create(
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
          ...(input.successUrl ? { success_url: input.successUrl } : {}),
          ...(input.cancelUrl ? { cancel_url: input.cancelUrl } : {}),
          metadata,
          payment_intent_data: { metadata, ...(input.savePaymentMethod ? { setup_future_usage: 'off_session' as const } : {}) },
        },
        { idempotencyKey: input.idempotencyKey },
      ),
    );
    if (!session.url) throw new Error(`Stripe returned checkout session ${session.id} without a url`);
    return { id: session.id, url: session.url };
  }

  /** A Checkout Session in setup mode: the customer enters a card, saved for off-session payments, nothing charged. */
  async createSetupSession(input: { accountId: string; customerId: string; successUrl: string; cancelUrl: string }): Promise<{ id: string; url: string }> {
    const metadata = { account_id: input.accountId };
    const session = await this.call(() =>
      this.client.checkout.sessions.create({
        mode: 'setup',
        customer: input.customerId,
        // Cards only: what is saved is shown as brand, last four and expiry, and charged off-session.
        allowed_payment_method_types: ['card'],
        success_url: input.successUrl,
        cancel_url: input.cancelUrl,
        metadata,
        setup_intent_data: { metadata },
      }),
    );
    if (!session.url) throw new Error(`Stripe returned checkout session ${session.id} without a url`);
    return { id: session.id, url: session.url };
  }

  /** The customer's default payment method for off-session payments (invoice_settings), or null. */
  async defaultPaymentMethod(customerId: string): Promise<string | null> {
    const customer = await this.call(() => this.client.customers.retrieve(customerId));
    if (customer.deleted) throw new StripeRefusal('resource_missing', `customer ${customerId} was deleted`, false);
    const paymentMethod = customer.invoice_settings?.default_payment_method;
    return typeof paymentMethod === 'string' ? paymentMethod : (paymentMethod?.id ?? null);
  }

  /** Makes a payment method attached to the customer their default for off-session payments. */
  async setDefaultPaymentMethod(customerId: string, paymentMethodId: string | null): Promise<void> {
    await this.call(() => this.client.customers.update(customerId, { invoice_settings: { default_payment_method: paymentMethodId ?? '' } }));
  }

  /** Brand, last four and expiry of a card payment method; null for other kinds or a card no longer the customer's. */
  async cardOf(paymentMethodId: string, customerId: string): Promise<CardSummary | null> {
    const method = await this.call(() => this.client.paymentMethods.retrieve(paymentMethodId));
    const owner = typeof method.customer === 'string' ? method.customer : (method.customer?.id ?? null);
    if (!method.card || owner !== customerId) return null;
    return { stripeId: method.id, brand: method.card.brand, last4: method.card.last4, expMonth: method.card.exp_month, expYear: method.card.exp_year };
  }

  /** The payment method a SetupIntent or PaymentIntent saved or used, if any. */
  async paymentMethodOf(kind: 'setup_intent' | 'payment_intent', id: string): Promise<string | null> {
    const method =
      kind === 'setup_intent'
        ? (await this.call(() => this.client.setupIntents.retrieve(id))).payment_method
        : (await this.call(() => this.client.paymentIntents.retrieve(id))).payment_method;
    return typeof method === 'string' ? method : (method?.id ?? null);
  }

  /** Detaches a payment method from its customer: it can no longer be charged. */
  async detachPaymentMethod(paymentMethodId: string): Promise<void> {
    await this.call(() => this.client.paymentMethods.detach(paymentMethodId));
  }

  /** A Customer Portal session where the customer manages their cards. */
  async createBillingPortalSession(customerId: string, returnUrl: string): Promise<string> {
    const session = await this.call(() => this.client.billingPortal.sessions.create({ customer: customerId, return_url: returnUrl }));
    return session.url;
  }

  /**
   * Charges a saved payment method without the customer present (partners, auto top-up), under an
   * idempotency key derived from the purchase, so a retry (same purchase, same card) charges at most
   * once. Throws StripeRefusal (declined or refused), PaymentNeedsAuthentication (SCA) or
   * StripeUnavailable (retry later).
   */
  async chargeOffSession(input: {
    purchaseId: string;
    accountId: string;
    customerId: string;
    paymentMethodId: string;
    amount: number;
    currency: string;
  }): Promise<string> {
    const intent = await this.call(() =>
      this.client.paymentIntents.create(
        {
          amount: input.amount,
          currency: input.currency.toLowerCase(),
          customer: input.customerId,
          payment_method: input.paymentMethodId,
          off_session: true,
          confirm: true,
          metadata: { purchase_id: input.purchaseId, account_id: input.accountId },
        },
        { idempotencyKey: `payment:${input.purchaseId}` },
      ),
    );
    if (intent.status === 'succeeded') return intent.id;
    if (intent.status === 'requires_action') throw new PaymentNeedsAuthentication(intent.id, 'requires_action');
    if (intent.status === 'processing') throw new StripeUnavailable(`payment ${intent.id} is still processing`);
    throw new StripeRefusal(intent.last_payment_error?.decline_code ?? intent.last_payment_error?.code ?? intent.status, `payment ${intent.id} is ${intent.status}`, true);
  }

  /** The Checkout Session as Stripe has it now (reconciliation of a purchase whose webhook is late or lost). */
  retrieveCheckoutSession(sessionId: string): Promise<Stripe.Checkout.Session> {
    return this.client.checkout.sessions.retrieve(sessionId);
  }

  retrievePaymentIntent(paymentIntentId: string): Promise<Stripe.PaymentIntent> {
    return this.client.paymentIntents.retrieve(paymentIntentId);
  }

  /**
   * The PaymentIntents created for a purchase, found by the metadata we gave them (Stripe's search;
   * its index lags by about a minute, so this is only asked about purchases far older than that).
   */
  async searchPaymentIntentsOfPurchase(purchaseId: string): Promise<Stripe.PaymentIntent[]> {
    const result = await this.client.paymentIntents.search({ query: `metadata['purchase_id']:'${purchaseId.replace(/[^A-Za-z0-9_-]/g, '')}'`, limit: 10 });
    return result.data;
  }

  /** Verifies the signature over the raw body (default tolerance, 300 s) and parses the event. */
  constructEvent(rawBody: Buffer | string, signature: string): Stripe.Event {
    return this.client.webhooks.constructEvent(rawBody, signature, this.settings.webhookSecret);
  }
}
