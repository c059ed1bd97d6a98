import { randomUUID } from 'node:crypto';
import { getNamedType } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { schema } from '../packages/server/src/graphql/schema.ts';
import { addSeat, createAccount, createKey, createTestClock, defineFeature, definePlan, grantCredits, ledgerSum, ok, operator, recordUsage } from './support/fixtures.ts';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { connectLive } from './support/live.ts';
import { startTestServer, unique, type GraphQLResponse, type TestServer } from './support/server.ts';

/** Account B's objects, which A's keys try to reach; a random set stands for "does not exist". */
interface Targets {
  accountId: string;
  seatId: string;
  usageEventId: string;
  reservationId: string;
  alertId: string;
  spendLimitId: string;
  apiKeyId: string;
  sessionTokenId: string;
  purchaseId: string;
}

interface Operation {
  query: string;
  variables: Record<string, unknown>;
}

/**
 * One case per root field. `crossTenant`: aimed at B's objects, the answer must equal the answer for
 * random ids. `operatorOnly`: refused with FORBIDDEN even on A's own account. `shared`: the catalogue
 * and the caller itself, readable by every key.
 */
interface Case {
  crossTenant?: (target: Targets) => Operation;
  operatorOnly?: (own: Targets) => Operation;
  shared?: Operation;
  subscription?: boolean;
}

let server: TestServer;
let fake: FakeStripe;
let pool: string;
let feature: string;
let plan: string;
let pack: string;
let a: Targets;
let b: Targets;
let accountKeyA: string;
let seatKeyA: string;
let accountKeyB: string;

const ACCOUNT_EVERYTHING = `query($id: ID!) { account(id: $id) {
  id name balances { available } seats { id } reservations { id } spendLimits { id } autoTopUps { creditType } alertSettings { creditType }
  usageEvents { edges { node { id } } } alerts { edges { node { id } } } grants { edges { node { id } } } ledger { edges { node { id } } }
  topUps { edges { node { id actionUrl } } } paymentMethod { last4 } subscription { plan { code } } } }`;

