import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type App } from '../packages/server/src/app.ts';
import { loadConfig } from '../packages/server/src/config.ts';
import { createLogger } from '../packages/server/src/observability/logger.ts';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { createAccount, defineFeature, definePlan, ok, RECORD_USAGE } from './support/fixtures.ts';
import { postgresService, redisService, SHARED_POSTGRES_URL, SHARED_REDIS_URL, skipUnless } from './support/optional.ts';
import { freePort } from './support/processServer.ts';
import { createPostgresDatabase, testDatabaseUrl, unique, type GqlTarget, type GraphQLResponse } from './support/server.ts';

const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skipPostgres = skipUnless("test/operations.test.ts's PostgreSQL readiness test", [await postgresService(POSTGRES)]);
const skipRedis = skipUnless("test/operations.test.ts's Redis readiness test", [await redisService()]);

interface LoggedServer extends GqlTarget {
  app: App;
  logText(): string;
  gqlWith(query: string, variables: Record<string, unknown>, headers: Record<string, string>): Promise<GraphQLResponse<any> & { headers: Headers }>;
}

/** A server whose log (at debug, through the production logger's redaction) is kept in memory. */
async function startLoggedServer(env: Record<string, string>): Promise<LoggedServer> {
  const adminKey = `ops-admin-${randomBytes(16).toString('hex')}`;
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  const databaseUrl = testDatabaseUrl();
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: 'memory://',
    ADMIN_API_KEY: adminKey,
    LOG_LEVEL: 'debug',
    JOBS_ENABLED: 'false',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    ...env,
  });
  const app = await buildApp(config, { logger: createLogger({ level: 'debug', development: false }, sink) });
  const url = await app.start();
  const gqlWith = async (query: string, variables: Record<string, unknown>, headers: Record<string, string>) => {
    const response = await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query, variables }) });
    return { ...((await response.json()) as GraphQLResponse<any>), status: response.status, headers: response.headers };
  };
  return {
    url,
    adminKey,
    app,
    logText: () => chunks.join(''),
    gqlWith,
    gql: (query, variables = {}, apiKey = adminKey) => gqlWith(query, variables, apiKey ? { authorization: `Bearer ${apiKey}` } : {}),
  };
}

