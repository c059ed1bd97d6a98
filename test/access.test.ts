import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, balance, createAccount, createKey, defineFeature, definePlan, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let pool: string;
let feature: string;
let accountA: string;
let accountB: string;
let seatA: string;
let accountKeyA: string;
let seatKeyA: string;

beforeAll(async () => {
  server = await startTestServer();
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
  accountA = await createAccount(server, plan);
  accountB = await createAccount(server, plan);
  seatA = await addSeat(server, accountA);
  accountKeyA = await createKey(server, 'ACCOUNT', accountA);
  seatKeyA = await createKey(server, 'SEAT', accountA, seatA);
});
afterAll(async () => {
  await server?.stop();
});

const ACCOUNT_QUERY = `query($id: ID!) { account(id: $id) { id balances { available } } }`;

describe('tenant isolation', () => {
  it("an ACCOUNT key and a SEAT key of A read A and not B, exactly as if B did not exist", async () => {
    for (const key of [accountKeyA, seatKeyA]) {
      expect(ok(await server.gql(ACCOUNT_QUERY, { id: accountA }, key)).account.id).toBe(accountA);
      const other = await server.gql(ACCOUNT_QUERY, { id: accountB }, key);
      const missing = await server.gql(ACCOUNT_QUERY, { id: 'no-such-account' }, key);
      expect(other).toEqual(missing);
      expect(other.data.account).toBeNull();
    }
  });

  it('an ACCOUNT key of A cannot record usage, add seats or create keys on B', async () => {
    const before = await balance(server, accountB, pool);
    const usage = await recordUsage(server, { accountId: accountB, featureKey: feature }, accountKeyA);
    expect(usage.errors?.[0]?.extensions?.code).toBe('ACCOUNT_NOT_FOUND');
    const seat = await server.gql(`mutation($input: AddSeatInput!) { addSeat(input: $input) { id } }`, { input: { accountId: accountB, name: 'intruder' } }, accountKeyA);
    expect(seat.errors?.[0]?.extensions?.code).toBe('ACCOUNT_NOT_FOUND');
    const key = await server.gql(`mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }`, { input: { role: 'ACCOUNT', accountId: accountB } }, accountKeyA);
    expect(key.errors?.[0]?.extensions?.code).toBe('ACCOUNT_NOT_FOUND');
    expect(await balance(server, accountB, pool)).toBe(before);
  });

  it('a SEAT key cannot grant credits, record usage, or create keys, even on its own account', async () => {
    const before = await balance(server, accountA, pool);
    const grant = await server.gql(
      `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`,
      { input: { accountId: accountA, creditType: pool, amount: 1_000, source: 'BONUS', idempotencyKey: unique('g') } },
      seatKeyA,
    );
    expect(grant.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const usage = await recordUsage(server, { accountId: accountA, featureKey: feature, seatId: seatA }, seatKeyA);
    expect(usage.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const key = await server.gql(`mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }`, { input: { role: 'SEAT', accountId: accountA, seatId: seatA } }, seatKeyA);
    expect(key.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(await balance(server, accountA, pool)).toBe(before);
  });

  it('an ACCOUNT key cannot grant credits or define the catalogue', async () => {
    const grant = await server.gql(
      `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`,
      { input: { accountId: accountA, creditType: pool, amount: 1_000, source: 'BONUS', idempotencyKey: unique('g') } },
      accountKeyA,
    );
    expect(grant.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const plan = await server.gql(`mutation($input: FeatureInput!) { upsertFeature(input: $input) { key } }`, { input: { key: unique('f'), name: 'x', creditType: pool, pricing: 'PER_UNIT', unitCredits: 0 } }, accountKeyA);
    expect(plan.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it("a SEAT key sees only its own seat's usage", async () => {
    const otherSeat = await addSeat(server, accountA);
    const mine = await recordUsage(server, { accountId: accountA, featureKey: feature, seatId: seatA }, accountKeyA);
    await recordUsage(server, { accountId: accountA, featureKey: feature, seatId: otherSeat }, accountKeyA);
    const log = ok(await server.gql(`query($id: ID!) { account(id: $id) { usageEvents { edges { node { id seat { id } } } } } }`, { id: accountA }, seatKeyA));
    const ids = log.account.usageEvents.edges.map((edge: any) => edge.node.id);
    expect(ids).toContain(mine.data.recordUsage.usageEvent.id);
    expect(log.account.usageEvents.edges.every((edge: any) => edge.node.seat.id === seatA)).toBe(true);
  });

  it('an ACCOUNT key issues SEAT keys for its account; a revoked key stops working at once', async () => {
    const created = ok(
      await server.gql(`mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id prefix role } } }`, { input: { role: 'SEAT', accountId: accountA, seatId: seatA } }, accountKeyA),
    ).createApiKey;
    expect(created.secret.startsWith(created.apiKey.prefix)).toBe(true);
    expect(ok(await server.gql(`{ viewer { role } }`, {}, created.secret)).viewer.role).toBe('SEAT');
    ok(await server.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }`, { id: created.apiKey.id }, accountKeyA));
    const after = await server.gql(`{ viewer { role } }`, {}, created.secret);
    expect(after.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });
});
