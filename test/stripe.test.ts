import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { balance, createAccount, defineFeature, definePlan, expectLedgerConsistent, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

const WEBHOOK_SECRET = 'whsec_test_secret';
let fake: FakeStripe;
let server: TestServer;

beforeAll(async () => {
  fake = await startFakeStripe();
  server = await startTestServer({
    STRIPE_SECRET_KEY: 'sk_test_fake',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
    JOBS_ENABLED: 'false',
  });
});
afterAll(async () => {
  await server?.stop();
  await fake?.close();
});

const PURCHASE = `mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) {
  id status checkoutUrl credits quantity amount { amount currency } failureCode grant { id amount expiresAt source } } }`;
const TOP_UPS = `query($id: ID!) { account(id: $id) { topUps { edges { node { id status credits source failureCode clawedBackCredits uncollectedCredits grant { id remaining source expiresAt } } } } } }`;

async function setUp(packOptions: { credits?: number; price?: number; expiresAfterDays?: number } = {}) {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));
  const pack = unique('pack');
  ok(
    await server.gql(`mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`, {
      input: {
        code: pack,
        name: 'Credits',
        creditType: pool,
        credits: packOptions.credits ?? 1_000,
        price: { amount: packOptions.price ?? 1_500, currency: 'USD' },
        expiresAfterDays: packOptions.expiresAfterDays ?? 365,
      },
    }),
  );
  return { pool, feature, accountId, pack };
}

async function deliver(type: string, object: unknown, options: { event?: ReturnType<FakeStripe['event']>; timestamp?: number; secret?: string } = {}) {
  const event = options.event ?? fake.event(type, object);
  const { body, signature } = fake.signedPayload(event, options.secret ?? WEBHOOK_SECRET, options.timestamp);
  return fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
}

function sessionOf(purchaseId: string) {
  const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.purchase_id === purchaseId);
  if (!session) throw new Error(`no checkout session for ${purchaseId}`);
  return session;
}

