import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeatureCache } from '../packages/server/src/catalog/featureCache.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { HotUsageQueue } from '../packages/server/src/ledger/hotUsageQueue.ts';
import { normalizeUsage, priceUsage } from '../packages/server/src/ledger/recordUsage.ts';
import { recordUsageBatch } from '../packages/server/src/ledger/recordUsageBatch.ts';
import { balance, createAccount, defineFeature, definePlan, expectLedgerConsistent, ledgerSum, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  // Group commit is on by default (two in flight). With one in flight, every call that arrives while
  // a statement runs joins the next: how many end up together then depends the least on how busy
  // the machine is (with two, a loaded machine sometimes let fewer than 20 of 434 calls share).
  server = await startTestServer({ DATABASE_POOL_SIZE: '20', USAGE_BATCH_CONCURRENCY: '1' });
});
afterAll(async () => {
  await server?.stop();
});

async function batchMetrics() {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  return { batches: value('billing_usage_batch_size_count'), usages: value('billing_usage_batch_size_sum'), handedBack: value('billing_usage_batch_handed_back_total') };
}

/**
 * Calls charged several to a statement, between two readings. The embedded database runs each
 * statement to its end before the next request is even read, so there calls never overlap and every
 * batch is of one; on PostgreSQL they overlap and batches form.
 */
function expectBatched(before: Awaited<ReturnType<typeof batchMetrics>>, after: Awaited<ReturnType<typeof batchMetrics>>) {
  const chargedWithOthers = after.usages - before.usages - (after.batches - before.batches);
  if (server.app.database.kind === 'embedded') expect(chargedWithOthers).toBe(0);
  else expect(chargedWithOthers).toBeGreaterThan(20);
}

function typenames(results: Array<{ data?: any; errors?: unknown }>) {
  return results.map((result) => result.data?.recordUsage?.__typename ?? JSON.stringify(result.errors));
}

