import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUERY_LIMITS } from '../packages/server/src/graphql/security.ts';
import { createAccount, createKey, defineFeature, definePlan, ok } from './support/fixtures.ts';
import { startServerProcess, type ServerProcess } from './support/processServer.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { createPostgresDatabase, testDatabaseUrl, unique } from './support/server.ts';

// On PostgreSQL whatever TEST_DB says: the embedded database runs each query on the server's own
// event loop, so there /healthz waits for the longest single query (a full page: 1-2 s on a loaded
// machine) whatever the limits do.
const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skip = skipUnless('test/queryCostLoad.test.ts', [await postgresService(POSTGRES)]);

/** The heap cap `pnpm start` gives Node (package.json's start script). */
const HEAP_CAP_MB = Number(/--max-old-space-size=(\d+)/.exec(JSON.parse(readFileSync('package.json', 'utf8')).scripts.start)?.[1]);

function rssOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

let server: ServerProcess;
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let accountId: string;
let accountKey: string;

beforeAll(async () => {
  if (skip) return;
  database = await createPostgresDatabase(POSTGRES);
  // As `pnpm start` runs it: the same heap cap; rate limits high enough that only cost limits apply.
  server = await startServerProcess(
    { JOBS_ENABLED: 'false', LOG_LEVEL: 'error', DATABASE_URL: database.url },
    [`--max-old-space-size=${HEAP_CAP_MB}`],
  );
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000_000 }], featureKeys: [feature] }));
  accountKey = await createKey(server, 'ACCOUNT', accountId);
  // 500 events, each drawn from a grant, with metadata: a full page is a large answer.
  for (let batch = 0; batch < 5; batch += 1) {
    const inputs = Array.from({ length: 100 }, (_, index) => ({
      accountId,
      featureKey: feature,
      quantity: 1,
      idempotencyKey: `load-${batch}-${index}`,
      metadata: { note: 'x'.repeat(2_000), batch, index },
    }));
    ok(await server.gql(`mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }`, { inputs }));
  }
}, 180_000);
afterAll(async () => {
  await server?.stop();
  await database?.drop();
});

describe.skipIf(skip)(`20 maximal queries in parallel against a server with a ${HEAP_CAP_MB} MB heap`, () => {
  it('are all refused or answered; /healthz answers within a second throughout; RSS stays bounded', async () => {
    const event = `edges { node { id credits quantity metadata tags occurredAt draws { credits grant { id amount remaining } } } }`;
    const aliases = (count: number) => Array.from({ length: count }, (_, index) => `u${index}: usageEvents(first: $f) { ${event} }`).join(' ');
    // Every alias allowed (refused: costlier than the limit) and the largest that fits (one full page).
    const maximal = `query($id: ID!, $f: Int) { account(id: $id) { ${aliases(QUERY_LIMITS.maxAliases)} } }`;
    const largestAllowed = `query($id: ID!, $f: Int) { account(id: $id) { ${aliases(1)} } }`;

    const rssBefore = rssOf(server.child.pid!);
    let peakRss = rssBefore;
    let slowestHealth = 0;
    let running = true;
    const watcher = (async () => {
      while (running) {
        const started = Date.now();
        const healthy = await fetch(`${server.url}/healthz`, { signal: AbortSignal.timeout(5_000) }).then((response) => response.ok, () => false);
        slowestHealth = Math.max(slowestHealth, healthy ? Date.now() - started : Infinity);
        peakRss = Math.max(peakRss, rssOf(server.child.pid!));
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();

    const outcomes = await Promise.all(
      Array.from({ length: 20 }, async (_, index) => {
        const response = await server.gql(index % 2 === 0 ? maximal : largestAllowed, { id: accountId, f: 500 }, accountKey);
        if (response.errors) return response.errors.map((error) => error.extensions?.code).join(',');
        return `answered:${response.data?.account?.u0?.edges?.length}`;
      }),
    );
    running = false;
    await watcher;

    console.log(`20 parallel: ${JSON.stringify(outcomes.reduce<Record<string, number>>((counts, outcome) => ({ ...counts, [outcome]: (counts[outcome] ?? 0) + 1 }), {}))}; slowest /healthz ${slowestHealth} ms; RSS ${Math.round(rssBefore / 2 ** 20)} → peak ${Math.round(peakRss / 2 ** 20)} MB`);
    expect(server.child.exitCode).toBeNull();
    expect(outcomes.filter((outcome) => outcome === 'QUERY_TOO_COSTLY')).toHaveLength(10);
    for (const outcome of outcomes.filter((item) => item !== 'QUERY_TOO_COSTLY')) expect(['answered:500', 'SERVER_BUSY']).toContain(outcome);
    expect(outcomes.filter((outcome) => outcome === 'answered:500').length).toBeGreaterThan(0);
    expect(slowestHealth).toBeLessThan(1_000);
    expect(peakRss - rssBefore).toBeLessThan(HEAP_CAP_MB * 1024 * 1024);
  }, 180_000);
});