const cases: Record<string, Case> = {
  'Query.account': { crossTenant: (t) => ({ query: ACCOUNT_EVERYTHING, variables: { id: t.accountId } }) },
  'Query.deferredRevenue': { operatorOnly: () => ({ query: `{ deferredRevenue(at: "2030-01-01T00:00:00Z") { amount } }`, variables: {} }) },
  'Query.financeFlow': { operatorOnly: () => ({ query: `{ financeFlow(kind: ISSUED, from: "2020-01-01T00:00:00Z", to: "2030-01-01T00:00:00Z") { amount } }`, variables: {} }) },
  'Query.financeReport': { operatorOnly: () => ({ query: `{ financeReport(from: "2020-01-01T00:00:00Z", to: "2030-01-01T00:00:00Z") { currency } }`, variables: {} }) },
  'Mutation.scheduleGrant': {
    operatorOnly: (t) => ({
      query: `mutation($input: ScheduleGrantInput!) { scheduleGrant(input: $input) { id } }`,
      variables: { input: { accountId: t.accountId, creditType: 'x', amount: 1, source: 'BONUS', interval: 'ONCE', startsAt: '2030-01-01T00:00:00Z', idempotencyKey: randomUUID() } },
    }),
  },
  'Mutation.voidGrant': {
    operatorOnly: (t) => ({
      query: `mutation($input: VoidGrantInput!) { voidGrant(input: $input) { correction { id } } }`,
      variables: { input: { accountId: t.accountId, grantId: randomUUID(), reason: 'taken over', idempotencyKey: randomUUID() } },
    }),
  },
  'Mutation.adjustCredits': {
    operatorOnly: (t) => ({
      query: `mutation($input: AdjustCreditsInput!) { adjustCredits(input: $input) { __typename } }`,
      variables: { input: { accountId: t.accountId, creditType: pool, amount: 1_000, reason: 'taken over', idempotencyKey: randomUUID() } },
    }),
  },
  'Mutation.changeGrantExpiry': {
    operatorOnly: (t) => ({
      query: `mutation($input: ChangeGrantExpiryInput!) { changeGrantExpiry(input: $input) { correction { id } } }`,
      variables: { input: { accountId: t.accountId, grantId: randomUUID(), removeExpiry: true, reason: 'taken over', idempotencyKey: randomUUID() } },
    }),
  },
  'Mutation.cancelScheduledGrant': { operatorOnly: () => ({ query: `mutation($id: ID!) { cancelScheduledGrant(id: $id) { id } }`, variables: { id: randomUUID() } }) },
  'Query.webhookEndpoints': { operatorOnly: () => ({ query: `{ webhookEndpoints { id } }`, variables: {} }) },
  'Mutation.createWebhookEndpoint': {
    operatorOnly: (t) => ({ query: `mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }`, variables: { input: { url: 'https://example.com/hook', accountId: t.accountId } } }),
  },
  'Mutation.updateWebhookEndpoint': {
    operatorOnly: () => ({ query: `mutation($input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $input) { id } }`, variables: { input: { id: randomUUID(), enabled: false } } }),
  },
  'Query.accounts': { operatorOnly: () => ({ query: `{ accounts { edges { cursor } } }`, variables: {} }) },
  'Mutation.updateAccount': {
    operatorOnly: (t) => ({ query: `mutation($input: UpdateAccountInput!) { updateAccount(input: $input) { id } }`, variables: { input: { accountId: t.accountId, name: 'taken over' } } }),
  },
  'Query.auditEvents': { operatorOnly: (t) => ({ query: `query($id: ID) { auditEvents(accountId: $id) { edges { cursor } } }`, variables: { id: t.accountId } }) },
  'Query.creditPacks': { shared: { query: `{ creditPacks { code } }`, variables: {} } },
  'Query.features': { shared: { query: `{ features { key } }`, variables: {} } },
  'Query.plan': { shared: { query: `query($code: String!) { plan(code: $code) { code } }`, variables: { code: 'x' } } },
  'Query.plans': { shared: { query: `{ plans { code } }`, variables: {} } },
  'Query.topUpPurchase': { crossTenant: (t) => ({ query: `query($id: ID!) { topUpPurchase(id: $id) { id status } }`, variables: { id: t.purchaseId } }) },
  'Query.testClock': { operatorOnly: () => ({ query: `query($id: ID!) { testClock(id: $id) { id } }`, variables: { id: randomUUID() } }) },
  'Query.viewer': { shared: { query: `{ viewer { role account { id } } }`, variables: {} } },
  'Mutation.acknowledgeAlert': { crossTenant: (t) => ({ query: `mutation($id: ID!) { acknowledgeAlert(id: $id) { id } }`, variables: { id: t.alertId } }) },
  'Mutation.addSeat': { crossTenant: (t) => ({ query: `mutation($input: AddSeatInput!) { addSeat(input: $input) { id } }`, variables: { input: { accountId: t.accountId, name: 'intruder' } } }) },
  'Mutation.advanceTestClock': {
    operatorOnly: () => ({ query: `mutation($input: AdvanceTestClockInput!) { advanceTestClock(input: $input) { id } }`, variables: { input: { testClockId: randomUUID(), to: '2030-01-01T00:00:00Z' } } }),
  },
  'Mutation.changePlan': {
    crossTenant: (t) => ({ query: `mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } } }`, variables: { input: { accountId: t.accountId, planCode: plan } } }),
  },
  'Mutation.configureAlertWebhook': {
    crossTenant: (t) => ({
      query: `mutation($input: ConfigureAlertWebhookInput!) { configureAlertWebhook(input: $input) { url } }`,
      variables: { input: { accountId: t.accountId, url: 'https://attacker.example/hook' } },
    }),
  },
  'Mutation.configureAutoTopUp': {
    crossTenant: (t) => ({
      query: `mutation($input: ConfigureAutoTopUpInput!) { configureAutoTopUp(input: $input) { creditType } }`,
      variables: { input: { accountId: t.accountId, creditType: pool, enabled: true, maxPurchasesPerPeriod: 1, packCode: pack, thresholdCredits: 10 } },
    }),
  },
  'Mutation.createAccount': {
    operatorOnly: () => ({ query: `mutation($input: CreateAccountInput!) { createAccount(input: $input) { id } }`, variables: { input: { name: 'x', planCode: plan } } }),
  },
  'Mutation.createApiKey': {
    crossTenant: (t) => ({ query: `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }`, variables: { input: { role: 'ACCOUNT', accountId: t.accountId } } }),
  },
  'Mutation.createTestClock': {
    operatorOnly: () => ({ query: `mutation($input: CreateTestClockInput!) { createTestClock(input: $input) { id } }`, variables: { input: { frozenTime: '2030-01-01T00:00:00Z' } } }),
  },
  'Mutation.grantCredits': {
    crossTenant: (t) => grant(t),
    operatorOnly: (t) => grant(t),
  },
  'Mutation.cancelSubscription': {
    crossTenant: (t) => ({ query: `mutation($input: CancelSubscriptionInput!) { cancelSubscription(input: $input) { status } }`, variables: { input: { accountId: t.accountId } } }),
  },
  'Mutation.linkPlanToStripePrice': {
    operatorOnly: () => ({ query: `mutation($input: LinkPlanToStripePriceInput!) { linkPlanToStripePrice(input: $input) { code } }`, variables: { input: { planCode: plan } } }),
  },
  'Mutation.subscribeToPlan': {
    crossTenant: (t) => ({
      query: `mutation($input: SubscribeToPlanInput!) { subscribeToPlan(input: $input) { id } }`,
      variables: { input: { accountId: t.accountId, planCode: plan, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: 'sub-1' } },
    }),
  },
  'Mutation.purchaseCreditPack': {
    crossTenant: (t) => ({
      query: `mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) { id } }`,
      variables: { input: { accountId: t.accountId, packCode: pack, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: 'buy-1' } },
    }),
  },
  'Mutation.createPaymentMethodSetup': {
    crossTenant: (t) => ({
      query: `mutation($input: CreatePaymentMethodSetupInput!) { createPaymentMethodSetup(input: $input) { url } }`,
      variables: { input: { accountId: t.accountId, successUrl: 'https://a.example/ok', cancelUrl: 'https://a.example/no' } },
    }),
  },
  'Mutation.removePaymentMethod': {
    crossTenant: (t) => ({ query: `mutation($input: RemovePaymentMethodInput!) { removePaymentMethod(input: $input) { id } }`, variables: { input: { accountId: t.accountId } } }),
  },
  'Mutation.createBillingPortalSession': {
    crossTenant: (t) => ({
      query: `mutation($input: CreateBillingPortalSessionInput!) { createBillingPortalSession(input: $input) { url } }`,
      variables: { input: { accountId: t.accountId, returnUrl: 'https://a.example/back' } },
    }),
  },
  'Mutation.recordUsage': {
    crossTenant: (t) => ({
      query: `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }`,
      variables: { input: { accountId: t.accountId, featureKey: feature, idempotencyKey: 'use-1' } },
    }),
  },
  'Mutation.recordUsageBatch': {
    crossTenant: (t) => ({
      query: `mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename ... on Error { code message } } }`,
      variables: { inputs: [{ accountId: t.accountId, featureKey: feature, idempotencyKey: 'batch-1' }] },
    }),
  },
  'Mutation.refundUsage': {
    crossTenant: (t) => ({ query: `mutation($input: RefundUsageInput!) { refundUsage(input: $input) { id } }`, variables: { input: { usageEventId: t.usageEventId, idempotencyKey: 'refund-1' } } }),
  },
  'Mutation.releaseReservation': { crossTenant: (t) => ({ query: `mutation($id: ID!) { releaseReservation(reservationId: $id) { id } }`, variables: { id: t.reservationId } }) },
  'Mutation.removeSeat': { crossTenant: (t) => ({ query: `mutation($id: ID!) { removeSeat(seatId: $id) { id } }`, variables: { id: t.seatId } }) },
  'Mutation.removeSpendLimit': { crossTenant: (t) => ({ query: `mutation($id: ID!) { removeSpendLimit(id: $id) }`, variables: { id: t.spendLimitId } }) },
  'Mutation.reserveCredits': {
    crossTenant: (t) => ({
      query: `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }`,
      variables: { input: { accountId: t.accountId, featureKey: feature, credits: 1, idempotencyKey: 'hold-1' } },
    }),
  },
  'Mutation.createSessionToken': {
    crossTenant: (t) => ({ query: `mutation($input: CreateSessionTokenInput!) { createSessionToken(input: $input) { token } }`, variables: { input: { accountId: t.accountId } } }),
  },
  'Mutation.revokeSessionToken': { crossTenant: (t) => ({ query: `mutation($id: ID!) { revokeSessionToken(id: $id) { id } }`, variables: { id: t.sessionTokenId } }) },
  'Mutation.revokeApiKey': { crossTenant: (t) => ({ query: `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, variables: { id: t.apiKeyId } }) },
  'Mutation.rotateApiKey': { crossTenant: (t) => ({ query: `mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, variables: { id: t.apiKeyId } }) },
  'Mutation.setAlertSettings': {
    crossTenant: (t) => ({
      query: `mutation($input: SetAlertSettingsInput!) { setAlertSettings(input: $input) { creditType } }`,
      variables: { input: { accountId: t.accountId, creditType: pool, percents: [50] } },
    }),
  },
  'Mutation.setSpendLimit': {
    crossTenant: (t) => ({
      query: `mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { id } }`,
      variables: { input: { accountId: t.accountId, scope: 'ACCOUNT', limit: 0, period: 'LIFETIME' } },
    }),
  },
  'Mutation.settleReservation': {
    crossTenant: (t) => ({ query: `mutation($input: SettleReservationInput!) { settleReservation(input: $input) { id } }`, variables: { input: { reservationId: t.reservationId, credits: 1 } } }),
  },
  'Mutation.updateSeat': {
    crossTenant: (t) => ({ query: `mutation($input: UpdateSeatInput!) { updateSeat(input: $input) { id } }`, variables: { input: { seatId: t.seatId, canUseSharedPool: false } } }),
  },
  'Mutation.upsertCreditPack': {
    operatorOnly: () => ({
      query: `mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`,
      variables: { input: { code: pack, name: 'x', creditType: pool, credits: 1, price: { amount: 1, currency: 'USD' } } },
    }),
  },
  'Mutation.upsertFeature': {
    operatorOnly: () => ({
      query: `mutation($input: FeatureInput!) { upsertFeature(input: $input) { key } }`,
      variables: { input: { key: feature, name: 'x', creditType: pool, pricing: 'PER_UNIT', unitCredits: 0 } },
    }),
  },
  'Mutation.upsertPlan': {
    operatorOnly: () => ({
      query: `mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`,
      variables: { input: { code: plan, name: 'x', interval: 'MONTH', price: { amount: 0, currency: 'USD' }, allocations: [], featureKeys: [] } },
    }),
  },
  'Subscription.balanceUpdated': {
    subscription: true,
    crossTenant: (t) => ({ query: `subscription($id: ID!) { balanceUpdated(accountId: $id) { available } }`, variables: { id: t.accountId } }),
  },
  'Subscription.creditAlerts': {
    subscription: true,
    crossTenant: (t) => ({ query: `subscription($id: ID!) { creditAlerts(accountId: $id) { id } }`, variables: { id: t.accountId } }),
  },
  'Subscription.topUpUpdated': {
    subscription: true,
    crossTenant: (t) => ({ query: `subscription($id: ID!) { topUpUpdated(accountId: $id) { id } }`, variables: { id: t.accountId } }),
  },
};

