/**
 * `pnpm bench:profile [scenario]`: one load scenario against the server started with `--cpu-prof`,
 * then the functions with the most self time during the run, the server's and the database's CPU
 * per request, and (where pg_stat_statements is loaded) the round trips and statements per request.
 * Scenarios: trivial, spread (recordUsage across 10,000 accounts, the default), hot, balance, batch
 * (32 connections, closed loop), alone and alone-trivial (recordUsage across 200 accounts, or the
 * trivial mutation, on one connection back to back). The .cpuprofile lands in bench/results/profiles (open
 * it in Chrome DevTools or speedscope for the call tree).
 *
 * Environment: BENCH_POSTGRES_URL, BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 32).
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import type pg from 'pg';
import { backToBack } from './openLoop.ts';
import { callEveryAccount, load, log, setUpBench, writeCounters, writesPerDebit } from './support.ts';

const SCENARIO = process.argv[2] ?? 'spread';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const POSTGRES = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const PROFILE_DIR = path.resolve('bench/results/profiles');

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Milliseconds since the process was spawned: the part of the profile to count. */
interface Window {
  from: number;
  to: number;
}

/** Each busy sample within the window with its node and its interval (µs); idle time is left out. */
function busySamples(profile: CpuProfile, window: Window): Array<{ node: ProfileNode; delta: number }> {
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]));
  const samples: Array<{ node: ProfileNode; delta: number }> = [];
  let at = 0;
  profile.samples.forEach((nodeId, index) => {
    const delta = profile.timeDeltas[index] ?? 0;
    at += delta;
    const node = byNode.get(nodeId);
    if (!node || node.callFrame.functionName === '(idle)' || at / 1000 < window.from || at / 1000 > window.to) return;
    samples.push({ node, delta });
  });
  return samples;
}

/** Self time per function (samples × their intervals), heaviest first. */
function summarize(profile: CpuProfile, window: Window, top: number): string[] {
  const selfMicros = new Map<string, number>();
  let total = 0;
  busySamples(profile, window).forEach(({ node, delta }) => {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${url.replace(/^file:\/\//, '').replace(process.cwd() + '/', '').replace(/.*node_modules\/\.pnpm\/[^/]+\/node_modules\//, '')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'} ${where}`.trim();
    selfMicros.set(key, (selfMicros.get(key) ?? 0) + delta);
    total += delta;
  });
  return [...selfMicros]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, micros]) => `${((100 * micros) / total).toFixed(1).padStart(5)} %  ${name}`);
}

/** Self time per package (or our own source), to see where the CPU goes at a glance. */
function byPackage(profile: CpuProfile, window: Window): string[] {
  const micros = new Map<string, number>();
  let total = 0;
  busySamples(profile, window).forEach(({ node, delta }) => {
    const { url } = node.callFrame;
    const pkg = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? (url.includes('/packages/') ? 'our code' : url.startsWith('node:') ? 'node core' : url ? 'other' : '(native, gc)');
    micros.set(pkg, (micros.get(pkg) ?? 0) + delta);
    total += delta;
  });
  return [...micros].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([name, value]) => `${((100 * value) / total).toFixed(1).padStart(5)} %  ${name}`);
}

/** CPU seconds (user + system) a process has used, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

interface StatementFigures {
  query: string;
  calls: number;
  toplevel: boolean;
  total_exec_time: number;
  shared_blks_hit: number;
  wal_records: number;
}

/**
 * The database side, when the server can tell: pg_stat_statements (only if preloaded, which needs a
 * restart of PostgreSQL: `shared_preload_libraries = 'pg_stat_statements'`, with
 * `pg_stat_statements.track = all` to see the statements inside the functions) and the CPU of the
 * backends serving this database (when PostgreSQL runs on this machine).
 */
class DatabaseSide {
  private statementsAvailable = false;
  private backends = new Map<number, number>();

  constructor(private readonly sql: pg.Client) {}

