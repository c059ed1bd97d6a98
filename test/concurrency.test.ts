import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balance, createAccount, defineFeature, definePlan, ledgerSum, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ DATABASE_POOL_SIZE: '40' });
});
afterAll(async () => {
  await server?.stop();
});

describe('concurrent debits on one account', () => {
  it('500 concurrent debits of 3 on 1,000 credits: 333 succeed, 167 are refused, 1 is left', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 3 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));

    const results = await Promise.all(Array.from({ length: 500 }, () => recordUsage(server, { accountId, featureKey: feature })));
    const outcomes = results.map((result) => result.data?.recordUsage?.__typename ?? JSON.stringify(result.errors));
    expect(outcomes.filter((outcome) => outcome === 'UsageRecorded')).toHaveLength(333);
    expect(outcomes.filter((outcome) => outcome === 'InsufficientCredits')).toHaveLength(167);
    expect(await balance(server, accountId, pool)).toBe(1);
    expect(await ledgerSum(server, accountId)).toBe(1);

    const grants = ok(await server.gql(`query($id: ID!) { account(id: $id) { grants(includeExpired: true) { edges { node { remaining } } } } }`, { id: accountId }));
    expect(grants.account.grants.edges.reduce((sum: number, edge: any) => sum + edge.node.remaining, 0)).toBe(1);
  });

  it('concurrent debits spread over many grants never overdraw any of them', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 7 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 50 }], featureKeys: [feature] }));
    for (let index = 0; index < 9; index += 1) {
      ok(
        await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
          input: { accountId, creditType: pool, amount: 50, source: 'BONUS', idempotencyKey: unique('g'), priority: index },
        }),
      );
    }
    const results = await Promise.all(Array.from({ length: 100 }, () => recordUsage(server, { accountId, featureKey: feature })));
    const succeeded = results.filter((result) => result.data?.recordUsage?.__typename === 'UsageRecorded').length;
    expect(succeeded).toBe(Math.floor(500 / 7));
    expect(await balance(server, accountId, pool)).toBe(500 - succeeded * 7);
    expect(await ledgerSum(server, accountId)).toBe(500 - succeeded * 7);
  });
});
