import type { Logger } from 'pino';
import type Stripe from 'stripe';
import { inTransaction, type Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import {
  awaitAuthentication,
  clawBackPurchase,
  completePurchase,
  createPurchase,
  failPurchase,
  findPurchase,
  type NewPurchase,
  type TopUpPurchaseRecord,
} from './purchases.ts';
import { applyCardChange, CardsOnFile, type CardChange } from './cardsOnFile.ts';
import { findRecordedPurchase, paymentMismatch, paymentOfIntent, paymentOfSession, stripeIdOf, type RecordedPurchase, type StripePayment } from './paymentMatching.ts';
import { IDEMPOTENCY_KEY_LIFETIME_MS } from './reconcilePurchases.ts';
import { PaymentNeedsAuthentication, StripeRefusal, StripeUnavailable, type StripeGateway } from './stripeGateway.ts';
import { recordInvoiceEvent } from './invoiceRecords.ts';

export interface WebhookResponse {
  status: number;
  body: Record<string, unknown>;
}

/** An off-session purchase left PENDING this long (a crash, Stripe unreachable) is tried again. */
const STALE_PENDING_MS = 60_000;

/** The failure code of an off-session purchase tried without a saved card. */
const PAYMENT_METHOD_REQUIRED = 'payment_method_required';

/** The typed error a Stripe refusal is answered with (and answered again to a retry with the key). */
function refusalCodeOf(refusal: StripeRefusal): ErrorCode {
  if (refusal.code === PAYMENT_METHOD_REQUIRED) return ErrorCode.PAYMENT_METHOD_REQUIRED;
  return refusal.declined ? ErrorCode.PAYMENT_DECLINED : ErrorCode.PAYMENT_REFUSED;
}

const REFUSAL_CODES = new Set<string>([ErrorCode.PAYMENT_METHOD_REQUIRED, ErrorCode.PAYMENT_DECLINED, ErrorCode.PAYMENT_REFUSED]);

/**
 * A purchase Stripe refused answers its typed error, with the purchase id and Stripe's code, to the
 * call that met the refusal and to every retry with the same key, as Stripe replays a refusal to a
 * retried request; any other purchase is answered as it stands.
 */
function answer(purchase: TopUpPurchaseRecord): TopUpPurchaseRecord {
  if (purchase.status !== 'FAILED' || !purchase.refusalCode || !REFUSAL_CODES.has(purchase.refusalCode)) return purchase;
  return refuse(purchase.refusalCode as ErrorCode, purchase);
}

function refuse(code: ErrorCode, purchase: TopUpPurchaseRecord): never {
  throw new BillingError(code, `purchase ${purchase.id} failed: ${purchase.failureMessage ?? purchase.failureCode ?? 'refused by Stripe'}`, {
    purchaseId: purchase.id,
    stripeCode: purchase.failureCode,
  });
}


/**
 * Buying credits: the steps that talk to Stripe, each between database transactions, never inside
 * one. Intent is recorded first (a PENDING purchase), Stripe is called with idempotency keys derived
 * from the purchase id, and the outcome is recorded after; webhooks reconcile whatever the order.
 */
/** The signature proves who sent the bytes, not that they are an event: a signed array or string is refused. */
function isEventShaped(event: unknown): event is Stripe.Event {
  if (!event || typeof event !== 'object' || Array.isArray(event)) return false;
  const { id, type, data } = event as { id?: unknown; type?: unknown; data?: { object?: unknown } | null };
  return (
    typeof id === 'string' && id.length > 0 && id.length <= 255 && typeof type === 'string' && type.length <= 255 &&
    typeof data === 'object' && data !== null && typeof data.object === 'object' && data.object !== null && !Array.isArray(data.object)
  );
}

/**
 * Another service's share of Stripe's events (subscriptions/): `prepare` reads from Stripe what it
 * needs before the webhook's transaction (never inside it), `apply` applies the event in it and
 * answers true when the event was its alone.
 */
export interface StripeEventHook {
  prepare(event: Stripe.Event): Promise<unknown>;
  apply(tx: Tx, event: Stripe.Event, prepared: unknown): Promise<boolean>;
}

export class PurchaseService {
  /** Cards on file: saving, removing, the portal, and what Stripe's events say about them. */
  readonly cards: CardsOnFile;
  private eventHook: StripeEventHook | null = null;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly clock: Clock,
    private readonly gateway: StripeGateway | null,
    private readonly logger: Logger,
  ) {
    this.cards = new CardsOnFile(prisma, clock, gateway, logger, (stripe, accountId) => this.ensureCustomer(stripe, accountId));
  }

  setEventHook(hook: StripeEventHook): void {
    this.eventHook = hook;
  }

  get configured(): boolean {
    return this.gateway !== null;
  }

  private requireGateway(): StripeGateway {
    if (!this.gateway) {
      throw new BillingError(ErrorCode.STRIPE_NOT_CONFIGURED, 'purchases are not available: STRIPE_SECRET_KEY is not configured');
    }
    return this.gateway;
  }

  /** Creates the Stripe customer of an account on its first purchase, once. */
  private async ensureCustomer(gateway: StripeGateway, accountId: string): Promise<string> {
    const account = await this.prisma.account.findUniqueOrThrow({ where: { id: accountId }, select: { name: true, stripeCustomerId: true } });
    if (account.stripeCustomerId) return account.stripeCustomerId;
    const customerId = await gateway.createCustomer(accountId, account.name);
    await this.prisma.account.updateMany({ where: { id: accountId, stripeCustomerId: null }, data: { stripeCustomerId: customerId } });
    return customerId;
  }

  /**
   * Buys a credit pack: a Checkout Session to redirect the customer to, or (offSession) a payment
   * confirmed now on the saved payment method. A retry with the same idempotency key resumes the same
   * purchase, so it never charges twice. The call that meets Stripe's refusal answers it as a typed
   * error (the purchase is FAILED with Stripe's code); a later retry returns the FAILED purchase.
   */
  async purchaseCreditPack(command: Omit<NewPurchase, 'source'>): Promise<TopUpPurchaseRecord> {
    const gateway = this.requireGateway();
    const { purchase } = await inTransaction(this.prisma, (tx) => createPurchase(tx, this.clock, { ...command, source: 'PURCHASE' }));
    if (purchase.status !== 'PENDING') return answer(purchase);
    if (purchase.offSession) return answer((await this.chargeAndRecord(gateway, purchase.id)).purchase);
    if (purchase.checkoutUrl) return purchase;
    const pack = await this.prisma.creditPack.findUniqueOrThrow({ where: { code: purchase.packCode } });
    try {
      const customerId = await this.callStripe(() => this.ensureCustomer(gateway, purchase.accountId));
      const session = await this.callStripe(() =>
        gateway.createCheckoutSession({
          purchaseId: purchase.id,
          accountId: purchase.accountId,
          customerId,
          packName: pack.name,
          unitAmount: pack.priceAmount,
          currency: purchase.amount.currency,
          quantity: purchase.quantity,
          successUrl: command.successUrl ?? null,
          cancelUrl: command.cancelUrl ?? null,
          savePaymentMethod: purchase.savePaymentMethod,
          idempotencyKey: `checkout:${purchase.id}`,
        }),
      );
      await this.prisma.topUpPurchase.updateMany({
        where: { id: purchase.id, checkoutSessionId: null },
        data: { checkoutSessionId: session.id, checkoutUrl: session.url },
      });
    } catch (error) {
      if (!(error instanceof StripeRefusal)) throw error;
      await inTransaction(this.prisma, (tx) => failPurchase(tx, this.clock, purchase.id, error.code, error.message, refusalCodeOf(error)));
      return answer(await this.getPurchase(purchase.id));
    }
    return this.getPurchase(purchase.id);
  }

  private async getPurchase(id: string): Promise<TopUpPurchaseRecord> {
    const purchase = await findPurchase(this.prisma, id);
    if (!purchase) throw new Error(`purchase ${id} vanished`);
    return purchase;
  }

  /**
   * Only a Stripe that could not answer (network, 5xx, 409, 429) is the caller's to retry with the
   * same key; refusals and authentication pass through to be recorded on the purchase.
   */
  private async callStripe<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof StripeUnavailable)) throw error;
      this.logger.warn({ err: error }, 'Stripe call failed');
      throw new BillingError(ErrorCode.STRIPE_UNAVAILABLE, 'Stripe could not be reached; retry with the same idempotency key', { retryable: true });
    }
  }

  /**
   * Charges a PENDING off-session purchase and records the outcome: paid (granted), refused (FAILED
   * with Stripe's code), or waiting for the customer to authenticate (REQUIRES_ACTION, with a
   * Checkout URL where they complete it, and an alert). Stripe unavailable leaves it PENDING.
   */
  async payOffSession(purchaseId: string): Promise<TopUpPurchaseRecord> {
    return (await this.chargeAndRecord(this.requireGateway(), purchaseId)).purchase;
  }

  private async chargeAndRecord(gateway: StripeGateway, purchaseId: string): Promise<{ purchase: TopUpPurchaseRecord; refusal: StripeRefusal | null }> {
    const purchase = await this.getPurchase(purchaseId);
    if (purchase.status !== 'PENDING') return { purchase, refusal: null };
    try {
      const customerId = await this.callStripe(() => this.ensureCustomer(gateway, purchase.accountId));
      const paymentMethodId = await this.callStripe(() => this.paymentMethodForCharge(gateway, purchase.id, customerId));
      const paymentIntentId = await this.callStripe(() =>
        gateway.chargeOffSession({
          purchaseId: purchase.id,
          accountId: purchase.accountId,
          customerId,
          paymentMethodId,
          amount: purchase.amount.amount,
          currency: purchase.amount.currency,
        }),
      );
      await inTransaction(this.prisma, (tx) => completePurchase(tx, this.clock, purchase.id, paymentIntentId));
    } catch (error) {
      if (error instanceof PaymentNeedsAuthentication) return { purchase: await this.askForAuthentication(gateway, purchase, error), refusal: null };
      if (!(error instanceof StripeRefusal)) throw error;
      await inTransaction(this.prisma, (tx) => failPurchase(tx, this.clock, purchase.id, error.code, error.message, refusalCodeOf(error)));
      return { purchase: await this.getPurchase(purchase.id), refusal: error };
    }
    return { purchase: await this.getPurchase(purchase.id), refusal: null };
  }

  /**
   * The card to charge: the one the purchase's first attempt used, else the customer's default now
   * (recorded before charging), so that every attempt sends the same request under the same key.
   */
  private async paymentMethodForCharge(gateway: StripeGateway, purchaseId: string, customerId: string): Promise<string> {
    const recorded = await this.prisma.topUpPurchase.findUniqueOrThrow({ where: { id: purchaseId }, select: { paymentMethodId: true } });
    if (recorded.paymentMethodId) return recorded.paymentMethodId;
    const paymentMethodId = await gateway.defaultPaymentMethod(customerId);
    if (!paymentMethodId) throw new StripeRefusal(PAYMENT_METHOD_REQUIRED, 'the account has no saved card for off-session payments (createPaymentMethodSetup)', false);
    const { accountId } = await this.getPurchase(purchaseId);
    await this.cards.noteDefault(accountId, customerId, paymentMethodId);
    await this.prisma.topUpPurchase.updateMany({ where: { id: purchaseId, paymentMethodId: null }, data: { paymentMethodId } });
    const stored = await this.prisma.topUpPurchase.findUniqueOrThrow({ where: { id: purchaseId }, select: { paymentMethodId: true } });
    return stored.paymentMethodId ?? paymentMethodId;
  }

  /**
   * Strong customer authentication, as Stripe recommends for an off-session payment that needs it:
   * bring the customer back on session. The purchase gets a Checkout Session for the same amount
   * (its key derived from the purchase, so a retry finds the same one) that also saves the card they
   * authenticate for later; it waits in REQUIRES_ACTION, out of every automatic retry, until the
   * customer pays there (checkout.session.completed) or the session expires (FAILED).
   */
  private async askForAuthentication(gateway: StripeGateway, purchase: TopUpPurchaseRecord, reason: PaymentNeedsAuthentication): Promise<TopUpPurchaseRecord> {
    const pack = await this.prisma.creditPack.findUniqueOrThrow({ where: { code: purchase.packCode } });
    const customerId = await this.callStripe(() => this.ensureCustomer(gateway, purchase.accountId));
    const returnUrl = gateway.settings.returnUrl ?? null;
    try {
      const session = await this.callStripe(() =>
        gateway.createCheckoutSession({
          purchaseId: purchase.id,
          accountId: purchase.accountId,
          customerId,
          packName: pack.name,
          unitAmount: pack.priceAmount,
          currency: purchase.amount.currency,
          quantity: purchase.quantity,
          successUrl: returnUrl,
          cancelUrl: returnUrl,
          savePaymentMethod: true,
          idempotencyKey: `authenticate:${purchase.id}`,
        }),
      );
      await inTransaction(this.prisma, (tx) => awaitAuthentication(tx, this.clock, purchase.id, session, reason.code));
    } catch (error) {
      if (!(error instanceof StripeRefusal)) throw error;
      await inTransaction(this.prisma, (tx) => failPurchase(tx, this.clock, purchase.id, reason.code, `authentication needed, and no Checkout Session for it: ${error.message}`));
    }
    return this.getPurchase(purchase.id);
  }

  /** Pays an auto top-up queued by a debit, after that debit's commit, without holding up its response. */
  payInBackground(purchaseId: string): void {
    this.payOffSession(purchaseId).catch((error: unknown) => {
      this.logger.warn({ err: error, purchaseId }, 'auto top-up payment not completed; it will be retried');
    });
  }

  /** Retries off-session purchases stuck PENDING (a crash or an outage between intent and outcome). */
  async retryStalePending(now: Date): Promise<number> {
    if (!this.gateway) return 0;
    const stale = await this.prisma.topUpPurchase.findMany({
      // Older ones are the reconciliation's (reconcilePurchases.ts): their idempotency key may have expired at Stripe.
      where: { status: 'PENDING', offSession: true, createdAt: { lt: new Date(now.getTime() - STALE_PENDING_MS), gte: new Date(now.getTime() - IDEMPOTENCY_KEY_LIFETIME_MS) } },
      select: { id: true },
      take: 50,
    });
    for (const { id } of stale) {
      await this.payOffSession(id).catch((error: unknown) => this.logger.warn({ err: error, purchaseId: id }, 'stale purchase retry failed'));
    }
    return stale.length;
  }

  /**
   * `POST /webhooks/stripe`: verifies the signature over the raw body, stores the event id once and
   * applies it in the same transaction as marking it processed, so a redelivery (concurrent or
   * later) finds it done. A handler error answers 500 so that Stripe delivers it again.
   */
  async handleWebhook(rawBody: Buffer, signature: string | undefined): Promise<WebhookResponse> {
    if (!this.gateway) return { status: 503, body: { error: { code: ErrorCode.STRIPE_NOT_CONFIGURED } } };
    let event: Stripe.Event;
    try {
      event = this.gateway.constructEvent(rawBody, signature ?? '');
    } catch {
      return { status: 400, body: { error: { code: 'INVALID_SIGNATURE', message: 'the Stripe-Signature header does not match the body' } } };
    }
    if (!isEventShaped(event)) {
      return { status: 400, body: { error: { code: 'MALFORMED_EVENT', message: 'the body is not a Stripe event (an object with id, type and data.object)' } } };
    }
    const cardChange = await this.prepareCardChange(event);
    const prepared = this.eventHook ? await this.eventHook.prepare(event) : null;
    await inTransaction(this.prisma, async (tx) => {
      const now = this.clock.now();
      await tx.$executeRaw`
        INSERT INTO stripe_events (id, type, received_at) VALUES (${event.id}, ${event.type}, ${now}) ON CONFLICT (id) DO NOTHING`;
      const [stored] = await tx.$queryRaw<Array<{ processed_at: Date | null }>>`
        SELECT processed_at FROM stripe_events WHERE id = ${event.id} FOR UPDATE`;
      if (stored?.processed_at) return;
      if (!(this.eventHook && (await this.eventHook.apply(tx, event, prepared)))) await this.applyEvent(tx, event);
      if (cardChange) await applyCardChange(tx, cardChange, now);
      await tx.$executeRaw`UPDATE stripe_events SET processed_at = ${now} WHERE id = ${event.id}`;
    });
    return { status: 200, body: { received: true } };
  }

  /**
   * The Stripe calls an event about cards on file needs, before its transaction (cardsOnFile.ts).
   * Skipped for an event already processed, so a late redelivery cannot make an older card the
   * default again. Stripe unavailable fails the delivery (Stripe sends it again); a refusal is logged
   * and the event acknowledged, since sending it again would not change the answer.
   */
  private async prepareCardChange(event: Stripe.Event): Promise<CardChange | null> {
    if (!CardsOnFile.concerns(event.type)) return null;
    const processed = await this.prisma.stripeEvent.findUnique({ where: { id: event.id }, select: { processedAt: true } });
    if (processed?.processedAt) return null;
    try {
      return await this.cards.prepareEvent(event);
    } catch (error) {
      if (!(error instanceof StripeRefusal)) throw error;
      this.logger.warn({ err: error, stripeEventId: event.id, eventType: event.type }, 'Stripe refused a call about a card on file; event acknowledged');
      return null;
    }
  }

  /**
   * Applies a verified event to the purchase it is about. An event acts only on the purchase that
   * recorded its Checkout Session or PaymentIntent, and completes it only when amount, currency and
   * customer agree (paymentMatching.ts); anything else is logged and acknowledged, changing nothing,
   * since Stripe delivering it again would not make it match.
   */
  private async applyEvent(tx: Tx, event: Stripe.Event): Promise<void> {
    // Invoices are recorded for Account.invoices whatever else an invoice event does.
    if (event.type.startsWith('invoice.')) await recordInvoiceEvent(tx, this.clock, this.logger, event);
    switch (event.type) {
      case 'checkout.session.completed':
      case 'checkout.session.expired': {
        const session = event.data.object;
        // A setup-mode session saves a card and pays for nothing (prepareCardChange).
        if (session.mode === 'setup') return;
        const payment = paymentOfSession(session);
        const purchase = await this.matchedPurchase(tx, event, payment);
        if (!purchase) return;
        if (event.type === 'checkout.session.expired') {
          await failPurchase(tx, this.clock, purchase.id, 'checkout_expired', 'the Checkout Session expired unpaid');
        } else if (session.payment_status === 'paid' || session.payment_status === 'no_payment_required') {
          await completePurchase(tx, this.clock, purchase.id, stripeIdOf(session.payment_intent));
        }
        return;
      }
      case 'payment_intent.succeeded': {
        // The PaymentIntent of a purchase is recorded when the purchase is paid (by the synchronous
        // off-session charge, or by checkout.session.completed), so this finds it already paid, or
        // no purchase: completing is left to those, which match the object they were given.
        const intent = event.data.object;
        const payment = paymentOfIntent(intent);
        const purchase = await this.matchedPurchase(tx, event, payment);
        if (purchase) await completePurchase(tx, this.clock, purchase.id, intent.id);
        return;
      }
      case 'payment_intent.payment_failed': {
        // Nothing to apply: in Checkout the customer may try again until the session expires
        // (checkout.session.expired fails the purchase); an off-session decline is recorded by the
        // call that made the charge.
        const intent = event.data.object;
        this.logger.info({ stripeEventId: event.id, paymentIntentId: intent.id }, 'Stripe payment attempt failed; acknowledged');
        return;
      }
      case 'charge.refunded': {
        const charge = event.data.object;
        const paymentIntentId = stripeIdOf(charge.payment_intent);
        if (!paymentIntentId) return;
        const purchase = await tx.topUpPurchase.findUnique({ where: { paymentIntentId } });
        if (!purchase) {
          const claimed = charge.metadata?.purchase_id ? await tx.topUpPurchase.findUnique({ where: { id: charge.metadata.purchase_id } }) : null;
          // A refund seen before the payment it refunds: fail so that Stripe redelivers it after,
          // when the paid purchase has recorded this PaymentIntent (or not, and it is ignored then).
          if (claimed?.status === 'PENDING') throw new Error(`charge.refunded for purchase ${claimed.id} arrived before its payment`);
          this.logger.warn({ stripeEventId: event.id, paymentIntentId }, 'Stripe refund of a PaymentIntent no purchase recorded; acknowledged, nothing changed');
          return;
        }
        await clawBackPurchase(tx, this.clock, paymentIntentId, charge.amount_refunded, charge.amount);
        return;
      }
      default:
        return;
    }
  }

  /** The purchase the object settles, or null (logged) when it matches none. */
  private async matchedPurchase(tx: Tx, event: Stripe.Event, payment: StripePayment): Promise<RecordedPurchase | null> {
    const purchase = await findRecordedPurchase(tx, payment);
    const mismatch = paymentMismatch(purchase, payment);
    if (mismatch === null) return purchase;
    this.logger.warn(
      { stripeEventId: event.id, eventType: event.type, stripeObjectId: payment.id, claimedPurchaseId: payment.claimedPurchaseId, mismatch },
      'Stripe event does not match the purchase it concerns; acknowledged, nothing changed',
    );
    return null;
  }
}
