/**
 * Issue 18 items 1-3 end to end: the official `stripe` client (inside the server) against the fake
 * Stripe server, webhooks signed as Stripe signs them, everything else through GraphQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import type { FakeCard } from './support/fakeStripeCards.ts';
import { addSeat, balance, createAccount, createKey, defineFeature, definePlan, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

const WEBHOOK_SECRET = 'whsec_cards_secret';
const RETURN_URL = 'https://app.example/billing';
let fake: FakeStripe;
let server: TestServer;

beforeAll(async () => {
  fake = await startFakeStripe();
  server = await startTestServer({
    STRIPE_SECRET_KEY: 'sk_test_fake',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
    STRIPE_RETURN_URL: RETURN_URL,
    JOBS_ENABLED: 'false',
  });
});
afterAll(async () => {
  await server?.stop();
  await fake?.close();
});

const PURCHASE = `mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) {
  id status checkoutUrl actionUrl failureCode failureMessage grant { id amount } } }`;
const TOP_UP_FIELDS = 'id status source actionUrl failureCode grant { amount source }';

async function setUp(price = 1_500) {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));
  const pack = unique('pack');
  ok(
    await server.gql(`mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`, {
      input: { code: pack, name: 'Credits', creditType: pool, credits: 1_000, price: { amount: price, currency: 'USD' }, expiresAfterDays: 365 },
    }),
  );
  return { pool, feature, accountId, pack };
}

async function deliver(type: string, object: unknown) {
  const { body, signature } = fake.signedPayload(fake.event(type, object), WEBHOOK_SECRET);
  const response = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
  expect(response.status).toBe(200);
}

/** The account's Stripe customer, created the way the product creates it (a Checkout purchase). */
async function customerOf(accountId: string, pack: string): Promise<string> {
  ok(
    await server.gql(PURCHASE, {
      input: { accountId, packCode: pack, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('first') },
    }),
  );
  const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId);
  if (!customer) throw new Error(`no Stripe customer for ${accountId}`);
  return customer.id;
}

/** A card saved by hand in Stripe (as the portal would) and made the customer's default. */
async function withCard(accountId: string, pack: string, card: FakeCard): Promise<string> {
  const customer = await customerOf(accountId, pack);
  fake.setDefaultPaymentMethod(customer, fake.cards.addCard(customer, card).id);
  return customer;
}

const buyOffSession = (accountId: string, pack: string, idempotencyKey = unique('partner')) =>
  server.gql(PURCHASE, { input: { accountId, packCode: pack, offSession: true, idempotencyKey } });

async function topUps(accountId: string) {
  const data = ok(await server.gql(`query($id: ID!) { account(id: $id) { topUps { edges { node { ${TOP_UP_FIELDS} } } } } }`, { id: accountId }));
  return data.account.topUps.edges.map((edge: { node: any }) => edge.node);
}

const intentsOf = (purchaseId: string) => [...fake.paymentIntents.values()].filter((intent) => intent.metadata.purchase_id === purchaseId);
const errorOf = (response: { errors?: Array<{ extensions?: Record<string, unknown> }> }) => response.errors?.[0]?.extensions ?? null;

