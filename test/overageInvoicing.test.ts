import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../packages/server/src/db/database.ts';
import { fixedClock, systemClock } from '../packages/server/src/domain/clock.ts';
import type { PrismaClient } from '../packages/server/src/generated/prisma/client.ts';
import { DueWorkRunner } from '../packages/server/src/jobs/dueWorkRunner.ts';
import { OverageInvoicer, overageInvoiceKey, overageItemKey } from '../packages/server/src/stripe/overageInvoicing.ts';
import { StripeGateway } from '../packages/server/src/stripe/stripeGateway.ts';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import type { FakeInvoiceItem } from './support/fakeStripeBilling.ts';
import { advanceClock, createAccount, createKey, createTestClock, defineFeature, definePlan, ok, operator, recordUsage } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

// The invoicers take every pending period they find: a database of their own keeps other files'
// accounts out of their way (and theirs out of the counts here).
const WEBHOOK_SECRET = 'whsec_overage';
let fake: FakeStripe;
let server: TestServer;
let second: Database | null = null;
let database: Awaited<ReturnType<typeof isolatedDatabase>>;
const silent = pino({ level: 'silent' });

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
  // On PostgreSQL the second runner has its own pool, as another instance would.
  if (database.url) second = await openDatabase({ databaseUrl: database.url, dataDir: 'memory://', poolSize: 5 });
});
afterAll(async () => {
  await second?.close();
  await server?.stop();
  await database?.drop();
  await fake?.close();
});

async function invoicer(prisma: PrismaClient): Promise<OverageInvoicer> {
  const gateway = await StripeGateway.create({ secretKey: 'sk_test_fake', webhookSecret: WEBHOOK_SECRET, apiBase: fake.url });
  return new OverageInvoicer({ prisma, clock: systemClock, gateway, logger: silent });
}

/** Two job runners (two pools on PostgreSQL) racing over the same pending periods, twice each. */
async function race(): Promise<number> {
  const runners = [await invoicer(server.app.database.prisma), await invoicer(second?.prisma ?? server.app.database.prisma)];
  const counts = await Promise.all([...runners, ...runners].map((runner) => runner.invoiceDue()));
  return counts.reduce((sum, count) => sum + count, 0);
}

