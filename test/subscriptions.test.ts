import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeEvent, type FakeStripe } from './support/fakeStripe.ts';
import { createKey, defineFeature, expectLedgerConsistent, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type GraphQLResponse, type TestServer } from './support/server.ts';

/**
 * Plans sold through Stripe Billing (issue 19 items 1-3), end to end: the official `stripe` client
 * (the server's, and the test's for prices) against the Stripe-compatible test server, whose
 * subscriptions, invoices and test clocks follow Stripe Billing's documented behaviour
 * (test/support/fakeStripeSubscriptions.ts). Every event the fake says Stripe would send is delivered
 * signed to POST /webhooks/stripe, in order, repeated, out of order or forged as each test says.
 */

const WEBHOOK_SECRET = 'whsec_subscriptions';
const GRACE_HOURS = 48;
let fake: FakeStripe;
let server: TestServer;
/** The same database and Stripe, with a free plan configured for ended subscriptions. */
let freeServer: TestServer;
let feature: string;
let pool: string;
let free: string;
let basic: string;
let pro: string;

const SUBSCRIPTION = `query($id: ID!) { account(id: $id) { subscription {
  plan { code } pendingPlan { code } currentPeriod { start end } status cancelAtPeriodEnd pastDueSince usageRefusedFrom usageRefusalReason
  availablePlans { code } pendingPaidUpgrade { plan { code } invoiceUrl amountDue { amount currency } } } } }`;
const SUBSCRIBE = `mutation($input: SubscribeToPlanInput!) { subscribeToPlan(input: $input) { id status checkoutUrl plan { code } } }`;
const CHANGE_PLAN = `mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } pendingPlan { code } status pendingPaidUpgrade { plan { code } invoiceUrl } } }`;
const CANCEL = `mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) { plan { code } pendingPlan { code } status cancelAtPeriodEnd usageRefusedFrom usageRefusalReason } }`;
const GRANTS = `query($id: ID!) { account(id: $id) { grants(first: 100) { edges { node { source amount remaining expiresAt } } } } }`;
const ALERTS = `query($id: ID!) { account(id: $id) { alerts(first: 50) { edges { node { kind message } } } } }`;

async function upsertPlan(target: TestServer, code: string, amount: number, credits: number): Promise<void> {
  ok(
    await target.gql(`mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`, {
      input: { code, name: code, interval: 'MONTH', price: { amount, currency: 'USD' }, allocations: [{ creditType: pool, amount: credits }], featureKeys: [feature] },
    }),
  );
}

