import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BillingClient, LedgerWebhookEvent } from '../packages/sdk/src/index.ts';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { verifyLedger } from '../packages/server/src/observability/verifyLedger.ts';
import { advanceClock, createKey, createTestClock, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Issue 20 items 2 and 6 with real purchases through the Stripe-compatible test server: a bought
 * pack's grant costs price ÷ credits and is PAID; the finance reports count it issued, consumed,
 * clawed back after a refund; the purchase and its grant go out as ledger events.
 */
const WEBHOOK_SECRET = 'whsec_cost_basis';
let fake: FakeStripe;
let server: TestServer;
let database: { url: string | undefined; drop(): Promise<void> };
let admin: BillingClient;
let receiver: Server;
const events: LedgerWebhookEvent[] = [];

beforeAll(async () => {
  receiver = createServer((request: IncomingMessage, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      events.push(JSON.parse(Buffer.concat(chunks).toString()) as LedgerWebhookEvent);
      response.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  fake = await startFakeStripe();
  database = await isolatedDatabase();
  server = await startTestServer({
    STRIPE_SECRET_KEY: 'sk_test_fake',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
    JOBS_ENABLED: 'false',
    ALERT_WEBHOOK_ALLOW_PRIVATE: 'true',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  });
  admin = operator(server);
});

afterAll(async () => {
  await server?.stop();
  await fake?.close();
  await database?.drop();
  receiver?.close();
});

async function deliver(type: string, object: unknown) {
  const { body, signature } = fake.signedPayload(fake.event(type, object), WEBHOOK_SECRET);
  const response = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
  expect(response.status).toBe(200);
}

describe('cost basis of bought credits', () => {
  it('a pack bought through Checkout costs price ÷ credits, PAID; issued, recognised and clawed back in the reports; events out', async () => {
    const from = new Date(Date.now() - 60_000).toISOString();
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    // A free plan: its credits are promotional, so only the pack counts in the reports.
    const plan = unique('plan');
    await admin.upsertPlan({ code: plan, name: plan, interval: 'MONTH', price: { amount: 0, currency: 'USD' }, allocations: [{ creditType: pool, amount: 10 }], featureKeys: [feature] });
    const account = (await admin.createAccount({ name: 'buyer', planCode: plan })).id;
    const pack = unique('pack');
    await admin.upsertCreditPack({ code: pack, name: 'Credits', creditType: pool, credits: 400, price: { amount: 999, currency: 'EUR' } });
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/events`;
    await admin.createWebhookEndpoint({ url, eventTypes: ['purchase.completed', 'grant.created'], accountId: account });

    const purchase = await admin.purchaseCreditPack({ accountId: account, packCode: pack, quantity: 2, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no' });
    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.purchase_id === purchase.id)!;
    const { session: paid, paymentIntent } = fake.completeCheckout(session.id);
    await deliver('checkout.session.completed', paid);

    const grants = (await admin.grants(account)).edges.map((edge) => edge.node);
    const bought = grants.find((grant) => grant.source === 'PURCHASE')!;
    expect(bought).toMatchObject({ amount: 800, funding: 'PAID', costCurrency: 'EUR' });
    expect(bought.unitCost).toBeCloseTo(1998 / 800, 12);
    expect(grants.find((grant) => grant.source === 'PLAN')).toMatchObject({ unitCost: 0, funding: 'PROMOTIONAL' });

    // 10 plan credits go first (soonest expiry), then 290 of the pack; then the payment is refunded.
    await admin.recordUsage({ accountId: account, featureKey: feature, quantity: 300 });
    await deliver('charge.refunded', { id: `ch_${unique('x')}`, object: 'charge', amount: 1998, amount_refunded: 1998, payment_intent: paymentIntent.id, refunded: true, metadata: {} });
    const to = new Date(Date.now() + 60_000).toISOString();

    const [eur] = await admin.financeReport({ from, to, currency: 'EUR' });
    const unit = 1998 / 800;
    expect(eur!.issued).toMatchObject({ credits: 800 });
    expect(eur!.issued.amount).toBeCloseTo(1998, 6);
    expect(eur!.recognised.credits).toBe(290);
    expect(eur!.recognised.amount).toBeCloseTo(290 * unit, 4);
    expect(eur!.clawedBack.credits).toBe(510);
    expect(eur!.clawedBack.amount).toBeCloseTo(510 * unit, 4);
    expect(eur!.deferredAtEnd.amount).toBeCloseTo(0, 4);
    expect(await admin.financeReport({ from, to, currency: 'USD' })).toEqual([]);

    const deadline = Date.now() + 20_000;
    while (events.length < 2 && Date.now() < deadline) {
      await server.app.dueWorkRunner.runTasks();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const completed = events.find((event) => event.type === 'purchase.completed')!;
    expect(completed).toMatchObject({ accountId: account, data: { purchaseId: purchase.id, credits: 800, amount: 1998, currency: 'EUR', grantId: bought.id } });
    expect(events.filter((event) => event.type === 'grant.created').map((event) => event.data.grantId)).toEqual([bought.id]);
  });

  /**
   * An account on a free plan (no credits of its own) that bought one pack of 100 credits for 1,000
   * of `currency`, paid through Checkout; `refund` delivers the payment's full refund.
   */
  async function buyPack(currency: string, testClockId?: string) {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = unique('plan');
    await admin.upsertPlan({ code: plan, name: plan, interval: 'MONTH', price: { amount: 0, currency }, allocations: [{ creditType: pool, amount: 0 }], featureKeys: [feature] });
    const account = (await admin.createAccount({ name: 'buyer', planCode: plan, ...(testClockId ? { testClockId } : {}) })).id;
    const pack = unique('pack');
    await admin.upsertCreditPack({ code: pack, name: 'Credits', creditType: pool, credits: 100, price: { amount: 1000, currency } });
    const purchase = await admin.purchaseCreditPack({ accountId: account, packCode: pack, quantity: 1, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no' });
    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.purchase_id === purchase.id)!;
    const { session: paid, paymentIntent } = fake.completeCheckout(session.id);
    await deliver('checkout.session.completed', paid);
    const grant = (await admin.grants(account)).edges.map((edge) => edge.node).find((node) => node.source === 'PURCHASE')!;
    const refund = () =>
      deliver('charge.refunded', { id: `ch_${unique('x')}`, object: 'charge', amount: 1000, amount_refunded: 1000, payment_intent: paymentIntent.id, refunded: true, metadata: {} });
    return { pool, feature, account, purchase, grant, refund };
  }

  it("credits given back to a refunded purchase's grant (a usage refund, a released hold) leave again: the account's own key gets no credits of money returned", async () => {
    const { pool, feature, account, purchase, refund } = await buyPack('USD');

    const backEnd = operator({ ...server, adminKey: await createKey(server, 'ACCOUNT', account) });
    const used = await backEnd.recordUsage({ accountId: account, featureKey: feature, quantity: 60 });
    if (used.__typename !== 'UsageRecorded') throw new Error(used.__typename);
    const hold = await backEnd.reserveCredits({ accountId: account, featureKey: feature, credits: 30 });
    if (hold.__typename !== 'CreditsReserved') throw new Error(hold.__typename);
    // The whole payment is refunded: the 10 credits left are taken back, 90 were spent or held.
    await refund();
    expect((await admin.balance(account, pool))?.available).toBe(0);

    await backEnd.refundUsage({ usageEventId: used.usageEvent.id });
    await backEnd.releaseReservation(hold.reservation.id);
    expect((await admin.balance(account, pool))?.available).toBe(0);
    expect((await admin.grants(account, { includeExpired: true })).edges.map((edge) => edge.node).find((grant) => grant.source === 'PURCHASE')).toMatchObject({ remaining: 0 });
    const now = new Date(Date.now() + 60_000).toISOString();
    const [usd] = await admin.financeReport({ from: '2000-01-01T00:00:00.000Z', to: now, currency: 'USD' });
    expect(usd!.deferredAtEnd.credits).toBe(0);
    expect(usd!.refunded.credits).toBe(60);
    expect(usd!.clawedBack.credits).toBe(100);
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ status: 'REFUNDED', clawedBackCredits: 100, uncollectedCredits: 0 });
  });

  /**
   * Corrections (issue 20 item 1) meeting a Stripe refund: credits a void or a negative adjustment
   * already took, or that expired, are no credits the customer spent, so they are not uncollected;
   * and spent credits given back later leave as CLAWBACK up to what is uncollected, whether the
   * grant is still live, voided or expired (not as breakage or a second adjustment). Each case has
   * its own currency: the reports cover every account of the database.
   */
  async function boughtPack(currency: string, testClockId?: string) {
    const bought = await buyPack(currency, testClockId);
    const used = await admin.recordUsage({ accountId: bought.account, featureKey: bought.feature, quantity: 30 });
    if (used.__typename !== 'UsageRecorded') throw new Error(used.__typename);
    return { ...bought, usageEventId: used.usageEvent.id };
  }

  async function report(currency: string) {
    const [row] = await admin.financeReport({ from: '2000-01-01T00:00:00.000Z', to: new Date(Date.now() + 86_400_000 * 800).toISOString(), currency });
    return Object.fromEntries(['issued', 'recognised', 'refunded', 'breakage', 'clawedBack', 'adjusted', 'deferredAtEnd'].map((kind) => [kind, (row as unknown as Record<string, { credits: number }>)[kind]!.credits]));
  }

  async function expectLedgerVerified() {
    const verification = await verifyLedger(server.app.database.prisma);
    expect(verification.mismatches).toEqual([]);
    expect(verification.inconsistencies).toEqual([]);
  }

  it('a voided pack then refunded: only the spent credits are uncollected, and they are clawed back when they come back', async () => {
    const { account, purchase, grant, usageEventId, refund } = await boughtPack('CHF');
    const voided = await admin.voidGrant({ accountId: account, grantId: grant.id, reason: 'refund coming' });
    expect(voided.correction.credits).toBe(-70);
    await refund();
    // 70 were voided, 30 spent: 30 uncollected, not 100.
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ status: 'REFUNDED', clawedBackCredits: 0, uncollectedCredits: 30 });
    await admin.refundUsage({ usageEventId });
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ clawedBackCredits: 30, uncollectedCredits: 0 });
    expect(await report('CHF')).toEqual({ issued: 100, recognised: 30, refunded: 30, breakage: 0, clawedBack: 30, adjusted: -70, deferredAtEnd: 0 });
    await expectLedgerVerified();
  });

  it('a negative adjustment took bought credits, then the payment is refunded: what it took is not uncollected', async () => {
    const { pool, account, purchase, usageEventId, refund } = await boughtPack('SEK');
    const taken = await admin.adjustCredits({ accountId: account, creditType: pool, amount: -20, reason: 'chargeback' });
    expect(taken.__typename).toBe('CreditsCorrected');
    await refund();
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ clawedBackCredits: 50, uncollectedCredits: 30 });
    await admin.refundUsage({ usageEventId });
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ clawedBackCredits: 80, uncollectedCredits: 0 });
    expect((await admin.balance(account, pool))?.available).toBe(0);
    expect(await report('SEK')).toEqual({ issued: 100, recognised: 30, refunded: 30, breakage: 0, clawedBack: 80, adjusted: -20, deferredAtEnd: 0 });
    await expectLedgerVerified();
  });

  it('refunded, then voided: spent credits coming back are clawed back and leave the uncollected count', async () => {
    const { pool, account, purchase, grant, usageEventId, refund } = await boughtPack('NOK');
    await refund();
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ clawedBackCredits: 70, uncollectedCredits: 30 });
    await admin.voidGrant({ accountId: account, grantId: grant.id, reason: 'closing it' });
    await admin.refundUsage({ usageEventId });
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ clawedBackCredits: 100, uncollectedCredits: 0 });
    expect((await admin.balance(account, pool))?.available).toBe(0);
    expect(await report('NOK')).toEqual({ issued: 100, recognised: 30, refunded: 30, breakage: 0, clawedBack: 100, adjusted: 0, deferredAtEnd: 0 });
    await expectLedgerVerified();
  });

  it('refunded, then the pack expires (its expiry moved sooner): spent credits coming back are clawed back, not breakage', async () => {
    const clock = await createTestClock(server, new Date(Date.now()).toISOString());
    const { account, purchase, grant, usageEventId, refund } = await boughtPack('DKK', clock);
    await refund();
    const soon = new Date(Date.now() + 3_600_000);
    await admin.changeGrantExpiry({ accountId: account, grantId: grant.id, expiresAt: soon.toISOString(), reason: 'promotion over' });
    await advanceClock(server, clock, new Date(soon.getTime() + 3_600_000));
    await admin.refundUsage({ usageEventId });
    expect(await admin.topUpPurchase(purchase.id)).toMatchObject({ clawedBackCredits: 100, uncollectedCredits: 0 });
    expect(await report('DKK')).toEqual({ issued: 100, recognised: 30, refunded: 30, breakage: 0, clawedBack: 100, adjusted: 0, deferredAtEnd: 0 });
    await expectLedgerVerified();
  });
});
