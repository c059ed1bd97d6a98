import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import {
  advanceClock,
  balance,
  createAccount,
  createTestClock,
  defineFeature,
  definePlan,
  expectLedgerConsistent,
  grantCredits,
  ok,
  recordUsage,
} from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Auto top-up as a customer sets it up (issue 18 item 4), end to end: GraphQL over HTTP, payments
 * through the official `stripe` client against the Stripe-compatible test server, on whichever
 * database the suite runs.
 */

let fake: FakeStripe;
let server: TestServer;

beforeAll(async () => {
  fake = await startFakeStripe();
  server = await startTestServer({
    STRIPE_SECRET_KEY: 'sk_test_fake',
    STRIPE_WEBHOOK_SECRET: 'whsec_auto',
    STRIPE_API_BASE: fake.url,
    JOBS_ENABLED: 'false',
  });
});
afterAll(async () => {
  await server?.stop();
  await fake?.close();
});

const CONFIG_FIELDS = `creditType enabled thresholdCredits targetBalanceCredits armed pausedAt consecutiveFailures maxConsecutiveFailures
  maxPurchasesPerPeriod purchasesThisPeriod maxPurchasesPerMonth purchasesThisMonth maxAmountPerMonth { amount currency }
  amountThisMonth { amount currency } retryNotBefore pack { code }`;
const CONFIGURE = `mutation($input: ConfigureAutoTopUpInput!) { configureAutoTopUp(input: $input) { ${CONFIG_FIELDS} } }`;
const TOP_UPS = `query($id: ID!) { account(id: $id) { topUps(first: 100) { edges { node {
  id status source quantity credits amount { amount currency } failureCode grant { amount } } } } } }`;
const RESERVE = `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename ... on CreditsReserved { reservation { id } } } }`;

interface Setup {
  pool: string;
  feature: string;
  accountId: string;
  pack: string;
  customer: string;
}

/** An account with 1,000 credits a month, a pack, and a saved card (a Checkout purchase created its Stripe customer). */
async function setUp(options: { packCredits?: number; packPrice?: number; testClockId?: string } = {}): Promise<Setup> {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] });
  const accountId = await createAccount(server, plan, options.testClockId);
  const pack = unique('pack');
  ok(
    await server.gql(`mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`, {
      input: { code: pack, name: 'Credits', creditType: pool, credits: options.packCredits ?? 100, price: { amount: options.packPrice ?? 500, currency: 'EUR' } },
    }),
  );
  ok(
    await server.gql(`mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) { id } }`, {
      input: { accountId, packCode: pack, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('buy') },
    }),
  );
  const customer = [...fake.customers.values()].find((candidate) => candidate.metadata.account_id === accountId);
  if (!customer) throw new Error('no Stripe customer');
  fake.setDefaultPaymentMethod(customer.id, 'pm_card_visa');
  return { pool, feature, accountId, pack, customer: customer.id };
}

async function configure(setup: Setup, input: Record<string, unknown>) {
  return ok(
    await server.gql(CONFIGURE, {
      input: { accountId: setup.accountId, creditType: setup.pool, enabled: true, thresholdCredits: 500, packCode: setup.pack, maxPurchasesPerPeriod: 100, ...input },
    }),
  ).configureAutoTopUp;
}

async function config(accountId: string) {
  return ok(await server.gql(`query($id: ID!) { account(id: $id) { autoTopUps { ${CONFIG_FIELDS} } } }`, { id: accountId })).account.autoTopUps[0];
}

async function autoPurchases(accountId: string): Promise<any[]> {
  const edges = ok(await server.gql(TOP_UPS, { id: accountId })).account.topUps.edges;
  return edges.map((edge: any) => edge.node).filter((purchase: any) => purchase.source === 'AUTO_TOP_UP');
}

