import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balance, createAccount, defineFeature, definePlan, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let accountId: string;
let feature: string;
const pool = unique('credits');

beforeAll(async () => {
  server = await startTestServer();
  feature = await defineFeature(server, { creditType: pool, unitCredits: 7 });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));
});
afterAll(async () => {
  await server?.stop();
});

describe('idempotency of usage', () => {
  it('5 concurrent then 5 sequential calls with one key charge once and return one event', async () => {
    const idempotencyKey = unique('key');
    const input = { accountId, featureKey: feature, quantity: 3, idempotencyKey, tags: ['b', 'a'], metadata: { run: 1 } };
    const concurrent = await Promise.all(Array.from({ length: 5 }, () => recordUsage(server, input)));
    const sequential = [];
    for (let index = 0; index < 5; index += 1) sequential.push(await recordUsage(server, { ...input, tags: ['a', 'b'] }));
    const results = [...concurrent, ...sequential];
    for (const result of results) expect(result.data.recordUsage.__typename, JSON.stringify(result)).toBe('UsageRecorded');
    expect(new Set(results.map((result) => result.data.recordUsage.usageEvent.id)).size).toBe(1);
    expect(await balance(server, accountId, pool)).toBe(1_000 - 21);
    const log = ok(await server.gql(`query($id: ID!) { account(id: $id) { usageEvents { edges { node { idempotencyKey } } } } }`, { id: accountId }));
    expect(log.account.usageEvents.edges.filter((edge: any) => edge.node.idempotencyKey === idempotencyKey)).toHaveLength(1);
  });

  it('the same key with another quantity is IDEMPOTENCY_CONFLICT and changes nothing', async () => {
    const idempotencyKey = unique('key');
    await recordUsage(server, { accountId, featureKey: feature, quantity: 1, idempotencyKey });
    const before = await balance(server, accountId, pool);
    const conflict = await recordUsage(server, { accountId, featureKey: feature, quantity: 2, idempotencyKey });
    expect(conflict.errors?.[0]?.extensions?.code).toBe('IDEMPOTENCY_CONFLICT');
    expect(conflict.data?.recordUsage ?? null).toBeNull();
    expect(await balance(server, accountId, pool)).toBe(before);
  });

  it('a refused key stays refused once credits exist (issue 16: the first answer is final); a new key is charged', async () => {
    const idempotencyKey = unique('key');
    const refused = await recordUsage(server, { accountId, featureKey: feature, quantity: 10_000, idempotencyKey });
    expect(refused.data.recordUsage.__typename).toBe('InsufficientCredits');
    ok(
      await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
        input: { accountId, creditType: pool, amount: 70_000, source: 'BONUS', idempotencyKey: unique('grant') },
      }),
    );
    const late = await recordUsage(server, { accountId, featureKey: feature, quantity: 10_000, idempotencyKey });
    expect(late.data.recordUsage).toEqual(refused.data.recordUsage);
    const retried = await recordUsage(server, { accountId, featureKey: feature, quantity: 10_000, idempotencyKey: unique('key') });
    expect(retried.data.recordUsage.__typename).toBe('UsageRecorded');
  });

  it('grantCredits is idempotent on its key', async () => {
    const idempotencyKey = unique('grant');
    const input = { accountId, creditType: pool, amount: 5, source: 'BONUS', idempotencyKey };
    const mutation = `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`;
    const before = await balance(server, accountId, pool);
    const results = await Promise.all(Array.from({ length: 4 }, () => server.gql(mutation, { input })));
    expect(new Set(results.map((result) => ok(result).grantCredits.id)).size).toBe(1);
    expect(await balance(server, accountId, pool)).toBe(before + 5);
    const conflict = await server.gql(mutation, { input: { ...input, amount: 6 } });
    expect(conflict.errors?.[0]?.extensions?.code).toBe('IDEMPOTENCY_CONFLICT');
  });
});
