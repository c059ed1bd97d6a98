import { complexityFromQuery } from '@pothos/plugin-complexity';
import { parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operationCost } from '../packages/server/src/graphql/queryCost.ts';
import { schema } from '../packages/server/src/graphql/schema.ts';
import { QUERY_LIMITS } from '../packages/server/src/graphql/security.ts';
import { addSeat, createAccount, createKey, defineFeature, definePlan, ok } from './support/fixtures.ts';
import { connectLive, type LiveClient } from './support/live.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let accountId: string;
let feature: string;
let accountKey: string;
const clients: LiveClient[] = [];

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  const pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100_000 }], featureKeys: [feature] }));
  accountKey = await createKey(server, 'ACCOUNT', accountId);
  const inputs = Array.from({ length: 30 }, (_, index) => ({ accountId, featureKey: feature, quantity: 1, idempotencyKey: `cost-${index}` }));
  ok(await server.gql(`mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }`, { inputs }));
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.dispose()));
  await server?.stop();
});

const EVENT = `edges { node { id credits quantity draws { credits grant { id amount remaining } } } }`;
const aliases = (first: string) => Array.from({ length: QUERY_LIMITS.maxAliases }, (_, index) => `u${index}: usageEvents(first: ${first}) { ${EVENT} }`).join(' ');
const WITH_VARIABLE = `query($id: ID!, $f: Int) { account(id: $id) { ${aliases('$f')} } }`;

describe('query cost is computed with variables and refused before execution', () => {
  it(`${QUERY_LIMITS.maxAliases} aliases of usageEvents(first: $f) with f = 500 are QUERY_TOO_COSTLY; f = 10 is answered`, async () => {
    const refused = await server.gql(WITH_VARIABLE, { id: accountId, f: 500 }, accountKey);
    expect(refused.errors?.map((error) => error.extensions?.code)).toEqual(['QUERY_TOO_COSTLY']);
    expect(refused.errors?.[0]?.extensions?.cost).toBeGreaterThan(QUERY_LIMITS.maxCost);
    expect(refused.data ?? null).toBeNull();
    expect(refused.status).toBe(400);

    const answered = ok(await server.gql(WITH_VARIABLE, { id: accountId, f: 10 }, accountKey));
    expect(answered.account.u14.edges).toHaveLength(10);
  });

  it('the literal form is refused alike, and a variable’s default counts', async () => {
    const literal = await server.gql(`query($id: ID!) { account(id: $id) { ${aliases('500')} } }`, { id: accountId }, accountKey);
    expect(literal.errors?.map((error) => error.extensions?.code)).toEqual(['QUERY_TOO_COSTLY']);
    const defaulted = await server.gql(`query($id: ID!, $f: Int = 500) { account(id: $id) { ${aliases('$f')} } }`, { id: accountId }, accountKey);
    expect(defaulted.errors?.map((error) => error.extensions?.code)).toEqual(['QUERY_TOO_COSTLY']);
  });

  it('a finance report reads the whole ledger: each costs a costly operation, waits for the process’s cost budget, and fifteen in a request are refused', async () => {
    const range = 'from: "2025-01-01T00:00:00Z", to: "2026-01-01T00:00:00Z"';
    const reports = {
      financeReport: `financeReport(${range}) { currency issued { amount } }`,
      financeFlow: `financeFlow(kind: ISSUED, ${range}) { amount }`,
      deferredRevenue: `deferredRevenue(at: "2026-01-01T00:00:00Z") { amount }`,
    };
    for (const [name, field] of Object.entries(reports)) {
      const query = (count: number) => `{ ${Array.from({ length: count }, (_, index) => `r${index}: ${field}`).join(' ')} }`;
      expect(ok(await server.gql(query(2)))[`r1`], name).toEqual(expect.any(Array));
      const refused = await server.gql(query(QUERY_LIMITS.maxAliases));
      expect(refused.errors?.map((error) => error.extensions?.code), name).toEqual(['QUERY_TOO_COSTLY']);
    }
  });

  it('one full page (first: 500) with draws and grants is within the limit', async () => {
    const page = ok(await server.gql(`query($id: ID!, $f: Int) { account(id: $id) { usageEvents(first: $f) { ${EVENT} } } }`, { id: accountId, f: 500 }, accountKey));
    expect(page.account.usageEvents.edges).toHaveLength(30);
  });

  it('over WebSocket the same operation is refused the same way', async () => {
    const live = connectLive(server.url, accountKey);
    clients.push(live);
    const subscription = live.subscribe(WITH_VARIABLE, { id: accountId, f: 500 }, (data) => data);
    await subscription.ended;
    const errors = subscription.errors as Array<{ extensions?: { code?: string } } | Array<{ extensions?: { code?: string } }>>;
    expect(errors.flat().map((error) => error.extensions?.code)).toContain('QUERY_TOO_COSTLY');
    expect(subscription.events.filter((event) => event?.account)).toEqual([]);
  });
});

