/**
 * `pnpm bench`: the service under load on a real PostgreSQL, every figure beside a ceiling measured
 * in the same run on the same machine, so that ratios survive a noisy machine:
 * - the GraphQL ceiling: the same server answering `__typename` (query and mutation);
 * - the database ceiling: the same debit as one raw SQL transaction from a pooled client.
 * The server runs as its own process; load comes from this one (autocannon, many connections).
 * Results: a table on stdout and bench/results/latest.json.
 *
 * Environment: BENCH_POSTGRES_URL (a database on the server to bench on; default the local one),
 * BENCH_SECONDS (per load run, default 10), BENCH_CONNECTIONS (default 32), BENCH_RENEWALS (due
 * accounts to renew, default 100000), BENCH_SUBSCRIBERS (default 1000), BENCH_FRESH_SECONDS (the
 * fresh-database run, default 30; 0 skips it).
 */
import { execSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import pg from 'pg';
import { pino } from 'pino';
import { openDatabase } from '../packages/server/src/db/database.ts';
import { applyMigrations } from '../packages/server/src/db/migrations.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { DueWorkRunner } from '../packages/server/src/jobs/dueWorkRunner.ts';
import type { ServerProcess } from '../test/support/processServer.ts';
import { freshDatabaseRun } from './fresh.ts';
import { backToBack, openLoop, type OpenLoopResult } from './openLoop.ts';
import { callEveryAccount, load as loadRun, log as logLine, seedAccounts, setUpBench, writeCounters, writesPerDebit } from './support.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const RENEWALS = Number(process.env.BENCH_RENEWALS ?? 100_000);
const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? 1_000);
const POSTGRES = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const ALONE_ACCOUNTS = 200;
const FRESH_SECONDS = Number(process.env.BENCH_FRESH_SECONDS ?? 30);

interface Figure {
  name: string;
  value: number;
  unit: string;
  ceiling?: number;
  ratio?: number;
  target?: string;
  p50?: number;
  p99?: number;
  /** Open loop: how late the generator itself sent its requests (99th percentile, ms), part of the latency. */
  sendLagP99?: number;
}

const figures: Figure[] = [];
let peakRss = 0;
/** The peak of each phase of the run, named by the log line that began it. */
const phasePeaks = new Map<string, number>();
let phase = 'start';
function log(message: string) {
  phase = message;
  logLine(message);
}

function sampleRss(server: ServerProcess): () => void {
  const timer = setInterval(() => {
    try {
      const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8');
      const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      peakRss = Math.max(peakRss, kb / 1024);
      phasePeaks.set(phase, Math.max(phasePeaks.get(phase) ?? 0, kb / 1024));
    } catch {
      // The process may be between samples of its own exit.
    }
  }, 200);
  return () => clearInterval(timer);
}

