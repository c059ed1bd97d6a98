import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, defineFeature, definePlan, ok } from './support/fixtures.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { startServerProcess, type ServerProcess } from './support/processServer.ts';
import { createPostgresDatabase, testDatabaseUrl, unique } from './support/server.ts';

const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skip = skipUnless('test/operationsShutdown.test.ts', [await postgresService(POSTGRES)]);
const CALLS = 200;
const ACCOUNTS = 4;
const COST = 3;
const ALLOCATION = 100_000;

const SPEND = `mutation Spend($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on UsageRecorded { usageEvent { id } } } }`;

interface Call {
  accountId: string;
  apiKey: string;
  idempotencyKey: string;
}

/** Raw HTTP, no retries: what a client sees when the server goes away under it. */
async function send(url: string, call: Call, featureKey: string): Promise<{ answered: true; typename: string } | { answered: false }> {
  try {
    const response = await fetch(`${url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${call.apiKey}` },
      body: JSON.stringify({ query: SPEND, variables: { input: { accountId: call.accountId, featureKey, quantity: 1, idempotencyKey: call.idempotencyKey } } }),
    });
    const body = (await response.json()) as { data?: { recordUsage?: { __typename: string } } };
    return { answered: true, typename: body.data?.recordUsage?.__typename ?? `HTTP ${response.status}` };
  } catch {
    return { answered: false };
  }
}

describe.skipIf(skip)('graceful shutdown (needs PostgreSQL whatever TEST_DB says)', () => {
  let database: { url: string; drop(): Promise<void> };
  let db: pg.Client;
  const servers: ServerProcess[] = [];

  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES);
  });
  afterAll(async () => {
    for (const server of servers) await server.stop('SIGKILL');
    await db?.end();
    await database?.drop();
  });

  it('SIGTERM amid 200 recordUsage calls: answered calls are committed, unanswered ones uncharged, and their retries on another instance charge each key once', async () => {
    const first = await startServerProcess({ DATABASE_URL: database.url, JOBS_ENABLED: 'false', SHUTDOWN_TIMEOUT_MS: '20000' });
    servers.push(first);
    const pool = unique('credits');
    const featureKey = await defineFeature(first, { creditType: pool, unitCredits: COST });
    const plan = await definePlan(first, { allocations: [{ creditType: pool, amount: ALLOCATION }], featureKeys: [featureKey] });
    const accounts: Array<{ accountId: string; apiKey: string }> = [];
    for (let index = 0; index < ACCOUNTS; index += 1) {
      const accountId = await createAccount(first, plan);
      const apiKey = ok(
        await first.gql(`mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }`, { input: { role: 'ACCOUNT', accountId } }),
      ).createApiKey.secret as string;
      accounts.push({ accountId, apiKey });
    }
    const calls: Call[] = Array.from({ length: CALLS }, (_, index) => ({ ...accounts[index % ACCOUNTS]!, idempotencyKey: `shutdown-${index}` }));

    let answeredSoFar = 0;
    let signalled: () => void = () => {};
    const signalSent = new Promise<void>((resolve) => {
      signalled = resolve;
    });
    const outcomes = calls.map((call) =>
      send(first.url, call, featureKey).then((outcome) => {
        answeredSoFar += 1;
        // SIGTERM once the first answers are back: most calls are then waiting on their account's lock.
        if (answeredSoFar === 10) signalled();
        return outcome;
      }),
    );
    await signalSent;
    const signalledAt = Date.now();
    const exit = first.stop('SIGTERM');
    const results = await Promise.all(outcomes);
    const exitCode = await exit;
    const shutdownMs = Date.now() - signalledAt;
    expect(exitCode).toBe(0);

    const answered = calls.filter((_, index) => results[index]!.answered);
    const unanswered = calls.filter((_, index) => !results[index]!.answered);
    for (const [index, result] of results.entries()) if (result.answered) expect(result.typename, calls[index]!.idempotencyKey).toBe('UsageRecorded');
    expect(answered.length).toBeGreaterThanOrEqual(10);

    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    const committed = new Set(
      (await db.query<{ idempotency_key: string }>(`SELECT idempotency_key FROM usage_events WHERE feature_key = $1`, [featureKey])).rows.map((row) => row.idempotency_key),
    );
    for (const call of answered) expect(committed.has(call.idempotencyKey), `answered ${call.idempotencyKey} was not committed`).toBe(true);
    for (const call of unanswered) expect(committed.has(call.idempotencyKey), `unanswered ${call.idempotencyKey} was charged`).toBe(false);

    // The clients retry what got no answer, with the same keys, on another instance; and, to be
    // sure, everything that was answered too (a replay is not charged again).
    const second = await startServerProcess({ DATABASE_URL: database.url, JOBS_ENABLED: 'false' });
    servers.push(second);
    const retried = await Promise.all(calls.map((call) => send(second.url, call, featureKey)));
    for (const result of retried) expect(result).toEqual({ answered: true, typename: 'UsageRecorded' });

    const events = await db.query<{ account_id: string; events: number }>(
      `SELECT account_id, count(*)::int AS events FROM usage_events WHERE feature_key = $1 GROUP BY account_id`,
      [featureKey],
    );
    expect(events.rows.reduce((sum, row) => sum + row.events, 0)).toBe(CALLS);
    for (const { accountId, apiKey } of accounts) {
      const keys = calls.filter((call) => call.accountId === accountId).length;
      const available = ok(
        await second.gql(`query($id: ID!, $type: String!) { account(id: $id) { balance(creditType: $type) { available } } }`, { id: accountId, type: pool }, apiKey),
      ).account.balance.available;
      expect(available).toBe(ALLOCATION - keys * COST);
    }
    console.log(`shutdown: ${answered.length} answered, ${unanswered.length} unanswered, exit ${exitCode} after ${shutdownMs} ms`);
  });
});
