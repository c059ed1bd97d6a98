import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { PurchaseReconciler } from '../packages/server/src/stripe/reconcilePurchases.ts';
import { StripeGateway } from '../packages/server/src/stripe/stripeGateway.ts';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { addSeat, advanceClock, balance, createAccount, createKey, createTestClock, defineFeature, definePlan, expectLedgerConsistent, ok } from './support/fixtures.ts';
import { connectLive } from './support/live.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Purchase status (issue 18 item 5): topUpPurchase(id), the topUpUpdated subscription over
 * graphql-ws, and the reconciliation job that asks Stripe about purchases left pending (a lost
 * webhook), exactly once with the webhook racing it and with two runners. The server has a database
 * of its own: the job looks at every pending purchase it finds.
 */

const WEBHOOK_SECRET = 'whsec_status';
const RECONCILE_AFTER_MS = 60_000;
let fake: FakeStripe;
let server: TestServer;
let database: Awaited<ReturnType<typeof isolatedDatabase>>;
/** A second job runner on the same database, as another instance would run it. */
let secondRunner: PurchaseReconciler;

beforeAll(async () => {
  fake = await startFakeStripe();
  database = await isolatedDatabase();
  server = await startTestServer({
    STRIPE_SECRET_KEY: 'sk_test_fake',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
    JOBS_ENABLED: 'false',
    PURCHASE_RECONCILE_AFTER_MS: String(RECONCILE_AFTER_MS),
    WS_MAX_SUBSCRIPTIONS_PER_SOCKET: '3',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  });
  secondRunner = new PurchaseReconciler({
    prisma: server.app.database.prisma,
    clock: systemClock,
    gateway: await StripeGateway.create({ secretKey: 'sk_test_fake', webhookSecret: WEBHOOK_SECRET, apiBase: fake.url }),
    logger: server.app.logger,
    afterMs: RECONCILE_AFTER_MS,
  });
});
afterAll(async () => {
  await server?.stop();
  await database?.drop();
  await fake?.close();
});

const PURCHASE_FIELDS = 'id status credits quantity amount { amount currency } failureCode checkoutUrl grant { amount }';
const PURCHASE = `mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) { ${PURCHASE_FIELDS} } }`;
const READ = `query($id: ID!) { topUpPurchase(id: $id) { ${PURCHASE_FIELDS} } }`;
const UPDATED = `subscription($accountId: ID!, $purchaseId: ID) { topUpUpdated(accountId: $accountId, purchaseId: $purchaseId) { id status failureCode } }`;

async function setUp(testClockId?: string) {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }), testClockId);
  const pack = unique('pack');
  ok(
    await server.gql(`mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`, {
      input: { code: pack, name: 'Credits', creditType: pool, credits: 500, price: { amount: 1_200, currency: 'USD' } },
    }),
  );
  return { pool, accountId, pack };
}

async function checkout(accountId: string, pack: string, apiKey?: string) {
  return ok(
    await server.gql(
      PURCHASE,
      { input: { accountId, packCode: pack, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('buy') } },
      apiKey,
    ),
  ).purchaseCreditPack;
}

function sessionOf(purchaseId: string) {
  const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.purchase_id === purchaseId);
  if (!session) throw new Error(`no session for ${purchaseId}`);
  return session;
}

async function deliver(type: string, object: unknown) {
  const { body, signature } = fake.signedPayload(fake.event(type, object), WEBHOOK_SECRET);
  const response = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'stripe-signature': signature }, body });
  expect(response.status).toBe(200);
}

const read = async (id: string, apiKey?: string) => ok(await server.gql(READ, { id }, apiKey)).topUpPurchase;
const grantsOf = (accountId: string) => server.app.database.prisma.grant.count({ where: { accountId, source: 'PURCHASE' } });
const sessionReads = (sessionId: string) => fake.requests.filter((request) => request.method === 'GET' && request.path === `/v1/checkout/sessions/${sessionId}`).length;

