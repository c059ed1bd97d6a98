import type { Logger } from 'pino';
import type Stripe from 'stripe';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { StripeInvoice } from '../generated/prisma/client.ts';
import { stripeIdOf } from './paymentMatching.ts';

/** The invoice events whose object is the invoice as it stands; each replaces what was stored, if newer. */
const SNAPSHOT_EVENTS = new Set([
  'invoice.created',
  'invoice.updated',
  'invoice.finalized',
  'invoice.paid',
  'invoice.payment_failed',
  'invoice.marked_uncollectible',
  'invoice.voided',
]);

export type InvoiceStatus = 'DRAFT' | 'OPEN' | 'PAID' | 'UNCOLLECTIBLE' | 'VOID';
export type InvoiceLineKind = 'PLAN' | 'PRORATION' | 'OVERAGE' | 'OTHER';

/**
 * Stripe's invoice lifecycle, in order: draft → open → paid, void or uncollectible (which can still
 * be paid or voided). A state never goes back to a lower rank, so an event carrying one is older
 * than what is stored, whatever order the deliveries came in.
 */
const STATUS_RANK: Record<string, number> = { draft: 0, open: 1, uncollectible: 2, paid: 3, void: 3, deleted: 4 };

/** Lines kept per invoice: Stripe puts a page of them in the event; a body of 1 MiB could hold thousands. */
const MAX_LINES = 100;

export interface InvoiceLineRecord {
  id: string;
  kind: InvoiceLineKind;
  description: string | null;
  amount: number;
  currency: string;
  quantity: number | null;
  periodStart: string;
  periodEnd: string;
}