async function deliver(event: FakeEvent | object, secret = WEBHOOK_SECRET, target: TestServer = server): Promise<Response> {
  const { body, signature } = fake.signedPayload(event, secret);
  return fetch(`${target.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
}

async function deliverAll(events: readonly (FakeEvent | object)[], target: TestServer = server): Promise<void> {
  for (const event of events) expect((await deliver(event, WEBHOOK_SECRET, target)).status).toBe(200);
}

/** A copy of an event as a new delivery of the same news (Stripe's own redeliveries keep the id). */
function again(event: FakeEvent): FakeEvent {
  return { ...structuredClone(event), id: `evt_${unique('again')}` };
}

async function subscription(accountId: string, target: TestServer = server) {
  return ok(await target.gql(SUBSCRIPTION, { id: accountId })).account.subscription;
}

async function planGrants(accountId: string): Promise<Array<{ source: string; amount: number; remaining: number; expiresAt: string }>> {
  return ok(await server.gql(GRANTS, { id: accountId })).account.grants.edges.map((edge: any) => edge.node);
}

async function available(accountId: string): Promise<number> {
  return ok(await server.gql(`query($id: ID!, $t: String!) { account(id: $id) { balance(creditType: $t) { available } } }`, { id: accountId, t: pool })).account.balance.available;
}

async function advance(testClockId: string, to: string, target: TestServer = server): Promise<void> {
  ok(await target.gql(`mutation($input: AdvanceTestClockInput!) { advanceTestClock(input: $input) { frozenTime } }`, { input: { testClockId, to } }));
}

function customerOf(accountId: string): string {
  const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId);
  if (!customer) throw new Error(`no Stripe customer for ${accountId}`);
  return customer.id;
}

function subscriptionOfCustomer(customerId: string) {
  const found = [...fake.subscriptions.subscriptions.values()].find((candidate) => candidate.customer === customerId);
  if (!found) throw new Error(`no Stripe subscription for ${customerId}`);
  return found;
}

/** An account on its own test clock, on the free plan, with an ACCOUNT key. */
async function newAccount(start: string, target: TestServer = server): Promise<{ accountId: string; clockId: string; key: string }> {
  const clockId = ok(await target.gql(`mutation($input: CreateTestClockInput!) { createTestClock(input: $input) { id } }`, { input: { frozenTime: start } })).createTestClock.id;
  const accountId = ok(
    await target.gql(`mutation($input: CreateAccountInput!) { createAccount(input: $input) { id } }`, { input: { name: unique('acct'), planCode: free, testClockId: clockId } }),
  ).createAccount.id;
  return { accountId, clockId, key: await createKey(target, 'ACCOUNT', accountId) };
}

/** subscribeToPlan with the account's key, the customer pays on Checkout, Stripe's events delivered. */
async function subscribe(accountId: string, key: string, planCode: string, target: TestServer = server): Promise<FakeEvent[]> {
  const checkout = ok(
    await target.gql(SUBSCRIBE, { input: { accountId, planCode, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('sub') } }, key),
  ).subscribeToPlan;
  const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.subscription_checkout_id === checkout.id);
  if (!session) throw new Error('no checkout session');
  fake.subscriptions.takeEvents();
  fake.subscriptions.completeSubscriptionCheckout(session.id);
  const events = fake.subscriptions.takeEvents();
  await deliverAll(events, target);
  return events;
}

function use(accountId: string, quantity: number, key?: string) {
  return recordUsage(server, { accountId, featureKey: feature, quantity }, key);
}

/** A usage stated at the account's now: always charged by the complete path (it reads the account's clock under its lock). */
async function useAt(accountId: string, occurredAt: string, key: string) {
  return recordUsage(server, { accountId, featureKey: feature, quantity: 10, occurredAt }, key);
}

beforeAll(async () => {
  fake = await startFakeStripe();
  const env = { STRIPE_SECRET_KEY: 'sk_test_fake', STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_API_BASE: fake.url, JOBS_ENABLED: 'false', SUBSCRIPTION_GRACE_PERIOD_HOURS: String(GRACE_HOURS) };
  server = await startTestServer(env);
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  free = unique('free');
  basic = unique('basic');
  pro = unique('pro');
  await upsertPlan(server, free, 0, 100);
  await upsertPlan(server, basic, 1_000, 1_000);
  await upsertPlan(server, pro, 5_000, 5_000);
  // Sold through Stripe from the start, so that each test stands alone (the first one links them again).
  for (const planCode of [basic, pro]) {
    ok(await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code } }`, { input: { planCode } }));
  }
  // The embedded database is one per server: the catalogue is defined (again, idempotently) on this one too.
  freeServer = await startTestServer({ ...env, SUBSCRIPTION_FREE_PLAN_CODE: free });
  await defineFeature(freeServer, { key: feature, creditType: pool, unitCredits: 1 });
  for (const [code, amount, credits] of [[free, 0, 100], [basic, 1_000, 1_000], [pro, 5_000, 5_000]] as const) await upsertPlan(freeServer, code, amount, credits);
  ok(await freeServer.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code } }`, { input: { planCode: basic } }));
});

afterAll(async () => {
  await freeServer?.stop();
  await server?.stop();
  await fake?.close();
});

describe('plans linked to Stripe Prices', () => {
  it('creates a recurring Price from the plan, or takes an existing one that bills the same, and refuses one that does not', async () => {
    const linked = ok(await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code stripePriceId } }`, { input: { planCode: basic } }))
      .linkPlanToStripePrice;
    const created = fake.subscriptions.prices.get(linked.stripePriceId);
    expect(created).toMatchObject({ unit_amount: 1_000, currency: 'usd', recurring: { interval: 'month' } });
    // Linking again is idempotent on the plan and its price: the same Price.
    const relinked = ok(await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { stripePriceId } }`, { input: { planCode: basic } }));
    expect(relinked.linkPlanToStripePrice.stripePriceId).toBe(linked.stripePriceId);

    const product = await fake.client.products.create({ name: 'Pro' });
    const wrong = await fake.client.prices.create({ product: product.id, currency: 'usd', unit_amount: 4_999, recurring: { interval: 'month' } });
    const refused = await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code } }`, { input: { planCode: pro, stripePriceId: wrong.id } });
    expect(refused.errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
    const yearly = await fake.client.prices.create({ product: product.id, currency: 'usd', unit_amount: 5_000, recurring: { interval: 'year' } });
    const refusedYearly = await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code } }`, { input: { planCode: pro, stripePriceId: yearly.id } });
    expect(refusedYearly.errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
    const right = await fake.client.prices.create({ product: product.id, currency: 'usd', unit_amount: 5_000, recurring: { interval: 'month' } });
    const accepted = ok(await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { stripePriceId } }`, { input: { planCode: pro, stripePriceId: right.id } }));
    expect(accepted.linkPlanToStripePrice.stripePriceId).toBe(right.id);
  });

  it('only the operator links plans; an ACCOUNT key cannot subscribe to a plan not sold through Stripe', async () => {
    const { accountId, key } = await newAccount('2031-05-01T00:00:00Z');
    const linkByAccount = await server.gql(`mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code } }`, { input: { planCode: free } }, key);
    expect(linkByAccount.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const notSold = await server.gql(SUBSCRIBE, { input: { accountId, planCode: free, successUrl: 'https://a.example/', cancelUrl: 'https://a.example/', idempotencyKey: unique('k') } }, key);
    expect(notSold.errors?.[0]?.extensions?.code).toBe('PLAN_NOT_SOLD_THROUGH_STRIPE');
    // Without a subscription, an ACCOUNT key may not move itself to a plan sold through Stripe (it is not self-serve).
    const unpaid = await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key);
    expect(unpaid.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await subscription(accountId)).plan.code).toBe(free);
  });
});