/** Waits until `count` auto top-ups exist and none is still being paid (payment runs after the debit's commit). */
async function settled(accountId: string, count: number): Promise<any[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const list = await autoPurchases(accountId);
    if ((list.length === count && list.every((purchase) => purchase.status !== 'PENDING')) || Date.now() > deadline) {
      expect(list.map((purchase) => purchase.status)).toEqual(Array(count).fill(expect.stringMatching(/COMPLETED|FAILED/)));
      return list;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function use(setup: Setup, quantity: number) {
  const response = await recordUsage(server, { accountId: setup.accountId, featureKey: setup.feature, quantity });
  expect(ok(response).recordUsage.__typename).toBe('UsageRecorded');
}

const paymentIntentsOf = (accountId: string) => [...fake.paymentIntents.values()].filter((intent) => intent.metadata.account_id === accountId);

describe('once per crossing', () => {
  it('a pack too small to lift the balance above the threshold is bought once; the next crossing after a rise buys again', async () => {
    const setup = await setUp({ packCredits: 50 });
    expect(await configure(setup, {})).toMatchObject({ armed: true, targetBalanceCredits: null });
    await use(setup, 600); // 1,000 → 400: crosses 500
    await settled(setup.accountId, 1);
    expect(await balance(server, setup.accountId, setup.pool)).toBe(450);
    expect(await config(setup.accountId)).toMatchObject({ armed: false });
    // Still below the threshold: these debits are part of the same crossing and buy nothing.
    for (let index = 0; index < 5; index += 1) await use(setup, 10);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await autoPurchases(setup.accountId)).toHaveLength(1);
    expect(paymentIntentsOf(setup.accountId)).toHaveLength(1);
    // Credits from elsewhere lift the balance above the threshold: the next fall is a new crossing.
    await grantCredits(server, { accountId: setup.accountId, creditType: setup.pool, amount: 300 });
    expect(await balance(server, setup.accountId, setup.pool)).toBe(700);
    await use(setup, 250); // 700 → 450
    await settled(setup.accountId, 2);
    expect(await balance(server, setup.accountId, setup.pool)).toBe(500);
    await expectLedgerConsistent(server);
  });

  it('a balance exactly at the threshold re-arms (it is not below it); a hold crossing it buys too', async () => {
    const setup = await setUp({ packCredits: 100 });
    await configure(setup, {});
    await use(setup, 600); // 400, buys 100 → 500: at the threshold, not below it
    await settled(setup.accountId, 1);
    expect(await balance(server, setup.accountId, setup.pool)).toBe(500);
    // Re-armed by the credits bought, before any spend sees the balance.
    expect(await config(setup.accountId)).toMatchObject({ armed: true });
    const held = ok(
      await server.gql(RESERVE, { input: { accountId: setup.accountId, featureKey: setup.feature, credits: 1, ttlSeconds: 600, idempotencyKey: unique('hold') } }),
    );
    expect(held.reserveCredits.__typename).toBe('CreditsReserved');
    await settled(setup.accountId, 2);
    expect(await balance(server, setup.accountId, setup.pool)).toBe(599);
  });

  it('many debits and holds crossing at once buy exactly one purchase, and the balance is exact', async () => {
    const setup = await setUp({ packCredits: 300, packPrice: 900 });
    await configure(setup, { targetBalanceCredits: 1_500 });
    // 40 spends of 20: the balance falls from 1,000 to 200, crossing 500 on the 26th whichever it is.
    const spends = Array.from({ length: 40 }, (_, index) =>
      index % 4 === 0
        ? server.gql(RESERVE, { input: { accountId: setup.accountId, featureKey: setup.feature, credits: 20, ttlSeconds: 600, idempotencyKey: unique('hold') } })
        : recordUsage(server, { accountId: setup.accountId, featureKey: setup.feature, quantity: 20 }),
    );
    for (const response of await Promise.all(spends)) expect(response.errors).toBeUndefined();
    const [bought] = await settled(setup.accountId, 1);
    // Bought at the crossing (the balance then was 480: 4 packs reach 1,500) or later; never twice.
    expect(bought.status).toBe('COMPLETED');
    expect(paymentIntentsOf(setup.accountId)).toHaveLength(1);
    expect(bought.amount).toEqual({ amount: 900 * bought.quantity, currency: 'EUR' });
    expect(await balance(server, setup.accountId, setup.pool)).toBe(1_000 - 800 + bought.credits);
    await expectLedgerConsistent(server);
  });
});

describe('every spend path', () => {
  it('a batch crossing the threshold buys, paid right after its commit (not left to the stale retry)', async () => {
    const setup = await setUp({ packCredits: 600 });
    await configure(setup, {});
    const batch = ok(
      await server.gql(`mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }`, {
        inputs: Array.from({ length: 4 }, () => ({ accountId: setup.accountId, featureKey: setup.feature, quantity: 150, idempotencyKey: unique('batch') })),
      }),
    );
    expect(batch.recordUsageBatch.map((result: any) => result.__typename)).toEqual(Array(4).fill('UsageRecorded'));
    const [bought] = await settled(setup.accountId, 1);
    expect(bought.status).toBe('COMPLETED');
    expect(await balance(server, setup.accountId, setup.pool)).toBe(1_000 - 600 + 600);
  });
});

describe('top up to a target balance', () => {
  it('buys as many packs as reach the target, in one payment', async () => {
    const setup = await setUp({ packCredits: 300, packPrice: 700 });
    const configured = await configure(setup, { targetBalanceCredits: 2_000 });
    expect(configured.targetBalanceCredits).toBe(2_000);
    await use(setup, 600); // 400: 1,600 missing → 6 packs (1,800)
    const [bought] = await settled(setup.accountId, 1);
    expect(bought).toMatchObject({ status: 'COMPLETED', quantity: 6, credits: 1_800, amount: { amount: 4_200, currency: 'EUR' }, grant: { amount: 1_800 } });
    const intents = paymentIntentsOf(setup.accountId);
    expect(intents.map((intent) => intent.amount)).toEqual([4_200]);
    expect(await balance(server, setup.accountId, setup.pool)).toBe(2_200);
  });

  it('refuses a target at or below the threshold, and bad caps, changing nothing', async () => {
    const setup = await setUp();
    for (const [input, field] of [
      [{ targetBalanceCredits: 500 }, 'targetBalanceCredits'],
      [{ maxAmountPerMonth: -1 }, 'maxAmountPerMonth'],
      [{ maxAmountPerMonth: 100_000_000 }, 'maxAmountPerMonth'],
      [{ maxPurchasesPerMonth: 1_001 }, 'maxPurchasesPerMonth'],
      [{ maxConsecutiveFailures: 0 }, 'maxConsecutiveFailures'],
      [{ maxConsecutiveFailures: 11 }, 'maxConsecutiveFailures'],
    ] as const) {
      const response = await server.gql(CONFIGURE, {
        input: { accountId: setup.accountId, creditType: setup.pool, enabled: true, thresholdCredits: 500, packCode: setup.pack, maxPurchasesPerPeriod: 5, ...input },
      });
      expect(response.errors?.[0]?.extensions).toMatchObject({ code: 'INVALID_INPUT', field });
    }
    expect(ok(await server.gql(`query($id: ID!) { account(id: $id) { autoTopUps { creditType } } }`, { id: setup.accountId })).account.autoTopUps).toEqual([]);
  });
});

describe('monthly caps on the account’s clock', () => {
  it('the money cap buys fewer packs, then none; the next calendar month (same billing period) buys again', async () => {
    const clock = await createTestClock(server, '2027-01-20T12:00:00.000Z');
    const setup = await setUp({ packCredits: 300, packPrice: 1_000, testClockId: clock });
    const configured = await configure(setup, { targetBalanceCredits: 2_000, maxAmountPerMonth: 2_500 });
    expect(configured.maxAmountPerMonth).toEqual({ amount: 2_500, currency: 'EUR' });
    await use(setup, 600); // 400: 6 packs would reach 2,000; the cap allows 2 (2,000 of 2,500)
    const [first] = await settled(setup.accountId, 1);
    expect(first).toMatchObject({ status: 'COMPLETED', quantity: 2, amount: { amount: 2_000, currency: 'EUR' } });
    expect(await config(setup.accountId)).toMatchObject({ amountThisMonth: { amount: 2_000, currency: 'EUR' }, purchasesThisMonth: 1 });
    // 1,000 → 700 is above the threshold (re-armed), 700 → 300 crosses: 500 left under the cap, not a pack's price.
    await use(setup, 300);
    await use(setup, 400);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await autoPurchases(setup.accountId)).toHaveLength(1);
    expect(await config(setup.accountId)).toMatchObject({ armed: true });
    // February 2 is a new calendar month within the same billing period (Jan 20 – Feb 20).
    await advanceClock(server, clock, '2027-02-02T00:00:00.000Z');
    const period = ok(await server.gql(`query($id: ID!) { account(id: $id) { subscription { currentPeriod { start } } } }`, { id: setup.accountId }));
    expect(period.account.subscription.currentPeriod.start).toBe('2027-01-20T12:00:00.000Z');
    expect(await config(setup.accountId)).toMatchObject({ amountThisMonth: { amount: 0, currency: 'EUR' }, purchasesThisMonth: 0 });
    await use(setup, 1);
    const [, second] = (await settled(setup.accountId, 2)).reverse();
    expect(second).toMatchObject({ status: 'COMPLETED', quantity: 2 });
  });

  it('the count cap is per calendar month too', async () => {
    const clock = await createTestClock(server, '2027-03-10T00:00:00.000Z');
    const setup = await setUp({ packCredits: 600, testClockId: clock });
    await configure(setup, { maxPurchasesPerMonth: 1 });
    await use(setup, 600);
    await settled(setup.accountId, 1);
    await use(setup, 700); // 1,000 → 300: a crossing, but the month's one purchase is made
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await autoPurchases(setup.accountId)).toHaveLength(1);
    await advanceClock(server, clock, '2027-04-01T00:00:00.000Z');
    await use(setup, 1);
    await settled(setup.accountId, 2);
  });
});