async function databaseCeiling(url: string, rows: string[]): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: CONNECTIONS });
  await pool.query('CREATE TABLE IF NOT EXISTS bench_entries (id bigserial PRIMARY KEY, grant_id text, credits bigint, created_at timestamptz DEFAULT now())');
  let done = 0;
  const deadline = Date.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      const client = await pool.connect();
      try {
        while (Date.now() < deadline) {
          const grantId = rows[Math.floor(Math.random() * rows.length)]!;
          await client.query('BEGIN');
          await client.query('UPDATE grants SET remaining = remaining - 1 WHERE id = $1 AND remaining >= 1', [grantId]);
          await client.query('INSERT INTO bench_entries (grant_id, credits) VALUES ($1, -1)', [grantId]);
          await client.query('COMMIT');
          done += 1;
        }
      } finally {
        client.release();
      }
    }),
  );
  await pool.end();
  return done / SECONDS;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function main() {
  // The machine is shared: what else was running is part of every figure.
  const loadAtStart = os.loadavg();
  // First, on a database of its own and a server of its own: what a new user meets.
  const fresh = FRESH_SECONDS > 0 ? await freshDatabaseRun(POSTGRES, { seconds: FRESH_SECONDS, connections: CONNECTIONS }) : null;
  const bench = await setUpBench(POSTGRES);
  const { server, admin, sql, planId, account, usage } = bench;
  const feature = { key: bench.featureKey };
  const stopSampling = sampleRss(server);
  const load = (target: ServerProcess, body: () => string, options: { apiKey: string; connections?: number; seconds?: number; rate?: number }) =>
    loadRun(target, body, { connections: options.connections ?? CONNECTIONS, seconds: options.seconds ?? SECONDS, apiKey: options.apiKey, rate: options.rate });
  try {
    const periodEnd = new Date(Date.now() + 20 * 86_400_000);
    await seedAccounts(sql, SUBSCRIBERS, planId, 'credits', 1_000, periodEnd, 'alert-');
    await sql.query('ANALYZE');

    log('warming up');
    await callEveryAccount(bench);
    await load(server, () => usage(account()), { apiKey: server.adminKey, seconds: 3 });
    // The statistics a running system has (autovacuum's, or the server's own job: jobs are off here):
    // taken on the empty tables seeded above, they would keep the plans of nearly empty tables.
    await sql.query('ANALYZE');

    log('ceilings: trivial mutation and query');
    const trivialMutation = await load(server, () => '{"query":"mutation { __typename }"}', { apiKey: server.adminKey });
    const trivialQuery = await load(server, () => '{"query":"{ __typename }"}', { apiKey: server.adminKey });
    log('ceiling: the database');
    const grantRows = (await sql.query<{ id: string }>(`SELECT id FROM grants WHERE account_id LIKE 'acct-%'`)).rows.map((row) => row.id);
    const dbSpread = await databaseCeiling(bench.databaseUrl, grantRows);
    const dbHot = await databaseCeiling(bench.databaseUrl, [(await sql.query<{ id: string }>(`SELECT id FROM grants WHERE account_id = 'hot-1'`)).rows[0]!.id]);

    // The raw SQL ceiling's backends report their writes as they exit: give them a moment.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const writesBefore = await writeCounters(sql);
    log('recordUsage across accounts');
    const spread = await load(server, () => usage(account()), { apiKey: server.adminKey });
    // Latency as a caller feels it: alone on one connection, then open loop (each request due at its
    // instant, its latency counted from then) at 30 % and 60 % of the capacity just measured, beside
    // the trivial query at the same rates (what the GraphQL layer alone costs at that load).
    const target = { url: `${server.url}/graphql`, apiKey: server.adminKey };
    // Alone: 200 of the accounts, as the issue measured.
    const someAccount = () => `acct-${1 + Math.floor(Math.random() * ALONE_ACCOUNTS)}`;
    log('recordUsage alone: one connection, back to back');
    const alone = await backToBack(target, () => usage(someAccount()), { seconds: SECONDS });
    const trivialQueryBody = () => '{"query":"{ __typename }"}';
    const openLoops: Array<{ share: number; rate: number; usage: OpenLoopResult; trivial: OpenLoopResult }> = [];
    for (const share of [0.3, 0.6]) {
      const rate = Math.max(1, Math.round(share * spread.rps));
      log(`open loop at ${share * 100} % of recordUsage capacity: ${rate} req/s`);
      const atRate = await openLoop(target, () => usage(account()), { rate, seconds: SECONDS });
      const trivialAtRate = await openLoop(target, trivialQueryBody, { rate, seconds: SECONDS });
      openLoops.push({ share, rate, usage: atRate, trivial: trivialAtRate });
    }
    // The last open-loop run was the trivial query: the debits' counts are reported by now.
    const writes = writesPerDebit(writesBefore, await writeCounters(sql));
    log('recordUsage on one hot account');
    const hot = await load(server, () => usage('hot-1'), { apiKey: server.adminKey });
    log('balance queries');
    const balance = await load(
      server,
      () => JSON.stringify({ query: 'query($id: ID!) { account(id: $id) { balance(creditType: "credits") { available periodUsed } } }', variables: { id: account() } }),
      { apiKey: server.adminKey },
    );
    log('batch ingestion');
    const batch = await load(
      server,
      () =>
        JSON.stringify({
          query: 'mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }',
          variables: {
            inputs: Array.from({ length: 1_000 }, () => ({ accountId: account(), featureKey: feature.key, quantity: 1, idempotencyKey: randomUUID() })),
          },
        }),
      { apiKey: server.adminKey, connections: 4 },
    );

    log(`alert latency with ${SUBSCRIBERS} subscribers`);
    const received = new Map<string, number>();
    const feeds = [];
    for (let index = 1; index <= SUBSCRIBERS; index += 1) {
      const accountId = `alert-${index}`;
      feeds.push(admin.subscribeToAlerts(accountId, () => received.set(accountId, performance.now())));
    }
    await new Promise((resolve) => setTimeout(resolve, 3_000 + SUBSCRIBERS * 2));
    const sent = new Map<string, number>();
    const answered = new Map<string, number>();
    const probes = Math.min(SUBSCRIBERS, 300);
    for (let index = 1; index <= probes; index += 1) {
      const accountId = `alert-${index}`;
      sent.set(accountId, performance.now());
      await admin.recordUsage({ accountId, featureKey: feature.key, quantity: 760 });
      answered.set(accountId, performance.now());
    }
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const fromRequest = [...sent].filter(([id]) => received.has(id)).map(([id, at]) => received.get(id)! - at);
    const fromAnswer = [...answered].filter(([id]) => received.has(id)).map(([id, at]) => Math.max(0, received.get(id)! - at));

    log(`renewal of ${RENEWALS} due accounts`);
    await seedAccounts(sql, RENEWALS, planId, 'credits', 1_000, new Date(Date.now() - 60_000), 'due-');
    await sql.query('ANALYZE');
    const runnerDatabase = await openDatabase({ databaseUrl: bench.databaseUrl, dataDir: 'memory://', poolSize: 16 });
    await applyMigrations(runnerDatabase);
    const runner = new DueWorkRunner({ prisma: runnerDatabase.prisma, clock: systemClock, logger: pino({ level: 'silent' }), intervalMs: 1_000, batchSize: 1_000, concurrency: 12 });
    const renewalStart = performance.now();
    let renewed = 0;
    for (let worked = await runner.runOnce(); worked > 0; worked = await runner.runOnce()) renewed += worked;
    const renewalSeconds = (performance.now() - renewalStart) / 1000;
    await runnerDatabase.close();

    figures.push(
      { name: 'trivial mutation (GraphQL ceiling)', value: trivialMutation.rps, unit: 'req/s', p50: trivialMutation.p50, p99: trivialMutation.p99 },
      { name: 'trivial query (GraphQL ceiling)', value: trivialQuery.rps, unit: 'req/s', p50: trivialQuery.p50, p99: trivialQuery.p99 },
      { name: 'raw SQL debit, 10,000 rows (DB ceiling)', value: dbSpread, unit: 'tx/s' },
      { name: 'raw SQL debit, one row (DB ceiling)', value: dbHot, unit: 'tx/s' },
      {
        name: 'recordUsage across 10,000 accounts',
        value: spread.rps,
        unit: 'req/s',
        ceiling: trivialMutation.rps,
        ratio: spread.rps / trivialMutation.rps,
        target: '>= 0.5 x trivial, p99 <= 20 ms',
        p50: spread.p50,
        p99: spread.p99,
      },
      {
        name: `recordUsage alone (one connection, back to back, across ${ALONE_ACCOUNTS} accounts)`,
        value: alone.rps,
        unit: 'req/s',
        target: 'p50 <= 2 ms',
        p50: alone.p50,
        p99: alone.p99,
      },
      ...openLoops.flatMap(({ share, rate, usage: atRate, trivial: trivialAtRate }) => [
        {
          name: `recordUsage across 10,000 accounts, open loop at ${share * 100} % of its capacity (${rate} req/s offered)`,
          value: atRate.achieved,
          unit: 'req/s',
          target: share < 0.5 ? 'p99 <= 10 ms' : 'p99 <= 25 ms',
          p50: atRate.p50,
          p99: atRate.p99,
          sendLagP99: atRate.sendLagP99,
        },
        {
          name: `trivial query, open loop at the same ${rate} req/s`,
          value: trivialAtRate.achieved,
          unit: 'req/s',
          p50: trivialAtRate.p50,
          p99: trivialAtRate.p99,
          sendLagP99: trivialAtRate.sendLagP99,
        },
      ]),
      {
        name: 'recordUsage on one hot account',
        value: hot.rps,
        unit: 'req/s',
        ceiling: trivialMutation.rps,
        ratio: hot.rps / trivialMutation.rps,
        target: '>= 0.25 x trivial',
        p50: hot.p50,
        p99: hot.p99,
      },
      {
        name: `rows written per debit (recordUsage runs above, ${writes.debits} debits, one grant each): ${Object.entries(writes.byTable)
          .map(([table, figures]) => `${table} ${figures.rows.toFixed(2)}`)
          .join(', ')}`,
        value: writes.rows,
        unit: 'rows',
      },
      {
        name: `index entries written per debit: ${Object.entries(writes.byTable)
          .map(([table, figures]) => `${table} ${figures.indexEntries.toFixed(2)}`)
          .join(', ')}`,
        value: writes.indexEntries,
        unit: 'entries',
      },
      { name: 'batch ingestion (1,000 events a request)', value: batch.rps * 1_000, unit: 'events/s', target: '>= 20,000', p50: batch.p50, p99: batch.p99 },
      {
        name: 'balance query',
        value: balance.rps,
        unit: 'req/s',
        ceiling: trivialQuery.rps,
        ratio: balance.rps / trivialQuery.rps,
        target: '>= 0.6 x trivial query',
        p50: balance.p50,
        p99: balance.p99,
      },
      {
        name: `alert, usage request sent → received (${SUBSCRIBERS} subscribers)`,
        value: fromRequest.length,
        unit: 'alerts',
        target: 'p99 <= 100 ms',
        p50: percentile(fromRequest, 50),
        p99: percentile(fromRequest, 99),
      },
      { name: 'alert, usage answered → received', value: fromAnswer.length, unit: 'alerts', p50: percentile(fromAnswer, 50), p99: percentile(fromAnswer, 99) },
      ...(fresh
        ? [
            ...fresh.windows.map((value, index) => ({
              name: `fresh database (1,000 accounts, no ANALYZE, job runner on): recordUsage on one hot account, seconds ${index * fresh.windowSeconds}-${(index + 1) * fresh.windowSeconds}`,
              value,
              unit: 'req/s',
              ceiling: fresh.afterAnalyze,
              ratio: value / fresh.afterAnalyze,
            })),
            { name: 'fresh database: the same after an explicit ANALYZE (the ceiling above)', value: fresh.afterAnalyze, unit: 'req/s' },
            { name: `fresh database: rows read by sequential scans per debit, first ${FRESH_SECONDS} s`, value: fresh.seqRowsPerDebit.first, unit: 'rows' },
            { name: 'fresh database: rows read by sequential scans per debit, after ANALYZE', value: fresh.seqRowsPerDebit.afterAnalyze, unit: 'rows' },
            { name: `fresh database: ANALYZEs of the debit's tables by the server in the first ${FRESH_SECONDS} s`, value: fresh.analyzes, unit: '' },
          ]
        : []),
      { name: `renewal of ${renewed} due accounts`, value: renewalSeconds, unit: 's', target: '100,000 in <= 60 s' },
      { name: 'server RSS under load (peak)', value: peakRss, unit: 'MB', target: '<= 300 MB' },
      ...[...phasePeaks].map(([name, value]) => ({ name: `server RSS peak while: ${name}`, value, unit: 'MB' })),
    );
    const errors =
      [spread, hot, balance, batch].reduce((sum, run) => sum + run.errors + run.non2xx, 0) +
      alone.errors +
      (fresh?.errors ?? 0) +
      openLoops.reduce((sum, run) => sum + run.usage.errors + run.trivial.errors, 0);
    const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, PostgreSQL ${(await sql.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version}`;
    const revision = execSync('git rev-parse --short HEAD', { encoding: 'utf8' }).trim();
    const loadAtEnd = os.loadavg();
    const loadAverages = `load average (1, 5, 15 min) at start ${loadAtStart.map((value) => value.toFixed(2)).join(', ')}, at end ${loadAtEnd.map((value) => value.toFixed(2)).join(', ')}`;
    const report = { at: new Date().toISOString(), revision, machine, seconds: SECONDS, connections: CONNECTIONS, loadAtStart, loadAtEnd, errors, figures };
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/latest.json', `${JSON.stringify(report, null, 2)}\n`);
    const format = (value: number | undefined, digits = 0) => (value === undefined ? '' : value.toLocaleString('en-US', { maximumFractionDigits: digits }));
    const lines = [
      `machine: ${machine}; ${SECONDS} s runs, ${CONNECTIONS} connections; failed or non-2xx requests under load: ${errors}; ${loadAverages}`,
      '',
      '| figure | value | ceiling | ratio | p50 ms | p99 ms | generator send lag p99 ms | target |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
      ...figures.map(
        (figure) =>
          `| ${figure.name} | ${format(figure.value, figure.unit === 's' ? 1 : figure.unit === 'rows' || figure.unit === 'entries' ? 2 : 0)} ${figure.unit} | ${format(figure.ceiling)} | ${figure.ratio === undefined ? '' : figure.ratio.toFixed(2)} | ${format(figure.p50, 1)} | ${format(figure.p99, 1)} | ${format(figure.sendLagP99, 1)} | ${figure.target ?? ''} |`,
      ),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    stopSampling();
    await bench.close();
  }
  process.exit(0);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});