describe('subscribing through Checkout', () => {
  it('puts the account on the plan when Stripe confirms, with its period anchored where the Stripe subscription is, on a test clock', async () => {
    const { accountId, clockId, key } = await newAccount('2030-01-31T09:00:00Z');
    await use(accountId, 30, key);
    // An hour later on the account's clock (and on the Stripe test clock mirroring it).
    await advance(clockId, '2030-01-31T10:00:00Z');
    const checkout = ok(
      await server.gql(SUBSCRIBE, { input: { accountId, planCode: basic, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: 'first' } }, key),
    ).subscribeToPlan;
    expect(checkout).toMatchObject({ status: 'PENDING', plan: { code: basic } });
    const session = fake.checkoutSessions.get(new URL(checkout.checkoutUrl).pathname.split('/').pop()!)!;
    expect(session.mode).toBe('subscription');
    // The same key answers the same Checkout.
    const replay = ok(
      await server.gql(SUBSCRIBE, { input: { accountId, planCode: basic, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: 'first' } }, key),
    ).subscribeToPlan;
    expect(replay.checkoutUrl).toBe(checkout.checkoutUrl);
    const customer = fake.customers.get(customerOf(accountId))!;
    expect(customer.test_clock).not.toBeNull();
    expect(fake.subscriptions.testClocks.get(customer.test_clock!)!.frozen_time).toBe(Date.parse('2030-01-31T10:00:00Z') / 1000);

    // Nothing changes before Stripe confirms.
    expect((await subscription(accountId)).plan.code).toBe(free);
    fake.subscriptions.takeEvents();
    const paid = fake.subscriptions.completeSubscriptionCheckout(session.id);
    const events = fake.subscriptions.takeEvents();
    expect(events.map((event) => event.type)).toEqual([
      'customer.subscription.created',
      'invoice.created',
      'invoice.finalized',
      'invoice.paid',
      'invoice.payment_succeeded',
      'checkout.session.completed',
    ]);
    // Out of order (the confirmation first, the rest after, twice) and repeated: applied once.
    const completed = events.at(-1)!;
    await deliverAll([completed, completed, ...events.slice(0, -1), again(completed), ...events]);

    const after = await subscription(accountId);
    expect(after).toMatchObject({ plan: { code: basic }, status: 'ACTIVE', cancelAtPeriodEnd: false, usageRefusedFrom: null });
    const anchor = paid.subscription.billing_cycle_anchor;
    expect(Date.parse(after.currentPeriod.start) / 1000).toBe(anchor);
    expect(Date.parse(after.currentPeriod.start) / 1000).toBe(paid.subscription.items.data[0]!.current_period_start);
    expect(Date.parse(after.currentPeriod.end) / 1000).toBe(paid.subscription.items.data[0]!.current_period_end);
    expect(after.currentPeriod).toEqual({ start: '2030-01-31T10:00:00.000Z', end: '2030-02-28T10:00:00.000Z' });
    // The free plan's credits ended with its period; the plan's allocation is granted once.
    expect(await available(accountId)).toBe(1_000);
    const plans = (await planGrants(accountId)).filter((grant) => grant.source === 'PLAN' && grant.expiresAt === after.currentPeriod.end);
    expect(plans.map((grant) => grant.amount)).toEqual([1_000]);

    // A year of renewals on both clocks: the anniversary (the 31st, the last day of shorter months) stays Stripe's.
    for (const to of ['2030-03-01T00:00:00Z', '2030-05-01T00:00:00Z', '2031-01-01T00:00:00Z']) {
      await advance(clockId, to);
      await deliverAll(fake.subscriptions.takeEvents());
      const ours = await subscription(accountId);
      const stripe = fake.subscriptions.subscriptions.get(paid.subscription.id)!;
      expect(ours.status).toBe('ACTIVE');
      expect(Date.parse(ours.currentPeriod.start) / 1000).toBe(stripe.items.data[0]!.current_period_start);
      expect(Date.parse(ours.currentPeriod.end) / 1000).toBe(stripe.items.data[0]!.current_period_end);
    }
    expect((await subscription(accountId)).currentPeriod).toEqual({ start: '2030-12-31T10:00:00.000Z', end: '2031-01-31T10:00:00.000Z' });
    // A second subscription while this one bills is refused.
    const second = await server.gql(SUBSCRIBE, { input: { accountId, planCode: pro, successUrl: 'https://a.example/', cancelUrl: 'https://a.example/', idempotencyKey: 'second' } }, key);
    expect(second.errors?.[0]?.extensions?.code).toBe('SUBSCRIPTION_EXISTS');
    await expectLedgerConsistent(server);
  });

  it("an operator's expiry change on a plan grant outlives the subscription's start; the period's other plan grants end at the anchor", async () => {
    const { accountId, clockId, key } = await newAccount('2030-03-01T00:00:00Z');
    const moved = ok(await server.gql(`query($id: ID!) { account(id: $id) { grants(first: 10) { edges { node { id source } } } } }`, { id: accountId }))
      .account.grants.edges.map((edge: { node: { id: string; source: string } }) => edge.node)
      .find((grant: { source: string }) => grant.source === 'PLAN');
    ok(
      await server.gql(`mutation($input: ChangeGrantExpiryInput!) { changeGrantExpiry(input: $input) { correction { id } } }`, {
        input: { accountId, grantId: moved.id, expiresAt: '2030-06-01T00:00:00.000Z', reason: 'kept through the upgrade', idempotencyKey: unique('expiry') },
      }),
    );
    await advance(clockId, '2030-03-01T10:00:00Z');
    await subscribe(accountId, key, basic);
    expect((await subscription(accountId)).currentPeriod).toEqual({ start: '2030-03-01T10:00:00.000Z', end: '2030-04-01T10:00:00.000Z' });
    const plans = (await planGrants(accountId)).filter((grant) => grant.source === 'PLAN').map((grant) => [grant.amount, grant.remaining, grant.expiresAt]);
    expect(plans.sort()).toEqual([
      [100, 100, '2030-06-01T00:00:00.000Z'],
      [1_000, 1_000, '2030-04-01T10:00:00.000Z'],
    ].sort());
    expect(await available(accountId)).toBe(1_100);
    await expectLedgerConsistent(server);
  });

  it('a forged or mismatched confirmation changes nothing', async () => {
    const { accountId, key } = await newAccount('2030-06-01T00:00:00Z');
    const checkout = ok(
      await server.gql(SUBSCRIBE, { input: { accountId, planCode: basic, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('k') } }, key),
    ).subscribeToPlan;
    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.subscription_checkout_id === checkout.id)!;
    fake.subscriptions.takeEvents();
    const paid = fake.subscriptions.completeSubscriptionCheckout(session.id);
    const completed = fake.subscriptions.takeEvents().find((event) => event.type === 'checkout.session.completed')!;
    // A wrong signature is refused outright.
    expect((await deliver(completed, 'whsec_attacker')).status).toBe(400);
    // Signed, but another session naming our checkout in its metadata and client_reference_id.
    const forged = fake.event('checkout.session.completed', { ...paid.session, id: `cs_test_${unique('forged')}` });
    expect((await deliver(forged)).status).toBe(200);
    // Signed, the recorded session, but another customer.
    const otherCustomer = fake.event('checkout.session.completed', { ...paid.session, customer: 'cus_someoneelse' });
    expect((await deliver(otherCustomer)).status).toBe(200);
    expect(await subscription(accountId)).toMatchObject({ plan: { code: free }, status: null });
    // The real one applies.
    expect((await deliver(completed)).status).toBe(200);
    expect(await subscription(accountId)).toMatchObject({ plan: { code: basic }, status: 'ACTIVE' });
  });
});

