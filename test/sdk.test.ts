import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSchema, Kind, parse, type OperationDefinitionNode } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { BillingApiError, createBillingClient, type BillingClient } from '../packages/sdk/src/index.ts';
import { startServerProcess } from './support/processServer.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

const root = new URL('../', import.meta.url);
let server: TestServer;
let admin: BillingClient;

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  admin = createBillingClient({ url: server.graphqlUrl, apiKey: server.adminKey });
});
afterAll(async () => {
  await server?.stop();
});

async function setUpAccount(client: BillingClient, amount = 1_000, testClockId?: string) {
  const pool = unique('credits');
  const features = [];
  for (const unitCredits of [1, 2, 5]) {
    features.push((await client.upsertFeature({ key: unique('feature'), name: 'f', creditType: pool, pricing: 'PER_UNIT', unitCredits })).key);
  }
  const plan = await client.upsertPlan({
    code: unique('plan'),
    name: 'plan',
    interval: 'MONTH',
    price: { amount: 100, currency: 'USD' },
    allocations: [{ creditType: pool, amount }],
    featureKeys: features,
  });
  const account = await client.createAccount({ name: 'sdk account', planCode: plan.code, testClockId });
  return { pool, features, accountId: account.id };
}

describe('the SDK', () => {
  it('has a method for every operation of the schema', () => {
    const schema = buildSchema(readFileSync(fileURLToPath(new URL('packages/schema/schema.graphql', root)), 'utf8'));
    const documentsDirectory = fileURLToPath(new URL('packages/sdk/src/operations/', root));
    const covered = new Set<string>();
    for (const file of readdirSync(documentsDirectory)) {
      for (const definition of parse(readFileSync(path.join(documentsDirectory, file), 'utf8')).definitions) {
        if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
        for (const selection of (definition as OperationDefinitionNode).selectionSet.selections) {
          if (selection.kind === Kind.FIELD) covered.add(`${definition.operation}.${selection.name.value}`);
        }
      }
    }
    const methods = new Set(Object.keys(admin));
    const methodFor = (field: string) => ({ creditAlerts: 'subscribeToAlerts', balanceUpdated: 'subscribeToBalance', topUpUpdated: 'subscribeToTopUps' })[field] ?? field;
    const missing: string[] = [];
    for (const [operation, type] of [
      ['query', schema.getQueryType()],
      ['mutation', schema.getMutationType()],
      ['subscription', schema.getSubscriptionType()],
    ] as const) {
      for (const field of Object.keys(type!.getFields())) {
        if (!covered.has(`${operation}.${field}`)) missing.push(`${operation}.${field} has no operation document`);
        if (!methods.has(methodFor(field))) missing.push(`${operation}.${field} has no client method`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('documents every method with a doc comment', () => {
    const source = readFileSync(fileURLToPath(new URL('packages/sdk/src/index.ts', root)), 'utf8');
    const lines = source.slice(source.indexOf('  return {\n    // Catalogue')).split('\n');
    const undocumented = lines.flatMap((line, index) => {
      const method = /^    (\w+): /.exec(line)?.[1];
      if (!method) return [];
      const previous = lines.slice(0, index).reverse().find((candidate) => candidate.trim() !== '');
      return previous?.trim().endsWith('*/') ? [] : [method];
    });
    expect(undocumented).toEqual([]);
    expect(lines.filter((line) => /^    (\w+): /.test(line)).length).toBe(Object.keys(admin).length);
  });

  it('records usage with narrowed results and typed errors', async () => {
    const { pool, features, accountId } = await setUpAccount(admin, 10);
    const result = await admin.recordUsage({ accountId, featureKey: features[1]!, quantity: 3 });
    if (result.__typename !== 'UsageRecorded') throw new Error(`unexpected ${result.__typename}`);
    expect(result.usageEvent.credits).toBe(6);
    expect(result.balance).toMatchObject({ creditType: pool, available: 4 });
    const refused = await admin.recordUsage({ accountId, featureKey: features[2]! });
    expect(refused).toMatchObject({ __typename: 'InsufficientCredits', code: 'INSUFFICIENT_CREDITS', required: 5, available: 4 });
    const key = unique('key');
    await admin.recordUsage({ accountId, featureKey: features[0]!, idempotencyKey: key });
    const conflict = await admin.recordUsage({ accountId, featureKey: features[0]!, quantity: 2, idempotencyKey: key }).catch((error: unknown) => error);
    expect(conflict).toBeInstanceOf(BillingApiError);
    expect((conflict as BillingApiError).code).toBe('IDEMPOTENCY_CONFLICT');
    const missing = await admin.balances('no-such-account').catch((error: unknown) => error);
    expect((missing as BillingApiError).code).toBe('ACCOUNT_NOT_FOUND');
  });

  it('retries recordUsage with the same key after a dropped connection: charged once', async () => {
    const { pool, features, accountId } = await setUpAccount(admin, 100);
    let dropResponses = 1;
    const sockets = new Set<Socket>();
    const proxy: Server = createServer((client) => {
      sockets.add(client);
      const upstream = createConnection({ host: '127.0.0.1', port: Number(new URL(server.url).port) });
      sockets.add(upstream);
      client.pipe(upstream);
      upstream.on('data', (chunk) => {
        // The server has answered, so it has committed: losing the answer is the case to survive.
        if (dropResponses > 0) {
          dropResponses -= 1;
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(chunk);
      });
      upstream.on('end', () => client.end());
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const flaky = createBillingClient({
        url: `http://127.0.0.1:${(proxy.address() as { port: number }).port}/graphql`,
        apiKey: server.adminKey,
        retryDelayMs: 50,
      });
      const result = await flaky.recordUsage({ accountId, featureKey: features[2]!, quantity: 4 });
      expect(dropResponses).toBe(0);
      if (result.__typename !== 'UsageRecorded') throw new Error(`unexpected ${result.__typename}`);
      const log = await admin.usageEvents(accountId);
      expect(log.edges.map((edge) => edge.node.id)).toEqual([result.usageEvent.id]);
      expect((await admin.balance(accountId, pool))?.available).toBe(80);
    } finally {
      for (const socket of sockets) socket.destroy();
      proxy.close();
    }
  });

  it('usageSummary aggregates 10,000 events in SQL', async () => {
    const { features, accountId } = await setUpAccount(admin, 1_000_000);
    const seat = await admin.addSeat({ accountId, name: 'analyst' });
    const periodStart = (await admin.account(accountId))!.subscription!.currentPeriod.start;
    const base = new Date(periodStart).getTime();
    await server.app.database.prisma.$executeRaw`
      INSERT INTO usage_events (id, account_id, seat_id, feature_key, credit_type, quantity, credits, tags, idempotency_key, request_hash,
                                occurred_at, period_start, created_at)
      SELECT gen_random_uuid()::text, ${accountId}, CASE WHEN i % 2 = 0 THEN ${seat.id} END,
             (${features}::text[])[1 + i % 3], 'seeded', 1, (i % 7) + 1,
             CASE WHEN i % 5 = 0 THEN ARRAY['workbook:42', 'batch'] WHEN i % 5 = 1 THEN ARRAY['workbook:7'] ELSE ARRAY[]::text[] END,
             'seed-' || i, 'seed', ${new Date(base)}::timestamp + make_interval(secs => i * 60), ${new Date(periodStart)}, now()
      FROM generate_series(0, 9999) AS i`;
    const expected = { feature: new Map<string, number>(), seat: new Map<string, number>(), tag: new Map<string, number>(), day: new Map<string, number>() };
    const add = (map: Map<string, number>, key: string, credits: number) => map.set(key, (map.get(key) ?? 0) + credits);
    for (let i = 0; i < 10_000; i += 1) {
      const credits = (i % 7) + 1;
      add(expected.feature, features[i % 3]!, credits);
      add(expected.seat, i % 2 === 0 ? seat.id : '', credits);
      for (const tag of i % 5 === 0 ? ['workbook:42', 'batch'] : i % 5 === 1 ? ['workbook:7'] : []) add(expected.tag, tag, credits);
      add(expected.day, new Date(base + i * 60_000).toISOString().slice(0, 10), credits);
    }
    const to = new Date(base + 10_000 * 60_000).toISOString();
    for (const [groupBy, map] of [['FEATURE', expected.feature], ['SEAT', expected.seat], ['TAG', expected.tag], ['DAY', expected.day]] as const) {
      const groups = await admin.usageSummary(accountId, { groupBy, from: periodStart, to });
      expect(Object.fromEntries(groups.map((group) => [group.key, group.credits])), groupBy).toEqual(Object.fromEntries(map));
      expect([...groups].sort((a, b) => b.credits - a.credits)).toEqual(groups);
    }
    const byFeature = await admin.usageSummary(accountId, { groupBy: 'FEATURE', from: periodStart, to });
    expect(byFeature.reduce((sum, group) => sum + group.events, 0)).toBe(10_000);
  });

  it('forecasts the depletion day of a steady burn', async () => {
    const clock = await admin.createTestClock({ frozenTime: '2027-01-01T00:00:00.000Z' });
    const { pool, features, accountId } = await setUpAccount(admin, 10_000, clock.id);
    for (let day = 0; day < 7; day += 1) {
      await admin.recordUsage({ accountId, featureKey: features[0]!, quantity: 100 });
      await admin.advanceTestClock({ testClockId: clock.id, to: new Date(Date.UTC(2027, 0, 2 + day)).toISOString() });
    }
    const forecast = await admin.forecast(accountId, pool);
    expect(forecast.burnRatePerDay).toBeCloseTo(100, 6);
    expect(forecast.depletesAt).toBe(new Date(Date.UTC(2027, 0, 8) + 93 * 86_400_000).toISOString());
    const idle = await admin.forecast(accountId, 'nothing-spent');
    expect(idle).toEqual({ creditType: 'nothing-spent', burnRatePerDay: 0, depletesAt: null });
  });
});

describe('SDK subscriptions', () => {
  it('resume after the server restarts and receive the next alert', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'billing-restart-'));
    const env = { DATA_DIR: dataDir, DATABASE_URL: '', JOBS_ENABLED: 'false', ADMIN_API_KEY: `restart-admin-${unique('k')}` };
    let instance = await startServerProcess(env);
    const port = new URL(instance.url).port;
    try {
      const operator = createBillingClient({ url: `${instance.url}/graphql`, apiKey: env.ADMIN_API_KEY });
      const { features, accountId } = await setUpAccount(operator, 100);
      const seat = await operator.addSeat({ accountId, name: 'front end' });
      const { secret } = await operator.createApiKey({ role: 'SEAT', accountId, seatId: seat.id });
      const front = createBillingClient({ url: `${instance.url}/graphql`, apiKey: secret, webSocketImpl: WebSocket });
      const alerts: string[] = [];
      const balances: number[] = [];
      front.subscribeToAlerts(accountId, (alert) => alerts.push(`${alert.kind}:${alert.threshold}`));
      front.subscribeToBalance(accountId, (balance) => balances.push(balance.available));
      const probe = (amount: number) => operator.grantCredits({ accountId, creditType: unique('probe'), amount, source: 'BONUS' });
      const waitForBalanceEvent = async () => {
        const seen = balances.length;
        const deadline = Date.now() + 30_000;
        while (balances.length === seen) {
          if (Date.now() > deadline) throw new Error('the subscription never came back');
          await probe(1).catch(() => undefined);
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      };
      await waitForBalanceEvent();
      await instance.stop('SIGTERM');
      instance = await startServerProcess({ ...env, PORT: port });
      await waitForBalanceEvent();
      await operator.recordUsage({ accountId, featureKey: features[0]!, quantity: 80 });
      const deadline = Date.now() + 15_000;
      while (!alerts.includes('USAGE_THRESHOLD:75') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(alerts).toContain('USAGE_THRESHOLD:75');
      await front.close();
    } finally {
      await instance.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('recordUsageBatch', () => {
  it('records each event with its own key and result, in order, charging a repeated key once', async () => {
    const { pool, features, accountId } = await setUpAccount(admin, 20);
    const other = await setUpAccount(admin, 5);
    const results = await admin.recordUsageBatch([
      { accountId, featureKey: features[0]!, quantity: 4, idempotencyKey: 'b-1' },
      { accountId, featureKey: 'no.such.feature', idempotencyKey: 'b-2' },
      { accountId, featureKey: features[0]!, quantity: 4, idempotencyKey: 'b-1' },
      { accountId: other.accountId, featureKey: other.features[2]!, quantity: 1, idempotencyKey: 'b-3' },
      { accountId, featureKey: features[2]!, quantity: 4, idempotencyKey: 'b-4' },
      { accountId, featureKey: features[1]!, quantity: 1, idempotencyKey: 'b-5' },
    ]);
    expect(results.map((result) => result.__typename)).toEqual([
      'UsageRecorded',
      'UsageRejected',
      'UsageRecorded',
      'UsageRecorded',
      'InsufficientCredits',
      'UsageRecorded',
    ]);
    expect(results[1]).toMatchObject({ code: 'UNKNOWN_FEATURE' });
    if (results[0]?.__typename !== 'UsageRecorded' || results[2]?.__typename !== 'UsageRecorded') throw new Error('unexpected');
    expect(results[2].usageEvent.id).toBe(results[0].usageEvent.id);
    expect((await admin.balance(accountId, pool))?.available).toBe(20 - 4 - 2);
    expect((await admin.balance(other.accountId, other.pool))?.available).toBe(0);
    const tooMany = await admin
      .recordUsageBatch(Array.from({ length: 1_001 }, () => ({ accountId, featureKey: features[0]! })))
      .catch((error: unknown) => error);
    expect((tooMany as BillingApiError).code).toBe('INVALID_INPUT');
  });
});