function grant(t: Targets): Operation {
  return {
    query: `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`,
    variables: { input: { accountId: t.accountId, creditType: pool, amount: 1_000, source: 'BONUS', idempotencyKey: 'grant-1' } },
  };
}

function randomTargets(): Targets {
  return { accountId: randomUUID(), seatId: randomUUID(), usageEventId: randomUUID(), reservationId: randomUUID(), alertId: randomUUID(), spendLimitId: randomUUID(), apiKeyId: randomUUID(), sessionTokenId: randomUUID(), purchaseId: randomUUID() };
}

/** Messages name the id asked for; with ids blanked, nothing may tell B's objects from missing ones. */
function blanked(answer: unknown, target: Targets): string {
  let text = JSON.stringify(answer);
  for (const id of Object.values(target)) text = text.split(id).join('<id>');
  return text;
}

async function subscribeOnce(key: string, operation: Operation): Promise<unknown> {
  const live = connectLive(server.url, key);
  try {
    const subscription = live.subscribe(operation.query, operation.variables, (data) => data);
    await Promise.race([subscription.ended, new Promise((resolve) => setTimeout(resolve, 3_000))]);
    return { events: subscription.events, errors: subscription.errors };
  } finally {
    await live.dispose();
  }
}

async function call(key: string, operation: Operation, subscription = false): Promise<unknown> {
  if (subscription) return subscribeOnce(key, operation);
  const { status, data, errors } = await server.gql(operation.query, operation.variables, key);
  return { status, data, errors };
}