  async start(): Promise<void> {
    try {
      await this.sql.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
      await this.sql.query('SELECT pg_stat_statements_reset()');
      this.statementsAvailable = true;
    } catch {
      this.statementsAvailable = false;
    }
    const pids = (await this.sql.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()')).rows;
    this.backends = new Map(pids.map(({ pid }) => [pid, cpuSeconds(pid)]));
  }

  async report(requests: number): Promise<string[]> {
    // A backend that ended during the run (the pool closes idle connections) is left out.
    let cpu = 0;
    let counted = 0;
    for (const [pid, atStart] of this.backends) {
      const atEnd = cpuSeconds(pid);
      if (atEnd === 0) continue;
      cpu += atEnd - atStart;
      counted += 1;
    }
    const lines = [`database backends' CPU: ${((1000 * cpu) / requests).toFixed(3)} ms a request (${counted} backends of the server's pool, from /proc)`];
    if (!this.statementsAvailable) return [...lines, 'pg_stat_statements: not loaded on this server (shared_preload_libraries), skipped'];
    const rows = (
      await this.sql.query<StatementFigures>(
        `SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls::int, toplevel, total_exec_time, shared_blks_hit::int, wal_records::int
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_stat_activity%'
         ORDER BY total_exec_time DESC`,
      )
    ).rows;
    const top = rows.filter((row) => row.toplevel);
    const roundTrips = top.reduce((sum, row) => sum + row.calls, 0) / requests;
    const execMs = top.reduce((sum, row) => sum + row.total_exec_time, 0) / requests;
    return [
      ...lines,
      `round trips (top-level statements): ${roundTrips.toFixed(2)} a request; their execution ${execMs.toFixed(3)} ms a request`,
      'statements (pg_stat_statements; nested ones inside the functions marked >):',
      '  calls/req   ms/req   ms/call  blocks/call  WAL rec/call  statement',
      ...rows.slice(0, 25).map(
        (row) =>
          `  ${(row.calls / requests).toFixed(2).padStart(9)} ${(row.total_exec_time / requests).toFixed(3).padStart(8)} ${(row.total_exec_time / row.calls).toFixed(3).padStart(9)} ${(row.shared_blks_hit / row.calls).toFixed(1).padStart(12)} ${(row.wal_records / row.calls).toFixed(1).padStart(13)}  ${row.toplevel ? '' : '> '}${row.query.slice(0, 110)}`,
      ),
    ];
  }
}

async function main() {
  rmSync(PROFILE_DIR, { recursive: true, force: true });
  mkdirSync(PROFILE_DIR, { recursive: true });
  const bench = await setUpBench(POSTGRES, {}, ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`]);
  const options = { apiKey: bench.server.adminKey, connections: CONNECTIONS, seconds: SECONDS };
  const bodies: Record<string, () => string> = {
    trivial: () => '{"query":"mutation { __typename }"}',
    spread: () => bench.usage(bench.account()),
    hot: () => bench.usage('hot-1'),
    balance: () =>
      JSON.stringify({ query: 'query($id: ID!) { account(id: $id) { balance(creditType: "credits") { available periodUsed } } }', variables: { id: bench.account() } }),
    batch: () =>
      JSON.stringify({
        query: 'mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }',
        variables: { inputs: Array.from({ length: 1_000 }, () => ({ accountId: bench.account(), featureKey: bench.featureKey, quantity: 1, idempotencyKey: crypto.randomUUID() })) },
      }),
  };
  // One connection, back to back: where the time of a lone call goes.
  // Over 200 accounts, as the issue measured.
  const someAccount = () => `acct-${1 + Math.floor(Math.random() * 200)}`;
  const alone: Record<string, () => string> = { alone: () => bench.usage(someAccount()), 'alone-trivial': () => '{"query":"mutation { __typename }"}' };
  const body = bodies[SCENARIO] ?? alone[SCENARIO];
  if (!body) throw new Error(`unknown scenario ${SCENARIO}; one of ${[...Object.keys(bodies), ...Object.keys(alone)].join(', ')}`);
  let summary: string;
  let requests: number;
  const databaseSide = new DatabaseSide(bench.sql);
  let serverCpu: number;
  let databaseLines: string[];
  let writeLines: string[] = [];
  let peakRss = '?';
  let window: Window;
  try {
    // A short warm-up, so that the pool's connections exist and the plans are made before measuring.
    await callEveryAccount(bench);
    await backToBack({ url: `${bench.server.url}/graphql`, apiKey: bench.server.adminKey }, body, { seconds: 2 });
    // The statistics a running system has (the server's jobs are off here), as `pnpm bench` does.
    await bench.sql.query('ANALYZE');
    await databaseSide.start();
    const writesBefore = await writeCounters(bench.sql);
    const serverCpuAtStart = cpuSeconds(bench.server.child.pid!);
    const measuredFrom = Date.now() - bench.server.spawnedAt;
    if (alone[SCENARIO]) {
      log(`profiling ${SCENARIO} for ${SECONDS} s on one connection, back to back`);
      const result = await backToBack({ url: `${bench.server.url}/graphql`, apiKey: bench.server.adminKey }, body, { seconds: SECONDS });
      requests = Math.round(result.rps * SECONDS);
      summary = `${SCENARIO}: ${result.rps.toFixed(0)} req/s, p50 ${result.p50.toFixed(2)} ms, p99 ${result.p99.toFixed(2)} ms, errors ${result.errors}`;
    } else {
      log(`profiling ${SCENARIO} for ${SECONDS} s with ${CONNECTIONS} connections`);
      const result = await load(bench.server, body, SCENARIO === 'batch' ? { ...options, connections: 4 } : options);
      requests = Math.round(result.rps * SECONDS);
      summary = `${SCENARIO}: ${result.rps.toFixed(0)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms, errors ${result.errors + result.non2xx}`;
    }
    serverCpu = cpuSeconds(bench.server.child.pid!) - serverCpuAtStart;
    peakRss = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${bench.server.child.pid!}/status`, 'utf8'))?.[1] ?? '?';
    window = { from: measuredFrom, to: Date.now() - bench.server.spawnedAt };
    databaseLines = await databaseSide.report(requests);
    // A backend reports its counters within a second while busy, within ten once idle.
    await new Promise((resolve) => setTimeout(resolve, 11_000));
    const writes = writesPerDebit(writesBefore, await writeCounters(bench.sql));
    const byTable = (pick: (entry: { rows: number; indexEntries: number }) => number) =>
      Object.entries(writes.byTable).map(([table, entry]) => `${table} ${pick(entry).toFixed(2)}`).join(', ');
    writeLines = [
      `rows written per usage event (${writes.debits} events): ${writes.rows.toFixed(2)} (${byTable((entry) => entry.rows)})`,
      `index entries written per usage event: ${writes.indexEntries.toFixed(2)} (${byTable((entry) => entry.indexEntries)})`,
    ];
  } finally {
    await bench.close();
  }
  const file = readdirSync(PROFILE_DIR).find((name) => name.endsWith('.cpuprofile'));
  if (!file) throw new Error('the server wrote no profile');
  const profile = JSON.parse(readFileSync(path.join(PROFILE_DIR, file), 'utf8')) as CpuProfile;
  process.stdout.write(
    [
      summary,
      `load average at the end: ${os.loadavg().map((value) => value.toFixed(2)).join(', ')}`,
      `server CPU: ${((1000 * serverCpu) / requests).toFixed(3)} ms a request (from /proc); peak RSS ${Math.round(Number(peakRss) / 1024)} MB`,
      ...databaseLines,
      ...writeLines,
      `profile: ${path.join('bench/results/profiles', file)} (the whole process; the figures below count only the measured run)`,
      '',
      'self time by package (of the busy time):',
      ...byPackage(profile, window),
      '',
      'self time by function (of the busy time):',
      ...summarize(profile, window, 40),
      '',
    ].join('\n'),
  );
  process.exit(0);
}

main().catch((error: unknown) => {
  process.stderr.write(`profile failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