describe('plan changes paid through Stripe', () => {
  it('an upgrade is invoiced with the proration and its credits are granted once, when the invoice is paid', async () => {
    const { accountId, clockId, key } = await newAccount('2030-03-10T00:00:00Z');
    await subscribe(accountId, key, basic);
    expect((await subscription(accountId, server)).availablePlans.map((plan: { code: string }) => plan.code)).toContain(pro);
    await use(accountId, 400, key);
    // 10 days into a 31-day period.
    await advance(clockId, '2030-03-20T00:00:00Z');
    await deliverAll(fake.subscriptions.takeEvents());

    const changed = ok(await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key)).changePlan;
    expect(changed).toMatchObject({ plan: { code: pro }, status: 'ACTIVE', pendingPaidUpgrade: null });
    const stripeSubscription = subscriptionOfCustomer(customerOf(accountId));
    expect(stripeSubscription.items.data[0]!.price.id).toBe(fake.subscriptions.prices.get(stripeSubscription.items.data[0]!.price.id)!.id);
    expect(stripeSubscription.items.data[0]!.price.unit_amount).toBe(5_000);
    const invoice = fake.billing.invoices.get(stripeSubscription.latest_invoice!)!;
    expect(invoice.billing_reason).toBe('subscription_update');
    const remaining = 21 / 31;
    expect(invoice.lines.data.map((line) => line.amount)).toEqual([-Math.round(1_000 * remaining), Math.round(5_000 * remaining)]);
    expect(invoice.lines.data.every((line) => line.parent.subscription_item_details?.proration === true)).toBe(true);
    expect(invoice.status).toBe('paid');
    // What the period has granted is now the pro allocation, no more: 1,000 then the 4,000 difference.
    expect(await available(accountId)).toBe(1_000 - 400 + 4_000);

    // Stripe's events: delivered, repeated, redelivered as new events, out of order.
    const events = fake.subscriptions.takeEvents();
    const invoicePaid = events.find((event) => event.type === 'invoice.paid')!;
    await deliverAll([invoicePaid, ...events.reverse(), again(invoicePaid), again(invoicePaid)]);
    expect(await available(accountId)).toBe(4_600);
    const periodPlanGrants = (await planGrants(accountId)).filter((grant) => grant.source === 'PLAN' && grant.expiresAt === '2030-04-10T00:00:00.000Z');
    expect(periodPlanGrants.reduce((sum, grant) => sum + grant.amount, 0)).toBe(5_000);

    // A downgrade waits for the period end, in Stripe without proration, here as the pending plan.
    const down = ok(await server.gql(CHANGE_PLAN, { input: { accountId, planCode: basic } }, key)).changePlan;
    expect(down).toMatchObject({ plan: { code: pro }, pendingPlan: { code: basic } });
    expect(stripeSubscription.items.data[0]!.price.unit_amount).toBe(1_000);
    expect(fake.billing.invoices.get(stripeSubscription.latest_invoice!)!.id).toBe(invoice.id);
    await advance(clockId, '2030-04-10T00:00:01Z');
    await deliverAll(fake.subscriptions.takeEvents());
    expect(await subscription(accountId)).toMatchObject({ plan: { code: basic }, pendingPlan: null, status: 'ACTIVE' });
    expect(fake.billing.invoices.get(stripeSubscription.latest_invoice!)!).toMatchObject({ billing_reason: 'subscription_cycle', amount_paid: 1_000 });
    expect(await available(accountId)).toBe(1_000);
    await expectLedgerConsistent(server);
  });

  it('while the subscription lives, no key moves the account to a plan not sold through Stripe: Stripe and the ledger keep one plan', async () => {
    const { accountId, key } = await newAccount('2030-05-01T00:00:00Z');
    await subscribe(accountId, key, basic);
    const stripeSubscription = subscriptionOfCustomer(customerOf(accountId));
    const unlinked = unique('unlinked');
    await upsertPlan(server, unlinked, 9_000, 9_000);
    const before = { available: await available(accountId), grants: (await planGrants(accountId)).length };
    for (const [planCode, timing] of [[unlinked, 'IMMEDIATELY'], [unlinked, null], [free, 'AT_PERIOD_END'], [free, null]] as const) {
      const refused = await server.gql(CHANGE_PLAN, { input: { accountId, planCode, timing } });
      expect(refused.errors?.[0]?.extensions?.code).toBe('PLAN_NOT_SOLD_THROUGH_STRIPE');
    }
    expect(await subscription(accountId)).toMatchObject({ plan: { code: basic }, pendingPlan: null, status: 'ACTIVE' });
    expect({ available: await available(accountId), grants: (await planGrants(accountId)).length }).toEqual(before);
    expect(stripeSubscription.items.data[0]!.price.unit_amount).toBe(1_000);
    // Changing to the plan in force is still a no-op, and a plan sold through Stripe still goes through it.
    expect(ok(await server.gql(CHANGE_PLAN, { input: { accountId, planCode: basic } })).changePlan).toMatchObject({ plan: { code: basic }, pendingPlan: null });
    expect(ok(await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key)).changePlan).toMatchObject({ plan: { code: pro } });
  });

  it('an upgrade whose payment fails waits, grants nothing, and applies once when the customer pays the invoice', async () => {
    const { accountId, clockId, key } = await newAccount('2030-07-01T00:00:00Z');
    await subscribe(accountId, key, basic);
    await advance(clockId, '2030-07-16T12:00:00Z');
    fake.declineCustomer(customerOf(accountId), true);
    fake.subscriptions.takeEvents();
    const pending = ok(await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key)).changePlan;
    expect(pending).toMatchObject({ plan: { code: basic }, status: 'ACTIVE', pendingPaidUpgrade: { plan: { code: pro } } });
    expect(pending.pendingPaidUpgrade.invoiceUrl).toMatch(/^http/);
    const stripeSubscription = subscriptionOfCustomer(customerOf(accountId));
    expect(stripeSubscription.pending_update).not.toBeNull();
    expect(stripeSubscription.items.data[0]!.price.unit_amount).toBe(1_000);
    // The failed proration invoice is not a renewal debt: the subscription stays ACTIVE, usage goes on.
    await deliverAll(fake.subscriptions.takeEvents());
    expect(await subscription(accountId)).toMatchObject({ plan: { code: basic }, status: 'ACTIVE', usageRefusedFrom: null });
    expect(await available(accountId)).toBe(1_000);
    // Another upgrade while one waits is refused.
    expect((await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key)).errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');

    // A forged invoice.paid for an invoice nobody recorded, with the upgrade's subscription: nothing.
    const upgradeInvoice = fake.billing.invoices.get(stripeSubscription.latest_invoice!)!;
    await deliverAll([fake.event('invoice.paid', { ...upgradeInvoice, id: `in_${unique('forged')}`, status: 'paid', amount_paid: upgradeInvoice.amount_due })]);
    // The recorded invoice, paid, but for less than it asked: nothing either.
    await deliverAll([fake.event('invoice.paid', { ...upgradeInvoice, status: 'paid', amount_paid: 1 })]);
    expect((await subscription(accountId)).plan.code).toBe(basic);
    expect(await available(accountId)).toBe(1_000);

    fake.declineCustomer(customerOf(accountId), false);
    fake.subscriptions.payInvoice(upgradeInvoice.id);
    const events = fake.subscriptions.takeEvents();
    await deliverAll([...events, ...events, ...events.map(again)]);
    expect(await subscription(accountId)).toMatchObject({ plan: { code: pro }, status: 'ACTIVE', pendingPaidUpgrade: null });
    expect(stripeSubscription.items.data[0]!.price.unit_amount).toBe(5_000);
    expect(await available(accountId)).toBe(5_000);
    await expectLedgerConsistent(server);
  });
});

