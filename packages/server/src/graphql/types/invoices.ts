import { Prisma } from '../../generated/prisma/client.ts';
import { toInvoiceRecord, type InvoiceLineRecord, type InvoiceRecord } from '../../stripe/invoiceRecords.ts';
import { builder } from '../builder.ts';
import { decodeCursor, defineConnection, pageSize, toConnection } from '../pagination.ts';
import { AccountRef } from './account.ts';
import { MoneyRef } from './catalog.ts';

const InvoiceStatusEnum = builder.enumType('InvoiceStatus', {
  description: 'Where a Stripe invoice stands (Stripe’s invoice lifecycle).',
  values: {
    DRAFT: { description: 'Being put together; amounts may still change.' },
    OPEN: { description: 'Finalized and waiting for payment (a failed attempt leaves it open for Stripe’s retries and the hosted page).' },
    PAID: { description: 'Paid.' },
    UNCOLLECTIBLE: { description: 'Marked as unlikely to be paid; it can still be paid or voided.' },
    VOID: { description: 'Cancelled; nothing is owed.' },
  } as const,
});

const InvoiceLineKindEnum = builder.enumType('InvoiceLineKind', {
  description: 'What a line of an invoice bills.',
  values: {
    PLAN: { description: 'The plan’s subscription price for a period.' },
    PRORATION: { description: 'An adjustment for a plan change within a period (Stripe’s proration).' },
    OVERAGE: { description: 'A period’s overage of one credit type, at the plan’s overage price.' },
    OTHER: { description: 'Anything else on the invoice.' },
  } as const,
});

const InvoiceLineRef = builder.objectRef<InvoiceLineRecord>('InvoiceLine').implement({
  description: 'One line of a Stripe invoice.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Stripe’s line id.' }),
    kind: t.expose('kind', { type: InvoiceLineKindEnum, description: 'What it bills.' }),
    description: t.exposeString('description', { nullable: true, description: 'As printed on the invoice.' }),
    amount: t.field({ type: MoneyRef, description: 'The line’s amount.', resolve: (line) => ({ amount: line.amount, currency: line.currency }) }),
    quantity: t.exposeInt('quantity', { nullable: true, description: 'Quantity billed, when Stripe gives one.' }),
    periodStart: t.field({ type: 'DateTime', description: 'Start of the service period billed.', resolve: (line) => new Date(line.periodStart) }),
    periodEnd: t.field({ type: 'DateTime', description: 'End of the service period billed.', resolve: (line) => new Date(line.periodEnd) }),
  }),
});

const money = (amount: number, invoice: InvoiceRecord) => ({ amount, currency: invoice.currency });

const InvoiceRef = builder.objectRef<InvoiceRecord>('Invoice').implement({
  description: 'What Stripe billed the account, as its invoice webhooks last described it.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Stripe’s invoice id (in_…).' }),
    number: t.exposeString('number', { nullable: true, description: 'The invoice number, once finalized.' }),
    status: t.expose('status', { type: InvoiceStatusEnum, description: 'Where it stands.' }),
    billingReason: t.exposeString('billingReason', {
      nullable: true,
      description: 'Why Stripe made it (subscription_create, subscription_cycle, subscription_update, manual, …).',
    }),
    subscriptionId: t.exposeString('subscriptionId', { nullable: true, description: 'The Stripe subscription it bills, if any.' }),
    subtotal: t.field({ type: MoneyRef, description: 'Sum of the lines before discounts and taxes.', resolve: (invoice) => money(invoice.subtotal, invoice) }),
    total: t.field({ type: MoneyRef, description: 'The total.', resolve: (invoice) => money(invoice.total, invoice) }),
    amountDue: t.field({ type: MoneyRef, description: 'What is to be paid.', resolve: (invoice) => money(invoice.amountDue, invoice) }),
    amountPaid: t.field({ type: MoneyRef, description: 'What has been paid.', resolve: (invoice) => money(invoice.amountPaid, invoice) }),
    amountRemaining: t.field({ type: MoneyRef, description: 'What is still owed.', resolve: (invoice) => money(invoice.amountRemaining, invoice) }),
    attemptCount: t.exposeInt('attemptCount', { description: 'Payment attempts made.' }),
    nextPaymentAttempt: t.expose('nextPaymentAttempt', { type: 'DateTime', nullable: true, description: 'When Stripe will try to collect again, if it will.' }),
    hostedInvoiceUrl: t.exposeString('hostedInvoiceUrl', { nullable: true, description: 'Stripe’s page where the customer sees and pays it (once finalized).' }),
    invoicePdf: t.exposeString('invoicePdf', { nullable: true, description: 'The PDF, once finalized.' }),
    periodStart: t.expose('periodStart', { type: 'DateTime', description: 'Start of the period Stripe says it covers.' }),
    periodEnd: t.expose('periodEnd', { type: 'DateTime', description: 'End of that period.' }),
    lines: t.field({ type: [InvoiceLineRef], description: 'Its lines (plan, proration, overage, other), as the last webhook carried them.', resolve: (invoice) => invoice.lines }),
    linesComplete: t.exposeBoolean('linesComplete', {
      description: 'False when the invoice has more lines than Stripe put in the webhook (its first page); the full list is on the hosted page.',
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When Stripe created it.' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When a webhook last changed it here.' }),
  }),
});

const InvoiceConnectionRef = defineConnection('Invoice', InvoiceRef, 'invoice');

builder.objectFields(AccountRef, (t) => ({
  invoices: t.field({
    type: InvoiceConnectionRef,
    description: 'What Stripe billed this account (plan, proration and overage lines), newest first; kept current from Stripe’s invoice webhooks. ADMIN and ACCOUNT keys, and account-wide session tokens.',
    authScopes: { billingReader: true },
    args: {
      first: t.arg.int({ description: 'Page size, 1 to 500; default 50.' }),
      after: t.arg.string({ description: 'A cursor from a previous page.' }),
    },
    resolve: async (account, args, context) => {
      const limit = pageSize(args.first);
      const after = decodeCursor(args.after, ['instant', 'id']);
      const rows = await context.prisma.$queryRaw<Array<{ id: string }>>`
        SELECT id FROM stripe_invoices WHERE account_id = ${account.id} AND status <> 'deleted'
        ${after ? Prisma.sql`AND (stripe_created_at, id) < (${new Date(String(after[0]))}, ${String(after[1])})` : Prisma.empty}
        ORDER BY stripe_created_at DESC, id DESC LIMIT ${limit + 1}`;
      const invoices = await context.prisma.stripeInvoice.findMany({ where: { id: { in: rows.map((row) => row.id) } } });
      const byId = new Map(invoices.map((invoice) => [invoice.id, toInvoiceRecord(invoice)]));
      const ordered = rows.map((row) => byId.get(row.id)).filter((invoice): invoice is InvoiceRecord => invoice !== undefined);
      return toConnection(ordered, limit, (invoice) => [invoice.createdAt.toISOString(), invoice.id]);
    },
  }),
}));
