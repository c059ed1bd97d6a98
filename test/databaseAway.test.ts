/**
 * A request the database fails (unreachable, or the connection lost mid-statement) answers the typed,
 * retryable UNAVAILABLE (HTTP 503, `extensions.retryable`), never INTERNAL_SERVER_ERROR; the SDK
 * retries it with the same idempotency key, which charges once (issue 16.2).
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBillingClient } from '../packages/sdk/src/index.ts';
import { DependencyProxy } from './support/dependencyProxy.ts';
import { createAccount, defineFeature, definePlan, RECORD_USAGE } from './support/fixtures.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { createPostgresDatabase, startTestServer, testDatabaseUrl, unique, type TestServer } from './support/server.ts';

const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skip = skipUnless('test/databaseAway.test.ts', [await postgresService(POSTGRES)]);

describe.skipIf(skip)('the database away (needs PostgreSQL whatever TEST_DB says)', () => {
  let database: { url: string; drop(): Promise<void> };
  let proxy: DependencyProxy;
  let server: TestServer;
  let direct: pg.Client;
  let accountId: string;
  let feature: string;

  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES);
    proxy = await DependencyProxy.start(new URL(database.url), 5432);
    server = await startTestServer({ DATABASE_URL: proxy.through(database.url), JOBS_ENABLED: 'false', USAGE_BATCH_CONCURRENCY: '0' });
    direct = new pg.Client({ connectionString: database.url });
    await direct.connect();
    const pool = unique('credits');
    feature = await defineFeature(server, { creditType: pool });
    accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));
  });
  afterAll(async () => {
    proxy?.restore();
    await server?.stop();
    await direct?.end();
    await proxy?.close();
    await database?.drop();
  });

  async function post(idempotencyKey: string) {
    const response = await fetch(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminKey}` },
      body: JSON.stringify({ query: RECORD_USAGE, variables: { input: { accountId, featureKey: feature, quantity: 1, idempotencyKey } } }),
    });
    return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as { errors?: Array<{ extensions?: Record<string, unknown> }> } };
  }

  async function charges(idempotencyKey: string): Promise<number> {
    const { rows } = await direct.query(`SELECT id FROM usage_events WHERE account_id = $1 AND idempotency_key = $2`, [accountId, idempotencyKey]);
    return rows.length;
  }

  it('unreachable: 503 UNAVAILABLE, retryable, with Retry-After; nothing charged', async () => {
    proxy.cut();
    try {
      const idempotencyKey = unique('away');
      const answer = await post(idempotencyKey);
      expect(answer.status).toBe(503);
      expect(answer.retryAfter).toBe('1');
      expect(answer.body.errors?.[0]?.extensions).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
      expect(answer.body.errors?.[0]?.extensions).not.toHaveProperty('http');
      expect(await charges(idempotencyKey)).toBe(0);
    } finally {
      proxy.restore();
    }
  });

  it('the connection lost mid-request: UNAVAILABLE, and the retry with the same key charges once', async () => {
    const idempotencyKey = unique('lost');
    // Statements wait in the proxy, then every connection dies under them.
    proxy.hold();
    const pending = post(idempotencyKey);
    await new Promise((resolve) => setTimeout(resolve, 300));
    proxy.cut();
    proxy.release();
    const answer = await pending;
    proxy.restore();
    expect(answer.status).toBe(503);
    expect(answer.body.errors?.[0]?.extensions).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    const retried = await post(idempotencyKey);
    expect(retried.status).toBe(200);
    expect(await charges(idempotencyKey)).toBe(1);
  });

  it('the SDK retries UNAVAILABLE with the same key until the database is back: charged once', async () => {
    const client = createBillingClient({ url: server.graphqlUrl, apiKey: server.adminKey, retries: 6, retryDelayMs: 100 });
    const idempotencyKey = unique('sdk');
    proxy.cut();
    const call = client.recordUsage({ accountId, featureKey: feature, quantity: 2, idempotencyKey });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    proxy.restore();
    const result = await call;
    expect(result.__typename).toBe('UsageRecorded');
    expect(await charges(idempotencyKey)).toBe(1);
  });
});
