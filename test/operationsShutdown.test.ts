import http from 'node:http';
import net from 'node:net';
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
const SHUTDOWN_TIMEOUT_MS = 20_000;

const SPEND = `mutation Spend($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on UsageRecorded { usageEvent { id } } } }`;

interface Call {
  accountId: string;
  apiKey: string;
  idempotencyKey: string;
}

interface Sent {
  /** Resolves once the whole request is written to a connected socket. */
  written: Promise<void>;
  outcome: Promise<{ answered: true; typename: string } | { answered: false }>;
}

/** Raw HTTP, no retries, one connection per call: what a client sees when the server goes away under it. */
function send(url: string, call: Call, featureKey: string): Sent {
  const body = JSON.stringify({ query: SPEND, variables: { input: { accountId: call.accountId, featureKey, quantity: 1, idempotencyKey: call.idempotencyKey } } });
  let written: () => void = () => {};
  const writtenPromise = new Promise<void>((resolve) => {
    written = resolve;
  });
  const outcome = new Promise<{ answered: true; typename: string } | { answered: false }>((resolve) => {
    const request = http.request(`${url}/graphql`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${call.apiKey}` },
    });
    request.on('finish', () => written());
    request.on('error', () => {
      written();
      resolve({ answered: false });
    });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', () => resolve({ answered: false }));
      response.on('end', () => {
        try {
          const parsed = JSON.parse(Buffer.concat(chunks).toString()) as { data?: { recordUsage?: { __typename: string } } };
          resolve({ answered: true, typename: parsed.data?.recordUsage?.__typename ?? `HTTP ${response.statusCode}` });
        } catch {
          resolve({ answered: true, typename: `HTTP ${response.statusCode}` });
        }
      });
    });
    request.end(body);
  });
  return { written: writtenPromise, outcome };
}

/**
 * A readiness probe that is already on the server when SIGTERM comes: its connection is open and
 * its request line and first header are received, the rest is sent on `finish()`. (A new connection
 * is still taken in while requests are draining, but a load balancer sees 503 and stops sending.)
 */
async function readinessProbe(url: string): Promise<{ finish(): Promise<string> }> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write('GET /readyz HTTP/1.1\r\nHost: probe\r\n');
  let received = '';
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString();
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()).once('error', () => resolve()));
  return {
    async finish() {
      socket.write('\r\n');
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 5_000))]);
      socket.destroy();
      return received.split('\r\n')[0] ?? '';
    },
  };
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

  it('SIGTERM amid 200 recordUsage calls: every call already sent is answered and committed, /readyz says 503 while draining, the process exits 0 within the timeout, and retries on another instance charge each key once', async () => {
    const first = await startServerProcess({ DATABASE_URL: database.url, JOBS_ENABLED: 'false', SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) });
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

    const probe = await readinessProbe(first.url);
    const sent = calls.map((call) => send(first.url, call, featureKey));
    let answeredSoFar = 0;
    const outcomes = sent.map(({ outcome }) =>
      outcome.then((result) => {
        answeredSoFar += 1;
        return result;
      }),
    );
    // Every request is on the server before SIGTERM: written to a connected socket, and a moment
    // for the server to read it. Most are then waiting on their account's lock.
    await Promise.all(sent.map(({ written }) => written));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const pendingAtSignal = CALLS - answeredSoFar;
    const signalledAt = Date.now();
    const exit = first.stop('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const readiness = await probe.finish();
    const results = await Promise.all(outcomes);
    const exitCode = await exit;
    const shutdownMs = Date.now() - signalledAt;
    expect(exitCode).toBe(0);
    expect(shutdownMs).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    // The drain was real: many calls were still waiting when the signal came.
    expect(pendingAtSignal).toBeGreaterThanOrEqual(50);
    expect(readiness).toBe('HTTP/1.1 503 Service Unavailable');

    // Every request sent before SIGTERM is answered, and charged.
    expect(results.filter((result) => !result.answered)).toHaveLength(0);
    for (const [index, result] of results.entries()) expect(result, calls[index]!.idempotencyKey).toEqual({ answered: true, typename: 'UsageRecorded' });
    const answered = calls.filter((_, index) => results[index]!.answered);
    const unanswered = calls.filter((_, index) => !results[index]!.answered);

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
    const retried = await Promise.all(calls.map((call) => send(second.url, call, featureKey).outcome));
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
    console.log(`shutdown: ${pendingAtSignal} of ${CALLS} pending at SIGTERM, ${answered.length} answered, ${unanswered.length} unanswered, exit ${exitCode} after ${shutdownMs} ms`);
  });
});
