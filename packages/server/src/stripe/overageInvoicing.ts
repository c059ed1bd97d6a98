import type { Logger } from 'pino';
import type Stripe from 'stripe';
import type { Clock } from '../domain/clock.ts';
import type { OverageCharge, OverageInvoice, PrismaClient } from '../generated/prisma/client.ts';
import type { StripeGateway } from './stripeGateway.ts';

export interface OverageInvoicerOptions {
  prisma: PrismaClient;
  clock: Clock;
  gateway: StripeGateway | null;
  logger: Logger;
  /** How long a runner holds a period's invoicing before another may take it over (a crashed runner). */
  leaseMs?: number;
  /** Periods invoiced per pass. */
  batchSize?: number;
}

const DEFAULT_LEASE_MS = 5 * 60_000;
const RETRY_BASE_MS = 60_000;
const RETRY_MAX_MS = 6 * 3_600_000;
/** Stripe lists at most 100 a page; a customer's overage items of a few days are far fewer. */
const LOOKUP_LIMIT = 300;

/** Idempotency keys derived from (account, period, credit type), as Stripe retries need them stable. */
export function overageItemKey(accountId: string, periodStart: Date, creditType: string): string {
  return `overage:${accountId}:${periodStart.toISOString()}:${creditType}`;
}

/** The same, for the item added to the account's subscription (its next invoice) instead of a standalone invoice. */
export function overageSubscriptionItemKey(accountId: string, periodStart: Date, creditType: string): string {
  return `${overageItemKey(accountId, periodStart, creditType)}:subscription`;
}

/** Subscription states in which Stripe will still invoice the subscription. */
const BILLING_SUBSCRIPTION_STATES = new Set(['ACTIVE', 'PAST_DUE', 'UNPAID']);

export function overageInvoiceKey(accountId: string, periodStart: Date): string {
  return `overage-invoice:${accountId}:${periodStart.toISOString()}`;
}

const unixSeconds = (date: Date): number => Math.floor(date.getTime() / 1000);

function describeCharge(charge: OverageCharge, periodEnd: Date): string {
  const day = (date: Date) => date.toISOString().slice(0, 10);
  return `Overage: ${charge.credits.toLocaleString('en-US')} ${charge.creditType} credits, ${day(charge.periodStart)} to ${day(periodEnd)}`;
}

/**
 * Invoices each closed period's overage through Stripe (issue 19 item 4). The close itself records
 * what to invoice (overage_invoices and overage_charges, written by the renewal's trigger); this
 * turns each PENDING period into Stripe invoice items, outside any transaction:
 *
 * - every call carries an idempotency key derived from (account, period, credit type), and every
 *   Stripe id is recorded as soon as it is known and never asked for again;
 * - a period is leased to one runner at a time (`FOR UPDATE SKIP LOCKED`, then a lease of
 *   `leaseMs`), so several instances do not work on it at once; a runner that dies leaves the lease
 *   to run out, and the next one resumes where the recorded ids say;
 * - a retry first looks in Stripe for objects an earlier attempt created but did not record (their
 *   metadata carries our ids), so a retry later than Stripe's 24-hour idempotency window cannot
 *   create a second one either.
 *
 * An account with a live Stripe subscription gets pending items on it (its next invoice takes
 * them); one without gets a standalone invoice per period (one item per credit type), finalized and
 * charged to the customer's default payment method; an unpaid one stays open for Stripe's retries
 * and the hosted invoice page.
 */
export class OverageInvoicer {
  private background: Promise<unknown> | null = null;

  constructor(private readonly options: OverageInvoicerOptions) {}

  /**
   * Starts a pass unless one is under way, without waiting for it: the job runner's poll (renewals,
   * expiries) must not wait behind Stripe, which may take a timeout per call when it is slow.
   */
  kick(): void {
    if (this.background || !this.options.gateway) return;
    this.background = this.invoiceDue()
      .catch((error: unknown) => this.options.logger.error({ err: error }, 'overage invoicing pass failed'))
      .finally(() => {
        this.background = null;
      });
  }

  /** Waits for the pass under way, if any (before the database closes). */
  async drain(): Promise<void> {
    await this.background;
  }