async function checkoutPurchase(accountId: string, pack: string, quantity = 1) {
  return ok(
    await server.gql(PURCHASE, {
      input: { accountId, packCode: pack, quantity, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/cancel', idempotencyKey: unique('buy') },
    }),
  ).purchaseCreditPack;
}

async function topUps(accountId: string) {
  return ok(await server.gql(TOP_UPS, { id: accountId })).account.topUps.edges.map((edge: any) => edge.node);
}

async function customerOf(accountId: string): Promise<string> {
  const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId);
  if (!customer) throw new Error(`no Stripe customer for ${accountId}`);
  return customer.id;
}

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('Checkout', () => {
  it('purchase → checkout URL → signed checkout.session.completed → credits granted once, expiring after the pack’s days', async () => {
    const { pool, accountId, pack } = await setUp({ expiresAfterDays: 365 });
    const purchase = await checkoutPurchase(accountId, pack, 2);
    expect(purchase).toMatchObject({ status: 'PENDING', credits: 2_000, quantity: 2, amount: { amount: 3_000, currency: 'USD' }, grant: null });
    const session = sessionOf(purchase.id);
    expect(purchase.checkoutUrl).toBe(session.url);
    expect(session.amount_total).toBe(3_000);
    const keys = fake.requests.filter((request) => request.method === 'POST').map((request) => request.idempotencyKey);
    expect(keys).toEqual(expect.arrayContaining([`customer:${accountId}`, `checkout:${purchase.id}`]));

    const { session: paid } = fake.completeCheckout(session.id);
    const response = await deliver('checkout.session.completed', paid);
    expect(response.status).toBe(200);
    const [bought] = await topUps(accountId);
    expect(bought).toMatchObject({ id: purchase.id, status: 'COMPLETED', source: 'PURCHASE', grant: { remaining: 2_000, source: 'PURCHASE' } });
    const expiresInDays = (new Date(bought.grant.expiresAt).getTime() - Date.now()) / 86_400_000;
    expect(expiresInDays).toBeGreaterThan(364.9);
    expect(expiresInDays).toBeLessThan(365.1);
    expect(await balance(server, accountId, pool)).toBe(3_000);
  });

  it('the same event 3 times concurrently and in sequence, and events out of order, grant exactly once', async () => {
    const { pool, accountId, pack } = await setUp();
    const purchase = await checkoutPurchase(accountId, pack);
    const { session, paymentIntent } = fake.completeCheckout(sessionOf(purchase.id).id);
    const succeeded = fake.event('payment_intent.succeeded', paymentIntent);
    const completed = fake.event('checkout.session.completed', session);
    const first = await Promise.all([1, 2, 3].map(() => deliver(succeeded.type, null, { event: succeeded })));
    expect(first.map((response) => response.status)).toEqual([200, 200, 200]);
    for (let attempt = 0; attempt < 3; attempt += 1) expect((await deliver(completed.type, null, { event: completed })).status).toBe(200);
    await Promise.all([1, 2, 3].map(() => deliver(completed.type, null, { event: completed })));
    expect(await balance(server, accountId, pool)).toBe(2_000);
    const grants = await server.app.database.prisma.grant.count({ where: { accountId, source: 'PURCHASE' } });
    expect(grants).toBe(1);
    await expectLedgerConsistent(server);
  });

  it('refuses a bad signature, a stale timestamp and a malformed body with 400, writing nothing', async () => {
    const { pool, accountId, pack } = await setUp();
    const purchase = await checkoutPurchase(accountId, pack);
    const { session } = fake.completeCheckout(sessionOf(purchase.id).id);
    const eventsBefore = await server.app.database.prisma.stripeEvent.count();
    const wrongSecret = await deliver('checkout.session.completed', session, { secret: 'whsec_wrong' });
    const stale = await deliver('checkout.session.completed', session, { timestamp: Math.floor(Date.now() / 1000) - 600 });
    const unsigned = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', body: JSON.stringify(fake.event('checkout.session.completed', session)) });
    const { signature } = fake.signedPayload(fake.event('checkout.session.completed', session), WEBHOOK_SECRET);
    const tampered = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'stripe-signature': signature }, body: '{"not": "the signed body"' });
    for (const response of [wrongSecret, stale, unsigned, tampered]) {
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('INVALID_SIGNATURE');
    }
    expect(await server.app.database.prisma.stripeEvent.count()).toBe(eventsBefore);
    expect(await balance(server, accountId, pool)).toBe(1_000);
    expect((await topUps(accountId))[0].status).toBe('PENDING');
  });

  it('a failed payment attempt leaves a Checkout purchase PENDING (the customer may try again); the session expiring fails it; unknown events are acknowledged', async () => {
    const { pool, accountId, pack } = await setUp();
    const purchase = await checkoutPurchase(accountId, pack);
    const failedIntent = {
      id: `pi_${unique('x')}`,
      object: 'payment_intent',
      status: 'requires_payment_method',
      metadata: { purchase_id: purchase.id, account_id: accountId },
      last_payment_error: { code: 'card_declined', decline_code: 'insufficient_funds', message: 'Your card has insufficient funds.' },
    };
    expect((await deliver('payment_intent.payment_failed', failedIntent)).status).toBe(200);
    expect((await topUps(accountId))[0]).toMatchObject({ status: 'PENDING', grant: null });
    const session = sessionOf(purchase.id);
    expect((await deliver('checkout.session.expired', { ...session, status: 'expired', url: null })).status).toBe(200);
    expect((await topUps(accountId))[0]).toMatchObject({ status: 'FAILED', failureCode: 'checkout_expired', grant: null });
    expect((await deliver('customer.subscription.updated', { id: 'sub_1', object: 'subscription' })).status).toBe(200);
    expect(await balance(server, accountId, pool)).toBe(1_000);
  });

  it('a refund claws back what is left of the grant; what was spent is recorded as uncollected', async () => {
    const { pool, feature, accountId, pack } = await setUp();
    const purchase = await checkoutPurchase(accountId, pack);
    const { session, paymentIntent } = fake.completeCheckout(sessionOf(purchase.id).id);
    await deliver('checkout.session.completed', session);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 1_300 });
    expect(await balance(server, accountId, pool)).toBe(700);
    const charge = { id: `ch_${unique('x')}`, object: 'charge', amount: 1_500, amount_refunded: 1_500, payment_intent: paymentIntent.id, refunded: true, metadata: {} };
    expect((await deliver('charge.refunded', charge)).status).toBe(200);
    expect((await topUps(accountId))[0]).toMatchObject({ status: 'REFUNDED', clawedBackCredits: 700, uncollectedCredits: 300, grant: { remaining: 0 } });
    expect(await balance(server, accountId, pool)).toBe(0);
    const entries = await server.app.database.prisma.ledgerEntry.findMany({ where: { accountId, type: 'CLAWBACK' } });
    expect(entries.map((entry) => Number(entry.credits))).toEqual([-700]);
    expect((await deliver('charge.refunded', charge)).status).toBe(200);
    expect(await server.app.database.prisma.ledgerEntry.count({ where: { accountId, type: 'CLAWBACK' } })).toBe(1);
    await expectLedgerConsistent(server);
  });
});