function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('logs and metrics of a whole scenario', () => {
  const STRIPE_KEY = `sk_test_${randomBytes(12).toString('hex')}`;
  const WEBHOOK_SECRET = `whsec_${randomBytes(12).toString('hex')}`;
  let fake: FakeStripe;
  let server: LoggedServer;

  beforeAll(async () => {
    fake = await startFakeStripe();
    server = await startLoggedServer({ STRIPE_SECRET_KEY: STRIPE_KEY, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_API_BASE: fake.url });
  });
  afterAll(async () => {
    await server?.app.stop();
    await fake?.close();
  });

  it('logs each operation with request id, name, account and duration, never a secret; counts them in /metrics', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 10 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
    const accountId = await createAccount(server, plan);

    const created = ok(
      await server.gql(`mutation CreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }`, {
        input: { role: 'ACCOUNT', accountId, name: 'back end' },
      }),
    ).createApiKey;
    const accountKey: string = created.secret;
    const webhook = ok(
      await server.gql(`mutation Hook($input: ConfigureAlertWebhookInput!) { configureAlertWebhook(input: $input) { secret url } }`, {
        input: { accountId, url: 'https://hooks.example/billing' },
      }),
    ).configureAlertWebhook;

    // 80 of 100 credits: charged, and the 75% alert is raised; then a refusal.
    const spend = `mutation Spend($input: RecordUsageInput!) ${RECORD_USAGE.slice(RECORD_USAGE.indexOf('{'))}`;
    const charged = await server.gqlWith(spend, { input: { accountId, featureKey: feature, quantity: 8, idempotencyKey: unique('spend') } }, {
      authorization: `Bearer ${accountKey}`,
      'x-request-id': 'trace-spend-1',
    });
    expect(charged.data?.recordUsage.__typename).toBe('UsageRecorded');
    expect(charged.headers.get('x-request-id')).toBe('trace-spend-1');
    const refused = ok(await server.gql(spend, { input: { accountId, featureKey: feature, quantity: 5, idempotencyKey: unique('spend') } }, accountKey));
    expect(refused.recordUsage.__typename).toBe('InsufficientCredits');
    // A client selecting nothing but __typename is still counted with its credits.
    ok(await server.gql(`mutation Bare($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }`, { input: { accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('spend') } }, accountKey));
    ok(
      await server.gql(`mutation Grant($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
        input: { accountId, creditType: pool, amount: 50, source: 'BONUS', idempotencyKey: 'bonus-1' },
      }),
    );
    // Its replay returns the same grant and is not counted again.
    ok(
      await server.gql(`mutation Grant($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
        input: { accountId, creditType: pool, amount: 50, source: 'BONUS', idempotencyKey: 'bonus-1' },
      }),
    );

    // Errors: a wrong key (which must not be logged either), a query that does not parse.
    const wrongKey = `cbk_${randomBytes(20).toString('hex')}`;
    const denied = await server.gql(`query Who { viewer { role } }`, {}, wrongKey);
    expect(denied.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const broken = await server.gql(`query Broken { viewer {`, {});
    expect(broken.errors).toBeDefined();

    // Stripe: a purchase, its signed webhook, and a forged one.
    const pack = unique('pack');
    ok(
      await server.gql(`mutation Pack($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`, {
        input: { code: pack, name: 'Credits', creditType: pool, credits: 1_000, price: { amount: 1_500, currency: 'USD' }, expiresAfterDays: 365 },
      }),
    );
    const purchase = ok(
      await server.gql(`mutation Buy($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) { id status } }`, {
        input: { accountId, packCode: pack, quantity: 1, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('buy') },
      }),
    ).purchaseCreditPack;
    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.purchase_id === purchase.id);
    expect(session).toBeDefined();
    const { session: paid } = fake.completeCheckout(session!.id);
    const signed = fake.signedPayload(fake.event('checkout.session.completed', paid), WEBHOOK_SECRET);
    const delivered = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signed.signature }, body: signed.body });
    expect(delivered.status).toBe(200);
    const forged = fake.signedPayload(fake.event('checkout.session.completed', paid), 'whsec_not_ours');
    const rejected = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': forged.signature }, body: forged.body });
    expect(rejected.status).toBe(400);

    // Due work the runner (disabled here) has not done: an account whose period ended an hour ago.
    const before = await (await fetch(`${server.url}/metrics`)).text();
    const dueBefore = metricValue(before, 'billing_job_queue_due_accounts')!;
    const overdue = await createAccount(server, plan);
    await server.app.database.statement(`UPDATE accounts SET current_period_end = $2 WHERE id = $1`, [overdue, new Date(Date.now() - 3_600_000)]);
    // The job-queue gauges run their query at most once a second.
    await new Promise((resolve) => setTimeout(resolve, 1_100));

    const metricsResponse = await fetch(`${server.url}/metrics`);
    expect(metricsResponse.status).toBe(200);
    expect(metricsResponse.headers.get('content-type')).toContain('text/plain');
    const metrics = await metricsResponse.text();
    expect(metricValue(metrics, 'graphql_operations_total', { operation: 'Spend', type: 'mutation', outcome: 'ok' })).toBe(1);
    expect(metricValue(metrics, 'graphql_operations_total', { operation: 'Spend', type: 'mutation', outcome: 'refused' })).toBe(1);
    expect(metricValue(metrics, 'graphql_operations_total', { operation: 'Who', outcome: 'error' })).toBe(1);
    expect(metricValue(metrics, 'graphql_operation_duration_seconds_count', { operation: 'Spend', outcome: 'ok' })).toBe(1);
    expect(metricValue(metrics, 'billing_credits_debited_total', { credit_type: pool })).toBe(90);
    expect(metricValue(metrics, 'billing_refusals_total', { operation: 'recordUsage', reason: 'INSUFFICIENT_CREDITS' })).toBe(1);
    expect(metricValue(metrics, 'billing_credits_granted_total', { credit_type: pool, source: 'BONUS' })).toBe(50);
    expect(metricValue(metrics, 'billing_alerts_raised_total', { kind: 'USAGE_THRESHOLD' })).toBeGreaterThan(0);
    expect(metricValue(metrics, 'billing_stripe_webhook_events_total', { type: 'checkout.session.completed', outcome: 'processed' })).toBe(1);
    expect(metricValue(metrics, 'billing_stripe_webhook_events_total', { type: 'unverified', outcome: 'rejected' })).toBe(1);
    // The embedded database is this file's own: exactly one account is due. PostgreSQL is shared
    // with the other test files, whose due work may come and go meanwhile.
    if (server.app.database.kind === 'postgres') expect(metricValue(metrics, 'billing_job_queue_due_accounts')).toBeGreaterThanOrEqual(1);
    else expect([dueBefore, metricValue(metrics, 'billing_job_queue_due_accounts')]).toEqual([0, 1]);
    const oldestDue = metricValue(metrics, 'billing_job_queue_oldest_due_seconds')!;
    expect(oldestDue).toBeGreaterThanOrEqual(3_600);
    if (server.app.database.kind !== 'postgres') expect(oldestDue).toBeLessThan(3_600 + 120);
    expect(metricValue(metrics, 'billing_websocket_connections')).toBe(0);
    if (server.app.database.kind === 'postgres') expect(metricValue(metrics, 'billing_db_pool_connections', { state: 'total' })).toBeGreaterThan(0);
    expect(metricValue(metrics, 'process_resident_memory_bytes')).toBeGreaterThan(0);

    const log = server.logText();
    for (const secret of [server.adminKey, accountKey, webhook.secret, STRIPE_KEY, WEBHOOK_SECRET, wrongKey, signed.signature]) {
      expect(log.includes(secret), `a secret appeared in the log: ${secret.slice(0, 8)}…`).toBe(false);
    }
    const entries = log
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const operations = entries.filter((entry) => entry.msg === 'graphql operation');
    const spent = operations.find((entry) => entry.reqId === 'trace-spend-1');
    expect(spent).toMatchObject({ operation: 'Spend', operationType: 'mutation', role: 'ACCOUNT', accountId, outcome: 'ok' });
    expect(typeof spent?.durationMs).toBe('number');
    expect(operations.map((entry) => entry.operation)).toEqual(expect.arrayContaining(['CreateKey', 'Hook', 'Spend', 'Bare', 'Grant', 'Who', 'Buy']));
    expect(operations.find((entry) => entry.operation === 'Who')).toMatchObject({ outcome: 'error', errorCodes: ['UNAUTHENTICATED'] });
    // A document that does not parse has no name to give; it is logged as failed all the same.
    expect(operations.find((entry) => entry.operation === null)).toMatchObject({ outcome: 'error', operationType: null });
    expect(new Set(operations.map((entry) => entry.reqId)).size).toBe(operations.length);
  });
});

