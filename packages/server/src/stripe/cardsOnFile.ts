import type { Logger } from 'pino';
import type Stripe from 'stripe';
import { inTransaction, type Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { findRecordedPurchase, stripeIdOf } from './paymentMatching.ts';
import { assertRedirectUrl } from './purchases.ts';
import { StripeRefusal, StripeUnavailable, type CardSummary, type StripeGateway } from './stripeGateway.ts';

/** The card an account has on file, as shown: brand, last four digits and expiry, never more. */
export interface PaymentMethodRecord {
  brand: string;
  last4: string;
  expMonth: number;
  expYear: number;
  updatedAt: Date;
}

/** What a Stripe event does to the cards on file: the account's default card as Stripe now reports it. */
export interface CardChange {
  accountId: string;
  card: CardSummary | null;
}

/** The events that can change an account's card on file. */
const CARD_EVENTS = new Set([
  'checkout.session.completed',
  'customer.updated',
  'payment_method.detached',
  'payment_method.updated',
  'payment_method.automatically_updated',
]);


export async function readPaymentMethod(tx: Tx, accountId: string): Promise<PaymentMethodRecord | null> {
  const row = await tx.paymentMethod.findUnique({ where: { accountId } });
  return row ? { brand: row.brand, last4: row.last4, expMonth: row.expMonth, expYear: row.expYear, updatedAt: row.updatedAt } : null;
}

/** Records the account's default card (or that it has none), in the transaction that acknowledges the event. */
export async function applyCardChange(tx: Tx, change: CardChange, now: Date): Promise<void> {
  if (!change.card) {
    await tx.paymentMethod.deleteMany({ where: { accountId: change.accountId } });
    return;
  }
  const data = {
    stripeId: change.card.stripeId,
    brand: change.card.brand.slice(0, 40),
    last4: change.card.last4.slice(0, 4),
    expMonth: change.card.expMonth,
    expYear: change.card.expYear,
    updatedAt: now,
  };
  await tx.paymentMethod.upsert({ where: { accountId: change.accountId }, create: { accountId: change.accountId, ...data }, update: data });
}

/**
 * Cards on file, through Stripe as Stripe recommends for cards charged later without the customer:
 * the customer enters the card on a Stripe page (setup-mode Checkout, or a pack's Checkout with
 * setup_future_usage=off_session), and once Stripe confirms it (webhook) it becomes the customer's
 * invoice_settings.default_payment_method, which off-session payments charge. The card's brand, last
 * four and expiry are kept here from Stripe's answers, so that reading them never calls Stripe. The
 * card itself never passes through this server.
 */
export class CardsOnFile {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly clock: Clock,
    private readonly gateway: StripeGateway | null,
    private readonly logger: Logger,
    private readonly ensureCustomer: (gateway: StripeGateway, accountId: string) => Promise<string>,
  ) {}

  private requireGateway(): StripeGateway {
    if (!this.gateway) {
      throw new BillingError(ErrorCode.STRIPE_NOT_CONFIGURED, 'cards on file are not available: STRIPE_SECRET_KEY is not configured');
    }
    return this.gateway;
  }

  /** Stripe unreachable answers STRIPE_UNAVAILABLE; a refusal answers PAYMENT_REFUSED with Stripe's code. */
  private async callStripe<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof StripeUnavailable) {
        this.logger.warn({ err: error }, 'Stripe call failed');
        throw new BillingError(ErrorCode.STRIPE_UNAVAILABLE, 'Stripe could not be reached; try again', { retryable: true });
      }
      if (error instanceof StripeRefusal) throw new BillingError(ErrorCode.PAYMENT_REFUSED, `Stripe refused: ${error.message}`, { stripeCode: error.code });
      throw error;
    }
  }

  /** A setup-mode Checkout page where the customer saves a card for later off-session payments. */
  async createSetup(input: { accountId: string; successUrl: string; cancelUrl: string }): Promise<{ url: string }> {
    const gateway = this.requireGateway();
    const successUrl = assertRedirectUrl(input.successUrl, 'successUrl', 'to save a card');
    const cancelUrl = assertRedirectUrl(input.cancelUrl, 'cancelUrl', 'to save a card');
    const customerId = await this.callStripe(() => this.ensureCustomer(gateway, input.accountId));
    const session = await this.callStripe(() => gateway.createSetupSession({ accountId: input.accountId, customerId, successUrl, cancelUrl }));
    return { url: session.url };
  }

  /** A Stripe Customer Portal page where the customer manages their cards (changes come back by webhook). */
  async createPortalSession(input: { accountId: string; returnUrl: string }): Promise<{ url: string }> {
    const gateway = this.requireGateway();
    const returnUrl = assertRedirectUrl(input.returnUrl, 'returnUrl', 'for the Customer Portal');
    const customerId = await this.callStripe(() => this.ensureCustomer(gateway, input.accountId));
    return { url: await this.callStripe(() => gateway.createBillingPortalSession(customerId, returnUrl)) };
  }

  /**
   * Detaches the account's default card in Stripe (it can no longer be charged, and stops being the
   * default) and records what Stripe then reports. Without a card it changes nothing.
   */
  async remove(accountId: string): Promise<void> {
    const gateway = this.requireGateway();
    const account = await this.prisma.account.findUniqueOrThrow({ where: { id: accountId }, select: { stripeCustomerId: true } });
    const customerId = account.stripeCustomerId;
    if (!customerId) return;
    const paymentMethodId = await this.callStripe(() => gateway.defaultPaymentMethod(customerId));
    if (paymentMethodId) {
      await this.callStripe(async () => {
        try {
          // Stripe also unsets a detached card as the customer's default.
          await gateway.detachPaymentMethod(paymentMethodId);
        } catch (error) {
          // Already detached (a concurrent removal, or the portal): what is asked is done.
          if (!(error instanceof StripeRefusal)) throw error;
          this.logger.info({ err: error, accountId }, 'payment method already detached');
        }
      });
    }
    const card = await this.callStripe(() => this.defaultCard(gateway, customerId));
    await inTransaction(this.prisma, (tx) => applyCardChange(tx, { accountId, card }, this.clock.now()));
  }

  private async defaultCard(gateway: StripeGateway, customerId: string): Promise<CardSummary | null> {
    const paymentMethodId = await gateway.defaultPaymentMethod(customerId);
    return paymentMethodId ? gateway.cardOf(paymentMethodId, customerId) : null;
  }

  /**
   * Keeps Account.paymentMethod in step with the default card an off-session charge is about to use,
   * when it is not the one recorded (a card set up in Stripe by hand, or a change whose webhook has
   * not arrived). Best effort: a failure here is logged and never fails the purchase.
   */
  async noteDefault(accountId: string, customerId: string, paymentMethodId: string): Promise<void> {
    const gateway = this.gateway;
    if (!gateway) return;
    const stored = await this.prisma.paymentMethod.findUnique({ where: { accountId }, select: { stripeId: true } });
    if (stored?.stripeId === paymentMethodId) return;
    try {
      const card = await gateway.cardOf(paymentMethodId, customerId);
      if (card) await inTransaction(this.prisma, (tx) => applyCardChange(tx, { accountId, card }, this.clock.now()));
    } catch (error) {
      if (!(error instanceof StripeRefusal) && !(error instanceof StripeUnavailable)) throw error;
      this.logger.warn({ err: error, accountId }, 'could not read the default card; Account.paymentMethod left as it was');
    }
  }

  /** Whether an event of this type can change a card on file (the others cost no look-up). */
  static concerns(eventType: string): boolean {
    return CARD_EVENTS.has(eventType);
  }

  /** The account whose Stripe customer this is, or null. */
  private async accountOfCustomer(customerId: string | null): Promise<string | null> {
    if (!customerId) return null;
    const account = await this.prisma.account.findUnique({ where: { stripeCustomerId: customerId }, select: { id: true } });
    return account?.id ?? null;
  }

  /**
   * The Stripe calls an event needs, made before the transaction that applies it (never inside one),
   * each safe to repeat when Stripe delivers the event again:
   * - a setup-mode Checkout we created for the account completed: its card becomes the default;
   * - a pack's Checkout that asked to save the card (or completes a payment that needed
   *   authentication) completed: the card paid with becomes the default;
   * - the customer changed (the portal sets another default), a card was detached or updated:
   *   the account's card is read again.
   * Returns what to record, or null when the event is not about cards on file.
   */
  async prepareEvent(event: Stripe.Event): Promise<CardChange | null> {
    const gateway = this.gateway;
    if (!gateway) return null;
    switch (event.type) {
      case 'checkout.session.completed': {
        const session = event.data.object;
        const customerId = stripeIdOf(session.customer);
        const accountId = await this.accountOfCustomer(customerId);
        if (!accountId || !customerId) return null;
        const newCard = await this.savedCardOf(session, accountId);
        if (!newCard) return null;
        const card = await gateway.cardOf(newCard, customerId);
        if (!card) {
          this.logger.warn({ stripeEventId: event.id, accountId }, 'Checkout saved no card of this customer; default unchanged');
          return null;
        }
        await gateway.setDefaultPaymentMethod(customerId, card.stripeId);
        return { accountId, card };
      }
      case 'customer.updated': {
        const customer = event.data.object;
        const accountId = await this.accountOfCustomer(customer.id);
        return accountId ? { accountId, card: await this.defaultCard(gateway, customer.id) } : null;
      }
      case 'payment_method.detached':
      case 'payment_method.updated':
      case 'payment_method.automatically_updated': {
        const method = event.data.object;
        const stored = await this.prisma.paymentMethod.findFirst({ where: { stripeId: method.id }, include: { account: { select: { stripeCustomerId: true } } } });
        const customerId = stored?.account.stripeCustomerId;
        return stored && customerId ? { accountId: stored.accountId, card: await this.defaultCard(gateway, customerId) } : null;
      }
      default:
        return null;
    }
  }

  /**
   * The payment method a completed Checkout Session saved for later, or null: a setup-mode session
   * we created for this account, or the payment-mode session of one of its purchases that asked to
   * save the card (or completed an off-session payment that needed authentication).
   */
  private async savedCardOf(session: Stripe.Checkout.Session, accountId: string): Promise<string | null> {
    const gateway = this.requireGateway();
    if (session.mode === 'setup') {
      if (session.metadata?.account_id !== accountId) return null;
      const setupIntentId = stripeIdOf(session.setup_intent);
      return setupIntentId ? gateway.paymentMethodOf('setup_intent', setupIntentId) : null;
    }
    if (session.mode !== 'payment' || session.payment_status !== 'paid') return null;
    const purchase = await findRecordedPurchase(this.prisma, { kind: 'checkout_session', id: session.id });
    if (!purchase || purchase.accountId !== accountId) return null;
    const row = await this.prisma.topUpPurchase.findUniqueOrThrow({ where: { id: purchase.id }, select: { savePaymentMethod: true, offSession: true } });
    if (!row.savePaymentMethod && !row.offSession) return null;
    const paymentIntentId = stripeIdOf(session.payment_intent);
    return paymentIntentId ? gateway.paymentMethodOf('payment_intent', paymentIntentId) : null;
  }
}