async function payAsYouGo(price: { amount: number; perCredits: number } | null = { amount: 250, perCredits: 100 }, target: TestServer = server) {
  const pool = unique('credits');
  const feature = await defineFeature(target, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(target, {
    allocations: [{ creditType: pool, amount: 1_000, ...(price ? { overagePrice: price } : {}) }],
    featureKeys: [feature],
    overagePolicy: 'PAY_AS_YOU_GO',
    maxOverageCredits: 100_000,
  });
  return { pool, feature, plan };
}

function itemsCustomer(accountId: string): string | undefined {
  return [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId)?.id;
}

function itemsOf(accountId: string): FakeInvoiceItem[] {
  return [...fake.billing.invoiceItems.values()].filter((item) => item.metadata.account_id === accountId);
}

const monthStart = (index: number) => new Date(Date.UTC(2027, index, 1));

describe('overage invoicing', () => {
  it('a test-clock year: exactly one invoice item per month with overage, two runners racing, refunds before the close deducted, catch-up after downtime', async () => {
    const { feature, plan } = await payAsYouGo({ amount: 250, perCredits: 100 });
    const clockId = await createTestClock(server, monthStart(0).toISOString());
    const accountId = await createAccount(server, plan, clockId);
    // Credits used each month against an allocation of 1,000 (no rollover): overage is what is above.
    const usage = [1_500, 800, 1_000, 2_345, 0, 1_001, 999, 3_000, 1_000, 1_200, 1_999, 0];
    const refundedBeforeClose = new Map([[3, 345]]);
    const expectedOverage = usage.map((used, month) => Math.max(0, used - 1_000) - (refundedBeforeClose.get(month) ?? 0));
    let month3Event = '';

    const record = async (month: number) => {
      if (usage[month] === 0) return;
      const recorded = ok(await recordUsage(server, { accountId, featureKey: feature, quantity: usage[month] })).recordUsage;
      expect(recorded.__typename).toBe('UsageRecorded');
      const refund = refundedBeforeClose.get(month);
      if (refund) {
        month3Event = recorded.usageEvent.id;
        await operator(server).refundUsage({ usageEventId: recorded.usageEvent.id, credits: refund, idempotencyKey: unique('refund') });
      }
    };

    // Months 0 to 9 one at a time, the runners racing after each close.
    for (let month = 0; month < 10; month += 1) {
      await record(month);
      await advanceClock(server, clockId, monthStart(month + 1));
      if (month === 0) {
        // The first close made the account's Stripe customer; it had no payment method then.
        await race();
        const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId)!;
        fake.setDefaultPaymentMethod(customer.id, 'pm_card_visa');
        continue;
      }
      if (month === 4) {
        // A refund after the close does not change what was invoiced for month 3.
        await operator(server).refundUsage({ usageEventId: month3Event, credits: 100, idempotencyKey: unique('refund') });
      }
      await race();
    }
    // Downtime: months 10 and 11 close (the last two in one advance) with no runner about.
    await record(10);
    await advanceClock(server, clockId, monthStart(12));
    expect(itemsOf(accountId).filter((item) => item.metadata.period_start! >= monthStart(10).toISOString())).toEqual([]);
    await race();
    expect(await race()).toBe(0);

    const items = itemsOf(accountId).sort((a, b) => a.metadata.period_start!.localeCompare(b.metadata.period_start!));
    const expected = expectedOverage
      .map((credits, month) => ({ month, credits }))
      .filter(({ credits }) => credits > 0)
      .map(({ month, credits }) => ({
        periodStart: monthStart(month).toISOString(),
        credits: String(credits),
        // 2.50 per 100 credits, rounded half up to the cent.
        amount: Math.round((credits * 250) / 100),
      }));
    expect(expected.map((row) => row.credits)).toEqual(['500', '1000', '1', '2000', '200', '999']);
    expect(items.map((item) => ({ periodStart: item.metadata.period_start, credits: item.metadata.credits, amount: item.amount }))).toEqual(expected);

    // Each item is on its own standalone invoice, created and finalized once, with our idempotency keys.
    const creations = fake.requests.filter((request) => request.method === 'POST' && request.path === '/v1/invoiceitems' && request.status === 200 && !request.replayed);
    const ours = creations.filter((request) => (request.body.metadata as Record<string, string>).account_id === accountId);
    expect(ours).toHaveLength(items.length);
    for (const item of items) {
      expect(ours.filter((request) => request.idempotencyKey === overageItemKey(accountId, new Date(item.metadata.period_start!), item.metadata.credit_type!))).toHaveLength(1);
      const invoice = fake.billing.invoices.get(item.invoice!)!;
      expect(invoice.lines.data.map((line) => line.parent.invoice_item_details?.invoice_item)).toEqual([item.id]);
      expect(invoice.metadata).toMatchObject({ kind: 'overage', account_id: accountId, period_start: item.metadata.period_start });
      expect(invoice.period_start).toBeDefined();
    }
    const invoiceCreations = fake.requests.filter(
      (request) => request.path === '/v1/invoices' && request.method === 'POST' && !request.replayed && (request.body.metadata as Record<string, string>).account_id === accountId,
    );
    expect(invoiceCreations.map((request) => request.idempotencyKey).sort()).toEqual(expected.map((row) => overageInvoiceKey(accountId, new Date(row.periodStart))).sort());

    // The first one found no payment method and stays open for Stripe's retries and the hosted page; the others were paid.
    const statuses = items.map((item) => fake.billing.invoices.get(item.invoice!)!.status);
    expect(statuses).toEqual(['open', 'paid', 'paid', 'paid', 'paid', 'paid']);
    expect(fake.billing.invoices.get(items[0]!.invoice!)!.hosted_invoice_url).toMatch(/^http/);

    const periods = await server.app.database.prisma.overageInvoice.findMany({ where: { accountId }, include: { charges: true }, orderBy: { periodStart: 'asc' } });
    expect(periods.map((period) => [period.periodStart.toISOString(), period.status, period.charges.map((charge) => Number(charge.credits))])).toEqual(
      expected.map((row) => [row.periodStart, 'INVOICED', [Number(row.credits)]]),
    );
  });

  it('an overage price is refused (INVALID_INPUT, INVALID_CREDITS) on a HARD_STOP plan, per seat, or out of bounds, and the plan is left as it was', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const code = await definePlan(server, { allocations: [{ creditType: pool, amount: 10 }], featureKeys: [feature] });
    const upsert = `mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`;
    const base = { code, name: code, interval: 'MONTH', price: { amount: 1000, currency: 'USD' }, featureKeys: [feature], overagePolicy: 'PAY_AS_YOU_GO', maxOverageCredits: 10 };
    const cases = [
      { ...base, overagePolicy: 'HARD_STOP', allocations: [{ creditType: pool, amount: 10, overagePrice: { amount: 100, perCredits: 10 } }] },
      { ...base, allocations: [{ creditType: pool, amount: 10, perSeat: true, overagePrice: { amount: 100, perCredits: 10 } }] },
      { ...base, allocations: [{ creditType: pool, amount: 10, overagePrice: { amount: 0, perCredits: 10 } }] },
      { ...base, allocations: [{ creditType: pool, amount: 10, overagePrice: { amount: 100_000_000, perCredits: 10 } }] },
    ];
    for (const input of cases) {
      const response = await server.gql(upsert, { input });
      expect(response.errors?.[0]?.extensions?.code, JSON.stringify(input)).toBe('INVALID_INPUT');
    }
    // Credits are refused as credits are everywhere.
    const noBlock = await server.gql(upsert, { input: { ...base, allocations: [{ creditType: pool, amount: 10, overagePrice: { amount: 100, perCredits: 0 } }] } });
    expect(noBlock.errors?.[0]?.extensions?.code).toBe('INVALID_CREDITS');
    const plan = ok(await server.gql(`query($code: String!) { plan(code: $code) { overagePolicy allocations { overagePrice { amount { amount currency } perCredits } } } }`, { code })).plan;
    expect(plan).toEqual({ overagePolicy: 'HARD_STOP', allocations: [{ overagePrice: null }] });
    ok(await server.gql(upsert, { input: { ...base, allocations: [{ creditType: pool, amount: 10, overagePrice: { amount: 250, perCredits: 100 } }] } }));
    const priced = ok(await server.gql(`query($code: String!) { plan(code: $code) { allocations { overagePrice { amount { amount currency } perCredits } } } }`, { code })).plan;
    expect(priced.allocations).toEqual([{ overagePrice: { amount: { amount: 250, currency: 'USD' }, perCredits: 100 } }]);
  });

  it('a price of 0 after rounding, or no price at all, is recorded as not billed and sends nothing to Stripe', async () => {
    const cheap = await payAsYouGo({ amount: 1, perCredits: 1_000 });
    const free = await payAsYouGo(null);
    const clockId = await createTestClock(server, monthStart(0).toISOString());
    const cheapAccount = await createAccount(server, cheap.plan, clockId);
    const freeAccount = await createAccount(server, free.plan, clockId);
    ok(await recordUsage(server, { accountId: cheapAccount, featureKey: cheap.feature, quantity: 1_400 }));
    ok(await recordUsage(server, { accountId: freeAccount, featureKey: free.feature, quantity: 1_400 }));
    await advanceClock(server, clockId, monthStart(1));
    await race();
    const periods = await server.app.database.prisma.overageInvoice.findMany({ where: { accountId: { in: [cheapAccount, freeAccount] } }, include: { charges: true } });
    expect(periods.map((period) => [period.status, Number(period.charges[0]!.credits), Number(period.charges[0]!.amount)])).toEqual([
      ['NOT_BILLED', 400, 0],
      ['NOT_BILLED', 400, 0],
    ]);
    expect([...itemsOf(cheapAccount), ...itemsOf(freeAccount)]).toEqual([]);
  });

  it('a period closed by the set-based renewal of the job runner is invoiced like one closed by a test clock', async () => {
    const { feature, plan } = await payAsYouGo({ amount: 1_000, perCredits: 1_000 });
    const accountId = await createAccount(server, plan);
    ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 1_750 }));
    const runner = new DueWorkRunner({ prisma: server.app.database.prisma, clock: fixedClock(new Date(Date.now() + 32 * 86_400_000)), logger: silent, intervalMs: 1000 });
    await runner.runOnce();
    expect(await server.app.database.prisma.periodRenewal.count({ where: { accountId } })).toBe(1);
    await race();
    expect(itemsOf(accountId).map((item) => [item.metadata.credits, item.amount])).toEqual([['750', 750]]);
  });

  it('a retry after a crash that lost what Stripe answered (beyond the idempotency window) finds the invoice and the item and makes no second one', async () => {
    const { feature, plan } = await payAsYouGo({ amount: 100, perCredits: 10 });
    const clockId = await createTestClock(server, monthStart(0).toISOString());
    const accountId = await createAccount(server, plan, clockId);
    ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 1_020 }));
    await advanceClock(server, clockId, monthStart(1));
    // The first attempt creates the invoice and the item, then its finalization fails (three tries: the client retries a 500 twice).
    fake.billing.failNext('/finalize', 3);
    await race();
    const prisma = server.app.database.prisma;
    const [period] = await prisma.overageInvoice.findMany({ where: { accountId }, include: { charges: true } });
    expect(period).toMatchObject({ status: 'PENDING', attempts: 1 });
    expect(period!.stripeInvoiceId).not.toBeNull();
    // As if the process had died before recording Stripe's answers, and a day had passed.
    await prisma.overageInvoice.update({ where: { id: period!.id }, data: { stripeInvoiceId: null, nextAttemptAt: new Date(0) } });
    await prisma.overageCharge.updateMany({ where: { overageInvoiceId: period!.id }, data: { stripeInvoiceItemId: null } });
    fake.billing.forgetIdempotencyKeys();
    await race();
    const items = itemsOf(accountId);
    expect(items.map((item) => item.amount)).toEqual([200]);
    const invoices = [...fake.billing.invoices.values()].filter((invoice) => invoice.metadata.account_id === accountId);
    expect(invoices.map((invoice) => invoice.id)).toEqual([items[0]!.invoice]);
    const [after] = await prisma.overageInvoice.findMany({ where: { accountId }, include: { charges: true } });
    expect(after).toMatchObject({ status: 'INVOICED', stripeInvoiceId: items[0]!.invoice, attempts: 2 });
    expect(after!.charges[0]!.stripeInvoiceItemId).toBe(items[0]!.id);
  });

  it('an account with a Stripe subscription: each period’s overage is a pending item on the subscription, which Stripe puts on its next invoice; no standalone invoice', async () => {
    const { pool, feature, plan } = await payAsYouGo({ amount: 250, perCredits: 100 });
    ok(await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code } }`, { input: { planCode: plan } }));
    const free = await definePlan(server, { allocations: [{ creditType: pool, amount: 0 }], featureKeys: [feature] });
    const clockId = await createTestClock(server, monthStart(0).toISOString());
    const accountId = await createAccount(server, free, clockId);
    const key = await createKey(server, 'ACCOUNT', accountId);
    const checkout = ok(
      await server.gql(
        `mutation($input: SubscribeToPlanInput!) { subscribeToPlan(input: $input) { id } }`,
        { input: { accountId, planCode: plan, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('sub') } },
        key,
      ),
    ).subscribeToPlan;
    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.subscription_checkout_id === checkout.id)!;
    fake.subscriptions.takeEvents();
    fake.subscriptions.completeSubscriptionCheckout(session.id);
    for (const event of fake.subscriptions.takeEvents()) {
      const { body, signature } = fake.signedPayload(event, WEBHOOK_SECRET);
      const response = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
      expect(response.status).toBe(200);
    }
    const subscriptionId = [...fake.subscriptions.subscriptions.values()].find((candidate) => candidate.customer === itemsCustomer(accountId))!.id;
    const periodEnd = async () => new Date(ok(await server.gql(`query($id: ID!) { account(id: $id) { subscription { plan { code } currentPeriod { end } } } }`, { id: accountId })).account.subscription.currentPeriod.end);
    ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 1_500 }));
    await advanceClock(server, clockId, await periodEnd());
    await race();
    const [item] = itemsOf(accountId);
    expect(item).toMatchObject({ amount: 1_250, invoice: null, parent: { subscription_details: { subscription: subscriptionId } } });
    expect([...fake.billing.invoices.values()].filter((invoice) => invoice.metadata.kind === 'overage' && invoice.metadata.account_id === accountId)).toEqual([]);
    const [period] = await server.app.database.prisma.overageInvoice.findMany({ where: { accountId } });
    expect(period).toMatchObject({ status: 'INVOICED', stripeSubscriptionId: subscriptionId, stripeInvoiceId: null });

    // The next renewal's invoice takes the pending item, as Stripe's does.
    await advanceClock(server, clockId, await periodEnd());
    const renewal = [...fake.billing.invoices.values()].find((invoice) => invoice.lines.data.some((line) => line.parent.invoice_item_details?.invoice_item === item!.id));
    expect(renewal?.billing_reason).toBe('subscription_cycle');
    expect(itemsOf(accountId)).toHaveLength(1);

    // Stripe ends the subscription before its webhook arrives: Stripe refuses the next overage on it,
    // and the period goes to a standalone invoice in the same pass.
    (fake.subscriptions.subscriptions.get(subscriptionId) as { status: string }).status = 'canceled';
    ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 1_100 }));
    await advanceClock(server, clockId, await periodEnd());
    await race();
    const standalone = itemsOf(accountId).filter((candidate) => candidate.id !== item!.id);
    expect(standalone.map((candidate) => [candidate.amount, candidate.parent])).toEqual([[250, null]]);
    expect(fake.billing.invoices.get(standalone[0]!.invoice!)?.metadata).toMatchObject({ kind: 'overage', account_id: accountId });
    const periods = await server.app.database.prisma.overageInvoice.findMany({ where: { accountId }, orderBy: { periodStart: 'asc' } });
    expect(periods.map((candidate) => [candidate.status, candidate.standalone, candidate.stripeSubscriptionId])).toEqual([
      ['INVOICED', false, subscriptionId],
      ['INVOICED', true, null],
    ]);
  });

  it('a running instance invoices a closed period by itself: its job runner starts passes without holding up its polls', async () => {
    const running = await startTestServer({
      STRIPE_SECRET_KEY: 'sk_test_fake',
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      STRIPE_API_BASE: fake.url,
      JOBS_ENABLED: 'true',
      JOBS_INTERVAL_MS: '100',
      ...(database.url ? { DATABASE_URL: database.url } : {}),
    });
    try {
      const { feature, plan } = await payAsYouGo({ amount: 30, perCredits: 10 }, running);
      const clockId = await createTestClock(running, monthStart(0).toISOString());
      const accountId = await createAccount(running, plan, clockId);
      ok(await recordUsage(running, { accountId, featureKey: feature, quantity: 1_050 }));
      await advanceClock(running, clockId, monthStart(1));
      const deadline = Date.now() + 60_000;
      while (itemsOf(accountId).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(itemsOf(accountId).map((item) => item.amount)).toEqual([150]);
    } finally {
      await running.stop();
    }
  });
});