/** Runs the due-work pass as if the clock were `minutes` later (stale PENDING purchases are retried after a minute). */
async function runJobsLater(purchaseId: string, minutes: number) {
  await server.app.database.prisma.topUpPurchase.update({ where: { id: purchaseId }, data: { createdAt: new Date(Date.now() - minutes * 60_000) } });
  await server.app.dueWorkRunner.runTasks();
}

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("Stripe's answers classified (item 3)", () => {
  it('a declined card: the purchase is FAILED with the decline code and the call answers PAYMENT_DECLINED; a retry with the key returns the FAILED purchase', async () => {
    const { pool, accountId, pack } = await setUp();
    await withCard(accountId, pack, 'chargeDeclined');
    const key = unique('declined');
    const response = await buyOffSession(accountId, pack, key);
    expect(errorOf(response)).toMatchObject({ code: 'PAYMENT_DECLINED', stripeCode: 'generic_decline' });
    const purchaseId = errorOf(response)?.purchaseId as string;
    expect((await topUps(accountId)).find((purchase: any) => purchase.id === purchaseId)).toMatchObject({ status: 'FAILED', failureCode: 'generic_decline', grant: null });
    const again = ok(await buyOffSession(accountId, pack, key)).purchaseCreditPack;
    expect(again).toMatchObject({ id: purchaseId, status: 'FAILED', failureCode: 'generic_decline' });
    expect(intentsOf(purchaseId)).toHaveLength(1);
    expect(await balance(server, accountId, pool)).toBe(1_000);
  });

  it('amount_too_small (a 400) fails the purchase with that code and answers PAYMENT_REFUSED, not STRIPE_UNAVAILABLE', async () => {
    const { accountId, pack } = await setUp(30);
    await withCard(accountId, pack, 'visa');
    const response = await buyOffSession(accountId, pack);
    expect(errorOf(response)).toMatchObject({ code: 'PAYMENT_REFUSED', stripeCode: 'amount_too_small' });
    const [purchase] = (await topUps(accountId)).filter((candidate: any) => candidate.id === errorOf(response)?.purchaseId);
    expect(purchase).toMatchObject({ status: 'FAILED', failureCode: 'amount_too_small' });
  });

  it('a Stripe customer that no longer exists fails the purchase with resource_missing (PAYMENT_REFUSED)', async () => {
    const { accountId, pack } = await setUp();
    await withCard(accountId, pack, 'visa');
    await server.app.database.prisma.account.update({ where: { id: accountId }, data: { stripeCustomerId: `cus_${unique('gone').replace(/[^A-Za-z0-9]/g, '')}` } });
    const response = await buyOffSession(accountId, pack);
    expect(errorOf(response)).toMatchObject({ code: 'PAYMENT_REFUSED', stripeCode: 'resource_missing' });
    expect((await topUps(accountId))[0]).toMatchObject({ status: 'FAILED', failureCode: 'resource_missing' });
  });

  it('no saved card: PAYMENT_METHOD_REQUIRED, the purchase FAILED with payment_method_required', async () => {
    const { accountId, pack } = await setUp();
    await customerOf(accountId, pack);
    const response = await buyOffSession(accountId, pack);
    expect(errorOf(response)).toMatchObject({ code: 'PAYMENT_METHOD_REQUIRED', stripeCode: 'payment_method_required' });
    expect((await topUps(accountId))[0]).toMatchObject({ status: 'FAILED', failureCode: 'payment_method_required' });
  });

  it('a 400 creating the Checkout Session fails the purchase (PAYMENT_REFUSED with Stripe’s code)', async () => {
    const { accountId, pack } = await setUp();
    await customerOf(accountId, pack);
    fake.cards.failNextRequests(1, { status: 400, code: 'parameter_invalid_empty', path: '/v1/checkout/sessions' });
    const response = await server.gql(PURCHASE, {
      input: { accountId, packCode: pack, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('refused') },
    });
    expect(errorOf(response)).toMatchObject({ code: 'PAYMENT_REFUSED', stripeCode: 'parameter_invalid_empty' });
    expect((await topUps(accountId))[0]).toMatchObject({ status: 'FAILED', failureCode: 'parameter_invalid_empty' });
  });

  for (const [label, failure, count] of [
    ['5xx (after the client’s own two retries)', { status: 500 }, 3],
    ['429', { status: 429 }, 1],
    ['a dropped connection', { status: 0 }, 4],
  ] as const) {
    it(`${label}: STRIPE_UNAVAILABLE, the purchase stays PENDING, and a retry with the same key charges once`, async () => {
      const { pool, accountId, pack } = await setUp();
      await withCard(accountId, pack, 'visa');
      const key = unique('flaky');
      fake.cards.failNextRequests(count, { ...failure, path: '/v1/payment_intents' });
      const response = await buyOffSession(accountId, pack, key);
      expect(errorOf(response)).toMatchObject({ code: 'STRIPE_UNAVAILABLE', retryable: true });
      const [pending] = await topUps(accountId);
      expect(pending).toMatchObject({ status: 'PENDING', failureCode: null });
      const retried = ok(await buyOffSession(accountId, pack, key)).purchaseCreditPack;
      expect(retried).toMatchObject({ id: pending.id, status: 'COMPLETED', grant: { amount: 1_000 } });
      expect(intentsOf(pending.id)).toHaveLength(1);
      const keys = new Set(fake.requests.filter((request) => request.path === '/v1/payment_intents' && request.body.metadata).map((request) => request.idempotencyKey));
      expect(keys.has(`payment:${pending.id}`)).toBe(true);
      expect(await balance(server, accountId, pool)).toBe(2_000);
    });
  }

  it('a purchase left PENDING by an outage is retried by the job with the same card, even after the default card changed', async () => {
    const { pool, accountId, pack } = await setUp();
    const customer = await withCard(accountId, pack, 'visa');
    const first = fake.customers.get(customer)!.invoice_settings.default_payment_method;
    fake.cards.failNextRequests(1, { status: 429, path: '/v1/payment_intents' });
    const response = await buyOffSession(accountId, pack);
    expect(errorOf(response)?.code).toBe('STRIPE_UNAVAILABLE');
    const [pending] = await topUps(accountId);
    fake.setDefaultPaymentMethod(customer, fake.cards.addCard(customer, 'mastercard').id);
    await runJobsLater(pending.id, 2);
    expect((await topUps(accountId)).find((purchase: any) => purchase.id === pending.id)).toMatchObject({ status: 'COMPLETED' });
    expect(intentsOf(pending.id).map((intent) => intent.payment_method)).toEqual([first]);
    expect(await balance(server, accountId, pool)).toBe(2_000);
  });
});