  /**
   * One pass: leases due periods and invoices them, one after the other. A failure ends the pass
   * (Stripe being unreachable fails the next ones too): the rest are released for the next pass.
   * Returns how many were invoiced.
   */
  async invoiceDue(): Promise<number> {
    const { gateway, prisma } = this.options;
    if (!gateway) return 0;
    let invoiced = 0;
    const leased = await this.lease();
    for (const [index, period] of leased.entries()) {
      try {
        await this.invoicePeriod(gateway, period);
        invoiced += 1;
      } catch (error) {
        await this.release(period, error);
        const rest = leased.slice(index + 1).map((other) => other.id);
        if (rest.length > 0) await prisma.overageInvoice.updateMany({ where: { id: { in: rest }, status: 'PENDING' }, data: { leaseUntil: null } });
        break;
      }
    }
    return invoiced;
  }

  private async lease(): Promise<OverageInvoice[]> {
    const { prisma, clock } = this.options;
    const now = clock.now();
    const until = new Date(now.getTime() + (this.options.leaseMs ?? DEFAULT_LEASE_MS));
    const rows = await prisma.$queryRaw<Array<{ id: string }>>`
      UPDATE overage_invoices SET lease_until = ${until}, attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, ${now})
      WHERE id IN (
        SELECT id FROM overage_invoices
        WHERE status = 'PENDING' AND next_attempt_at <= ${now} AND (lease_until IS NULL OR lease_until <= ${now})
        ORDER BY next_attempt_at, id LIMIT ${this.options.batchSize ?? 10}
        FOR UPDATE SKIP LOCKED)
      RETURNING id`;
    return prisma.overageInvoice.findMany({ where: { id: { in: rows.map((row) => row.id) } }, orderBy: { nextAttemptAt: 'asc' } });
  }