/** A TCP proxy (to PostgreSQL or Redis) that the test can cut and restore, on a fixed port. */
async function startProxy(target: URL): Promise<{ port: number; cut(): Promise<void>; restore(): Promise<void>; close(): Promise<void> }> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server = createServer((client) => {
        const upstream = connect(Number(target.port || (target.protocol.startsWith('redis') ? 6379 : 5432)), target.hostname);
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.on('close', () => sockets.delete(socket));
          socket.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream).pipe(client);
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
  const cut = async () => {
    const closing = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    for (const socket of sockets) socket.destroy();
    await closing;
    server = null;
  };
  await listen();
  return { port, cut, restore: listen, close: cut };
}

describe('health', () => {
  it.skipIf(skipPostgres)('(needs PostgreSQL whatever TEST_DB says) /readyz is 503 while PostgreSQL is unreachable and 200 again when it returns; /healthz stays 200', async () => {
    const database = await createPostgresDatabase(POSTGRES);
    const proxy = await startProxy(new URL(database.url));
    const proxied = new URL(database.url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    const server = await startLoggedServer({ DATABASE_URL: proxied.toString() });
    try {
      const ready = async () => (await fetch(`${server.url}/readyz`)).status;
      expect(await ready()).toBe(200);
      await proxy.cut();
      const started = Date.now();
      expect(await waitFor(ready, (status) => status === 503)).toBe(503);
      const downMs = Date.now() - started;
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      const body = (await (await fetch(`${server.url}/readyz`)).json()) as { checks: Record<string, boolean> };
      expect(body.checks.database).toBe(false);
      await proxy.restore();
      expect(await waitFor(ready, (status) => status === 200)).toBe(200);
      expect(downMs).toBeLessThan(10_000);
    } finally {
      await server.app.stop();
      await proxy.close();
      await database.drop();
    }
  });

  it.skipIf(skipRedis)('(needs Redis) /readyz stays 200 but says "degraded" while Redis (REDIS_URL) is unreachable, and "ok" when it returns', async () => {
    const proxy = await startProxy(new URL(SHARED_REDIS_URL));
    const server = await startLoggedServer({ REDIS_URL: `redis://127.0.0.1:${proxy.port}` });
    try {
      const ready = async () => (await fetch(`${server.url}/readyz`)).status;
      expect(await waitFor(ready, (status) => status === 200)).toBe(200);
      await proxy.cut();
      const redisCheck = async () => ((await (await fetch(`${server.url}/readyz`)).json()) as { checks: { redis: string } }).checks.redis;
      expect(await waitFor(redisCheck, (check) => check === 'degraded')).toBe('degraded');
      expect(await ready()).toBe(200);
      expect(await (await fetch(`${server.url}/readyz`)).json()).toMatchObject({ status: 'degraded', checks: { database: true, redis: 'degraded' } });
      await proxy.restore();
      expect(await waitFor(redisCheck, (check) => check === 'ok')).toBe('ok');
    } finally {
      await server.app.stop();
      await proxy.close();
    }
  });
});