describe('topUpPurchase(id)', () => {
  it("answers the account's keys (seats included) and the operator, and null to another tenant and for an unknown id", async () => {
    const mine = await setUp();
    const other = await setUp();
    const accountKey = await createKey(server, 'ACCOUNT', mine.accountId);
    const seatKey = await createKey(server, 'SEAT', mine.accountId, await addSeat(server, mine.accountId));
    const otherKey = await createKey(server, 'ACCOUNT', other.accountId);
    const purchase = await checkout(mine.accountId, mine.pack, accountKey);
    expect(await read(purchase.id, accountKey)).toMatchObject({ id: purchase.id, status: 'PENDING', credits: 500, amount: { amount: 1_200, currency: 'USD' } });
    expect(await read(purchase.id)).toMatchObject({ id: purchase.id, checkoutUrl: purchase.checkoutUrl });
    // A SEAT key reads it but is not handed the payment page.
    expect(await read(purchase.id, seatKey)).toMatchObject({ id: purchase.id, checkoutUrl: null });
    expect(await read(purchase.id, otherKey)).toBeNull();
    expect(await read('00000000-0000-0000-0000-000000000000', accountKey)).toBeNull();
    expect(await read('x'.repeat(10_000), accountKey)).toBeNull();
  });
});

describe('topUpUpdated', () => {
  it('a page following one purchase gets it as it stands, then COMPLETED when Checkout completes', async () => {
    const { accountId, pack } = await setUp();
    const key = await createKey(server, 'ACCOUNT', accountId);
    const purchase = await checkout(accountId, pack, key);
    const live = connectLive(server.url, key);
    try {
      const feed = live.subscribe(UPDATED, { accountId, purchaseId: purchase.id }, (data) => data.topUpUpdated);
      expect(await feed.take(1)).toEqual([{ id: purchase.id, status: 'PENDING', failureCode: null }]);
      const { session } = fake.completeCheckout(sessionOf(purchase.id).id);
      await deliver('checkout.session.completed', session);
      expect((await feed.take(2))[1]).toEqual({ id: purchase.id, status: 'COMPLETED', failureCode: null });
      expect(feed.errors).toEqual([]);
    } finally {
      await live.dispose();
    }
  });

  it('the account-wide feed tells of a failed off-session payment; other tenants and purchases are refused', async () => {
    const { accountId, pack } = await setUp();
    const other = await setUp();
    const key = await createKey(server, 'ACCOUNT', accountId);
    const first = await checkout(accountId, pack, key);
    const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId);
    fake.setDefaultPaymentMethod(customer!.id, 'pm_card_visa');
    const live = connectLive(server.url, key);
    try {
      const feed = live.subscribe(UPDATED, { accountId }, (data) => data.topUpUpdated);
      // Live once a started purchase comes back (the feed sends no snapshot).
      const deadline = Date.now() + 15_000;
      while (feed.events.length === 0 && Date.now() < deadline) {
        await checkout(accountId, pack, key);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      fake.declineCustomer(customer!.id, true);
      const declined = await server.gql(PURCHASE, { input: { accountId, packCode: pack, offSession: true, idempotencyKey: unique('off') } }, key);
      expect(declined.errors?.[0]?.extensions).toMatchObject({ code: 'PAYMENT_DECLINED' });
      const failed = { id: String(declined.errors?.[0]?.extensions?.purchaseId) };
      const until = Date.now() + 15_000;
      while (!feed.events.some((event: any) => event.id === failed.id && event.status === 'FAILED') && Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(feed.events).toContainEqual({ id: failed.id, status: 'FAILED', failureCode: 'generic_decline' });
      expect(feed.events.every((event: any) => event.id !== first.id)).toBe(true);

      const refusedAccount = live.subscribe(UPDATED, { accountId: other.accountId }, (data) => data.topUpUpdated);
      const otherPurchase = await checkout(other.accountId, other.pack);
      const refusedPurchase = live.subscribe(UPDATED, { accountId, purchaseId: otherPurchase.id }, (data) => data.topUpUpdated);
      await Promise.all([refusedAccount.ended, refusedPurchase.ended]);
      expect(refusedAccount.errors).toMatchObject([{ extensions: { code: 'ACCOUNT_NOT_FOUND' } }]);
      expect(refusedPurchase.errors).toMatchObject([{ extensions: { code: 'PURCHASE_NOT_FOUND' } }]);
      expect(refusedAccount.events).toEqual([]);
    } finally {
      await live.dispose();
    }
  });
});

describe('topUpUpdated under the WebSocket limits', () => {
  it('counts against the subscriptions a socket may run (3 here): the next is refused, the others keep going', async () => {
    const { accountId, pack } = await setUp();
    const key = await createKey(server, 'ACCOUNT', accountId);
    const purchases = [await checkout(accountId, pack, key), await checkout(accountId, pack, key), await checkout(accountId, pack, key)];
    const live = connectLive(server.url, key);
    try {
      const feeds = purchases.map((purchase) => live.subscribe(UPDATED, { accountId, purchaseId: purchase.id }, (data) => data.topUpUpdated));
      for (const feed of feeds) await feed.take(1);
      const over = live.subscribe(UPDATED, { accountId }, (data) => data.topUpUpdated);
      await over.ended;
      expect(over.errors.flat()).toMatchObject([{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }]);
      const { session } = fake.completeCheckout(sessionOf(purchases[1]!.id).id);
      await deliver('checkout.session.completed', session);
      expect((await feeds[1]!.take(2))[1]).toMatchObject({ id: purchases[1]!.id, status: 'COMPLETED' });
    } finally {
      await live.dispose();
    }
  });
});

describe('reconciliation job', () => {
  it('completes a paid Checkout purchase whose webhook was lost, fails an expired one, and leaves young ones alone', async () => {
    const clock = await createTestClock(server, '2027-06-01T10:00:00.000Z');
    const { pool, accountId, pack } = await setUp(clock);
    const paid = await checkout(accountId, pack);
    const expired = await checkout(accountId, pack);
    const open = await checkout(accountId, pack);
    fake.completeCheckout(sessionOf(paid.id).id);
    fake.expireCheckout(sessionOf(expired.id).id);
    // Not yet RECONCILE_AFTER_MS old on the account's clock: Stripe is not asked.
    await server.app.purchaseReconciler!.runOnce();
    expect(sessionReads(sessionOf(paid.id).id)).toBe(0);
    expect((await read(paid.id)).status).toBe('PENDING');

    await advanceClock(server, clock, '2027-06-01T10:02:00.000Z');
    await server.app.purchaseReconciler!.runOnce();
    expect(await read(paid.id)).toMatchObject({ status: 'COMPLETED', grant: { amount: 500 } });
    expect(await read(expired.id)).toMatchObject({ status: 'FAILED', failureCode: 'checkout_expired' });
    expect((await read(open.id)).status).toBe('PENDING');
    expect(await balance(server, accountId, pool)).toBe(1_500);
    // The open one is leased: asked again only later, not at every pass.
    const reads = sessionReads(sessionOf(open.id).id);
    expect(reads).toBe(1);
    await server.app.purchaseReconciler!.runOnce();
    expect(sessionReads(sessionOf(open.id).id)).toBe(reads);
    // The webhook arriving after all changes nothing.
    await deliver('checkout.session.completed', fake.checkoutSessions.get(sessionOf(paid.id).id));
    expect(await grantsOf(accountId)).toBe(1);
  });

  it('two runners share the pending purchases (each session asked once), and with the webhook racing them each is granted exactly once', async () => {
    const clock = await createTestClock(server, '2027-07-01T00:00:00.000Z');
    const { pool, accountId, pack } = await setUp(clock);
    const paidCheckouts = async (count: number) => {
      const purchases = [];
      for (let index = 0; index < count; index += 1) purchases.push(await checkout(accountId, pack));
      return { purchases, sessions: purchases.map((purchase) => fake.completeCheckout(sessionOf(purchase.id).id).session) };
    };
    // Webhooks lost: the two runners alone.
    const lost = await paidCheckouts(8);
    await advanceClock(server, clock, '2027-07-01T00:05:00.000Z');
    await Promise.all([server.app.purchaseReconciler!.runOnce(), secondRunner.runOnce()]);
    for (const purchase of lost.purchases) expect((await read(purchase.id)).status).toBe('COMPLETED');
    for (const session of lost.sessions) expect(sessionReads(session.id)).toBe(1);
    // Webhooks arriving while both runners work.
    const raced = await paidCheckouts(8);
    await advanceClock(server, clock, '2027-07-01T00:10:00.000Z');
    await Promise.all([
      server.app.purchaseReconciler!.runOnce(),
      secondRunner.runOnce(),
      ...raced.sessions.map((session) => deliver('checkout.session.completed', session)),
    ]);
    for (const purchase of raced.purchases) expect((await read(purchase.id)).status).toBe('COMPLETED');
    expect(await grantsOf(accountId)).toBe(16);
    expect(await balance(server, accountId, pool)).toBe(1_000 + 16 * 500);
    await expectLedgerConsistent(server);
  });

  it('an off-session payment whose answer was lost is found at Stripe after a day and completed once', async () => {
    const clock = await createTestClock(server, '2027-08-01T00:00:00.000Z');
    const { pool, accountId, pack } = await setUp(clock);
    await checkout(accountId, pack);
    const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId);
    fake.setDefaultPaymentMethod(customer!.id, 'pm_card_visa');
    // Stripe charges, but the answer (and the client's two retries) never arrive.
    fake.loseAnswers('/v1/payment_intents', 3);
    const idempotencyKey = unique('off');
    const response = await server.gql(PURCHASE, { input: { accountId, packCode: pack, offSession: true, idempotencyKey } });
    expect(response.errors?.[0]?.extensions?.code).toBe('STRIPE_UNAVAILABLE');
    const row = await server.app.database.prisma.topUpPurchase.findFirstOrThrow({ where: { accountId, idempotencyKey } });
    expect(row.status).toBe('PENDING');
    const charged = [...fake.paymentIntents.values()].filter((intent) => intent.metadata.purchase_id === row.id);
    expect(charged.map((intent) => intent.status)).toEqual(['succeeded']);

    await advanceClock(server, clock, '2027-08-02T00:00:00.000Z');
    await Promise.all([server.app.purchaseReconciler!.runOnce(), secondRunner.runOnce()]);
    expect(await read(row.id)).toMatchObject({ status: 'COMPLETED', grant: { amount: 500 } });
    expect(await balance(server, accountId, pool)).toBe(1_500);
    // Found, not charged again.
    expect([...fake.paymentIntents.values()].filter((intent) => intent.metadata.purchase_id === row.id)).toHaveLength(1);
  });

  it('an old off-session purchase Stripe never saw fails, and nothing is charged', async () => {
    const clock = await createTestClock(server, '2027-09-01T00:00:00.000Z');
    const { accountId, pack } = await setUp(clock);
    await checkout(accountId, pack);
    const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId);
    fake.setDefaultPaymentMethod(customer!.id, 'pm_card_visa');
    // An instance that recorded the intent and died before calling Stripe (a crash cannot be caused through the API).
    const purchase = await server.app.database.prisma.topUpPurchase.create({
      data: {
        id: crypto.randomUUID(),
        accountId,
        packCode: pack,
        quantity: 1,
        credits: 500n,
        amount: 1_200,
        currency: 'USD',
        status: 'PENDING',
        source: 'PURCHASE',
        offSession: true,
        periodStart: new Date('2027-09-01T00:00:00.000Z'),
        idempotencyKey: unique('crashed'),
        requestHash: 'crashed-before-stripe',
        createdAt: new Date('2027-09-01T00:00:00.000Z'),
      },
    });
    await advanceClock(server, clock, '2027-09-02T00:00:00.000Z');
    await server.app.purchaseReconciler!.runOnce();
    expect(await read(purchase.id)).toMatchObject({ status: 'FAILED', failureCode: 'payment_not_started' });
    expect([...fake.paymentIntents.values()].filter((intent) => intent.metadata.purchase_id === purchase.id)).toEqual([]);
  });
});
