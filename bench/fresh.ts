import type pg from 'pg';
import { closedLoopWindows } from './openLoop.ts';
import { log, setUpBench } from './support.ts';

export interface FreshDatabaseRun {
  /** recordUsage a second on the hot account, per window from the first request on. */
  windows: number[];
  windowSeconds: number;
  /** The same load after an explicit ANALYZE: what the windows should be close to. */
  afterAnalyze: number;
  /** Rows the database read by sequential scan per debit, in the first run and after ANALYZE. */
  seqRowsPerDebit: { first: number; afterAnalyze: number };
  /** The growing tables' ANALYZEs (by anyone) during the first run. */
  analyzes: number;
  errors: number;
}

interface Counters {
  seqRows: number;
  debits: number;
  analyzes: number;
}

/**
 * Read from the statistics views: each backend reports its counts within about a second while busy
 * (and within ten once idle), so the run waits that out before reading.
 */
async function counters(sql: pg.Client, settle = true): Promise<Counters> {
  if (settle) await new Promise((resolve) => setTimeout(resolve, 11_000));
  const [row] = (
    await sql.query<{ seq_rows: string; debits: string; analyzes: string }>(
      `SELECT sum(seq_tup_read) AS seq_rows, sum(n_tup_ins) FILTER (WHERE relname = 'usage_events') AS debits,
              sum(analyze_count) FILTER (WHERE relname IN ('usage_events', 'ledger_entries', 'accounts', 'grants')) AS analyzes
       FROM pg_stat_user_tables`,
    )
  ).rows;
  return { seqRows: Number(row?.seq_rows ?? 0), debits: Number(row?.debits ?? 0), analyzes: Number(row?.analyzes ?? 0) };
}

/**
 * A new user's first minute: a fresh database, the server as `pnpm start` runs it (job runner on,
 * as by default), 1,000 accounts inserted and no ANALYZE, then load on one hot account at once.
 * Plans made while the tables were empty (a sequential scan is cheapest then) stay cached in every
 * connection until the tables' statistics are refreshed, and each debit costs more with every row.
 */
export async function freshDatabaseRun(postgresUrl: string, options: { seconds: number; connections: number }): Promise<FreshDatabaseRun> {
  const windowSeconds = 5;
  const bench = await setUpBench(postgresUrl, { JOBS_ENABLED: 'true' }, [], { accounts: 1_000, analyze: false });
  try {
    const target = { url: `${bench.server.url}/graphql`, apiKey: bench.server.adminKey };
    // Nothing has run on the tables yet: the load starts at once, as a new user's would.
    const start = await counters(bench.sql, false);
    log(`fresh database: recordUsage on one hot account for ${options.seconds} s from the start`);
    const first = await closedLoopWindows(target, () => bench.usage('hot-1'), { connections: options.connections, seconds: options.seconds, windowSeconds });
    const afterFirst = await counters(bench.sql);
    await bench.sql.query('ANALYZE');
    log('fresh database: the same after ANALYZE');
    const after = await closedLoopWindows(target, () => bench.usage('hot-1'), { connections: options.connections, seconds: 10, windowSeconds: 10 });
    const end = await counters(bench.sql);
    const perDebit = (from: Counters, to: Counters) => (to.seqRows - from.seqRows) / Math.max(1, to.debits - from.debits);
    return {
      windows: first.windows,
      windowSeconds,
      afterAnalyze: after.windows[0] ?? 0,
      seqRowsPerDebit: { first: perDebit(start, afterFirst), afterAnalyze: perDebit(afterFirst, end) },
      analyzes: afterFirst.analyzes - start.analyzes,
      errors: first.errors + after.errors,
    };
  } finally {
    await bench.close();
  }
}