async function stateOf(target: Targets) {
  const account = ok(await server.gql(ACCOUNT_EVERYTHING, { id: target.accountId })).account;
  return { account, ledger: await ledgerSum(server, target.accountId), keyWorks: ok(await server.gql(`{ viewer { role } }`, {}, accountKeyB)).viewer.role };
}

async function objectsOf(accountId: string, seatId: string): Promise<Targets> {
  const usage = ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 80 })).recordUsage.usageEvent.id;
  const hold = ok(
    await server.gql(`mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { ... on CreditsReserved { reservation { id } } } }`, {
      input: { accountId, featureKey: feature, credits: 5, idempotencyKey: unique('hold') },
    }),
  ).reserveCredits.reservation.id;
  const alert = ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts { edges { node { id } } } } }`, { id: accountId })).account.alerts.edges[0].node.id;
  const limit = (await operator(server).setSpendLimit({ accountId, scope: 'ACCOUNT', limit: 1_000, period: 'LIFETIME' })).id;
  const key = (await operator(server).createApiKey({ role: 'SEAT', accountId, seatId })).apiKey.id;
  const session = (await operator(server).createSessionToken({ accountId, seatId })).session.id;
  const purchase = (
    await operator(server).purchaseCreditPack({ accountId, packCode: pack, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no' })
  ).id;
  return { accountId, seatId, usageEventId: usage, reservationId: hold, alertId: alert, spendLimitId: limit, apiKeyId: key, sessionTokenId: session, purchaseId: purchase };
}

/** Fields an ACCOUNT key may not use even on its own account (FORBIDDEN by role, not by tenant). */
const OPERATOR_DECIDES = new Set(['Mutation.changePlan']);

/** Fresh objects of A for one case: a seat, a usage event, a hold, a spend limit, a key and a session. */
async function freshObjectsOfA(): Promise<Targets> {
  const seatId = await addSeat(server, a.accountId);
  const usage = ok(await recordUsage(server, { accountId: a.accountId, featureKey: feature, quantity: 2 })).recordUsage.usageEvent.id;
  const hold = ok(
    await server.gql(`mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { ... on CreditsReserved { reservation { id } } } }`, {
      input: { accountId: a.accountId, featureKey: feature, credits: 2, idempotencyKey: unique('hold') },
    }),
  ).reserveCredits.reservation.id;
  const limit = (await operator(server).setSpendLimit({ accountId: a.accountId, scope: 'TAG', scopeValue: unique('tag'), limit: 1_000, period: 'LIFETIME' })).id;
  const key = (await operator(server).createApiKey({ role: 'SEAT', accountId: a.accountId, seatId })).apiKey.id;
  const session = (await operator(server).createSessionToken({ accountId: a.accountId, seatId })).session.id;
  return { accountId: a.accountId, seatId, usageEventId: usage, reservationId: hold, alertId: a.alertId, spendLimitId: limit, apiKeyId: key, sessionTokenId: session, purchaseId: a.purchaseId };
}

beforeAll(async () => {
  fake = await startFakeStripe();
  server = await startTestServer({ STRIPE_SECRET_KEY: 'sk_test_fake', STRIPE_WEBHOOK_SECRET: 'whsec_isolation', STRIPE_API_BASE: fake.url, JOBS_ENABLED: 'false' });
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
  pack = unique('pack');
  await operator(server).upsertCreditPack({ code: pack, name: 'pack', creditType: pool, credits: 100, price: { amount: 500, currency: 'USD' } });
  const accountA = await createAccount(server, plan);
  const accountB = await createAccount(server, plan);
  // A makes fresh objects for every case.
  await grantCredits(server, { accountId: accountA, creditType: pool, amount: 1_000_000, source: 'BONUS' });
  a = await objectsOf(accountA, await addSeat(server, accountA));
  b = await objectsOf(accountB, await addSeat(server, accountB));
  accountKeyA = await createKey(server, 'ACCOUNT', accountA);
  seatKeyA = await createKey(server, 'SEAT', accountA, a.seatId);
  accountKeyB = await createKey(server, 'ACCOUNT', accountB);
  await createTestClock(server, '2030-01-01T00:00:00Z');
});
afterAll(async () => {
  await server?.stop();
  await fake?.close();
});

const rootFields = [schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()].flatMap((type) =>
  type ? Object.keys(type.getFields()).map((field) => `${type.name}.${field}`) : [],
);

describe('tenant isolation of every root field', () => {
  it('every root field of the schema has a case (a new field must say how it is isolated)', () => {
    expect(rootFields.filter((field) => !cases[field])).toEqual([]);
    expect(Object.keys(cases).filter((field) => !rootFields.includes(field))).toEqual([]);
  });

  it.each(rootFields)('%s', async (field) => {
    const rule = cases[field];
    if (!rule) throw new Error(`no isolation case for ${field}`);
    const before = await stateOf(b);
    if (rule.crossTenant && !rule.operatorOnly && !OPERATOR_DECIDES.has(field)) {
      // The same operation with A's account key on A's own objects (fresh ones, as it may change
      // them) must get through: an operation that fails for every caller is not "isolated".
      const own = await freshObjectsOfA();
      const answer = (await call(accountKeyA, rule.crossTenant(own), rule.subscription)) as GraphQLResponse & { events?: unknown[] };
      const codes = (answer.errors ?? []).map((error) => String((error as { extensions?: { code?: unknown } }).extensions?.code ?? (error as { message?: string }).message));
      expect(codes.filter((code) => /FORBIDDEN|UNAUTHENTICATED|NOT_FOUND|INVALID_INPUT/.test(code)), `${field} by A on its own objects`).toEqual([]);
      if (!rule.subscription && !answer.errors) expect(Object.values(answer.data ?? {})[0], `${field} by A on its own objects`).not.toBeNull();
      // setSpendLimit's case sets a zero limit: it must not refuse the next case's fresh objects.
      await server.app.database.statement(`DELETE FROM spend_limits WHERE account_id = $1 AND scope = 'ACCOUNT'`, [a.accountId]);
    }
    for (const key of [accountKeyA, seatKeyA]) {
      if (rule.crossTenant) {
        const random = randomTargets();
        const other = await call(key, rule.crossTenant(b), rule.subscription);
        const missing = await call(key, rule.crossTenant(random), rule.subscription);
        expect(blanked(other, b), `${field} on B's objects`).toBe(blanked(missing, random));
        expect(JSON.stringify(other)).not.toMatch(/"data":\{"[a-zA-Z]+":\{/);
      }
      if (rule.operatorOnly) {
        const answer = (await call(key, rule.operatorOnly(a))) as GraphQLResponse;
        expect(answer.errors?.map((error) => error.extensions?.code), `${field} by a non-operator`).toEqual(['FORBIDDEN']);
      }
      if (rule.shared) {
        const answer = await call(key, rule.shared);
        expect((answer as GraphQLResponse).errors).toBeUndefined();
        expect(JSON.stringify(answer)).not.toContain(b.accountId);
      }
    }
    expect(await stateOf(b)).toEqual(before);
  });

  it('the root fields are all reachable from a key of A on its own account (the cases are not vacuous)', async () => {
    const own = ok(await server.gql(ACCOUNT_EVERYTHING, { id: a.accountId }, accountKeyA)).account;
    expect(own.seats.map((seat: { id: string }) => seat.id)).toContain(a.seatId);
    expect(own.usageEvents.edges.map((edge: any) => edge.node.id)).toContain(a.usageEventId);
    expect(getNamedType(schema.getQueryType()!.getFields().account!.type).name).toBe('Account');
  });
});