describe('an upgrade whose answer was lost', () => {
  it('is resumed by the same change asked again: Stripe answers what it did, the credits are granted once', async () => {
    const { accountId, key } = await newAccount('2030-08-01T00:00:00Z');
    await subscribe(accountId, key, basic);
    const stripeSubscription = subscriptionOfCustomer(customerOf(accountId));
    fake.subscriptions.takeEvents();
    // Stripe updates the subscription and is paid, but no answer arrives (the client's two retries neither).
    fake.loseAnswers(`/v1/subscriptions/${stripeSubscription.id}`, 3);
    expect((await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key)).errors?.[0]?.extensions?.code).toBe('STRIPE_UNAVAILABLE');
    expect(stripeSubscription.items.data[0]!.price.unit_amount).toBe(5_000);
    expect(await subscription(accountId)).toMatchObject({ plan: { code: basic }, pendingPaidUpgrade: { plan: { code: pro }, invoiceUrl: null } });
    // Its invoice.paid cannot be matched yet: answered 500, so that Stripe delivers it again.
    const invoicePaid = fake.subscriptions.takeEvents().find((event) => event.type === 'invoice.paid')!;
    expect((await deliver(invoicePaid)).status).toBe(500);
    expect(await available(accountId)).toBe(1_000);

    const resumed = ok(await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key)).changePlan;
    expect(resumed).toMatchObject({ plan: { code: pro }, pendingPaidUpgrade: null });
    // One proration invoice in Stripe, not two.
    expect([...fake.billing.invoices.values()].filter((invoice) => invoice.customer === customerOf(accountId) && invoice.billing_reason === 'subscription_update')).toHaveLength(1);
    await deliverAll([invoicePaid, again(invoicePaid)]);
    expect(await available(accountId)).toBe(5_000);
    await expectLedgerConsistent(server);
  });
});