describe('off-session purchases', () => {
  it('retried with the same idempotency key, concurrently and after, charge once', async () => {
    const { pool, accountId, pack } = await setUp();
    await checkoutPurchase(accountId, pack);
    fake.setDefaultPaymentMethod(await customerOf(accountId), 'pm_card_visa');
    const idempotencyKey = unique('partner');
    const input = { accountId, packCode: pack, offSession: true, idempotencyKey };
    const results = await Promise.all([1, 2, 3].map(() => server.gql(PURCHASE, { input })));
    const later = ok(await server.gql(PURCHASE, { input })).purchaseCreditPack;
    const ids = new Set([...results.map((result) => ok(result).purchaseCreditPack.id), later.id]);
    expect(ids.size).toBe(1);
    expect(later.status).toBe('COMPLETED');
    const intents = [...fake.paymentIntents.values()].filter((intent) => intent.metadata.purchase_id === later.id);
    expect(intents).toHaveLength(1);
    expect(intents[0]!.amount).toBe(1_500);
    const keys = fake.requests.filter((request) => request.path === '/v1/payment_intents').map((request) => request.idempotencyKey);
    expect(new Set(keys)).toEqual(new Set([`payment:${later.id}`]));
    expect(await balance(server, accountId, pool)).toBe(2_000);
  });

  it('a declined card fails the purchase with the decline code (answered as PAYMENT_DECLINED, and again to a retry with the key)', async () => {
    const { pool, accountId, pack } = await setUp();
    await checkoutPurchase(accountId, pack);
    fake.setDefaultPaymentMethod(await customerOf(accountId), 'pm_card_visa');
    fake.declineNextPayments(1);
    const idempotencyKey = unique('partner');
    const refused = await server.gql(PURCHASE, { input: { accountId, packCode: pack, offSession: true, idempotencyKey } });
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'PAYMENT_DECLINED', stripeCode: 'generic_decline' });
    const again = await server.gql(PURCHASE, { input: { accountId, packCode: pack, offSession: true, idempotencyKey } });
    expect(again.errors?.[0]?.extensions).toEqual(refused.errors?.[0]?.extensions);
    const [purchase] = await topUps(accountId);
    expect(purchase).toMatchObject({ id: refused.errors?.[0]?.extensions?.purchaseId, status: 'FAILED', failureCode: 'generic_decline', grant: null });
    expect(await balance(server, accountId, pool)).toBe(1_000);
  });
});

