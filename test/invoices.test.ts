import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BillingApiError, createBillingClient } from '../packages/sdk/src/index.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { OverageInvoicer } from '../packages/server/src/stripe/overageInvoicing.ts';
import { StripeGateway } from '../packages/server/src/stripe/stripeGateway.ts';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import type { FakeInvoice } from './support/fakeStripeBilling.ts';
import { addSeat, advanceClock, createAccount, createKey, createTestClock, defineFeature, definePlan, ok, recordUsage } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

// The invoicer takes every pending period it finds: a database of its own.
const WEBHOOK_SECRET = 'whsec_invoices';
let fake: FakeStripe;
let server: TestServer;
let database: Awaited<ReturnType<typeof isolatedDatabase>>;

beforeAll(async () => {
  fake = await startFakeStripe();
  database = await isolatedDatabase();
  server = await startTestServer({
    STRIPE_SECRET_KEY: 'sk_test_fake',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
    JOBS_ENABLED: 'false',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  });
});
afterAll(async () => {
  await server?.stop();
  await database?.drop();
  await fake?.close();
});

type Event = ReturnType<FakeStripe['event']>;

async function deliver(event: object, options: { secret?: string; timestamp?: number } = {}): Promise<number> {
  const { body, signature } = fake.signedPayload(event, options.secret ?? WEBHOOK_SECRET, options.timestamp);
  const response = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
  return response.status;
}

/** An event as Stripe sends it, `created` seconds apart so that their order is known. */
function eventAt(type: string, invoice: FakeInvoice, created: number): Event {
  return { ...fake.event(type, invoice), created };
}

/** An account with a Stripe customer (made by invoicing a month of overage) and the overage invoice, left open for want of a payment method. */
async function accountWithOverageInvoice() {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(server, {
    allocations: [{ creditType: pool, amount: 100, overagePrice: { amount: 5, perCredits: 1 } }],
    featureKeys: [feature],
    overagePolicy: 'PAY_AS_YOU_GO',
    maxOverageCredits: 1_000,
  });
  const clockId = await createTestClock(server, '2027-03-01T00:00:00.000Z');
  const accountId = await createAccount(server, plan, clockId);
  ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 130 }));
  await advanceClock(server, clockId, '2027-04-01T00:00:00.000Z');
  const gateway = await StripeGateway.create({ secretKey: 'sk_test_fake', webhookSecret: WEBHOOK_SECRET, apiBase: fake.url });
  await new OverageInvoicer({ prisma: server.app.database.prisma, clock: systemClock, gateway, logger: pino({ level: 'silent' }) }).invoiceDue();
  const invoice = [...fake.billing.invoices.values()].find((candidate) => candidate.metadata.account_id === accountId);
  if (!invoice) throw new Error('no overage invoice');
  return { accountId, customerId: invoice.customer, overageInvoice: fake.billing.snapshot(invoice.id), accountKey: await createKey(server, 'ACCOUNT', accountId) };
}

const client = (apiKey: string) => createBillingClient({ url: `${server.url}/graphql`, apiKey, retries: 0 });
const codeOf = (promise: Promise<unknown>) => promise.then(() => 'ok', (error: unknown) => (error instanceof BillingApiError ? error.code : String(error)));

/** A subscription invoice's lines as Stripe describes them: the plan, a proration credit and charge. */
function withSubscriptionLines(invoice: FakeInvoice): FakeInvoice {
  const line = (id: string, amount: number, proration: boolean, description: string) => ({
    ...invoice.lines.data[0]!,
    id,
    amount,
    subtotal: amount,
    description,
    metadata: {},
    parent: {
      type: 'subscription_item_details' as const,
      invoice_item_details: null,
      subscription_item_details: { invoice_item: null, proration, proration_details: { credited_items: null }, subscription: 'sub_fake', subscription_item: 'si_fake' },
    },
  });
  const lines = [line('il_plan', 4_900, false, 'Pro plan'), line('il_credit', -1_000, true, 'Unused time on Basic'), line('il_charge', 2_450, true, 'Remaining time on Pro'), ...invoice.lines.data];
  const total = lines.reduce((sum, candidate) => sum + candidate.amount, 0);
  const amountPaid = invoice.status === 'paid' ? total : invoice.amount_paid;
  return {
    ...invoice,
    subtotal: total,
    total,
    amount_due: total,
    amount_paid: amountPaid,
    amount_remaining: total - amountPaid,
    lines: { ...invoice.lines, data: lines, total_count: lines.length },
  };
}

