import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { addSeat, createAccount, createKey, defineFeature, definePlan, ok, operator, recordUsage } from './support/fixtures.ts';
import { connectLive } from './support/live.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Seats within one account: a SEAT key sees its own seat's usage, holds, limits and alerts and the
 * shared pool, never another seat's (issue 15 item 8).
 */
let fake: FakeStripe;
let server: TestServer;
let pool: string;
let feature: string;
let accountId: string;
let seatA: string;
let seatB: string;
let seatKeyA: string;
let accountKey: string;
const secretTag = unique('project:b-secret');
const ownTag = unique('project:a-own');
let own: { usage: string; hold: string; limit: string };
let other: { usage: string; hold: string; limit: string; alert: string };

const EVERYTHING = `query($id: ID!) { account(id: $id) {
  seats { id name }
  reservations { id tags seat { id } usageEvent { id } }
  spendLimits { id scope scopeValue }
  alerts { edges { node { id kind message } } }
  topUps { edges { node { id status checkoutUrl } } }
  usageEvents { edges { node { id tags seat { id } } } }
  usageSummary(groupBy: TAG) { key }
  seatSummary: usageSummary(groupBy: SEAT) { key }
  grants { edges { node { id seat { id } } } } } }`;

async function hold(seatId: string, tags: string[]): Promise<string> {
  return ok(
    await server.gql(`mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { ... on CreditsReserved { reservation { id } } } }`, {
      input: { accountId, featureKey: feature, credits: 5, seatId, tags, idempotencyKey: unique('hold') },
    }),
  ).reserveCredits.reservation.id;
}

async function seatLimit(seatId: string, limit: number): Promise<string> {
  return (await operator(server).setSpendLimit({ accountId, scope: 'SEAT', scopeValue: seatId, limit, period: 'LIFETIME' })).id;
}