  private async release(period: OverageInvoice, error: unknown): Promise<void> {
    const { prisma, clock, logger } = this.options;
    const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(20, period.attempts - 1));
    const message = error instanceof Error ? error.message : String(error);
    logger.warn({ err: error, overageInvoiceId: period.id, accountId: period.accountId, attempts: period.attempts }, 'overage invoicing failed; it will be retried');
    await prisma.overageInvoice.updateMany({
      where: { id: period.id, status: 'PENDING' },
      data: { leaseUntil: null, nextAttemptAt: new Date(clock.now().getTime() + delay), lastError: message.slice(0, 500) },
    });
  }

  private async ensureCustomer(gateway: StripeGateway, accountId: string): Promise<string> {
    const { prisma } = this.options;
    const account = await prisma.account.findUniqueOrThrow({ where: { id: accountId }, select: { name: true, stripeCustomerId: true } });
    if (account.stripeCustomerId) return account.stripeCustomerId;
    // The same call, hence the same idempotency key and customer, as a first purchase makes.
    const customerId = await gateway.createCustomer(accountId, account.name);
    await prisma.account.updateMany({ where: { id: accountId, stripeCustomerId: null }, data: { stripeCustomerId: customerId } });
    // Another path (a purchase, a subscription) may have recorded its customer first: that one is the account's.
    return (await prisma.account.findUniqueOrThrow({ where: { id: accountId }, select: { stripeCustomerId: true } })).stripeCustomerId ?? customerId;
  }

  /**
   * The Stripe subscription whose next invoice takes this period's overage, or null for a standalone
   * invoice. Decided once per period and recorded before any item is created, so that every retry
   * sends Stripe the same request under the same idempotency key.
   */
  private async subscriptionToBill(period: OverageInvoice): Promise<string | null> {
    const { prisma } = this.options;
    if (period.standalone || period.stripeInvoiceId) return null;
    if (period.stripeSubscriptionId) return period.stripeSubscriptionId;
    const account = await prisma.account.findUniqueOrThrow({ where: { id: period.accountId }, select: { stripeSubscriptionId: true, subscriptionStatus: true } });
    const live = account.stripeSubscriptionId !== null && account.subscriptionStatus !== null && BILLING_SUBSCRIPTION_STATES.has(account.subscriptionStatus);
    await prisma.overageInvoice.updateMany({
      where: { id: period.id, stripeSubscriptionId: null, standalone: false },
      data: live ? { stripeSubscriptionId: account.stripeSubscriptionId } : { standalone: true },
    });
    const decided = await prisma.overageInvoice.findUniqueOrThrow({ where: { id: period.id }, select: { stripeSubscriptionId: true, standalone: true } });
    return decided.standalone ? null : decided.stripeSubscriptionId;
  }

  /**
   * Pending invoice items on the subscription: Stripe puts them on its next invoice. Should Stripe
   * refuse the first of them (the subscription ended meanwhile), nothing was created: the period is
   * recorded as standalone and false is returned, for the standalone invoice to take it at once.
   */
  private async addToSubscription(
    client: Stripe,
    customerId: string,
    subscriptionId: string,
    period: OverageInvoice,
    charges: OverageCharge[],
    existing: Map<string, string>,
  ): Promise<boolean> {
    const { prisma } = this.options;
    for (const charge of charges.filter((candidate) => candidate.stripeInvoiceItemId === null)) {
      let itemId = existing.get(charge.id);
      if (!itemId) {
        try {
          itemId = (
            await client.invoiceItems.create(
              { ...itemParams(customerId, charge, period.periodEnd), subscription: subscriptionId },
              { idempotencyKey: overageSubscriptionItemKey(charge.accountId, charge.periodStart, charge.creditType) },
            )
          ).id;
        } catch (error) {
          const nothingCreated = charges.every((candidate) => candidate.stripeInvoiceItemId === null && !existing.has(candidate.id));
          if (!nothingCreated || (error as { type?: unknown }).type !== 'StripeInvalidRequestError') throw error;
          this.options.logger.info({ accountId: period.accountId, subscriptionId, reason: (error as Error).message }, 'Stripe refused overage on the subscription; a standalone invoice takes it');
          await prisma.overageInvoice.updateMany({ where: { id: period.id, stripeSubscriptionId: subscriptionId }, data: { stripeSubscriptionId: null, standalone: true } });
          return false;
        }
      }
      await prisma.overageCharge.updateMany({ where: { id: charge.id, stripeInvoiceItemId: null }, data: { stripeInvoiceItemId: itemId } });
      charge.stripeInvoiceItemId = itemId;
    }
    return true;
  }

  private async invoicePeriod(gateway: StripeGateway, period: OverageInvoice): Promise<void> {
    const { prisma, clock, logger } = this.options;
    const client = gateway.client;
    const customerId = await this.ensureCustomer(gateway, period.accountId);
    const charges = await prisma.overageCharge.findMany({ where: { overageInvoiceId: period.id, amount: { gt: 0 } }, orderBy: { creditType: 'asc' } });
    // A retry may follow an attempt that reached Stripe but died before recording what it made.
    const recovering = period.attempts > 1;
    const since = unixSeconds(period.firstAttemptAt ?? clock.now()) - 3_600;

    const subscriptionId = await this.subscriptionToBill(period);
    const placed = subscriptionId
      ? await this.addToSubscription(client, customerId, subscriptionId, period, charges, recovering ? await findOurItems(client, customerId, since) : new Map())
      : false;
    if (placed) {
      await prisma.overageInvoice.updateMany({
        where: { id: period.id, status: 'PENDING' },
        data: { status: 'INVOICED', invoicedAt: clock.now(), leaseUntil: null, lastError: null },
      });
      return;
    }

    let invoiceId = period.stripeInvoiceId;
    if (!invoiceId) {
      const found = recovering ? await findOurInvoice(client, customerId, period.id, since) : null;
      invoiceId =
        found ??
        (
          await client.invoices.create(
            {
              customer: customerId,
              collection_method: 'charge_automatically',
              // Drafts are not finalized by Stripe on their own before every item is on them.
              auto_advance: false,
              // Only the items created for this invoice: never other pending items of the customer.
              pending_invoice_items_behavior: 'exclude',
              currency: period.currency.toLowerCase(),
              description: `Overage ${period.periodStart.toISOString().slice(0, 10)} to ${period.periodEnd.toISOString().slice(0, 10)}`,
              metadata: { kind: 'overage', account_id: period.accountId, overage_invoice_id: period.id, period_start: period.periodStart.toISOString() },
            },
            { idempotencyKey: overageInvoiceKey(period.accountId, period.periodStart) },
          )
        ).id;
      await prisma.overageInvoice.updateMany({ where: { id: period.id, stripeInvoiceId: null }, data: { stripeInvoiceId: invoiceId } });
    }

    const missing = charges.filter((charge) => charge.stripeInvoiceItemId === null);
    const existing = recovering && missing.length > 0 ? await findOurItems(client, customerId, since) : new Map<string, string>();
    for (const charge of missing) {
      const itemId =
        existing.get(charge.id) ??
        (
          await client.invoiceItems.create(
            { ...itemParams(customerId, charge, period.periodEnd), invoice: invoiceId },
            { idempotencyKey: overageItemKey(charge.accountId, charge.periodStart, charge.creditType) },
          )
        ).id;
      await prisma.overageCharge.updateMany({ where: { id: charge.id, stripeInvoiceItemId: null }, data: { stripeInvoiceItemId: itemId } });
    }

    let invoice = await client.invoices.retrieve(invoiceId);
    if (invoice.status === 'draft') {
      // auto_advance from here on: Stripe retries a failed payment on its schedule (Smart Retries).
      invoice = await client.invoices.finalizeInvoice(invoiceId, { auto_advance: true }, { idempotencyKey: `overage-finalize:${invoiceId}` });
    }
    if (invoice.status === 'open') {
      try {
        await client.invoices.pay(invoiceId, {}, { idempotencyKey: `overage-pay:${invoiceId}` });
      } catch (error) {
        // A refusal (declined card, no payment method) leaves the invoice open: Stripe retries it and
        // the customer can pay on its hosted page; invoice.payment_failed tells Account.invoices.
        if (!isPaymentRefusal(error)) throw error;
        logger.info({ accountId: period.accountId, invoiceId, reason: (error as Error).message }, 'overage invoice not paid now; left open');
      }
    }
    await prisma.overageInvoice.updateMany({
      where: { id: period.id, status: 'PENDING' },
      data: { status: 'INVOICED', invoicedAt: clock.now(), leaseUntil: null, lastError: null },
    });
  }
}