export interface InvoiceRecord {
  id: string;
  accountId: string;
  number: string | null;
  status: InvoiceStatus;
  billingReason: string | null;
  subscriptionId: string | null;
  currency: string;
  subtotal: number;
  total: number;
  amountDue: number;
  amountPaid: number;
  amountRemaining: number;
  attemptCount: number;
  nextPaymentAttempt: Date | null;
  hostedInvoiceUrl: string | null;
  invoicePdf: string | null;
  periodStart: Date;
  periodEnd: Date;
  lines: InvoiceLineRecord[];
  linesComplete: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export function toInvoiceRecord(row: StripeInvoice): InvoiceRecord {
  return {
    id: row.id,
    accountId: row.accountId,
    number: row.number,
    status: row.status.toUpperCase() as InvoiceStatus,
    billingReason: row.billingReason,
    subscriptionId: row.subscriptionId,
    currency: row.currency,
    subtotal: Number(row.subtotal),
    total: Number(row.total),
    amountDue: Number(row.amountDue),
    amountPaid: Number(row.amountPaid),
    amountRemaining: Number(row.amountRemaining),
    attemptCount: row.attemptCount,
    nextPaymentAttempt: row.nextPaymentAttempt,
    hostedInvoiceUrl: row.hostedInvoiceUrl,
    invoicePdf: row.invoicePdf,
    periodStart: row.periodStart,
    periodEnd: row.periodEnd,
    lines: row.lines as unknown as InvoiceLineRecord[],
    linesComplete: row.linesComplete,
    createdAt: row.stripeCreatedAt,
    updatedAt: row.updatedAt,
  };
}

const fromUnix = (seconds: number): Date => new Date(seconds * 1000);


/** What a line bills: our overage items carry kind=overage in their metadata; Stripe marks prorations and subscription lines. */
function lineKind(line: Stripe.InvoiceLineItem): InvoiceLineKind {
  if (line.metadata?.kind === 'overage') return 'OVERAGE';
  const parent = line.parent;
  if (parent?.subscription_item_details?.proration || parent?.invoice_item_details?.proration) return 'PRORATION';
  if (parent?.type === 'subscription_item_details') return 'PLAN';
  return 'OTHER';
}

function toLine(line: Stripe.InvoiceLineItem): InvoiceLineRecord {
  return {
    id: line.id,
    kind: lineKind(line),
    description: line.description?.slice(0, 500) ?? null,
    amount: line.amount,
    currency: line.currency.toUpperCase(),
    quantity: line.quantity ?? null,
    periodStart: fromUnix(line.period.start).toISOString(),
    periodEnd: fromUnix(line.period.end).toISOString(),
  };
}

/** Whether an event's invoice state is newer than the stored one: a higher lifecycle rank, or as high and later (attempts, then event time). */
function isNewer(stored: Pick<StripeInvoice, 'statusRank' | 'attemptCount' | 'lastEventCreated'>, rank: number, attempts: number, eventCreated: Date): boolean {
  if (rank !== stored.statusRank) return rank > stored.statusRank;
  if (attempts !== stored.attemptCount) return attempts > stored.attemptCount;
  return eventCreated.getTime() >= stored.lastEventCreated.getTime();
}

/**
 * Keeps `Account.invoices` current from Stripe's invoice webhooks (issue 19 item 5), in the
 * transaction that marks the event processed (so each event applies once). The account is the one
 * whose Stripe customer the invoice names, never one a field of the payload claims; an invoice of a
 * customer that is no account's is acknowledged and ignored. Deliveries may come in any order: the
 * stored state is replaced only by a newer one (lifecycle rank, then payment attempts, then event
 * time), so a late `invoice.created` never turns a paid invoice back into a draft. A deleted draft
 * stays as a tombstone that is never listed. Other event types are not this function's.
 */
export async function recordInvoiceEvent(tx: Tx, clock: Clock, logger: Logger, event: Stripe.Event): Promise<void> {
  if (!SNAPSHOT_EVENTS.has(event.type) && event.type !== 'invoice.deleted') return;
  const invoice = event.data.object as Stripe.Invoice;
  const customerId = stripeIdOf(invoice.customer);
  // A deleted draft is kept as a tombstone (never listed), so that a late invoice.created cannot bring it back.
  const status = event.type === 'invoice.deleted' ? 'deleted' : invoice.status;
  const rank = status ? STATUS_RANK[status] : undefined;
  if (!invoice.id || rank === undefined || !customerId) {
    logger.warn({ stripeEventId: event.id, eventType: event.type }, 'Stripe invoice event without an id, a known status or a customer; acknowledged, nothing recorded');
    return;
  }
  const account = await tx.account.findUnique({ where: { stripeCustomerId: customerId }, select: { id: true } });
  if (!account) {
    logger.info({ stripeEventId: event.id, invoiceId: invoice.id }, 'Stripe invoice of a customer that is no account; acknowledged, nothing recorded');
    return;
  }
  const eventCreated = fromUnix(event.created);
  const subscription = invoice.parent?.subscription_details?.subscription;
  const data = {
    accountId: account.id,
    number: invoice.number ?? null,
    status: status as string,
    billingReason: invoice.billing_reason ?? null,
    subscriptionId: stripeIdOf(subscription),
    currency: invoice.currency.toUpperCase(),
    subtotal: BigInt(invoice.subtotal),
    total: BigInt(invoice.total),
    amountDue: BigInt(invoice.amount_due),
    amountPaid: BigInt(invoice.amount_paid),
    amountRemaining: BigInt(invoice.amount_remaining),
    attemptCount: invoice.attempt_count ?? 0,
    nextPaymentAttempt: invoice.next_payment_attempt ? fromUnix(invoice.next_payment_attempt) : null,
    hostedInvoiceUrl: invoice.hosted_invoice_url ?? null,
    invoicePdf: invoice.invoice_pdf ?? null,
    periodStart: fromUnix(invoice.period_start),
    periodEnd: fromUnix(invoice.period_end),
    lines: (invoice.lines?.data ?? []).slice(0, MAX_LINES).map(toLine) as unknown as object,
    linesComplete: !(invoice.lines?.has_more ?? false) && (invoice.lines?.data ?? []).length <= MAX_LINES,
    stripeCreatedAt: fromUnix(invoice.created),
    statusRank: rank,
    lastEventCreated: eventCreated,
    lastEventId: event.id,
    updatedAt: clock.now(),
  };
  // The first event of an invoice inserts it; a concurrent one waits on that insert's key, then
  // compares under the row's lock, so that two events of one invoice are applied in turn.
  const { count } = await tx.stripeInvoice.createMany({ data: [{ id: invoice.id, ...data }], skipDuplicates: true });
  if (count === 1) return;
  const [stored] = await tx.$queryRaw<Array<{ status_rank: number; attempt_count: number; last_event_created: Date; account_id: string }>>`
    SELECT status_rank, attempt_count, last_event_created, account_id FROM stripe_invoices WHERE id = ${invoice.id} FOR UPDATE`;
  if (!stored) throw new Error(`stripe invoice ${invoice.id} vanished under its key`);
  if (stored.account_id !== account.id) {
    logger.warn({ stripeEventId: event.id, invoiceId: invoice.id }, 'Stripe invoice names another account than the one it was recorded for; acknowledged, nothing changed');
    return;
  }
  if (!isNewer({ statusRank: stored.status_rank, attemptCount: stored.attempt_count, lastEventCreated: stored.last_event_created }, rank, data.attemptCount, eventCreated)) {
    logger.info({ stripeEventId: event.id, invoiceId: invoice.id }, 'Stripe invoice event older than the state recorded; acknowledged');
    return;
  }
  await tx.stripeInvoice.update({ where: { id: invoice.id }, data });
}