async function alertsSeenBy(key: string): Promise<Array<{ id: string; kind: string; message: string }>> {
  return ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts { edges { node { id kind message } } } } }`, { id: accountId }, key)).account.alerts.edges.map(
    (edge: { node: { id: string; kind: string; message: string } }) => edge.node,
  );
}

beforeAll(async () => {
  fake = await startFakeStripe();
  server = await startTestServer({ STRIPE_SECRET_KEY: 'sk_test_fake', STRIPE_WEBHOOK_SECRET: 'whsec_seats', STRIPE_API_BASE: fake.url, JOBS_ENABLED: 'false' });
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }, { creditType: pool, amount: 50, perSeat: true }], featureKeys: [feature] });
  accountId = await createAccount(server, plan);
  seatA = await addSeat(server, accountId);
  seatB = await addSeat(server, accountId);
  seatKeyA = await createKey(server, 'SEAT', accountId, seatA);
  accountKey = await createKey(server, 'ACCOUNT', accountId);
  const pack = unique('pack');
  await operator(server).upsertCreditPack({ code: pack, name: 'pack', creditType: pool, credits: 100, price: { amount: 500, currency: 'USD' } });
  ok(
    await server.gql(`mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) { id } }`, {
      input: { accountId, packCode: pack, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('buy') },
    }),
  );

  own = {
    usage: ok(await recordUsage(server, { accountId, featureKey: feature, seatId: seatA, tags: [ownTag], idempotencyKey: unique('u') })).recordUsage.usageEvent.id,
    hold: await hold(seatA, [ownTag]),
    limit: await seatLimit(seatA, 900),
  };
  const otherUsage = ok(await recordUsage(server, { accountId, featureKey: feature, seatId: seatB, quantity: 3, tags: [secretTag], idempotencyKey: unique('u') }))
    .recordUsage.usageEvent.id;
  const otherHold = await hold(seatB, [secretTag]);
  const otherLimit = await seatLimit(seatB, 8);
  const refused = await recordUsage(server, { accountId, featureKey: feature, seatId: seatB, quantity: 1, idempotencyKey: unique('u') });
  expect(ok(refused).recordUsage.__typename).toBe('SpendLimitExceeded');
  const alert = (await alertsSeenBy(accountKey)).find((candidate) => candidate.kind === 'SPEND_LIMIT_REACHED' && candidate.message.includes(seatB));
  if (!alert) throw new Error("seat B's spend limit raised no alert");
  other = { usage: otherUsage, hold: otherHold, limit: otherLimit, alert: alert.id };
});
afterAll(async () => {
  await server?.stop();
  await fake?.close();
});

describe("a SEAT key sees its own seat and the shared pool, not another seat's", () => {
  it('reads of the account show nothing of the other seat: holds, their tags, usage, limits, alerts, seats', async () => {
    const seen = ok(await server.gql(EVERYTHING, { id: accountId }, seatKeyA)).account;
    const text = JSON.stringify(seen);
    for (const hidden of [seatB, secretTag, other.usage, other.hold, other.limit, other.alert]) expect(text).not.toContain(hidden);
    expect(seen.reservations.map((reservation: { id: string }) => reservation.id)).toEqual([own.hold]);
    expect(seen.usageEvents.edges.map((edge: { node: { id: string } }) => edge.node.id)).toEqual([own.usage]);
    expect(seen.spendLimits.map((limit: { id: string }) => limit.id)).toEqual([own.limit]);
    expect(seen.seats.map((seat: { id: string }) => seat.id)).toEqual([seatA]);
    expect(seen.usageSummary.map((group: { key: string }) => group.key)).toEqual([ownTag]);
    expect(seen.grants.edges.some((edge: { node: { seat: unknown } }) => edge.node.seat === null)).toBe(true);
  });

  it("the account's key sees both seats (the filter is the SEAT key's, not the data's)", async () => {
    const text = JSON.stringify(ok(await server.gql(EVERYTHING, { id: accountId }, accountKey)).account);
    for (const visible of [seatA, seatB, secretTag, ownTag, other.usage, other.hold, other.limit, other.alert]) expect(text).toContain(visible);
  });

  it("a pending purchase's checkout URL is not shown to a SEAT key", async () => {
    const read = (key: string) => server.gql(`query($id: ID!) { account(id: $id) { topUps { edges { node { status checkoutUrl } } } } }`, { id: accountId }, key);
    const [forAccount] = ok(await read(accountKey)).account.topUps.edges;
    expect(forAccount.node).toMatchObject({ status: 'PENDING', checkoutUrl: expect.stringMatching(/^https?:/) });
    const [forSeat] = ok(await read(seatKeyA)).account.topUps.edges;
    expect(forSeat.node).toEqual({ status: 'PENDING', checkoutUrl: null });
  });

  it("another seat's alert cannot be acknowledged by a SEAT key, and answers like a missing one", async () => {
    const ack = (id: string) => server.gql(`mutation($id: ID!) { acknowledgeAlert(id: $id) { id acknowledgedAt } }`, { id }, seatKeyA);
    const theirs = await ack(other.alert);
    expect(theirs.errors?.[0]?.extensions?.code).toBe('ALERT_NOT_FOUND');
    expect(theirs.errors?.[0]?.message.replace(other.alert, '<id>')).toBe((await ack('no-such-alert')).errors?.[0]?.message.replace('no-such-alert', '<id>'));
    expect((await alertsSeenBy(accountKey)).find((alert) => alert.id === other.alert)).toBeDefined();
  });

  it("live alerts: a SEAT key's subscription does not carry another seat's alert; the account's does", async () => {
    const query = `subscription($id: ID!) { creditAlerts(accountId: $id) { id kind message } }`;
    const seatLive = connectLive(server.url, seatKeyA);
    const accountLive = connectLive(server.url, accountKey);
    try {
      const seatFeed = seatLive.subscribe(query, { id: accountId }, (data) => data.creditAlerts);
      const accountFeed = accountLive.subscribe(query, { id: accountId }, (data) => data.creditAlerts);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const seatC = await addSeat(server, accountId);
      await seatLimit(seatC, 1);
      expect(ok(await recordUsage(server, { accountId, featureKey: feature, seatId: seatC, quantity: 1 })).recordUsage.__typename).toBe('UsageRecorded');
      const [raised] = await accountFeed.take(1);
      expect(raised).toMatchObject({ kind: 'SPEND_LIMIT_REACHED', message: expect.stringContaining(seatC) });
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(seatFeed.events).toEqual([]);
      expect(seatFeed.errors).toEqual([]);
    } finally {
      await Promise.all([seatLive.dispose(), accountLive.dispose()]);
    }
  });
});
