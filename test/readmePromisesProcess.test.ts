/**
 * README promises about the server as `pnpm start` runs it (the bundle, configured by environment):
 * its settings take effect, its logs keep query text and variables out, and SIGTERM closes WebSockets
 * with 1001. Needs PostgreSQL whatever TEST_DB says: the test reaches the same database from outside
 * the process.
 */
import { execSync, spawn } from 'node:child_process';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createAccount, createKey, defineFeature, definePlan, ok } from './support/fixtures.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { freePort, startServerProcess, type ServerProcess } from './support/processServer.ts';
import { createPostgresDatabase, testDatabaseUrl, unique } from './support/server.ts';

const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const ADMIN = `seed-admin-${unique('key')}`;
const skip = skipUnless('test/readmePromisesProcess.test.ts', [await postgresService(POSTGRES)]);

function histogramBuckets(metrics: string, name: string): Map<string, number> {
  const buckets = new Map<string, number>();
  for (const line of metrics.split('\n')) {
    const match = new RegExp(`^${name}_bucket\\{.*le="([^"]+)".*\\} (\\d+)`).exec(line);
    if (match) buckets.set(match[1]!, Number(match[2]));
  }
  return buckets;
}

describe.skipIf(skip)('the server as pnpm start runs it (needs PostgreSQL whatever TEST_DB says)', () => {
  let database: { url: string; drop(): Promise<void> };
  let db: pg.Client;
  const servers: ServerProcess[] = [];

  beforeAll(async () => {
    execSync('pnpm -s build', { stdio: 'pipe' });
    database = await createPostgresDatabase(POSTGRES);
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
  });
  afterAll(async () => {
    for (const server of servers) await server.stop('SIGKILL');
    await db?.end();
    await database?.drop();
  });

  it('MAX_REQUEST_BODY_BYTES, API_KEY_CACHE_MS and USAGE_BATCH_MAX take effect; logs hold no query text or variables; SIGTERM closes WebSockets with 1001', async () => {
    const server = await startServerProcess(
      { DATABASE_URL: database.url, JOBS_ENABLED: 'false', MAX_REQUEST_BODY_BYTES: '4096', API_KEY_CACHE_MS: '0', USAGE_BATCH_MAX: '2', LOG_LEVEL: 'debug' },
      [],
      'bundle',
    );
    servers.push(server);
    const pool = unique('credits');
    const featureKey = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [featureKey] });

    // MAX_REQUEST_BODY_BYTES: 4 KiB, not the default 512 KiB.
    const large = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminKey}` },
      body: JSON.stringify({ query: '{ viewer { role } }', variables: { padding: 'p'.repeat(5_000) } }),
    });
    expect(large.status).toBe(413);

    // API_KEY_CACHE_MS=0: a key revoked behind the server's back (no revocation message) is refused
    // at once; with the default it would be trusted for 5 s more.
    const accountId = await createAccount(server, plan);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    expect(ok(await server.gql(`{ viewer { role } }`, {}, accountKey)).viewer.role).toBe('ACCOUNT');
    await db.query(`UPDATE api_keys SET revoked_at = now() WHERE account_id = $1`, [accountId]);
    expect((await server.gql(`{ viewer { role } }`, {}, accountKey)).errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');

    // USAGE_BATCH_MAX=2: concurrent calls share statements, never more than two to one.
    const accounts = await Promise.all(Array.from({ length: 10 }, () => createAccount(server, plan)));
    const secretVariable = `never-logged-${unique('variable')}`;
    const answers = await Promise.all(
      Array.from({ length: 100 }, (_, index) =>
        server.gql(`mutation SpendForTheLogTest($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }`, {
          input: { accountId: accounts[index % 10], featureKey, quantity: 1, idempotencyKey: `${secretVariable}-${index}`, metadata: { note: secretVariable } },
        }),
      ),
    );
    for (const answer of answers) expect(answer.data?.recordUsage?.__typename).toBe('UsageRecorded');
    const batches = histogramBuckets(await (await fetch(`${server.url}/metrics`)).text(), 'billing_usage_batch_size');
    expect(batches.get('+Inf')).toBeGreaterThan(0);
    expect(batches.get('2')).toBe(batches.get('+Inf'));

    // Logs: each operation has its line (by name), but never the query text or a variable's value.
    const log = server.output.join('');
    expect(log).toContain('SpendForTheLogTest');
    expect(log).not.toContain(secretVariable);
    expect(log).not.toContain('recordUsage(input: $input)');

    // SIGTERM: a WebSocket is closed with 1001 "going away".
    const socket = new WebSocket(`${server.url.replace('http', 'ws')}/graphql`, 'graphql-transport-ws');
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${server.adminKey}` } })));
      socket.on('message', (data) => {
        if (JSON.parse(data.toString()).type === 'connection_ack') resolve();
      });
      socket.once('error', reject);
    });
    expect(await server.stop('SIGTERM')).toBe(0);
    expect(await closed).toBe(1001);
  });

  it('RATE_LIMIT_PER_SECOND and RATE_LIMIT_BURST take effect', async () => {
    const server = await startServerProcess({ DATABASE_URL: database.url, JOBS_ENABLED: 'false', RATE_LIMIT_PER_SECOND: '1', RATE_LIMIT_BURST: '0' }, [], 'bundle');
    servers.push(server);
    const answers = await Promise.all(Array.from({ length: 60 }, () => fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminKey}` },
      body: JSON.stringify({ query: '{ viewer { role } }' }),
    })));
    const statuses = answers.map((answer) => answer.status);
    // One a second and no burst: of 60 calls at once, a few pass however slowly a loaded machine
    // serves them, the rest are refused (the defaults would pass all 60).
    expect(statuses.filter((status) => status === 200).length).toBeGreaterThanOrEqual(1);
    expect(statuses.filter((status) => status === 200).length).toBeLessThanOrEqual(30);
    expect(statuses.filter((status) => status === 429).length).toBeGreaterThanOrEqual(30);
  });

  it('pnpm seed loads the demo catalogue and accounts once, and serves them', async () => {
    const seeded = await createPostgresDatabase(POSTGRES);
    const check = new pg.Client({ connectionString: seeded.url });
    try {
      const run = async () => {
        const port = await freePort();
        const child = spawn('pnpm', ['-s', 'seed'], { env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: seeded.url, JOBS_ENABLED: 'false', ADMIN_API_KEY: ADMIN }, stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
        child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
        const url = `http://127.0.0.1:${port}`;
        const deadline = Date.now() + 90_000;
        while (!(await fetch(`${url}/healthz`).then((response) => response.ok, () => false))) {
          if (Date.now() > deadline || child.exitCode !== null) throw new Error(`pnpm seed did not start: ${output}`);
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        const plans = await fetch(`${url}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` },
          body: JSON.stringify({ query: '{ plans { code } }' }),
        }).then((response) => response.json() as Promise<{ data: { plans: Array<{ code: string }> } }>);
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
        return { output, plans: plans.data.plans.map((plan) => plan.code) };
      };
      const first = await run();
      expect(first.plans).toEqual(expect.arrayContaining(['hubspot_pro', 'rocket_basic', 'hex_team']));
      expect(first.output).toContain('Acme account id');
      await check.connect();
      const count = async () => (await check.query<{ accounts: number; keys: number }>(`SELECT (SELECT count(*) FROM accounts)::int AS accounts, (SELECT count(*) FROM api_keys)::int AS keys`)).rows[0]!;
      const afterFirst = await count();
      expect(afterFirst.accounts).toBe(3);
      // Again: the catalogue is upserted, the demo accounts are not created twice.
      const second = await run();
      expect(second.plans.sort()).toEqual(first.plans.sort());
      expect(await count()).toEqual(afterFirst);
    } finally {
      await check.end().catch(() => undefined);
      await seeded.drop();
    }
  });
});