describe('failures', () => {
  it('after N failed payments in a row it pauses itself with an alert, until configured again', async () => {
    const clock = await createTestClock(server, '2027-05-03T00:00:00.000Z');
    const setup = await setUp({ packCredits: 100, testClockId: clock });
    await configure(setup, { maxConsecutiveFailures: 2 });
    fake.declineCustomer(setup.customer, true);
    await use(setup, 600);
    await settled(setup.accountId, 1);
    // The failure re-arms the crossing; the backoff (1 minute on the account's clock) holds the next attempt.
    expect(await config(setup.accountId)).toMatchObject({ consecutiveFailures: 1, armed: true, pausedAt: null });
    await use(setup, 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await autoPurchases(setup.accountId)).toHaveLength(1);
    await advanceClock(server, clock, '2027-05-03T00:01:30.000Z');
    await use(setup, 1);
    await settled(setup.accountId, 2);
    const paused = await config(setup.accountId);
    expect(paused).toMatchObject({ consecutiveFailures: 2, pausedAt: '2027-05-03T00:01:30.000Z' });
    const alerts = ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts(first: 50) { edges { node { kind threshold creditType } } } } }`, { id: setup.accountId }))
      .account.alerts.edges.map((edge: any) => edge.node);
    expect(alerts.filter((alert: any) => alert.kind === 'AUTO_TOP_UP_PAUSED')).toEqual([{ kind: 'AUTO_TOP_UP_PAUSED', threshold: 2, creditType: setup.pool }]);
    expect(alerts.filter((alert: any) => alert.kind === 'AUTO_TOP_UP_FAILED')).toHaveLength(2);
    // Paused: a day later, spends buy nothing, and Stripe is not asked.
    await advanceClock(server, clock, '2027-05-04T00:00:00.000Z');
    const attempts = paymentIntentsOf(setup.accountId).length;
    await use(setup, 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await autoPurchases(setup.accountId)).toHaveLength(2);
    expect(paymentIntentsOf(setup.accountId)).toHaveLength(attempts);
    // Configured again (the card fixed): a fresh start, and the crossing still open buys.
    fake.declineCustomer(setup.customer, false);
    expect(await configure(setup, { maxConsecutiveFailures: 2 })).toMatchObject({ pausedAt: null, consecutiveFailures: 0, retryNotBefore: null, armed: true });
    await use(setup, 1);
    const list = await settled(setup.accountId, 3);
    expect(list.filter((purchase) => purchase.status === 'COMPLETED')).toHaveLength(1);
  });
});
