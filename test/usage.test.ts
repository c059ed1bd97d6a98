import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balance, createAccount, defineFeature, definePlan, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

describe('usage against a plan with two pools (B2B Rocket style)', () => {
  let accountId: string;
  let exportKey: string;
  let verifyKey: string;
  let outsideKey: string;
  let tieredKey: string;
  let dynamicKey: string;
  let freeKey: string;
  const database = unique('database');
  const email = unique('email');

  beforeAll(async () => {
    exportKey = await defineFeature(server, { creditType: database, unitCredits: 1 });
    verifyKey = await defineFeature(server, { creditType: email, unitCredits: 2 });
    outsideKey = await defineFeature(server, { creditType: database, unitCredits: 1 });
    tieredKey = await defineFeature(server, {
      creditType: database,
      pricing: 'TIERED',
      tiers: [
        { upTo: 100_000, credits: 100 },
        { upTo: 1_000, credits: 25 },
        { upTo: null, credits: 200 },
      ],
    });
    dynamicKey = await defineFeature(server, { creditType: database, pricing: 'DYNAMIC' });
    freeKey = await defineFeature(server, { creditType: database, unitCredits: 0 });
    const plan = await definePlan(server, {
      allocations: [
        { creditType: database, amount: 2_000 },
        { creditType: email, amount: 100 },
      ],
      featureKeys: [exportKey, verifyKey, tieredKey, dynamicKey, freeKey],
    });
    accountId = await createAccount(server, plan);
  });

  it('grants each pool its allocation at creation', async () => {
    const data = ok(
      await server.gql(`query($id: ID!) { account(id: $id) { balances { creditType available periodAllocation periodUsed } } }`, { id: accountId }),
    );
    const balances = Object.fromEntries(data.account.balances.map((b: any) => [b.creditType, b]));
    expect(balances[database]).toMatchObject({ available: 2_000, periodAllocation: 2_000, periodUsed: 0 });
    expect(balances[email]).toMatchObject({ available: 100, periodAllocation: 100, periodUsed: 0 });
  });

  it('debits the pool of the feature and no other', async () => {
    const result = await recordUsage(server, { accountId, featureKey: verifyKey, quantity: 10 });
    expect(result.data.recordUsage).toMatchObject({ __typename: 'UsageRecorded', balance: { creditType: email, available: 80, periodUsed: 20 } });
    expect(result.data.recordUsage.usageEvent.credits).toBe(20);
    expect(await balance(server, accountId, database)).toBe(2_000);
  });

  it('exhausting one pool refuses only its features, debiting nothing', async () => {
    const drain = await recordUsage(server, { accountId, featureKey: verifyKey, quantity: 40 });
    expect(drain.data.recordUsage.balance.available).toBe(0);
    const refused = await recordUsage(server, { accountId, featureKey: verifyKey, quantity: 1 });
    expect(refused.data.recordUsage).toEqual({
      __typename: 'InsufficientCredits',
      code: 'INSUFFICIENT_CREDITS',
      message: expect.any(String),
      creditType: email,
      required: 2,
      available: 0,
    });
    expect(await balance(server, accountId, email)).toBe(0);
    const other = await recordUsage(server, { accountId, featureKey: exportKey, quantity: 5 });
    expect(other.data.recordUsage.__typename).toBe('UsageRecorded');
    expect(await balance(server, accountId, database)).toBe(1_995);
  });

  it('refuses a feature outside the plan as FeatureNotAvailable', async () => {
    const before = await balance(server, accountId, database);
    const result = await recordUsage(server, { accountId, featureKey: outsideKey, quantity: 1 });
    expect(result.data.recordUsage).toMatchObject({ __typename: 'FeatureNotAvailable', code: 'FEATURE_NOT_AVAILABLE', featureKey: outsideKey });
    expect(await balance(server, accountId, database)).toBe(before);
  });

  it('charges a tiered feature the cost of the band the quantity falls in', async () => {
    const cases: Array<[number, number]> = [
      [1, 25],
      [1_000, 25],
      [1_001, 100],
      [100_000, 100],
      [100_001, 200],
    ];
    for (const [quantity, expected] of cases) {
      const before = await balance(server, accountId, database);
      const result = await recordUsage(server, { accountId, featureKey: tieredKey, quantity });
      expect(result.data.recordUsage.usageEvent.credits, `quantity ${quantity}`).toBe(expected);
      expect(await balance(server, accountId, database)).toBe(before - expected);
    }
  });

  it('charges a dynamic feature the cost the caller gives', async () => {
    const before = await balance(server, accountId, database);
    const result = await recordUsage(server, { accountId, featureKey: dynamicKey, credits: 37 });
    expect(result.data.recordUsage.usageEvent.credits).toBe(37);
    expect(await balance(server, accountId, database)).toBe(before - 37);
  });

  it('logs a free feature at 0 credits without touching any grant', async () => {
    const before = await balance(server, accountId, database);
    const result = await recordUsage(server, { accountId, featureKey: freeKey, quantity: 500, tags: ['enrichment'] });
    expect(result.data.recordUsage.usageEvent).toMatchObject({ credits: 0, quantity: 500, draws: [], tags: ['enrichment'] });
    expect(await balance(server, accountId, database)).toBe(before);
    const log = ok(
      await server.gql(`query($id: ID!, $f: UsageFilter) { account(id: $id) { usageEvents(filter: $f) { edges { node { id credits } } } } }`, {
        id: accountId,
        f: { featureKey: freeKey },
      }),
    );
    expect(log.account.usageEvents.edges.map((edge: any) => edge.node)).toEqual([{ id: result.data.recordUsage.usageEvent.id, credits: 0 }]);
  });
});

