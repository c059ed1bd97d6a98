/**
 * Issue 18 items 1-3 end to end: the official `stripe` client (inside the server) against the fake
 * Stripe server, webhooks signed as Stripe signs them, everything else through GraphQL.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import type { FakeCard, FakeFailure } from './support/fakeStripeCards.ts';
import { addSeat, balance, createAccount, createKey, defineFeature, definePlan, grantCredits, ok, recordUsage } from './support/fixtures.ts';
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
  it('a declined card: the purchase is FAILED with the decline code and the call answers PAYMENT_DECLINED, and so does a retry with the key', async () => {
    const { pool, accountId, pack } = await setUp();
    await withCard(accountId, pack, 'chargeDeclined');
    const key = unique('declined');
    const response = await buyOffSession(accountId, pack, key);
    expect(errorOf(response)).toMatchObject({ code: 'PAYMENT_DECLINED', stripeCode: 'generic_decline' });
    const purchaseId = errorOf(response)?.purchaseId as string;
    expect((await topUps(accountId)).find((purchase: any) => purchase.id === purchaseId)).toMatchObject({ status: 'FAILED', failureCode: 'generic_decline', grant: null });
    // As Stripe replays a refusal to a retried request, a retry with the key answers the same error.
    expect(errorOf(await buyOffSession(accountId, pack, key))).toEqual(errorOf(response));
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
    ['409 (a request with the same key in flight; the client retries it twice itself)', { status: 409, type: 'idempotency_error' }, 3],
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
    // A card set in Stripe by hand (no webhook here) shows once an off-session charge has used it.
    expect(await cardOf(accountId)).toMatchObject({ brand: 'visa', last4: '4242' });
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
    // Credits from elsewhere lift the balance above the threshold (re-arming it), and a spend crosses
    // again: the purchase waiting for the customer still holds the next one back.
    await grantCredits(server, { accountId, creditType: pool, amount: 1_000, source: 'BONUS' });
    await recordUsage(server, { accountId, featureKey: feature, quantity: 1_000 });
    expect(await balance(server, accountId, pool)).toBeLessThan(500);
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

const SETUP = `mutation($input: CreatePaymentMethodSetupInput!) { createPaymentMethodSetup(input: $input) { url } }`;
const REMOVE = `mutation($input: RemovePaymentMethodInput!) { removePaymentMethod(input: $input) { id paymentMethod { last4 } } }`;
const PORTAL = `mutation($input: CreateBillingPortalSessionInput!) { createBillingPortalSession(input: $input) { url } }`;
const CARD = `query($id: ID!) { account(id: $id) { paymentMethod { brand last4 expMonth expYear updatedAt } } }`;

const cardOf = async (accountId: string, apiKey?: string) => ok(await server.gql(CARD, { id: accountId }, apiKey)).account.paymentMethod;
const sessionAt = (url: string) => [...fake.checkoutSessions.values()].find((candidate) => candidate.url === url);

async function saveCard(accountId: string, card: FakeCard, apiKey?: string) {
  const { url } = ok(await server.gql(SETUP, { input: { accountId, successUrl: 'https://app.example/saved', cancelUrl: 'https://app.example/billing' } }, apiKey))
    .createPaymentMethodSetup;
  const session = sessionAt(url);
  if (!session) throw new Error(`no setup session at ${url}`);
  const completed = fake.cards.completeSetup(session.id, card);
  await deliver('checkout.session.completed', completed.session);
  return completed;
}

describe('saving a card (item 1)', () => {
  it('setup-mode Checkout, then Stripe’s confirmation: the card is the customer’s default and Account.paymentMethod shows brand, last four and expiry only; off-session purchases charge it', async () => {
    const { pool, accountId, pack } = await setUp();
    expect(await cardOf(accountId)).toBeNull();
    const { url } = ok(await server.gql(SETUP, { input: { accountId, successUrl: 'https://app.example/saved', cancelUrl: 'https://app.example/billing' } }))
      .createPaymentMethodSetup;
    const session = sessionAt(url)!;
    const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId)!;
    expect(session).toMatchObject({ mode: 'setup', customer: customer.id, metadata: { account_id: accountId }, success_url: 'https://app.example/saved' });
    expect(fake.requests.find((request) => request.path === '/v1/checkout/sessions' && request.body.mode === 'setup' && request.body.customer === customer.id)?.body)
      .toMatchObject({ allowed_payment_method_types: ['card'], setup_intent_data: { metadata: { account_id: accountId } } });
    expect(await cardOf(accountId)).toBeNull();

    const { paymentMethod, session: completed } = fake.cards.completeSetup(session.id, 'mastercard');
    const event = fake.event('checkout.session.completed', completed);
    for (let delivery = 0; delivery < 2; delivery += 1) {
      const { body, signature } = fake.signedPayload(event, WEBHOOK_SECRET);
      expect((await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'stripe-signature': signature }, body })).status).toBe(200);
    }
    expect(fake.customers.get(customer.id)!.invoice_settings.default_payment_method).toBe(paymentMethod.id);
    const updates = fake.requests.filter((request) => request.method === 'POST' && request.path === `/v1/customers/${customer.id}`);
    expect(updates).toHaveLength(1);
    const card = await cardOf(accountId);
    expect(card).toMatchObject({ brand: 'mastercard', last4: '4444', expMonth: 12, expYear: new Date().getUTCFullYear() + 3 });
    const type = ok(await server.gql(`{ __type(name: "PaymentMethod") { fields { name } } }`)).__type;
    expect(type.fields.map((field: { name: string }) => field.name).sort()).toEqual(['brand', 'expMonth', 'expYear', 'last4', 'updatedAt']);

    const bought = ok(await buyOffSession(accountId, pack)).purchaseCreditPack;
    expect(bought).toMatchObject({ status: 'COMPLETED', grant: { amount: 1_000 } });
    expect(intentsOf(bought.id).map((intent) => intent.payment_method)).toEqual([paymentMethod.id]);
    expect(await balance(server, accountId, pool)).toBe(2_000);
  });

  it('a later card replaces the earlier one as the default', async () => {
    const { accountId } = await setUp();
    const first = await saveCard(accountId, 'visa');
    const second = await saveCard(accountId, 'mastercard');
    expect(fake.customers.get(first.session.customer!)!.invoice_settings.default_payment_method).toBe(second.paymentMethod.id);
    expect(await cardOf(accountId)).toMatchObject({ brand: 'mastercard', last4: '4444' });
  });

  it('a pack bought through Checkout with savePaymentMethod saves the card (setup_future_usage=off_session) as the default; without it nothing is saved', async () => {
    const { accountId, pack } = await setUp();
    const buy = (savePaymentMethod?: boolean) =>
      server.gql(PURCHASE, {
        input: { accountId, packCode: pack, savePaymentMethod, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('save') },
      });
    const saving = ok(await buy(true)).purchaseCreditPack;
    const savingSession = sessionAt(saving.checkoutUrl)!;
    expect(fake.checkoutPaymentIntentData.get(savingSession.id)).toMatchObject({ setup_future_usage: 'off_session', metadata: { purchase_id: saving.id } });
    const { session: paid, paymentIntent } = fake.completeCheckout(savingSession.id, 'visa');
    await deliver('checkout.session.completed', paid);
    expect(fake.customers.get(paid.customer!)!.invoice_settings.default_payment_method).toBe(paymentIntent.payment_method);
    expect(await cardOf(accountId)).toMatchObject({ brand: 'visa', last4: '4242' });
    expect((await topUps(accountId)).find((purchase: any) => purchase.id === saving.id).status).toBe('COMPLETED');

    const plain = ok(await buy()).purchaseCreditPack;
    const plainSession = sessionAt(plain.checkoutUrl)!;
    expect(fake.checkoutPaymentIntentData.get(plainSession.id)?.setup_future_usage).toBeNull();
    await deliver('checkout.session.completed', fake.completeCheckout(plainSession.id, 'mastercard').session);
    expect(fake.customers.get(paid.customer!)!.invoice_settings.default_payment_method).toBe(paymentIntent.payment_method);
    expect(await cardOf(accountId)).toMatchObject({ last4: '4242' });

    const offSessionSave = await server.gql(PURCHASE, { input: { accountId, packCode: pack, offSession: true, savePaymentMethod: true, idempotencyKey: unique('x') } });
    expect(errorOf(offSessionSave)).toMatchObject({ code: 'INVALID_INPUT', field: 'savePaymentMethod' });
  });

  it('the card authenticated to complete a REQUIRES_ACTION purchase becomes the default', async () => {
    const { accountId, pack } = await setUp();
    await withCard(accountId, pack, 'authenticationRequired');
    const waiting = ok(await buyOffSession(accountId, pack)).purchaseCreditPack;
    const { session, paymentIntent } = fake.completeCheckout(sessionAt(waiting.actionUrl)!.id, 'mastercard');
    await deliver('checkout.session.completed', session);
    expect(fake.customers.get(session.customer!)!.invoice_settings.default_payment_method).toBe(paymentIntent.payment_method);
    expect(await cardOf(accountId)).toMatchObject({ brand: 'mastercard' });
    expect(ok(await buyOffSession(accountId, pack)).purchaseCreditPack.status).toBe('COMPLETED');
  });

  it('removePaymentMethod detaches the card in Stripe; off-session purchases then answer PAYMENT_METHOD_REQUIRED; removing again changes nothing', async () => {
    const { accountId, pack } = await setUp();
    const { paymentMethod, session } = await saveCard(accountId, 'visa');
    const removed = ok(await server.gql(REMOVE, { input: { accountId } })).removePaymentMethod;
    expect(removed).toEqual({ id: accountId, paymentMethod: null });
    expect(fake.cards.paymentMethods.get(paymentMethod.id)!.customer).toBeNull();
    expect(fake.customers.get(session.customer!)!.invoice_settings.default_payment_method).toBeNull();
    expect(errorOf(await buyOffSession(accountId, pack))?.code).toBe('PAYMENT_METHOD_REQUIRED');
    expect(ok(await server.gql(REMOVE, { input: { accountId } })).removePaymentMethod.paymentMethod).toBeNull();
    const audit = await server.app.database.prisma.auditEvent.count({ where: { accountId, action: 'removePaymentMethod' } });
    expect(audit).toBe(2);
  });

  it('the Customer Portal: a session URL for the account’s customer; a default changed there and a card detached there show in Account.paymentMethod', async () => {
    const { accountId } = await setUp();
    const { session } = await saveCard(accountId, 'visa');
    const customerId = session.customer!;
    const { url } = ok(await server.gql(PORTAL, { input: { accountId, returnUrl: 'https://app.example/billing' } })).createBillingPortalSession;
    const portal = [...fake.cards.portalSessions.values()].find((candidate) => candidate.url === url);
    expect(portal).toMatchObject({ customer: customerId, return_url: 'https://app.example/billing' });

    // In the portal the customer adds a Mastercard and makes it the default: Stripe sends customer.updated.
    const added = fake.cards.addCard(customerId, 'mastercard');
    fake.setDefaultPaymentMethod(customerId, added.id);
    await deliver('customer.updated', fake.customers.get(customerId));
    expect(await cardOf(accountId)).toMatchObject({ brand: 'mastercard', last4: '4444' });

    // Then removes it: Stripe detaches it (and unsets the default), sending payment_method.detached.
    const { body: detached } = await fake.client.paymentMethods.detach(added.id).then((method) => ({ body: method }));
    await deliver('payment_method.detached', detached);
    expect(await cardOf(accountId)).toBeNull();
  });

  it('refuses a bad return URL with INVALID_INPUT before calling Stripe', async () => {
    const { accountId } = await setUp();
    const before = fake.requests.length;
    const setup = await server.gql(SETUP, { input: { accountId, successUrl: 'javascript:alert(1)', cancelUrl: 'https://app.example/no' } });
    expect(errorOf(setup)).toMatchObject({ code: 'INVALID_INPUT', field: 'successUrl' });
    const portal = await server.gql(PORTAL, { input: { accountId, returnUrl: `https://app.example/${'x'.repeat(2_100)}` } });
    expect(errorOf(portal)).toMatchObject({ code: 'INVALID_INPUT', field: 'returnUrl' });
    expect(fake.requests.length).toBe(before);
  });
});

describe('who may save and remove cards', () => {
  it('an ACCOUNT key and an account-wide session token with canBuy may; a SEAT key, a seat’s session and a session without canBuy may not, nor another account’s key', async () => {
    const { accountId } = await setUp();
    const other = await setUp();
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    const seatId = await addSeat(server, accountId);
    const seatKey = await createKey(server, 'SEAT', accountId, seatId);
    const otherKey = await createKey(server, 'ACCOUNT', other.accountId);
    const session = async (input: Record<string, unknown>) =>
      ok(await server.gql(`mutation($input: CreateSessionTokenInput!) { createSessionToken(input: $input) { token } }`, { input: { accountId, ...input } }, accountKey))
        .createSessionToken.token as string;
    const buyerSession = await session({ canBuy: true });
    const readerSession = await session({});
    const seatBuyerSession = await session({ seatId, canBuy: true });

    await saveCard(accountId, 'visa', accountKey);
    expect(await cardOf(accountId, accountKey)).toMatchObject({ last4: '4242' });
    await saveCard(accountId, 'mastercard', buyerSession);
    expect(await cardOf(accountId, buyerSession)).toMatchObject({ last4: '4444' });
    expect(await cardOf(accountId, seatKey)).toBeNull();
    expect(await cardOf(accountId, readerSession)).toMatchObject({ last4: '4444' });

    const attempts = { SETUP: { input: { accountId, successUrl: 'https://a.example/ok', cancelUrl: 'https://a.example/no' } }, REMOVE: { input: { accountId } }, PORTAL: { input: { accountId, returnUrl: 'https://a.example' } } };
    const documents = { SETUP, REMOVE, PORTAL };
    for (const [name, variables] of Object.entries(attempts)) {
      const document = documents[name as keyof typeof documents];
      for (const key of [seatKey, readerSession, seatBuyerSession]) expect(errorOf(await server.gql(document, variables, key))?.code, name).toBe('FORBIDDEN');
      expect(errorOf(await server.gql(document, variables, otherKey))?.code, name).toBe('ACCOUNT_NOT_FOUND');
    }
    expect(await cardOf(accountId)).toMatchObject({ last4: '4444' });
    expect(ok(await server.gql(PORTAL, attempts.PORTAL, buyerSession)).createBillingPortalSession.url).toMatch(/billing_portal/);
    expect(ok(await server.gql(REMOVE, attempts.REMOVE, buyerSession)).removePaymentMethod.paymentMethod).toBeNull();
  });
});

describe('money at stake: an off-session purchase retried through Stripe outages', () => {
  const fault = fc.oneof(
    fc.constant<FakeFailure>({ status: 500 }),
    fc.constant<FakeFailure>({ status: 429 }),
    fc.constant<FakeFailure>({ status: 0 }),
    fc.constant<FakeFailure>({ status: 0, afterExecuting: true }),
  );

  it('property: whatever fails and when (before or after Stripe charged), retries with the key charge once and grant once', async () => {
    const { pool, accountId, pack } = await setUp();
    await withCard(accountId, pack, 'visa');
    await fc.assert(
      fc.asyncProperty(fc.array(fault, { maxLength: 4 }), async (faults) => {
        const before = await balance(server, accountId, pool);
        const key = unique('outage');
        for (const failure of faults) fake.cards.failNextRequests(1, { ...failure, path: '/v1/payment_intents' });
        let purchase: { id: string; status: string } | null = null;
        for (let attempt = 0; attempt < faults.length + 2 && purchase?.status !== 'COMPLETED'; attempt += 1) {
          const response = await buyOffSession(accountId, pack, key);
          if (response.errors) expect(errorOf(response)).toMatchObject({ code: 'STRIPE_UNAVAILABLE', retryable: true });
          else purchase = ok(response).purchaseCreditPack;
        }
        // Each fault is used up by one charge request, in order, and only an answered one completes the
        // purchase: none is left armed for the next run.
        expect(purchase?.status).toBe('COMPLETED');
        const succeeded = intentsOf(purchase!.id).filter((intent) => intent.status === 'succeeded');
        expect(succeeded).toHaveLength(1);
        expect(await balance(server, accountId, pool)).toBe(before + 1_000);
        expect(await server.app.database.prisma.grant.count({ where: { accountId, idempotencyKey: `purchase:${purchase!.id}` } })).toBe(1);
      }),
      { numRuns: 10 },
    );
  });
});