describe('renewals follow payment', () => {
  it('a failed renewal makes the subscription PAST_DUE with an alert; after the grace period usage is refused; paying resumes it', async () => {
    const { accountId, clockId, key } = await newAccount('2030-09-05T08:00:00Z');
    await subscribe(accountId, key, basic);
    const customer = customerOf(accountId);
    fake.declineCustomer(customer, true);
    await advance(clockId, '2030-10-05T09:00:00Z');
    const events = fake.subscriptions.takeEvents();
    expect(events.map((event) => event.type)).toEqual(['invoice.created', 'invoice.finalized', 'invoice.payment_failed', 'customer.subscription.updated']);
    // The subscription's news first, the invoice's after, twice.
    await deliverAll([...events.reverse(), ...events.map(again)]);
    const pastDue = await subscription(accountId);
    expect(pastDue).toMatchObject({ status: 'PAST_DUE', usageRefusalReason: 'PAYMENT_OVERDUE' });
    // The grace runs from the moment the failure was processed, on the account's clock.
    expect(pastDue.pastDueSince).toBe('2030-10-05T09:00:00.000Z');
    expect(pastDue.usageRefusedFrom).toBe(new Date(Date.parse('2030-10-05T09:00:00Z') + GRACE_HOURS * 3_600_000).toISOString());
    const alerts = ok(await server.gql(ALERTS, { id: accountId }, key)).account.alerts.edges.map((edge: any) => edge.node);
    expect(alerts.filter((alert: { kind: string }) => alert.kind === 'SUBSCRIPTION_PAST_DUE')).toHaveLength(1);
    // Within the grace period usage goes on; the renewal granted the period's allocation, as always.
    expect((await use(accountId, 10, key)).data.recordUsage.__typename).toBe('UsageRecorded');

    await advance(clockId, '2030-10-07T09:00:00Z');
    // The one-statement path (a plain usage), the complete path (occurredAt), a batch and a hold alike.
    const refused = await use(accountId, 10, key);
    expect(refused.errors?.[0]?.extensions).toMatchObject({ code: 'PAYMENT_OVERDUE', since: '2030-10-07T09:00:00.000Z' });
    expect((await useAt(accountId, '2030-10-07T09:00:00Z', key)).errors?.[0]?.extensions?.code).toBe('PAYMENT_OVERDUE');
    const batch = ok(
      await server.gql(`mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename ... on Error { code } } }`, {
        inputs: [1, 2].map(() => ({ accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('batch') })),
      }, key),
    ).recordUsageBatch;
    expect(batch.map((item: { code?: string }) => item.code)).toEqual(['PAYMENT_OVERDUE', 'PAYMENT_OVERDUE']);
    const hold = await server.gql(`mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }`, {
      input: { accountId, featureKey: feature, credits: 5, idempotencyKey: unique('hold') },
    });
    expect(hold.errors?.[0]?.extensions?.code).toBe('PAYMENT_OVERDUE');
    const before = await available(accountId);

    const invoiceId = events.find((event) => event.type === 'invoice.payment_failed')!.data.object as { id: string };
    fake.declineCustomer(customer, false);
    fake.subscriptions.payInvoice(invoiceId.id);
    const paid = fake.subscriptions.takeEvents();
    expect(paid.map((event) => event.type)).toEqual(['invoice.paid', 'invoice.payment_succeeded', 'customer.subscription.updated']);
    await deliverAll(paid);
    expect(await subscription(accountId)).toMatchObject({ status: 'ACTIVE', pastDueSince: null, usageRefusedFrom: null, usageRefusalReason: null });
    expect((await use(accountId, 10, key)).data.recordUsage.__typename).toBe('UsageRecorded');
    expect(await available(accountId)).toBe(before - 10);
    // The failure delivered late, after the payment: stale, nothing changes.
    await deliverAll(events.filter((event) => event.type !== 'invoice.created').map(again));
    expect(await subscription(accountId)).toMatchObject({ status: 'ACTIVE', usageRefusedFrom: null });
    await expectLedgerConsistent(server);
  });
});