describe('a batch is costed by the length of its inputs', () => {
  const BATCH = parse(`mutation($inputs: [RecordUsageInput!]!, $tag: String) {
    recordUsageBatch(inputs: $inputs) { __typename ... on UsageRecorded { usageEvent { id tags draws { credits } } } }
    a: recordUsageBatch(inputs: $inputs) { __typename }
    b: recordUsageBatch(inputs: [{ accountId: "x", featureKey: "f", tags: [$tag], idempotencyKey: "k" }]) { __typename }
  }`);
  const batch = (length: number) =>
    Array.from({ length }, (_, index) => ({ accountId: `a${index % 7}`, featureKey: 'f', quantity: 1 + (index % 3), tags: ['t'], idempotencyKey: `k${index}` }));

  it('without coercing its items a second time, at the cost full coercion gives', () => {
    for (const length of [0, 1, 30, 1_000]) {
      const variables = { inputs: batch(length), tag: 't' };
      const coerced = complexityFromQuery(BATCH, { schema, ctx: {}, variables }).complexity;
      expect(operationCost({ schema, document: BATCH, variableValues: variables, contextValue: {} }), `${length} inputs`).toBe(coerced);
    }
    expect(operationCost({ schema, document: BATCH, variableValues: { inputs: batch(1_000), tag: 't' }, contextValue: {} })).toBeGreaterThan(
      operationCost({ schema, document: BATCH, variableValues: { inputs: batch(10), tag: 't' }, contextValue: {} })!,
    );
  });

  it('items that would not coerce cost as many as they are (the execution refuses them); a missing or lone input is coerced as before', () => {
    const broken = [...batch(999), { accountId: 'a', quantity: 'many' }];
    expect(() => complexityFromQuery(BATCH, { schema, ctx: {}, variables: { inputs: broken, tag: 't' } })).toThrow();
    expect(operationCost({ schema, document: BATCH, variableValues: { inputs: broken, tag: 't' }, contextValue: {} })).toBe(
      operationCost({ schema, document: BATCH, variableValues: { inputs: batch(1_000), tag: 't' }, contextValue: {} }),
    );
    expect(operationCost({ schema, document: BATCH, variableValues: { tag: 't' }, contextValue: {} })).toBeNull();
    const lone = { inputs: batch(1)[0], tag: 't' };
    expect(operationCost({ schema, document: BATCH, variableValues: lone, contextValue: {} })).toBe(complexityFromQuery(BATCH, { schema, ctx: {}, variables: lone }).complexity);
  });
});

describe('every list that grows is paged or bounded', () => {
  it('seats and reservations take first/after; more than 500 is refused', async () => {
    for (let index = 0; index < 5; index += 1) await addSeat(server, accountId);
    const first = ok(await server.gql(`query($id: ID!) { account(id: $id) { seats(first: 2) { id } } }`, { id: accountId })).account.seats;
    expect(first).toHaveLength(2);
    const next = ok(await server.gql(`query($id: ID!, $after: ID) { account(id: $id) { seats(first: 2, after: $after) { id } } }`, { id: accountId, after: first[1].id })).account.seats;
    expect(next).toHaveLength(2);
    expect(next.map((seat: { id: string }) => seat.id)).not.toContain(first[1].id);
    const all = ok(await server.gql(`query($id: ID!) { account(id: $id) { seats { id } } }`, { id: accountId })).account.seats;
    expect(all.slice(0, 4).map((seat: { id: string }) => seat.id)).toEqual([...first, ...next].map((seat: { id: string }) => seat.id));

    for (let index = 0; index < 3; index += 1) {
      ok(await server.gql(`mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }`, {
        input: { accountId, featureKey: feature, credits: 1, idempotencyKey: unique('hold') },
      }));
    }
    const holds = ok(await server.gql(`query($id: ID!) { account(id: $id) { reservations(first: 2) { id } } }`, { id: accountId })).account.reservations;
    expect(holds).toHaveLength(2);
    const rest = ok(await server.gql(`query($id: ID!, $after: ID) { account(id: $id) { reservations(first: 2, after: $after) { id } } }`, { id: accountId, after: holds[1].id })).account.reservations;
    expect(rest).toHaveLength(1);
    expect([...holds, ...rest].map((hold: { id: string }) => hold.id).sort()).toHaveLength(3);

    for (const field of ['seats', 'reservations']) {
      const tooMany = await server.gql(`query($id: ID!) { account(id: $id) { ${field}(first: 501) { id } } }`, { id: accountId });
      expect(tooMany.errors?.[0]?.extensions?.code, field).toBe('INVALID_INPUT');
    }
  });

  it('usageSummary answers at most first groups (default 500), the most credits first', async () => {
    const inputs = [3, 2, 1].map((quantity, index) => ({ accountId, featureKey: feature, quantity, tags: [`t${index}`], idempotencyKey: unique('tagged') }));
    ok(await server.gql(`mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }`, { inputs }));
    const summary = `query($id: ID!, $first: Int) { account(id: $id) { usageSummary(groupBy: TAG, first: $first) { key credits } } }`;
    expect(ok(await server.gql(summary, { id: accountId, first: 2 })).account.usageSummary).toEqual([
      { key: 't0', credits: 3 },
      { key: 't1', credits: 2 },
    ]);
    expect(ok(await server.gql(summary, { id: accountId })).account.usageSummary).toHaveLength(3);
    expect((await server.gql(summary, { id: accountId, first: 501 })).errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
  });

    it('an account holds at most 100 spend limits', async () => {
    const set = (tag: string) =>
      server.gql(`mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { id } }`, {
        input: { accountId, scope: 'TAG', scopeValue: tag, limit: 10, period: 'BILLING_PERIOD' },
      });
    for (let index = 0; index < 100; index += 1) ok(await set(`tag-${index}`));
    const refused = await set('tag-100');
    expect(refused.errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
    // Changing an existing one is not a new one.
    ok(await set('tag-5'));
    const limits = ok(await server.gql(`query($id: ID!) { account(id: $id) { spendLimits { id } } }`, { id: accountId })).account.spendLimits;
    expect(limits).toHaveLength(100);
  });
});
