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

const RECORD_BATCH = `mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }`;

/** An account funded with plenty, and `count` usages of one credit recorded on it. */
async function recordUsages(target: TestServer, count: number): Promise<void> {
  const pool = unique('credits');
  const feature = await defineFeature(target, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(target, await definePlan(target, { allocations: [{ creditType: pool, amount: 100_000 }], featureKeys: [feature] }));
  for (let done = 0; done < count; done += 1_000) {
    const inputs = Array.from({ length: Math.min(1_000, count - done) }, () => ({ accountId, featureKey: feature, idempotencyKey: unique('k') }));
    const results = ok(await target.gql<any>(RECORD_BATCH, { inputs })).recordUsageBatch as Array<{ __typename: string }>;
    expect(results.every((result) => result.__typename === 'UsageRecorded')).toBe(true);
  }
}

async function usageEventsStatistics(target: TestServer): Promise<number> {
  const [events] = await target.app.database.statement<{ reltuples: number }>(`SELECT reltuples::float8 AS reltuples FROM pg_class WHERE relname = 'usage_events'`, []);
  return Number(events?.reltuples);
}

describe('planner statistics of a table grown several-fold', () => {
  // Runs first: the tables are as a fresh database has them (usage_events analyzed empty by its migration).
  it('are refreshed once it holds four times the rows they state (and 500), which changing by a tenth does not reach yet', async () => {
    const { database } = server.app;
    await recordUsages(server, 700);
    // PostgreSQL's connections report their row counts within seconds, not at once.
    const analyzed = new Set<string>();
    const deadline = Date.now() + 20_000;
    while (!analyzed.has('usage_events') && Date.now() < deadline) {
      expect(await analyzeGrownTables(database, 'changed')).not.toContain('usage_events');
      for (const table of await analyzeGrownTables(database, 'grown')) analyzed.add(table);
      if (!analyzed.has('usage_events')) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect([...analyzed]).toEqual(expect.arrayContaining(['usage_events', 'ledger_entries']));
    expect(await usageEventsStatistics(server)).toBeGreaterThanOrEqual(700);
    // 700 rows are not four times 700.
    expect(await analyzeGrownTables(database, 'grown')).not.toContain('usage_events');
  });
});

describe('the job runner', () => {
  let withJobs: TestServer;
  let ownDatabase: Awaited<ReturnType<typeof isolatedDatabase>>;
  beforeAll(async () => {
    ownDatabase = await isolatedDatabase();
    withJobs = await startTestServer({ JOBS_ENABLED: 'true', JOBS_INTERVAL_MS: '200', ...(ownDatabase.url ? { DATABASE_URL: ownDatabase.url } : {}) });
  });
  afterAll(async () => {
    await withJobs?.stop();
    await ownDatabase?.drop();
  });

  it('refreshes the statistics of a fresh database that fills up by itself, without waiting for its minutely check', async () => {
    // Its minutely check ran when the server started, on empty tables; the next is a minute away,
    // and 700 new rows are not a tenth more than 1,000 anyway: only the several-fold check analyzes
    // usage_events now, and the deadline only bounds a test on a loaded machine.
    await recordUsages(withJobs, 700);
    const deadline = Date.now() + 50_000;
    while ((await usageEventsStatistics(withJobs)) < 700 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
    expect(await usageEventsStatistics(withJobs)).toBeGreaterThanOrEqual(700);
  });
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
    expect([...analyzed]).toEqual(expect.arrayContaining(['usage_events', 'ledger_entries']));
    const [events] = await database.statement<{ reltuples: number }>(`SELECT reltuples::float8 AS reltuples FROM pg_class WHERE relname = 'usage_events'`, []);
    expect(Number(events?.reltuples)).toBeGreaterThanOrEqual(2_000);
    expect(await analyzeGrownTables(database)).not.toContain('usage_events');
  });
});