describe('auto top-up', () => {
  const CONFIGURE = `mutation($input: ConfigureAutoTopUpInput!) { configureAutoTopUp(input: $input) {
    creditType enabled thresholdCredits maxPurchasesPerPeriod purchasesThisPeriod pack { code } } }`;

  async function autoSetUp(maxPurchasesPerPeriod: number) {
    const setup = await setUp();
    await checkoutPurchase(setup.accountId, setup.pack);
    const customer = await customerOf(setup.accountId);
    fake.setDefaultPaymentMethod(customer, 'pm_card_visa');
    const config = ok(
      await server.gql(CONFIGURE, {
        input: { accountId: setup.accountId, creditType: setup.pool, enabled: true, thresholdCredits: 500, packCode: setup.pack, maxPurchasesPerPeriod },
      }),
    ).configureAutoTopUp;
    expect(config).toMatchObject({ enabled: true, thresholdCredits: 500, purchasesThisPeriod: 0, pack: { code: setup.pack } });
    return { ...setup, customer };
  }

  const autoPurchases = async (accountId: string) => (await topUps(accountId)).filter((purchase: any) => purchase.source === 'AUTO_TOP_UP');

  it('20 concurrent debits crossing the threshold buy exactly one pack; the period cap holds', async () => {
    const { pool, feature, accountId } = await autoSetUp(2);
    await Promise.all(Array.from({ length: 20 }, () => recordUsage(server, { accountId, featureKey: feature, quantity: 30 })));
    const bought = await waitFor(() => autoPurchases(accountId), (list) => list.length === 1 && list[0].status !== 'PENDING');
    expect(bought).toHaveLength(1);
    expect(bought[0]).toMatchObject({ status: 'COMPLETED', grant: { source: 'AUTO_TOP_UP' } });
    expect(await balance(server, accountId, pool)).toBe(1_000 - 600 + 1_000);

    await recordUsage(server, { accountId, featureKey: feature, quantity: 1_000 });
    await waitFor(() => autoPurchases(accountId), (list) => list.length === 2 && list.every((purchase: any) => purchase.status !== 'PENDING'));
    await recordUsage(server, { accountId, featureKey: feature, quantity: 1_000 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await autoPurchases(accountId)).toHaveLength(2);
    const configs = ok(await server.gql(`query($id: ID!) { account(id: $id) { autoTopUps { purchasesThisPeriod maxPurchasesPerPeriod } } }`, { id: accountId }));
    expect(configs.account.autoTopUps).toEqual([{ purchasesThisPeriod: 2, maxPurchasesPerPeriod: 2 }]);
    const alerts = await server.app.database.prisma.alert.findMany({ where: { accountId, kind: 'AUTO_TOP_UP_SUCCEEDED' } });
    expect(alerts).toHaveLength(2);
  });

  it('auto top-up credits last through the period and roll over one more, then expire', async () => {
    const { feature, accountId } = await autoSetUp(1);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 600 });
    const [bought] = await waitFor(() => autoPurchases(accountId), (list) => list.length === 1 && list[0].status === 'COMPLETED');
    const subscription = ok(await server.gql(`query($id: ID!) { account(id: $id) { subscription { currentPeriod { start end } } } }`, { id: accountId })).account.subscription;
    const periodMs = new Date(subscription.currentPeriod.end).getTime() - new Date(subscription.currentPeriod.start).getTime();
    const expiresAt = new Date(bought.grant.expiresAt).getTime();
    expect(expiresAt).toBeGreaterThan(new Date(subscription.currentPeriod.end).getTime() + periodMs - 4 * 86_400_000);
    expect(expiresAt).toBeLessThanOrEqual(new Date(subscription.currentPeriod.end).getTime() + 31 * 86_400_000);
  });

  it('a declined card yields a FAILED purchase, an alert, and no retry storm', async () => {
    const { feature, accountId, customer } = await autoSetUp(5);
    fake.declineCustomer(customer, true);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 600 });
    const [failed] = await waitFor(() => autoPurchases(accountId), (list) => list.length === 1 && list[0].status !== 'PENDING');
    expect(failed).toMatchObject({ status: 'FAILED', failureCode: 'generic_decline' });
    const attemptsBefore = fake.requests.filter((request) => request.path === '/v1/payment_intents').length;
    for (let index = 0; index < 10; index += 1) await recordUsage(server, { accountId, featureKey: feature, quantity: 10 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(fake.requests.filter((request) => request.path === '/v1/payment_intents').length).toBe(attemptsBefore);
    expect(await autoPurchases(accountId)).toHaveLength(1);
    const alerts = await server.app.database.prisma.alert.findMany({ where: { accountId, kind: 'AUTO_TOP_UP_FAILED' } });
    expect(alerts).toHaveLength(1);
    const config = ok(await server.gql(`query($id: ID!) { account(id: $id) { autoTopUps { consecutiveFailures retryNotBefore } } }`, { id: accountId })).account.autoTopUps[0];
    expect(config.consecutiveFailures).toBe(1);
    expect(new Date(config.retryNotBefore).getTime()).toBeGreaterThan(Date.now() + 50_000);
  });
});

describe('without Stripe configured', () => {
  it('purchases answer STRIPE_NOT_CONFIGURED and everything else works', async () => {
    const plain = await startTestServer({ JOBS_ENABLED: 'false' });
    try {
      const pool = unique('credits');
      const feature = await defineFeature(plain, { creditType: pool, unitCredits: 1 });
      const accountId = await createAccount(plain, await definePlan(plain, { allocations: [{ creditType: pool, amount: 10 }], featureKeys: [feature] }));
      ok(await plain.gql(`mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`, { input: { code: 'p1', name: 'p', creditType: pool, credits: 1, price: { amount: 1, currency: 'USD' } } }));
      const response = await plain.gql(PURCHASE, { input: { accountId, packCode: 'p1', offSession: true, idempotencyKey: 'k' } });
      expect(response.errors?.[0]?.extensions?.code).toBe('STRIPE_NOT_CONFIGURED');
      expect((await recordUsage(plain, { accountId, featureKey: feature })).data.recordUsage.__typename).toBe('UsageRecorded');
      const webhook = await fetch(`${plain.url}/webhooks/stripe`, { method: 'POST', body: '{}' });
      expect(webhook.status).toBe(503);
    } finally {
      await plain.stop();
    }
  });
});
