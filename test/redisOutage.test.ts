/**
 * Redis is optional at run time (issue 16.3): with it stopped, authenticated requests go on under a
 * per-instance rate limit, /readyz stays 200 and says "degraded", each instance logs one warning for
 * the outage; when it returns, live events cross instances again without the subscriber doing
 * anything. The test runs a redis-server of its own, so that stopping it disturbs nobody else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../packages/server/src/observability/logger.ts';
import { createAccount, createKey, defineFeature, definePlan, grantCredits, ok, RECORD_USAGE } from './support/fixtures.ts';
import { BALANCE_SUBSCRIPTION, connectLive, waitUntilLive, type LiveClient } from './support/live.ts';
import { postgresService, redisServer, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { freePort } from './support/processServer.ts';
import { createPostgresDatabase, startTestServer, testDatabaseUrl, unique, type TestServer } from './support/server.ts';

const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const redisBinary = redisServer();
const skip = skipUnless('test/redisOutage.test.ts', [redisBinary, await postgresService(POSTGRES)]);

interface Instance {
  server: TestServer;
  logs: Array<{ level: number; msg: string }>;
}

async function until<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe.skipIf(skip)('Redis away (needs redis-server and PostgreSQL)', () => {
  let redisPort: number;
  let redis: ChildProcess | null = null;
  let database: { url: string; drop(): Promise<void> };
  const instances: Instance[] = [];
  let live: LiveClient | null = null;

  function startRedis(): Promise<void> {
    redis = spawn(redisBinary.path!, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    const accepts = () =>
      new Promise<boolean>((resolve) => {
        const socket = connect(redisPort, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      }).finally(() => undefined);
    return until(accepts, (up) => up).then(() => undefined);
  }

  async function stopRedis(): Promise<void> {
    const child = redis;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  }

  beforeAll(async () => {
    redisPort = await freePort();
    await startRedis();
    database = await createPostgresDatabase(POSTGRES);
    const adminKey = `redis-admin-${unique('k')}-0123456789`;
    for (let index = 0; index < 2; index += 1) {
      const logs: Instance['logs'] = [];
      const sink = new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const line of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(line) as Instance['logs'][number]);
          done();
        },
      });
      const server = await startTestServer(
        { DATABASE_URL: database.url, REDIS_URL: `redis://127.0.0.1:${redisPort}`, ADMIN_API_KEY: adminKey, JOBS_ENABLED: 'false' },
        {
          logger: createLogger({ level: 'info', development: false }, sink),
          security: { rateLimit: { perSecond: 30, burst: 1, burstWindowSeconds: 10, keyPrefix: unique('rate') } },
        },
      );
      instances.push({ server, logs });
    }
  });
  afterAll(async () => {
    await live?.dispose();
    await Promise.all(instances.map((instance) => instance.server.stop()));
    await stopRedis();
    await database?.drop();
  });

  it('requests go on under a per-instance limit, /readyz is 200 "degraded", one warning per instance; live events cross instances again after', async () => {
    const [a, b] = instances as [Instance, Instance];
    const pool = unique('credits');
    const feature = await defineFeature(a.server, { creditType: pool });
    const accountId = await createAccount(a.server, await definePlan(a.server, { allocations: [{ creditType: pool, amount: 100_000 }], featureKeys: [feature] }));
    const accountKey = await createKey(a.server, 'ACCOUNT', accountId);
    live = connectLive(b.server.url, accountKey, { retryAttempts: 0 });
    await waitUntilLive(live, accountId, () => grantCredits(a.server, { accountId, creditType: unique('probe'), amount: 1 }));
    const balances = live.subscribe(BALANCE_SUBSCRIPTION, { accountId }, (data) => data.balanceUpdated);

    await stopRedis();
    const readyz = async (instance: Instance) => {
      const response = await fetch(`${instance.server.url}/readyz`);
      return { status: response.status, body: (await response.json()) as { status: string; checks: Record<string, unknown> } };
    };
    const degraded = await until(() => readyz(a), (answer) => answer.body.checks.redis === 'degraded');
    expect(degraded).toEqual({ status: 200, body: { status: 'degraded', checks: { database: true, redis: 'degraded', accepting: true } } });

    // Authenticated requests are answered on both instances; a burst is limited by each alone.
    for (const instance of [a, b]) {
      const usage = await instance.server.gql(RECORD_USAGE, { input: { accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('u') } }, accountKey);
      expect(ok(usage).recordUsage.__typename).toBe('UsageRecorded');
    }
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const burst = await Promise.all(Array.from({ length: 150 }, () => a.server.gql(`{ viewer { role } }`, {}, accountKey)));
    const statuses = burst.map((answer) => answer.status);
    expect(statuses.filter((status) => status === 200).length).toBeGreaterThan(0);
    expect(statuses.filter((status) => status === 429).length).toBeGreaterThan(0);
    expect(statuses.filter((status) => status !== 200 && status !== 429)).toEqual([]);

    await startRedis();
    await until(() => readyz(b), (answer) => answer.body.checks.redis === 'ok');
    await until(() => readyz(a), (answer) => answer.body.checks.redis === 'ok');

    // Subscriptions resumed: usage on A reaches the subscriber on B through Redis again.
    const seen = balances.events.length;
    const resumed = await until(
      async () => {
        ok(await a.server.gql(RECORD_USAGE, { input: { accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('u') } }, accountKey));
        await new Promise((resolve) => setTimeout(resolve, 200));
        return balances.events.length;
      },
      (count) => count > seen,
      15_000,
    );
    expect(resumed).toBeGreaterThan(seen);

    for (const instance of [a, b]) {
      const warnings = instance.logs.filter((line) => line.level === 40 && line.msg.startsWith('Redis unavailable'));
      expect(warnings).toHaveLength(1);
      expect(instance.logs.filter((line) => line.msg === 'Redis available again')).toHaveLength(1);
    }
  });
});