describe('cancelSubscription', () => {
  it('ends the subscription at the period end; without a free plan new usage is refused from then', async () => {
    const { accountId, clockId, key } = await newAccount('2030-11-01T00:00:00Z');
    await subscribe(accountId, key, basic);
    const cancelled = ok(await server.gql(CANCEL, { input: { accountId } }, key)).cancelSubscription;
    expect(cancelled).toMatchObject({ plan: { code: basic }, status: 'ACTIVE', cancelAtPeriodEnd: true, usageRefusedFrom: '2030-12-01T00:00:00.000Z', usageRefusalReason: 'SUBSCRIPTION_ENDED' });
    expect(subscriptionOfCustomer(customerOf(accountId)).cancel_at_period_end).toBe(true);
    expect((await use(accountId, 10, key)).data.recordUsage.__typename).toBe('UsageRecorded');
    await advance(clockId, '2030-12-01T00:00:01Z');
    const events = fake.subscriptions.takeEvents();
    expect(events.map((event) => event.type)).toContain('customer.subscription.deleted');
    await deliverAll([...events, ...events]);
    expect(await subscription(accountId)).toMatchObject({ status: 'CANCELED', cancelAtPeriodEnd: false, usageRefusalReason: 'SUBSCRIPTION_ENDED' });
    expect((await use(accountId, 10, key)).errors?.[0]?.extensions?.code).toBe('SUBSCRIPTION_ENDED');
    expect((await useAt(accountId, '2030-12-01T00:00:01Z', key)).errors?.[0]?.extensions?.code).toBe('SUBSCRIPTION_ENDED');
    expect((await server.gql(CANCEL, { input: { accountId } }, key)).errors?.[0]?.extensions?.code).toBe('NOT_SUBSCRIBED');
  });

  it('a cancellation made in Stripe (the customer portal, the dashboard) is followed as if made here', async () => {
    const { accountId, clockId, key } = await newAccount('2031-02-10T00:00:00Z');
    await subscribe(accountId, key, basic);
    const stripeSubscription = subscriptionOfCustomer(customerOf(accountId));
    fake.subscriptions.takeEvents();
    await fake.client.subscriptions.update(stripeSubscription.id, { cancel_at_period_end: true });
    const events = fake.subscriptions.takeEvents();
    expect(events.map((event) => event.type)).toEqual(['customer.subscription.updated']);
    await deliverAll([...events, ...events.map(again)]);
    expect(await subscription(accountId)).toMatchObject({ status: 'ACTIVE', cancelAtPeriodEnd: true, usageRefusedFrom: '2031-03-10T00:00:00.000Z', usageRefusalReason: 'SUBSCRIPTION_ENDED' });
    // No plan changes once it ends at the period end.
    expect((await server.gql(CHANGE_PLAN, { input: { accountId, planCode: pro } }, key)).errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
    await advance(clockId, '2031-03-10T00:00:01Z');
    await deliverAll(fake.subscriptions.takeEvents());
    expect(await subscription(accountId)).toMatchObject({ status: 'CANCELED', usageRefusalReason: 'SUBSCRIPTION_ENDED' });
    // Subscribing again starts afresh: usage resumes.
    await subscribe(accountId, key, basic);
    expect(await subscription(accountId)).toMatchObject({ plan: { code: basic }, status: 'ACTIVE', usageRefusedFrom: null, usageRefusalReason: null });
    expect((await use(accountId, 10, key)).data.recordUsage.__typename).toBe('UsageRecorded');
  });

  it('with a free plan configured, the account moves to it at the period end and usage goes on', async () => {
    const { accountId, clockId, key } = await newAccount('2030-11-15T00:00:00Z', freeServer);
    await subscribe(accountId, key, basic, freeServer);
    const cancelled = ok(await freeServer.gql(CANCEL, { input: { accountId } }, key)).cancelSubscription;
    expect(cancelled).toMatchObject({ plan: { code: basic }, pendingPlan: { code: free }, cancelAtPeriodEnd: true, usageRefusedFrom: null });
    await advance(clockId, '2030-12-15T00:00:01Z', freeServer);
    await deliverAll(fake.subscriptions.takeEvents(), freeServer);
    expect(await subscription(accountId, freeServer)).toMatchObject({ plan: { code: free }, status: 'CANCELED', usageRefusedFrom: null });
    const used = (await recordUsage(freeServer, { accountId, featureKey: feature, quantity: 10 }, key)) as GraphQLResponse<any>;
    expect(used.data.recordUsage.__typename).toBe('UsageRecorded');
  });
});
