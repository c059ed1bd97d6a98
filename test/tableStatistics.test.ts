import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { analyzeGrownTables } from '../packages/server/src/jobs/tableStatistics.ts';
import { createAccount, defineFeature, definePlan, ok } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

// A database of its own: the thresholds are relative to the tables' size, which other test files
// sharing a database would change.
let server: TestServer;
let database: Awaited<ReturnType<typeof isolatedDatabase>>;
beforeAll(async () => {
  database = await isolatedDatabase();
  server = await startTestServer({ JOBS_ENABLED: 'false', ...(database.url ? { DATABASE_URL: database.url } : {}) });
});
afterAll(async () => {
  await server?.stop();
  await database?.drop();
});

describe('planner statistics of the growing tables', () => {
  it('are refreshed once a table has grown by a tenth, and not again until it grows further', async () => {
    const { database } = server.app;
    await analyzeGrownTables(database);
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100_000 }], featureKeys: [feature] }));
    const mutation = `mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }`;
    for (let batch = 0; batch < 2; batch += 1) {
      const inputs = Array.from({ length: 1_000 }, () => ({ accountId, featureKey: feature, idempotencyKey: unique('k') }));
      const results = ok(await server.gql<any>(mutation, { inputs })).recordUsageBatch as Array<{ __typename: string }>;
      expect(results.every((result) => result.__typename === 'UsageRecorded')).toBe(true);
    }

    // PostgreSQL's connections report their row counts within seconds, not at once.
    const analyzed = new Set<string>();
    const deadline = Date.now() + 20_000;
    while (!analyzed.has('usage_events') && Date.now() < deadline) {
      for (const table of await analyzeGrownTables(database)) analyzed.add(table);
      if (!analyzed.has('usage_events')) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect([...analyzed]).toEqual(expect.arrayContaining(['usage_events', 'usage_draws', 'ledger_entries']));
    const [events] = await database.statement<{ reltuples: number }>(`SELECT reltuples::float8 AS reltuples FROM pg_class WHERE relname = 'usage_events'`, []);
    expect(Number(events?.reltuples)).toBeGreaterThanOrEqual(2_000);
    expect(await analyzeGrownTables(database)).not.toContain('usage_events');
  });
});