describe('strong customer authentication (item 2)', () => {
  it('an off-session payment needing authentication waits in REQUIRES_ACTION with a Checkout URL and an alert; completing it there grants once', async () => {
    const { pool, accountId, pack } = await setUp();
    await withCard(accountId, pack, 'authenticationRequired');
    const purchase = ok(await buyOffSession(accountId, pack)).purchaseCreditPack;
    expect(purchase).toMatchObject({ status: 'REQUIRES_ACTION', failureCode: 'authentication_required', grant: null });
    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.url === purchase.actionUrl);
    expect(session).toMatchObject({ mode: 'payment', amount_total: 1_500, metadata: { purchase_id: purchase.id }, success_url: RETURN_URL });
    expect(fake.checkoutPaymentIntentData.get(session!.id)?.setup_future_usage).toBe('off_session');
    const [failedIntent] = intentsOf(purchase.id).filter((intent) => intent.status !== 'succeeded');
    expect(failedIntent).toMatchObject({ status: 'requires_payment_method', amount_received: 0 });

    const alerts = ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts(first: 10) { edges { node { kind message } } } } }`, { id: accountId }));
    const kinds = alerts.account.alerts.edges.map((edge: any) => edge.node.kind);
    expect(kinds).toContain('PAYMENT_ACTION_REQUIRED');

    // Nothing retries it: not the same call, not the job.
    const requestsBefore = fake.requests.filter((request) => request.path === '/v1/payment_intents').length;
    expect(ok(await buyOffSession(accountId, pack, unique('other'))).purchaseCreditPack.status).toBe('REQUIRES_ACTION');
    const other = fake.requests.filter((request) => request.path === '/v1/payment_intents').length;
    expect(other).toBe(requestsBefore + 1);
    await runJobsLater(purchase.id, 10);
    expect(fake.requests.filter((request) => request.path === '/v1/payment_intents').length).toBe(other);
    expect((await topUps(accountId)).find((candidate: any) => candidate.id === purchase.id).status).toBe('REQUIRES_ACTION');

    const { session: paid } = fake.completeCheckout(session!.id, 'visa');
    await deliver('checkout.session.completed', paid);
    await deliver('checkout.session.completed', paid);
    const completed = (await topUps(accountId)).find((candidate: any) => candidate.id === purchase.id);
    expect(completed).toMatchObject({ status: 'COMPLETED', actionUrl: null, failureCode: null, grant: { amount: 1_000 } });
    expect(await balance(server, accountId, pool)).toBe(2_000);
  });

  it('an auto top-up needing authentication stops buying until the customer acts; the session expiring fails it', async () => {
    const { feature, accountId, pack, pool } = await setUp();
    const customer = await withCard(accountId, pack, 'authenticationRequired');
    ok(
      await server.gql(`mutation($input: ConfigureAutoTopUpInput!) { configureAutoTopUp(input: $input) { enabled } }`, {
        input: { accountId, creditType: pool, enabled: true, thresholdCredits: 500, packCode: pack, maxPurchasesPerPeriod: 5 },
      }),
    );
    await recordUsage(server, { accountId, featureKey: feature, quantity: 600 });
    const auto = async () => (await topUps(accountId)).filter((purchase: any) => purchase.source === 'AUTO_TOP_UP');
    const [waiting] = await waitFor(auto, (list) => list.length === 1 && list[0].status !== 'PENDING');
    expect(waiting).toMatchObject({ status: 'REQUIRES_ACTION', failureCode: 'authentication_required' });
    expect(waiting.actionUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/checkout\/cs_test_/);
    const charges = () => fake.requests.filter((request) => request.path === '/v1/payment_intents' && (request.body.customer as string) === customer).length;
    const before = charges();
    for (let index = 0; index < 5; index += 1) await recordUsage(server, { accountId, featureKey: feature, quantity: 10 });
    await runJobsLater(waiting.id, 10);
    expect(charges()).toBe(before);
    expect(await auto()).toHaveLength(1);
    const alerts = await server.app.database.prisma.alert.count({ where: { accountId, kind: 'PAYMENT_ACTION_REQUIRED' } });
    expect(alerts).toBe(1);

    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.url === waiting.actionUrl)!;
    await deliver('checkout.session.expired', { ...session, status: 'expired', url: null });
    expect((await auto())[0]).toMatchObject({ status: 'FAILED', failureCode: 'checkout_expired', actionUrl: null });
  });
});

describe('who may buy with a card on file', () => {
  it('a SEAT key sees no actionUrl', async () => {
    const { accountId, pack } = await setUp();
    await withCard(accountId, pack, 'authenticationRequired');
    const purchase = ok(await buyOffSession(accountId, pack)).purchaseCreditPack;
    expect(purchase.actionUrl).toMatch(/checkout/);
    const seatKey = await createKey(server, 'SEAT', accountId, await addSeat(server, accountId));
    const seen = await server.gql(`query($id: ID!) { account(id: $id) { topUps { edges { node { id status actionUrl } } } } }`, { id: accountId }, seatKey);
    expect(ok(seen).account.topUps.edges.find((edge: any) => edge.node.id === purchase.id).node).toMatchObject({ status: 'REQUIRES_ACTION', actionUrl: null });
  });
});
