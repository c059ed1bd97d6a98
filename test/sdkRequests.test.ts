import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BillingApiError, BillingNetworkError, createBillingClient } from '../packages/sdk/src/index.ts';
import { createAccount, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  await server?.stop();
});

interface Seen {
  headers: IncomingMessage['headers'];
  body: { query: string; variables: { input?: { idempotencyKey?: string } } };
  at: number;
}

/** A scripted GraphQL endpoint: answers each request with the next reply (the last one repeats). */
async function scripted(replies: Array<(response: ServerResponse) => void>): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const http: Server = createServer((request, response) => {
    let text = '';
    request.on('data', (chunk) => (text += chunk));
    request.on('end', () => {
      seen.push({ headers: request.headers, body: JSON.parse(text), at: Date.now() });
      replies[Math.min(seen.length - 1, replies.length - 1)]!(response);
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(http.address() as { port: number }).port}/graphql`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      }),
  };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) => (response: ServerResponse) => {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
};
const never = () => () => {};
const recorded = { data: { recordUsage: { __typename: 'UsageRecorded' } } };

describe('SDK request controls', () => {
  it('a server that never answers: the default timeout (or the call’s) ends the call with TIMEOUT', async () => {
    const silent = await scripted([never()]);
    try {
      const client = createBillingClient({ url: silent.url, apiKey: 'k', timeout: 300, retries: 0 });
      const started = Date.now();
      const error = await client.plans().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(BillingNetworkError);
      expect(error).toMatchObject({ code: 'TIMEOUT' });
      expect(Date.now() - started).toBeLessThan(5_000);
      const perCall = await client.plans({ timeout: 100 }).catch((caught: unknown) => caught);
      expect(perCall).toMatchObject({ code: 'TIMEOUT' });
      const defaults = createBillingClient({ url: silent.url, apiKey: 'k' });
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 100);
      const aborted = await defaults.plans({ signal: controller.signal }).catch((caught: unknown) => caught);
      expect(aborted).toBeInstanceOf(BillingNetworkError);
      expect(aborted).toMatchObject({ code: 'ABORTED' });
    } finally {
      await silent.close();
    }
  });

  it('retries a retryable error and a gateway error with the same idempotency key, request id and headers, after a jittered wait', async () => {
    const flaky = await scripted([
      json(503, { errors: [{ message: 'try again', extensions: { code: 'UNAVAILABLE', retryable: true } }] }),
      json(502, { message: 'bad gateway' }),
      json(200, recorded),
    ]);
    try {
      const client = createBillingClient({ url: flaky.url, apiKey: 'k', retryDelayMs: 100, headers: { 'x-partner': 'acme' } });
      const result = await client.recordUsage({ accountId: 'a', featureKey: 'f' }, { headers: { 'x-trace': 't-1' }, idempotencyKey: 'intent-1' });
      expect(result.__typename).toBe('UsageRecorded');
      expect(flaky.seen).toHaveLength(3);
      expect(new Set(flaky.seen.map((request) => request.body.variables.input?.idempotencyKey))).toEqual(new Set(['intent-1']));
      expect(new Set(flaky.seen.map((request) => request.headers['x-request-id'])).size).toBe(1);
      for (const request of flaky.seen) expect(request.headers).toMatchObject({ 'x-partner': 'acme', 'x-trace': 't-1', authorization: 'Bearer k' });
      // Jitter: the first wait is between half and all of retryDelayMs.
      expect(flaky.seen[1]!.at - flaky.seen[0]!.at).toBeGreaterThanOrEqual(45);
    } finally {
      await flaky.close();
    }
  });

  it('a call without a key is not repeated after a retryable error; a 429 is, after its Retry-After', async () => {
    const busy = await scripted([json(503, { errors: [{ message: 'try again', extensions: { code: 'UNAVAILABLE', retryable: true } }] }, { 'x-request-id': 'srv-1' })]);
    try {
      const client = createBillingClient({ url: busy.url, apiKey: 'k', retryDelayMs: 10 });
      const error = await client.createAccount({ name: 'x', planCode: 'p' }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(BillingApiError);
      expect(error).toMatchObject({ code: 'UNAVAILABLE', retryable: true, requestId: 'srv-1', status: 503 });
      expect(busy.seen).toHaveLength(1);
    } finally {
      await busy.close();
    }
    const limited = await scripted([json(429, { errors: [{ message: 'slow down', extensions: { code: 'RATE_LIMITED' } }] }, { 'retry-after': '1' }), json(200, { data: { createAccount: { id: 'acc' } } })]);
    try {
      const client = createBillingClient({ url: limited.url, apiKey: 'k' });
      expect((await client.createAccount({ name: 'x', planCode: 'p' })).id).toBe('acc');
      expect(limited.seen).toHaveLength(2);
      expect(limited.seen[1]!.at - limited.seen[0]!.at).toBeGreaterThanOrEqual(1_000);
    } finally {
      await limited.close();
    }
  });

  it('the real server’s rate limit: retried after Retry-After, or a typed RATE_LIMITED error with the request id', async () => {
    const limited = await startTestServer({ JOBS_ENABLED: 'false' }, { security: { rateLimit: { perSecond: 1, burst: 1, burstWindowSeconds: 1, keyPrefix: unique('rate') } } });
    try {
      const patient = createBillingClient({ url: limited.graphqlUrl, apiKey: limited.adminKey });
      const started = Date.now();
      const answers = await Promise.all([patient.plans(), patient.plans(), patient.plans()]);
      expect(answers).toHaveLength(3);
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      const hasty = createBillingClient({ url: limited.graphqlUrl, apiKey: limited.adminKey, retries: 0 });
      const errors = await Promise.all([hasty.plans(), hasty.plans(), hasty.plans()].map((call) => call.then(() => null, (error: unknown) => error)));
      const refused = errors.find((error) => error !== null);
      expect(refused).toBeInstanceOf(BillingApiError);
      expect(refused).toMatchObject({ code: 'RATE_LIMITED', status: 429, retryable: true });
      expect((refused as BillingApiError).retryAfterMs).toBeGreaterThanOrEqual(1_000);
      expect((refused as BillingApiError).requestId).toMatch(/\S/);
    } finally {
      await limited.stop();
    }
  });

  it('the request id of an error is the server’s x-request-id', async () => {
    const error = await operator(server)
      .recordUsage({ accountId: 'no-such-account', featureKey: 'f' }, { headers: {} })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(BillingApiError);
    expect((error as BillingApiError).requestId).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe('SDK pagination', () => {
  it('.list() iterates every node of a connection across pages', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
    const client = operator(server);
    const ids: string[] = [];
    for (let index = 0; index < 7; index += 1) {
      const result = await client.recordUsage({ accountId, featureKey: feature });
      if (result.__typename === 'UsageRecorded') ids.push(result.usageEvent.id);
    }
    const listed: string[] = [];
    for await (const event of client.usageEvents.list(accountId, { first: 3 })) listed.push(event.id);
    expect(new Set(listed)).toEqual(new Set(ids));
    expect(listed).toHaveLength(7);
    const ledger: string[] = [];
    for await (const entry of client.ledger.list(accountId, { first: 2 })) ledger.push(entry.type);
    expect(ledger.length).toBeGreaterThanOrEqual(8);
    let grants = 0;
    for await (const _grant of client.grants.list(accountId)) grants += 1;
    expect(grants).toBe(1);
    let audit = 0;
    for await (const _event of client.auditEvents.list({ first: 1 })) if (++audit === 2) break;
    expect(audit).toBe(2);
  });
});
