import type { Database } from '../db/database.ts';

/** The tables each debit grows or rewrites, and looks up by key. */
const GROWING_TABLES = ['usage_events', 'ledger_entries', 'grants', 'period_usage_totals', 'accounts', 'reservations', 'alerts', 'refused_requests'];

/**
 * A table is "grown several-fold" once it holds this many times the rows its statistics state (none
 * when never analyzed or analyzed empty), and at least GROWN_MIN_ROWS: a fresh database is analyzed
 * at a few hundred rows, then at four times that, and so on, each time within seconds.
 */
const GROWN_FACTOR = 4;
const GROWN_MIN_ROWS = 500;

/**
 * Which tables to analyze:
 * - 'changed': changed by a tenth since last analyzed (and by at least 1,000 rows), as autovacuum
 *   would; the job runner checks it every minute, for the drift of tables that are no longer small.
 * - 'grown': grown several-fold since last analyzed; the job runner checks it every few seconds, so
 *   that a fresh database, whose tables filled after its plans were made on them empty, does not
 *   run on those plans for a minute.
 */
export type StatisticsRule = 'changed' | 'grown';

/**
 * Refreshes the planner's statistics of the growing tables the rule selects. The embedded database
 * has no autovacuum at all, and a server may run with it off; without statistics, a plan made while
 * a table was nearly empty (a sequential scan is cheapest then) stays cached in every connection
 * (record_usage_hot_batch's generic plan, the foreign-key checks' plans), and each debit's key
 * lookups and foreign-key checks then cost more with every row the table gains. An ANALYZE replans
 * them in every connection. Measured on the hot path: 1.0 ms of database CPU per debit with
 * statistics, rising steadily past 7 ms after 12,000 debits without.
 */
export async function analyzeGrownTables(database: Pick<Database, 'statement'>, rule: StatisticsRule = 'changed'): Promise<string[]> {
  const condition =
    rule === 'changed'
      ? 's.n_mod_since_analyze >= 1000 + 0.1 * s.n_live_tup'
      : `s.n_live_tup >= ${GROWN_MIN_ROWS} AND s.n_live_tup >= ${GROWN_FACTOR} * greatest(c.reltuples, 0)`;
  const grown = await database.statement<{ relname: string }>(
    `SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
     WHERE s.schemaname = current_schema() AND s.relname = ANY ($1::text[]) AND ${condition}`,
    [GROWING_TABLES],
  );
  for (const { relname } of grown) await database.statement(`ANALYZE "${relname.replaceAll('"', '""')}"`, []);
  return grown.map((row) => row.relname);
}
