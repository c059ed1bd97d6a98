import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, defineFeature, definePlan, ok, RECORD_USAGE } from './support/fixtures.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { freePort } from './support/processServer.ts';
import { createPostgresDatabase, startTestServer, testDatabaseUrl, unique } from './support/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skipBilling = skipUnless("test/operationsCommands.test.ts's pnpm billing tests", [await postgresService(POSTGRES)]);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs an entry point as `pnpm start` / `pnpm billing` do, with only the given configuration. */
function run(entry: string, args: string[], env: Record<string, string>): Promise<Run> {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !/^(PORT|HOST|DATABASE_URL|DATA_DIR|REDIS_URL|STRIPE_|ADMIN_API_KEY|LOG_LEVEL|NODE_ENV|JOBS_)/.test(name)),
  );
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], { cwd: ROOT, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('configuration is checked at start', () => {
  const cases: Array<[string, Record<string, string>, string]> = [
    ['a port that is not a number', { PORT: 'eighty' }, 'PORT'],
    ['a port out of range', { PORT: '70000' }, 'PORT'],
    ['a DATABASE_URL that is not PostgreSQL', { DATABASE_URL: 'mysql://root@127.0.0.1/billing' }, 'DATABASE_URL'],
    ['a REDIS_URL that is not Redis', { REDIS_URL: 'http://127.0.0.1:6379' }, 'REDIS_URL'],
    ['a Stripe key without its webhook secret', { STRIPE_SECRET_KEY: 'sk_test_abc' }, 'STRIPE_WEBHOOK_SECRET'],
  ];
  it.each(cases)('%s stops the start with one line naming the variable', async (_name, env, variable) => {
    const started = Date.now();
    const result = await run('packages/server/src/main.ts', [], { DATA_DIR: 'memory://', ...env });
    expect(result.code).not.toBe(0);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(new RegExp(`^configuration error: ${variable} `));
    expect(Date.now() - started).toBeLessThan(30_000);
  });

  it('a well-formed DATABASE_URL that leads nowhere fails with one line, without the password, once DATABASE_CONNECT_TIMEOUT_MS has passed', async () => {
    const port = await freePort();
    const result = await run('packages/server/src/main.ts', [], {
      DATABASE_URL: `postgres://billing:hunter2secret@127.0.0.1:${port}/billing`,
      DATABASE_CONNECT_TIMEOUT_MS: '1500',
      PORT: String(await freePort()),
    });
    expect(result.code).not.toBe(0);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/^configuration error: DATABASE_URL 127\.0\.0\.1:\d+\/billing cannot be reached/);
    expect(result.stderr).not.toContain('hunter2secret');
  });
});