/** The item Stripe is asked for, whichever invoice it goes on. */
function itemParams(customerId: string, charge: OverageCharge, periodEnd: Date) {
  return {
    customer: customerId,
    amount: Number(charge.amount),
    currency: charge.currency.toLowerCase(),
    description: describeCharge(charge, periodEnd),
    period: { start: unixSeconds(charge.periodStart), end: unixSeconds(periodEnd) },
    metadata: {
      kind: 'overage',
      account_id: charge.accountId,
      overage_charge_id: charge.id,
      credit_type: charge.creditType,
      period_start: charge.periodStart.toISOString(),
      credits: charge.credits.toString(),
    },
  };
}

/** Card declines (402) and refusals of the request itself (400: no payment method) are answers, not outages. */
function isPaymentRefusal(error: unknown): boolean {
  const type = (error as { type?: unknown } | null)?.type;
  return type === 'StripeCardError' || type === 'StripeInvalidRequestError';
}

async function findOurInvoice(client: Stripe, customerId: string, overageInvoiceId: string, since: number): Promise<string | null> {
  let seen = 0;
  for await (const invoice of client.invoices.list({ customer: customerId, created: { gte: since }, limit: 100 })) {
    if (invoice.metadata?.overage_invoice_id === overageInvoiceId) return invoice.id;
    if (++seen >= LOOKUP_LIMIT) break;
  }
  return null;
}

/** Our invoice items of the customer since `since`, by the overage charge id in their metadata. */
async function findOurItems(client: Stripe, customerId: string, since: number): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  let seen = 0;
  for await (const item of client.invoiceItems.list({ customer: customerId, created: { gte: since }, limit: 100 })) {
    const chargeId = item.metadata?.overage_charge_id;
    if (chargeId) found.set(chargeId, item.id);
    if (++seen >= LOOKUP_LIMIT) break;
  }
  return found;
}
