import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balance, createAccount, defineFeature, definePlan, ledgerSum, RECORD_USAGE } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let accountId: string;
let perUnit: string;
let dynamic: string;
const pool = unique('credits');

beforeAll(async () => {
  server = await startTestServer();
  perUnit = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  dynamic = await defineFeature(server, { creditType: pool, pricing: 'DYNAMIC' });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [perUnit, dynamic] }));
});
afterAll(async () => {
  await server?.stop();
});

async function usageEventCount(): Promise<number> {
  const data = await server.gql(`query($id: ID!) { account(id: $id) { usageEvents(first: 500) { edges { node { id } } } } }`, { id: accountId });
  return data.data.account.usageEvents.edges.length;
}

describe('bad input is refused with a typed error and writes nothing', () => {
  const cases: Array<[string, () => Record<string, unknown>, string]> = [
    ['zero quantity', () => ({ featureKey: perUnit, quantity: 0 }), 'INVALID_QUANTITY'],
    ['negative quantity', () => ({ featureKey: perUnit, quantity: -5 }), 'INVALID_QUANTITY'],
    ['quantity beyond the sane bound', () => ({ featureKey: perUnit, quantity: 1_000_000_001 }), 'INVALID_QUANTITY'],
    ['unknown feature', () => ({ featureKey: 'no.such.feature' }), 'UNKNOWN_FEATURE'],
    ['unknown account', () => ({ featureKey: perUnit, accountId: 'no-such-account' }), 'ACCOUNT_NOT_FOUND'],
    ['DYNAMIC without credits', () => ({ featureKey: dynamic }), 'INVALID_CREDITS'],
    ['negative DYNAMIC credits', () => ({ featureKey: dynamic, credits: -3 }), 'INVALID_CREDITS'],
    ['credits beyond 2^53 - 1', () => ({ featureKey: dynamic, credits: 2 ** 53 }), 'INVALID_CREDITS'],
    ['credits on a PER_UNIT feature', () => ({ featureKey: perUnit, credits: 3 }), 'INVALID_INPUT'],
    ['an empty idempotency key', () => ({ featureKey: perUnit, idempotencyKey: '' }), 'INVALID_INPUT'],
    ['an idempotency key of 10,000 characters', () => ({ featureKey: perUnit, idempotencyKey: 'k'.repeat(10_000) }), 'INVALID_INPUT'],
    ['too many tags', () => ({ featureKey: perUnit, tags: Array.from({ length: 33 }, (_, i) => `t${i}`) }), 'INVALID_INPUT'],
    ['metadata too large', () => ({ featureKey: perUnit, metadata: { blob: 'x'.repeat(20_000) } }), 'INVALID_INPUT'],
    ['a seat of no account', () => ({ featureKey: perUnit, seatId: 'no-such-seat' }), 'SEAT_NOT_FOUND'],
  ];

  for (const [name, input, code] of cases) {
    it(name, async () => {
      const before = await balance(server, accountId, pool);
      const eventsBefore = await usageEventCount();
      const response = await server.gql(RECORD_USAGE, { input: { accountId, idempotencyKey: unique('bad'), ...input() } });
      expect(response.errors?.[0]?.extensions?.code, JSON.stringify(response)).toBe(code);
      expect(response.errors?.[0]?.message).toMatch(/\w/);
      expect(await balance(server, accountId, pool)).toBe(before);
      expect(await usageEventCount()).toBe(eventsBefore);
      expect(await ledgerSum(server, accountId)).toBe(before);
    });
  }

  it('PAID credits at a unit cost that a grant would store as 0 (below 10^-20) are refused, granted or scheduled, and nothing is written', async () => {
    const before = await balance(server, accountId, pool);
    const costBasis = { unitCost: 1e-25, currency: 'USD', funding: 'PAID' };
    const granted = await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
      input: { accountId, creditType: pool, amount: 5, source: 'BONUS', idempotencyKey: unique('g'), costBasis },
    });
    expect(granted.errors?.[0]?.extensions).toMatchObject({ code: 'INVALID_INPUT', field: 'costBasis.unitCost' });
    // A start in the past would be issued at once.
    const scheduled = await server.gql(`mutation($input: ScheduleGrantInput!) { scheduleGrant(input: $input) { id } }`, {
      input: { accountId, creditType: pool, amount: 5, source: 'BONUS', interval: 'ONCE', startsAt: '2025-01-01T00:00:00Z', idempotencyKey: unique('s'), costBasis },
    });
    expect(scheduled.errors?.[0]?.extensions).toMatchObject({ code: 'INVALID_INPUT', field: 'costBasis.unitCost' });
    const schedules = await server.gql(`query($id: ID!) { account(id: $id) { scheduledGrants { edges { node { id } } } } }`, { id: accountId });
    expect(schedules.data.account.scheduledGrants.edges).toEqual([]);
    expect(await balance(server, accountId, pool)).toBe(before);
    expect(await ledgerSum(server, accountId)).toBe(before);
  });

  it('a grant that would take a pool beyond 2^53 - 1 credits in sum is refused and writes nothing', async () => {
    const before = await balance(server, accountId, pool);
    const grant = `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`;
    const input = { accountId, creditType: pool, amount: Number.MAX_SAFE_INTEGER - before + 1, source: 'BONUS', idempotencyKey: unique('g') };
    const refused = await server.gql(grant, { input });
    expect(refused.errors?.[0]?.extensions?.code).toBe('INVALID_CREDITS');
    expect(await balance(server, accountId, pool)).toBe(before);
    // Up to the limit exactly is a balance the API can still state.
    expect((await server.gql(grant, { input: { ...input, amount: input.amount - 1, idempotencyKey: unique('g') } })).errors).toBeUndefined();
    expect(await balance(server, accountId, pool)).toBe(Number.MAX_SAFE_INTEGER);
    expect(await ledgerSum(server, accountId)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('a non-integer quantity is refused by the schema', async () => {
    const eventsBefore = await usageEventCount();
    const response = await server.gql(RECORD_USAGE, { input: { accountId, featureKey: perUnit, quantity: 1.5, idempotencyKey: unique('bad') } });
    expect(response.data).toBeUndefined();
    expect(response.errors?.[0]?.message).toMatch(/Int/);
    expect(await usageEventCount()).toBe(eventsBefore);
  });

  it('a malformed JSON body is a 400 with a clear error', async () => {
    const before = await balance(server, accountId, pool);
    const response = await fetch(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminKey}` },
      body: '{"query": "mutation { recordUsage(input: {',
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { errors: Array<{ message: string; extensions?: { code?: string } }> };
    expect(body.errors[0]?.extensions?.code).toBe('BAD_REQUEST');
    expect(await balance(server, accountId, pool)).toBe(before);
  });

  it('a GraphQL syntax error is refused before anything runs', async () => {
    const response = await server.gql(`mutation { recordUsage(input: { accountId: "x" `);
    expect(response.errors?.[0]?.extensions?.code).toBe('GRAPHQL_PARSE_FAILED');
  });

  it('a missing or unknown API key is UNAUTHENTICATED', async () => {
    const missing = await server.gql(`{ plans { code } }`, {}, null);
    expect(missing.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const unknown = await server.gql(`{ plans { code } }`, {}, 'cbk_AAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB');
    expect(unknown.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });

  it('invalid catalogue definitions are refused', async () => {
    const plan = await server.gql(`mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`, {
      input: { code: unique('p'), name: 'x', interval: 'MONTH', price: { amount: 1, currency: 'USD' }, allocations: [], featureKeys: ['missing.feature'] },
    });
    expect(plan.errors?.[0]?.extensions?.code).toBe('UNKNOWN_FEATURE');
    const tiers = await server.gql(`mutation($input: FeatureInput!) { upsertFeature(input: $input) { key } }`, {
      input: { key: unique('f'), name: 'x', creditType: pool, pricing: 'TIERED', tiers: [] },
    });
    expect(tiers.errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
    const negative = await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
      input: { accountId, creditType: pool, amount: -5, source: 'BONUS', idempotencyKey: unique('g') },
    });
    expect(negative.errors?.[0]?.extensions?.code).toBe('INVALID_CREDITS');
  });
});