describe.skipIf(skipBilling)('pnpm billing (needs PostgreSQL whatever TEST_DB says)', () => {
  let database: { url: string; drop(): Promise<void> };
  let db: pg.Client;
  let busyAccount = '';

  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES);
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    await database?.drop();
  });

  it('print-schema prints the SDL', async () => {
    const result = await run('packages/server/src/cli.ts', ['print-schema'], {});
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('type Mutation {');
    expect(result.stdout).toContain('recordUsage(');
  });

  it('an unknown command prints the usage and exits 2', async () => {
    const result = await run('packages/server/src/cli.ts', ['frobnicate'], {});
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown command: frobnicate');
    expect(result.stderr).toContain('verify-ledger');
  });

  it('report refuses a reversed range or a bad currency as a usage error (exit 2) before opening the database', async () => {
    // The database cannot be reached: an argument checked only after connecting was reported as
    // "report failed: connect ECONNREFUSED" (exit 1), and with the embedded one it started it first.
    const away = { DATABASE_URL: 'postgresql://nobody:x@127.0.0.1:1/billing' };
    const reversed = await run('packages/server/src/cli.ts', ['report', '--from', '2026-01-01T00:00:00Z', '--to', '2025-01-01T00:00:00Z'], away);
    expect(reversed.code).toBe(2);
    expect(reversed.stderr.split('\n')[0]).toBe('--to must be after --from');
    const currency = await run('packages/server/src/cli.ts', ['report', '--from', '2025-01-01T00:00:00Z', '--to', '2026-01-01T00:00:00Z', '--currency', '=cmd|x'], away);
    expect(currency.code).toBe(2);
    expect(currency.stderr.split('\n')[0]).toBe('--currency must be an ISO 4217 code such as USD');
  });

  it('create-operator-key, verify-ledger and run-due-jobs work on the configured database', async () => {
    const created = await run('packages/server/src/cli.ts', ['create-operator-key', 'night shift'], { DATABASE_URL: database.url });
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^cbk_[A-Za-z0-9]{8}_[A-Za-z0-9]{32}$/);

    // The printed key is an operator key of a server on that database.
    const server = await startTestServer({ DATABASE_URL: database.url, JOBS_ENABLED: 'false' });
    try {
      const viewer = await server.gql(`{ viewer { role } }`, {}, secret);
      expect(viewer.data).toEqual({ viewer: { role: 'ADMIN' } });
      const pool = unique('credits');
      const feature = await defineFeature(server, { creditType: pool });
      const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
      const [busy] = [await createAccount(server, plan), await createAccount(server, plan)];
      ok(await server.gql(RECORD_USAGE, { input: { accountId: busy, featureKey: feature, quantity: 3, idempotencyKey: unique('u') } }));
      ok(await server.gql(`mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename } }`, { input: { accountId: busy, featureKey: feature, credits: 5, idempotencyKey: unique('h') } }));
      busyAccount = busy;
    } finally {
      await server.stop();
    }

    const clean = await run('packages/server/src/cli.ts', ['verify-ledger'], { DATABASE_URL: database.url });
    expect(clean).toMatchObject({ code: 0 });
    expect(clean.stdout).toContain('2 grants checked, 0 mismatches');

    expect(clean.stdout).toMatch(/\d+ usage events, holds and period totals checked, 0 inconsistencies/);
    const [grant] = (await db.query<{ id: string }>(`SELECT id FROM grants WHERE account_id <> $1`, [busyAccount])).rows;
    await db.query(`UPDATE grants SET remaining = remaining - 1 WHERE id = $1`, [grant!.id]);
    const broken = await run('packages/server/src/cli.ts', ['verify-ledger'], { DATABASE_URL: database.url });
    expect(broken.code).toBe(1);
    expect(broken.stdout).toContain(`mismatch: grant ${grant!.id} remaining 99, ledger sum 100`);
    expect(broken.stdout).toContain('2 grants checked, 1 mismatches');
    await db.query(`UPDATE grants SET remaining = remaining + 1 WHERE id = $1`, [grant!.id]);

    // Period totals, draws and holds that disagree with their events and entries: an event whose
    // cost its draws (DEBIT entries, append-only) no longer make.
    const corrupt = [
      `UPDATE period_usage_totals SET overage = overage + 1 WHERE account_id = '${busyAccount}'`,
      `UPDATE usage_events SET credits = credits + 1 WHERE account_id = '${busyAccount}'`,
      `UPDATE reservations SET held = held + 1 WHERE account_id = '${busyAccount}'`,
    ];
    for (const statement of corrupt) await db.query(statement);
    const inconsistent = await run('packages/server/src/cli.ts', ['verify-ledger'], { DATABASE_URL: database.url });
    expect(inconsistent.code).toBe(1);
    for (const check of ['period_totals', 'draws', 'holds']) expect(inconsistent.stdout).toMatch(new RegExp(`^inconsistent ${check}: `, 'm'));
    expect(inconsistent.stdout).toContain(', 3 inconsistencies');
    for (const statement of corrupt) await db.query(statement.replace('+ 1', '- 1'));

    await db.query(`UPDATE accounts SET current_period_end = now() - interval '1 hour' WHERE id = (SELECT id FROM accounts ORDER BY id LIMIT 1)`);
    const due = await run('packages/server/src/cli.ts', ['run-due-jobs'], { DATABASE_URL: database.url, LOG_LEVEL: 'warn' });
    expect(due.code).toBe(0);
    expect(due.stdout.trim()).toBe('1 accounts processed');
    const again = await run('packages/server/src/cli.ts', ['run-due-jobs'], { DATABASE_URL: database.url, LOG_LEVEL: 'warn' });
    expect(again.stdout.trim()).toBe('0 accounts processed');
  });
});