describe('a feature that requires a positive balance', () => {
  it('is free while the pool has credits and refused once it is empty', async () => {
    const pool = unique('credits');
    const intent = await defineFeature(server, { creditType: pool, unitCredits: 0, requiresPositiveBalance: true });
    const spend = await defineFeature(server, { creditType: pool, unitCredits: 10 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 10 }], featureKeys: [intent, spend] }));
    expect((await recordUsage(server, { accountId, featureKey: intent })).data.recordUsage).toMatchObject({ __typename: 'UsageRecorded', balance: { available: 10 } });
    await recordUsage(server, { accountId, featureKey: spend });
    expect((await recordUsage(server, { accountId, featureKey: intent })).data.recordUsage).toMatchObject({
      __typename: 'InsufficientCredits',
      available: 0,
    });
  });
});

describe('the usage log', () => {
  it('filters by feature, seat, tag and time and pages with cursors, newest first', async () => {
    const pool = unique('credits');
    const a = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const b = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [a, b] }));
    const ids: string[] = [];
    // Within the occurredAt window (35 days back by default): seven days from 20 days ago.
    const start = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate() - 20);
    const day = (offset: number) => new Date(start + offset * 86_400_000).toISOString();
    for (let index = 0; index < 7; index += 1) {
      const result = await recordUsage(server, {
        accountId,
        featureKey: index % 2 === 0 ? a : b,
        tags: index < 3 ? ['workbook:42'] : ['workbook:7'],
        occurredAt: day(index),
      });
      ids.push(result.data.recordUsage.usageEvent.id);
    }
    const query = `query($id: ID!, $f: UsageFilter, $first: Int, $after: String) {
      account(id: $id) { usageEvents(filter: $f, first: $first, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } } }`;
    const page1 = ok(await server.gql(query, { id: accountId, first: 3 })).account.usageEvents;
    expect(page1.edges.map((edge: any) => edge.node.id)).toEqual([ids[6], ids[5], ids[4]]);
    expect(page1.pageInfo.hasNextPage).toBe(true);
    const page2 = ok(await server.gql(query, { id: accountId, first: 3, after: page1.pageInfo.endCursor })).account.usageEvents;
    expect(page2.edges.map((edge: any) => edge.node.id)).toEqual([ids[3], ids[2], ids[1]]);
    const page3 = ok(await server.gql(query, { id: accountId, first: 3, after: page2.pageInfo.endCursor })).account.usageEvents;
    expect(page3.edges.map((edge: any) => edge.node.id)).toEqual([ids[0]]);
    expect(page3.pageInfo.hasNextPage).toBe(false);

    const byFeature = ok(await server.gql(query, { id: accountId, f: { featureKey: b } })).account.usageEvents;
    expect(byFeature.edges.map((edge: any) => edge.node.id)).toEqual([ids[5], ids[3], ids[1]]);
    const byTag = ok(await server.gql(query, { id: accountId, f: { tag: 'workbook:42' } })).account.usageEvents;
    expect(byTag.edges.map((edge: any) => edge.node.id)).toEqual([ids[2], ids[1], ids[0]]);
    const byTime = ok(
      await server.gql(query, { id: accountId, f: { from: day(2), to: day(4) } }),
    ).account.usageEvents;
    expect(byTime.edges.map((edge: any) => edge.node.id)).toEqual([ids[3], ids[2]]);
    const badCursor = await server.gql(query, { id: accountId, after: 'not-a-cursor' });
    expect(badCursor.errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
  });
});