describe('group commit: concurrent recordUsage calls charged together', () => {
  it('many accounts at once: every call answered for itself, each key charged once, balances and ledger exact', async () => {
    const pool = unique('credits');
    const one = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const three = await defineFeature(server, { creditType: pool, unitCredits: 3 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 10_000 }], featureKeys: [one, three] });
    const accounts = await Promise.all(Array.from({ length: 12 }, () => createAccount(server, plan)));
    const before = await batchMetrics();

    const calls = accounts.flatMap((accountId, a) =>
      Array.from({ length: 30 }, (_, n) => {
        const featureKey = n % 3 === 0 ? three : one;
        // Every fifth call is sent twice at once with one key: one event, answered to both.
        const idempotencyKey = `k-${a}-${n}`;
        const times = n % 5 === 0 ? 2 : 1;
        return Array.from({ length: times }, () => ({ accountId, featureKey, quantity: 1 + (n % 4), idempotencyKey }));
      }).flat(),
    );
    const invalid = [
      { accountId: accounts[0], featureKey: unique('unknown'), quantity: 1, idempotencyKey: unique('bad') },
      { accountId: accounts[1], featureKey: one, quantity: -5, idempotencyKey: unique('bad') },
    ];
    const inputs = [...calls, ...invalid].sort(() => Math.random() - 0.5);
    const results = await Promise.all(inputs.map((input) => recordUsage(server, input)));

    const byKey = new Map<string, Set<string>>();
    results.forEach((result, index) => {
      const input = inputs[index]!;
      if (invalid.includes(input as (typeof invalid)[number])) {
        expect(result.data?.recordUsage?.__typename ?? result.errors, JSON.stringify(result)).not.toBe('UsageRecorded');
        return;
      }
      expect(result.data?.recordUsage?.__typename, JSON.stringify(result.errors)).toBe('UsageRecorded');
      const event = result.data!.recordUsage.usageEvent;
      expect(event.quantity).toBe(input.quantity);
      expect(event.credits).toBe(input.quantity * (input.featureKey === three ? 3 : 1));
      const ids = byKey.get(`${input.accountId}/${input.idempotencyKey}`) ?? new Set<string>();
      ids.add(event.id);
      byKey.set(`${input.accountId}/${input.idempotencyKey}`, ids);
    });
    for (const ids of byKey.values()) expect(ids.size).toBe(1);

    for (const accountId of accounts) {
      const charged = Array.from({ length: 30 }, (_, n) => (1 + (n % 4)) * (n % 3 === 0 ? 3 : 1)).reduce((sum, credits) => sum + credits, 0);
      expect(await balance(server, accountId, pool)).toBe(10_000 - charged);
      expect(await ledgerSum(server, accountId)).toBe(10_000 - charged);
      const events = ok(await server.gql<any>(`query($id: ID!) { account(id: $id) { usageEvents(first: 100) { edges { node { id } } } } }`, { id: accountId }));
      expect(events.account.usageEvents.edges).toHaveLength(30);
    }
    const after = await batchMetrics();
    expectBatched(before, after);
    await expectLedgerConsistent(server);
  });

  it('one hot account drained to zero: exact count, no overspend, each alert level raised once', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 300 }], featureKeys: [feature] }));
    const before = await batchMetrics();

    const outcomes = typenames(await Promise.all(Array.from({ length: 400 }, () => recordUsage(server, { accountId, featureKey: feature }))));
    expect(outcomes.filter((outcome) => outcome === 'UsageRecorded')).toHaveLength(300);
    expect(outcomes.filter((outcome) => outcome === 'InsufficientCredits')).toHaveLength(100);
    expect(await balance(server, accountId, pool)).toBe(0);
    expect(await ledgerSum(server, accountId)).toBe(0);

    const stored = ok(await server.gql<any>(`query($id: ID!) { account(id: $id) { alerts(first: 100) { edges { node { kind threshold } } } } }`, { id: accountId }));
    const levels = stored.account.alerts.edges.map((edge: any) => edge.node).filter((node: any) => node.kind === 'USAGE_THRESHOLD');
    expect(levels.map((node: any) => node.threshold).sort((a: number, b: number) => a - b)).toEqual([75, 85, 90, 100]);

    const after = await batchMetrics();
    expectBatched(before, after);
    // Crossing a level and running out are the complete path's to decide: such batches hand back.
    if (server.app.database.kind !== 'embedded') expect(after.handedBack).toBeGreaterThan(before.handedBack);
    await expectLedgerConsistent(server);
  });

  it('two large batches at once, each split by account into statements side by side: every event in order, balances exact', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 2 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 10_000 }], featureKeys: [feature] });
    const scarcePlan = await definePlan(server, { allocations: [{ creditType: pool, amount: 60 }], featureKeys: [feature] });
    const accounts = await Promise.all(Array.from({ length: 40 }, () => createAccount(server, plan)));
    const scarce = await createAccount(server, scarcePlan);
    const batch = (name: string) =>
      Array.from({ length: 450 }, (_, n) => ({ accountId: accounts[(n * 7) % accounts.length]!, featureKey: feature, quantity: 1 + (n % 3), idempotencyKey: `${name}-${n}` }));
    // The scarce account's 50 events of 2 credits are in one batch only, so their order is known: 30 fit.
    const first = [...batch('a'), ...Array.from({ length: 50 }, (_, n) => ({ accountId: scarce, featureKey: feature, quantity: 1, idempotencyKey: `s-${n}` }))];
    const second = batch('b');
    const mutation = `mutation($inputs: [RecordUsageInput!]!) {
      recordUsageBatch(inputs: $inputs) { __typename ... on UsageRecorded { usageEvent { credits } balance { available } } } }`;
    const [a, b] = await Promise.all([first, second].map(async (inputs) => ok(await server.gql<any>(mutation, { inputs })).recordUsageBatch as any[]));

    [a!, b!].forEach((results, which) => {
      const inputs = which === 0 ? first : second;
      expect(results).toHaveLength(inputs.length);
      results.forEach((result, n) => {
        const input = inputs[n]!;
        if (input.accountId === scarce) {
          expect(result.__typename).toBe(n - 450 < 30 ? 'UsageRecorded' : 'InsufficientCredits');
          if (result.__typename === 'UsageRecorded') expect(result.balance.available).toBe(60 - 2 * (n - 450 + 1));
          return;
        }
        expect(result.__typename).toBe('UsageRecorded');
        expect(result.usageEvent.credits).toBe(2 * input.quantity);
      });
    });
    for (const accountId of accounts) {
      const charged = [...first, ...second].filter((input) => input.accountId === accountId).reduce((sum, input) => sum + 2 * input.quantity, 0);
      expect(await balance(server, accountId, pool)).toBe(10_000 - charged);
      expect(await ledgerSum(server, accountId)).toBe(10_000 - charged);
    }
    expect(await balance(server, scarce, pool)).toBe(0);
    await expectLedgerConsistent(server);
  });

  it('deterministic: while one statement is held, the usages submitted meanwhile go in batches of exactly maxBatch, each charged (on either database)', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 10_000 }], featureKeys: [feature] });
    const accounts = await Promise.all(Array.from({ length: 12 }, () => createAccount(server, plan)));
    const features = new FeatureCache(server.app.database);
    const priced = await Promise.all(
      Array.from({ length: 23 }, async (_, n) => (await priceUsage(features, normalizeUsage({ accountId: accounts[n % 12]!, featureKey: feature, quantity: 1 + (n % 3), idempotencyKey: `det-${n}` }), accounts[n % 12]!))!),
    );
    // The first statement waits until every other usage has been submitted.
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const statements: string[] = [];
    const gated = {
      statement: async <Row,>(sql: string, params: readonly unknown[], name?: string): Promise<Row[]> => {
        statements.push(name ?? sql);
        if (statements.length === 1) await held;
        return server.app.database.statement<Row>(sql, params, name);
      },
    };
    const batches: Array<[number, number]> = [];
    const queue = new HotUsageQueue(gated, systemClock, { concurrency: 1, maxBatch: 5, observe: (size, handedBack) => batches.push([size, handedBack]) });
    const first = queue.charge(priced[0]!);
    const rest = priced.slice(1).map((usage) => queue.charge(usage));
    release();
    const results = await Promise.all([first, ...rest]);

    expect(batches).toEqual([[1, 0], [5, 0], [5, 0], [5, 0], [5, 0], [2, 0]]);
    expect(statements).toEqual(['record_usage_hot', ...Array.from({ length: 5 }, () => 'record_usage_hot_batch')]);
    expect(results.every((result) => 'charged' in result)).toBe(true);
    for (const [index, accountId] of accounts.entries()) {
      const charged = priced.filter((_, n) => n % 12 === index).reduce((sum, usage) => sum + usage.cost, 0);
      expect(await balance(server, accountId, pool)).toBe(10_000 - charged);
    }
    await expectLedgerConsistent(server);
  });

  it('deterministic: a batch of 200 or more events is split into four statements by account, a smaller one is one statement', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 10_000 }], featureKeys: [feature] });
    const accounts = await Promise.all(Array.from({ length: 16 }, () => createAccount(server, plan)));
    const statements: number[] = [];
    const counting = {
      statement: <Row,>(sql: string, params: readonly unknown[], name?: string): Promise<Row[]> => {
        if (name === 'record_usage_hot_batch') statements.push((JSON.parse(params[0] as string) as unknown[]).length);
        return server.app.database.statement<Row>(sql, params, name);
      },
    };
    const hot = { database: counting as unknown as typeof server.app.database, features: new FeatureCache(server.app.database) };
    const events = (count: number, name: string) => Array.from({ length: count }, (_, n) => ({ accountId: accounts[n % 16]!, featureKey: feature, quantity: 1, idempotencyKey: `${name}-${n}` }));

    const small = await recordUsageBatch(server.app.database.prisma, hot, systemClock, events(199, 'small'));
    expect(statements).toEqual([199]);
    expect(small.chargedSetBased).toBe(199);
    statements.length = 0;
    const large = await recordUsageBatch(server.app.database.prisma, hot, systemClock, events(200, 'large'));
    expect(statements).toHaveLength(4);
    expect(statements.reduce((sum, size) => sum + size, 0)).toBe(200);
    expect(large.chargedSetBased).toBe(200);
    for (const [index, accountId] of accounts.entries()) {
      const charged = [...events(199, 'small'), ...events(200, 'large')].filter((_, n, all) => all[n]!.accountId === accounts[index]).length;
      expect(await balance(server, accountId, pool)).toBe(10_000 - charged);
    }
    await expectLedgerConsistent(server);
  });
});

