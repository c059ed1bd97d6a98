import { execSync } from 'node:child_process';
import autocannon from 'autocannon';
import pg from 'pg';
import WebSocket from 'ws';
import { createBillingClient, type BillingClient } from '../packages/sdk/src/index.ts';
import { startServerProcess, type ServerProcess } from '../test/support/processServer.ts';
import { createPostgresDatabase } from '../test/support/server.ts';

export const BENCH_ACCOUNTS = 10_000;

export function log(message: string) {
  process.stderr.write(`[bench] ${message}\n`);
}

export interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

export async function load(
  server: ServerProcess,
  body: () => string,
  options: { connections: number; apiKey: string; seconds: number; rate?: number },
): Promise<LoadResult> {
  const result = await autocannon({
    url: `${server.url}/graphql`,
    method: 'POST',
    connections: options.connections,
    duration: options.seconds,
    ...(options.rate ? { overallRate: options.rate } : {}),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${options.apiKey}` },
    requests: [{ setupRequest: (request) => ({ ...request, body: body() }) }],
  });
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors, non2xx: result.non2xx };
}

/** Accounts `${prefix}1…count` on one plan, each with one PLAN grant of `amount` (and its ledger entry). */
export async function seedAccounts(client: pg.Client, count: number, planId: string, creditType: string, amount: number, periodEnd: Date, prefix: string) {
  await client.query(
    `INSERT INTO accounts (id, name, plan_id, period_anchor, period_index, current_period_start, current_period_end, created_at)
     SELECT $1 || i, 'bench ' || i, $2, $3, 0, $3, $4, $3 FROM generate_series(1, $5) AS i`,
    [prefix, planId, new Date(periodEnd.getTime() - 30 * 86_400_000), periodEnd, count],
  );
  await client.query(
    `WITH granted AS (
       INSERT INTO grants (id, account_id, credit_type, source, amount, remaining, priority, effective_at, expires_at, period_start, created_at)
       SELECT 'g-' || $1 || i, $1 || i, $2, 'PLAN', $3, $3, 20, $4, $5, $4, $4 FROM generate_series(1, $6) AS i
       RETURNING id, account_id, amount, created_at)
     INSERT INTO ledger_entries (account_id, grant_id, type, credits, created_at) SELECT account_id, id, 'GRANT', amount, created_at FROM granted`,
    [prefix, creditType, amount, new Date(periodEnd.getTime() - 30 * 86_400_000), periodEnd, count],
  );
}

export interface BenchSetup {
  server: ServerProcess;
  admin: BillingClient;
  sql: pg.Client;
  databaseUrl: string;
  planId: string;
  featureKey: string;
  /** A random one of the seeded accounts. */
  account(): string;
  /** A recordUsage request body for one credit on the account. */
  usage(accountId: string): string;
  close(): Promise<void>;
}

/**
 * A fresh database on the PostgreSQL server, the service on it as its own process (NODE_ENV=production,
 * rate limits out of the way: the load is one key, and the limiter would measure itself), a feature, a plan and
 * `accounts` (default 10,000) funded accounts (`acct-N`) plus one hot one (`hot-1`), then the
 * planner's statistics refreshed unless `analyze` is false.
 */
export async function setUpBench(
  postgresUrl: string,
  serverEnv: Record<string, string> = {},
  nodeArgs: readonly string[] = [],
  options: { accounts?: number; analyze?: boolean } = {},
): Promise<BenchSetup> {
  const accounts = options.accounts ?? BENCH_ACCOUNTS;
  const database = await createPostgresDatabase(postgresUrl);
  log(`database ${database.url}`);
  // The server as `pnpm start` runs it: the bundle, not the TypeScript sources through tsx.
  execSync('pnpm -s build', { stdio: 'inherit' });
  const server = await startServerProcess({
    DATABASE_URL: database.url,
    // As the image runs it (Dockerfile): outside production, graphql-js checks every instanceof
    // across realms, a twentieth of the server's CPU in a batch's input coercion.
    NODE_ENV: 'production',
    JOBS_ENABLED: 'false',
    LOG_LEVEL: 'error',
    RATE_LIMIT_PER_SECOND: '1000000',
    RATE_LIMIT_BURST: '10000000',
    // The alert-latency run follows its 1,000 accounts over the SDK's one WebSocket.
    WS_MAX_SUBSCRIPTIONS_PER_SOCKET: '10000',
    ...serverEnv,
  }, nodeArgs, 'bundle');
  const admin = createBillingClient({ url: `${server.url}/graphql`, apiKey: server.adminKey, webSocketImpl: WebSocket });
  const sql = new pg.Client({ connectionString: database.url });
  await sql.connect();
  const feature = await admin.upsertFeature({ key: 'bench.action', name: 'bench', creditType: 'credits', pricing: 'PER_UNIT', unitCredits: 1 });
  await admin.upsertPlan({
    code: 'bench',
    name: 'bench',
    interval: 'MONTH',
    price: { amount: 0, currency: 'USD' },
    allocations: [{ creditType: 'credits', amount: 1_000 }],
    featureKeys: [feature.key],
  });
  const planId = (await sql.query<{ id: string }>(`SELECT id FROM plans WHERE code = 'bench'`)).rows[0]!.id;
  const periodEnd = new Date(Date.now() + 20 * 86_400_000);
  log(`seeding ${accounts} accounts`);
  await seedAccounts(sql, accounts, planId, 'credits', 1_000_000_000, periodEnd, 'acct-');
  await seedAccounts(sql, 1, planId, 'credits', 1_000_000_000_000, periodEnd, 'hot-');
  if (options.analyze ?? true) await sql.query('ANALYZE');
  return {
    server,
    admin,
    sql,
    databaseUrl: database.url,
    planId,
    featureKey: feature.key,
    account: () => `acct-${1 + Math.floor(Math.random() * accounts)}`,
    usage: (accountId) =>
      JSON.stringify({
        query: 'mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }',
        variables: { input: { accountId, featureKey: feature.key, quantity: 1, idempotencyKey: crypto.randomUUID() } },
      }),
    async close() {
      await admin.close();
      await sql.end();
      await server.stop();
      await database.drop();
    },
  };
}

export interface WriteCounters {
  tables: Map<string, { inserted: number; updated: number; hotUpdated: number; indexes: number }>;
}

/**
 * What the database counts of the writes to each table: rows inserted and updated, updates that
 * needed no new index entries (HOT), and the table's indexes. A backend reports within a second while
 * busy, within ten once idle: read it after a while without the load being measured.
 */
export async function writeCounters(sql: pg.Client): Promise<WriteCounters> {
  const rows = (
    await sql.query<{ relname: string; inserted: string; updated: string; hot: string; indexes: string }>(
      `SELECT s.relname, s.n_tup_ins AS inserted, s.n_tup_upd AS updated, s.n_tup_hot_upd AS hot,
              (SELECT count(*) FROM pg_index i WHERE i.indrelid = s.relid) AS indexes
       FROM pg_stat_user_tables s`,
    )
  ).rows;
  return {
    tables: new Map(rows.map((row) => [row.relname, { inserted: Number(row.inserted), updated: Number(row.updated), hotUpdated: Number(row.hot), indexes: Number(row.indexes) }])),
  };
}

/**
 * Per usage event recorded between two readings: rows written (inserted or updated) and index entries
 * written (an insert adds one to each index of its table, an update that is not HOT too), and by table.
 */
export function writesPerDebit(before: WriteCounters, after: WriteCounters): { debits: number; rows: number; indexEntries: number; byTable: Record<string, { rows: number; indexEntries: number }> } {
  const debits = (after.tables.get('usage_events')?.inserted ?? 0) - (before.tables.get('usage_events')?.inserted ?? 0);
  const byTable: Record<string, { rows: number; indexEntries: number }> = {};
  let rows = 0;
  let indexEntries = 0;
  for (const [table, now] of after.tables) {
    const then = before.tables.get(table) ?? { inserted: 0, updated: 0, hotUpdated: 0, indexes: now.indexes };
    const inserted = now.inserted - then.inserted;
    const updated = now.updated - then.updated;
    const coldUpdated = updated - (now.hotUpdated - then.hotUpdated);
    if (inserted + updated === 0) continue;
    const entry = { rows: (inserted + updated) / Math.max(1, debits), indexEntries: ((inserted + coldUpdated) * now.indexes) / Math.max(1, debits) };
    byTable[table] = entry;
    rows += entry.rows;
    indexEntries += entry.indexEntries;
  }
  return { debits, rows, indexEntries, byTable };
}

/**
 * Every seeded account charged once, in batches of 1,000: a running instance has seen its callers
 * (an account's first call on an instance resolves its reference, one query more).
 */
export async function callEveryAccount(bench: BenchSetup, accounts = BENCH_ACCOUNTS): Promise<void> {
  for (let first = 1; first <= accounts; first += 1_000) {
    const inputs = Array.from({ length: Math.min(1_000, accounts - first + 1) }, (_, index) => ({
      accountId: `acct-${first + index}`,
      featureKey: bench.featureKey,
      quantity: 1,
      idempotencyKey: crypto.randomUUID(),
    }));
    const response = await bench.server.gql('mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }', { inputs });
    if (response.errors) throw new Error(`warm-up batch failed: ${JSON.stringify(response.errors)}`);
  }
}