describe('Account.invoices', () => {
  it('follows the invoice lifecycle from webhooks delivered out of order, repeated and concurrently; lines are classified', async () => {
    const { accountId, customerId, accountKey } = await accountWithOverageInvoice();
    // Another invoice of the same customer, built through the official client, snapshot at each step.
    const stripe = fake.client;
    const draft = await stripe.invoices.create({ customer: customerId, auto_advance: false, currency: 'usd', metadata: { note: 'upgrade' } });
    await stripe.invoiceItems.create({ customer: customerId, invoice: draft.id, amount: 700, currency: 'usd', description: 'Overage: 140 credits', metadata: { kind: 'overage' } });
    const created = withSubscriptionLines(fake.billing.snapshot(draft.id));
    await stripe.invoices.finalizeInvoice(draft.id);
    const finalized = withSubscriptionLines(fake.billing.snapshot(draft.id));
    await expect(stripe.invoices.pay(draft.id)).rejects.toThrow(/no attached payment source/);
    const failed = withSubscriptionLines(fake.billing.snapshot(draft.id));
    const paid = withSubscriptionLines(fake.billing.payOnHostedPage(draft.id));
    expect([created.status, finalized.status, failed.status, failed.attempt_count, paid.status]).toEqual(['draft', 'open', 'open', 1, 'paid']);

    const t = Math.floor(Date.now() / 1000);
    const events = [eventAt('invoice.created', created, t), eventAt('invoice.finalized', finalized, t + 1), eventAt('invoice.payment_failed', failed, t + 2), eventAt('invoice.paid', paid, t + 3)];
    // Paid first, then the older ones, each twice, the failure three times at once.
    for (const event of [events[3]!, events[0]!, events[2]!, events[1]!, events[3]!, events[0]!]) expect(await deliver(event)).toBe(200);
    expect(await Promise.all([1, 2, 3].map(() => deliver(events[2]!)))).toEqual([200, 200, 200]);

    const page = await client(accountKey).invoices(accountId);
    const invoice = page.edges.map((edge) => edge.node).find((node) => node.id === draft.id);
    expect(invoice).toMatchObject({
      status: 'PAID',
      number: paid.number,
      total: { amount: 4_900 - 1_000 + 2_450 + 700, currency: 'USD' },
      amountPaid: { amount: 7_050, currency: 'USD' },
      amountRemaining: { amount: 0, currency: 'USD' },
      attemptCount: 1,
      hostedInvoiceUrl: paid.hosted_invoice_url,
      linesComplete: true,
    });
    expect(invoice!.lines.map((line) => [line.kind, line.amount.amount])).toEqual([
      ['PLAN', 4_900],
      ['PRORATION', -1_000],
      ['PRORATION', 2_450],
      ['OVERAGE', 700],
    ]);
    const stored = await server.app.database.prisma.stripeInvoice.findMany({ where: { accountId } });
    expect(stored.map((row) => row.id)).toEqual([draft.id]);

    // A later failure event of the same state, and a voided one of the overage invoice.
    expect(await deliver(eventAt('invoice.payment_failed', failed, t + 10))).toBe(200);
    expect((await client(accountKey).invoices(accountId)).edges.find((edge) => edge.node.id === draft.id)?.node.status).toBe('PAID');
  });

  it('the overage invoice: open after a failed payment with its hosted page, then voided; pages newest first', async () => {
    const { accountId, overageInvoice, accountKey } = await accountWithOverageInvoice();
    expect(overageInvoice).toMatchObject({ status: 'open', attempt_count: 1 });
    const t = Math.floor(Date.now() / 1000);
    expect(await deliver(eventAt('invoice.payment_failed', overageInvoice, t))).toBe(200);
    const [open] = (await client(accountKey).invoices(accountId)).edges.map((edge) => edge.node);
    expect(open).toMatchObject({
      id: overageInvoice.id,
      status: 'OPEN',
      attemptCount: 1,
      amountDue: { amount: 150, currency: 'USD' },
      amountRemaining: { amount: 150, currency: 'USD' },
      hostedInvoiceUrl: overageInvoice.hosted_invoice_url,
      billingReason: 'manual',
      periodStart: expect.any(String),
    });
    expect(open!.lines).toEqual([
      expect.objectContaining({ kind: 'OVERAGE', amount: { amount: 150, currency: 'USD' }, periodStart: '2027-03-01T00:00:00.000Z', periodEnd: '2027-04-01T00:00:00.000Z' }),
    ]);
    await fake.client.invoices.voidInvoice(overageInvoice.id);
    expect(await deliver(eventAt('invoice.voided', fake.billing.snapshot(overageInvoice.id), t + 1))).toBe(200);
    // The failure delivered again after the void changes nothing.
    expect(await deliver(eventAt('invoice.payment_failed', overageInvoice, t + 2))).toBe(200);
    const [voided] = (await client(accountKey).invoices(accountId)).edges.map((edge) => edge.node);
    expect(voided).toMatchObject({ status: 'VOID', nextPaymentAttempt: null });

    // A second invoice, created later: first in the list; pages of one follow the cursor.
    const later = await fake.client.invoices.create({ customer: overageInvoice.customer, auto_advance: false, currency: 'usd' });
    expect(await deliver(eventAt('invoice.created', { ...fake.billing.snapshot(later.id), created: overageInvoice.created + 5 }, t + 3))).toBe(200);
    const first = await client(accountKey).invoices(accountId, { first: 1 });
    expect(first.edges.map((edge) => edge.node.id)).toEqual([later.id]);
    expect(first.pageInfo.hasNextPage).toBe(true);
    const second = await client(accountKey).invoices(accountId, { first: 1, after: first.pageInfo.endCursor });
    expect(second.edges.map((edge) => edge.node.id)).toEqual([overageInvoice.id]);
    expect(second.pageInfo.hasNextPage).toBe(false);
    expect(await codeOf(client(accountKey).invoices(accountId, { first: 501 }))).toBe('INVALID_INPUT');
  });

  it('a deleted draft disappears and a late invoice.created does not bring it back', async () => {
    const { accountId, customerId, accountKey } = await accountWithOverageInvoice();
    const draft = await fake.client.invoices.create({ customer: customerId, auto_advance: false, currency: 'usd' });
    const snapshot = fake.billing.snapshot(draft.id);
    const t = Math.floor(Date.now() / 1000);
    expect(await deliver(eventAt('invoice.created', snapshot, t))).toBe(200);
    expect((await client(accountKey).invoices(accountId)).edges.map((edge) => edge.node.id)).toEqual([draft.id]);
    expect(await deliver(eventAt('invoice.deleted', snapshot, t + 1))).toBe(200);
    expect(await deliver(eventAt('invoice.created', snapshot, t))).toBe(200);
    expect((await client(accountKey).invoices(accountId)).edges).toEqual([]);
  });

  it('keeps at most 100 lines of an invoice and says the list is incomplete', async () => {
    const { accountId, overageInvoice, accountKey } = await accountWithOverageInvoice();
    const line = overageInvoice.lines.data[0]!;
    const lines = Array.from({ length: 120 }, (_, index) => ({ ...line, id: `il_${index}`, description: 'x'.repeat(600) }));
    const big = { ...overageInvoice, lines: { ...overageInvoice.lines, data: lines, total_count: 120 } };
    expect(await deliver(eventAt('invoice.finalized', big, Math.floor(Date.now() / 1000)))).toBe(200);
    const [invoice] = (await client(accountKey).invoices(accountId)).edges.map((edge) => edge.node);
    expect(invoice!.lines).toHaveLength(100);
    expect(invoice!.linesComplete).toBe(false);
    expect(invoice!.lines[0]!.description).toHaveLength(500);
  });

  it('forged, stale or foreign invoice events change nothing', async () => {
    const { accountId, overageInvoice, accountKey } = await accountWithOverageInvoice();
    const t = Math.floor(Date.now() / 1000);
    const paid = { ...overageInvoice, status: 'paid' as const, amount_paid: overageInvoice.amount_due, amount_remaining: 0 };
    // Signed with another secret, or a valid signature too old: refused before anything is read.
    expect(await deliver(eventAt('invoice.paid', paid, t), { secret: 'whsec_forged' })).toBe(400);
    expect(await deliver(eventAt('invoice.paid', paid, t), { timestamp: t - 3_600 })).toBe(400);
    // Signed, but the invoice of a customer that is no account's, claiming ours in its metadata.
    const foreign = { ...paid, id: 'in_foreign', customer: 'cus_someone_else', metadata: { account_id: accountId, kind: 'overage' } };
    expect(await deliver(eventAt('invoice.paid', foreign, t))).toBe(200);
    expect(await server.app.database.prisma.stripeInvoice.count({ where: { accountId } })).toBe(0);
    expect(await server.app.database.prisma.stripeInvoice.count({ where: { id: 'in_foreign' } })).toBe(0);
    expect((await client(accountKey).invoices(accountId)).edges).toEqual([]);
  });

  it('who reads invoices: ADMIN and ACCOUNT keys and account sessions; not SEAT keys or seat sessions, nor another account', async () => {
    const { accountId, overageInvoice, accountKey } = await accountWithOverageInvoice();
    expect(await deliver(eventAt('invoice.finalized', overageInvoice, Math.floor(Date.now() / 1000)))).toBe(200);
    const seatId = await addSeat(server, accountId);
    const seatKey = await createKey(server, 'SEAT', accountId, seatId);
    const other = await accountWithOverageInvoice();
    const ids = async (key: string) => (await client(key).invoices(accountId)).edges.map((edge) => edge.node.id);
    expect(await ids(server.adminKey)).toEqual([overageInvoice.id]);
    expect(await ids(accountKey)).toEqual([overageInvoice.id]);
    const { token: accountSession } = await client(accountKey).createSessionToken({ accountId });
    expect(await ids(accountSession)).toEqual([overageInvoice.id]);
    const { token: seatSession } = await client(accountKey).createSessionToken({ accountId, seatId });
    expect(await codeOf(client(seatKey).invoices(accountId))).toBe('FORBIDDEN');
    expect(await codeOf(client(seatSession).invoices(accountId))).toBe('FORBIDDEN');
    expect(await codeOf(client(other.accountKey).invoices(accountId))).toBe('ACCOUNT_NOT_FOUND');
  });
});
