import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { createAccount, defineFeature, definePlan, grantCredits, ok, operator, recordUsage } from './support/fixtures.ts';
import { WebSocket } from 'ws';
import { connectLive } from './support/live.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/** The remaining edges of issue 15 (item 10), each through the public API. */
const METRICS_TOKEN = 'metrics-token-0123456789abcdef';
let fake: FakeStripe;
let server: TestServer;
let strict: TestServer;
let feature: string;
let accountId: string;
let pack: string;

const codes = (response: { errors?: Array<{ extensions?: { code?: string } }> }) => response.errors?.map((error) => error.extensions?.code);

async function post(target: TestServer, headers: Record<string, string>, query = `{ viewer { role } }`): Promise<Response> {
  return fetch(target.graphqlUrl, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ query }) });
}

beforeAll(async () => {
  fake = await startFakeStripe();
  server = await startTestServer({ STRIPE_SECRET_KEY: 'sk_test_fake', STRIPE_WEBHOOK_SECRET: 'whsec_edges', STRIPE_API_BASE: fake.url, JOBS_ENABLED: 'false' });
  strict = await startTestServer({
    UNAUTHENTICATED_RATE_LIMIT_PER_MINUTE: '5',
    TRUST_PROXY: 'true',
    METRICS_TOKEN,
    USAGE_OCCURRED_AT_MAX_PAST_DAYS: '50',
    JOBS_ENABLED: 'false',
  });
  const pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));
  pack = unique('pack');
  await operator(server).upsertCreditPack({ code: pack, name: 'pack', creditType: pool, credits: 10, price: { amount: 100, currency: 'USD' } });
});
afterAll(async () => {
  await Promise.all([server?.stop(), strict?.stop()]);
  await fake?.close();
});

describe('authentication edges', () => {
  it('UNAUTHENTICATED is HTTP 401 with WWW-Authenticate: Bearer, without a key and with a wrong one', async () => {
    for (const headers of [{}, { authorization: 'Bearer cbk_AAAAAAAA_wrongwrongwrongwrongwrongwrong12' }] as Array<Record<string, string>>) {
      const response = await post(server, headers);
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toBe('Bearer');
      expect(codes((await response.json()) as never)).toEqual(['UNAUTHENTICATED']);
    }
  });

  it('requests without a valid key are rate-limited per client address (X-Forwarded-For with TRUST_PROXY)', async () => {
    const from = (address: string, extra: Record<string, string> = {}) => post(strict, { 'x-forwarded-for': `198.51.100.7, ${address}`, ...extra });
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 4; attempt += 1) statuses.push((await from('203.0.113.1')).status);
    // Guessing keys counts against the same address.
    statuses.push((await from('203.0.113.1', { authorization: `Bearer cbk_AAAAAAAA_${'x'.repeat(32)}` })).status);
    const limited = await from('203.0.113.1');
    expect(statuses).toEqual([401, 401, 401, 401, 401]);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(codes((await limited.json()) as never)).toEqual(['RATE_LIMITED']);
    expect((await from('203.0.113.2')).status).toBe(401);
    // A valid key from the limited address is not affected.
    expect((await from('203.0.113.1', { authorization: `Bearer ${strict.adminKey}` })).status).toBe(200);
  });
});

describe('the same over WebSocket', () => {
  it('connections with a wrong key count against the address (4429 beyond the limit); deep variables fail only their operation', async () => {
    const closes: number[] = [];
    for (let attempt = 0; attempt < 6; attempt += 1) {
      const live = connectLive(strict.url, `cbk_BBBBBBBB_${'y'.repeat(32)}`);
      closes.push(await live.closed);
      await live.dispose();
    }
    expect(closes.slice(0, 5)).toEqual([4403, 4403, 4403, 4403, 4403]);
    expect(closes[5]).toBe(4429);

    // By hand: the graphql-ws client cannot serialize such a message (JSON.stringify recurses).
    const socket = new WebSocket(`${server.url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
    const messages: Array<{ type: string; id?: string; payload?: unknown }> = [];
    const next = async (type: string) => {
      for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 20))) {
        const index = messages.findIndex((message) => message.type === type);
        if (index >= 0) return messages.splice(index, 1)[0]!;
      }
      throw new Error(`no ${type} message: ${JSON.stringify(messages)}`);
    };
    socket.on('message', (data) => messages.push(JSON.parse(String(data)) as { type: string }));
    await new Promise((resolve) => socket.once('open', resolve));
    try {
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${server.adminKey}` } }));
      await next('connection_ack');
      const nested = `${'{"a":'.repeat(20_000)}"x"${'}'.repeat(20_000)}`;
      const query = JSON.stringify('mutation($id: ID!, $x: JSON) { recordUsage(input: { accountId: $id, featureKey: "none", idempotencyKey: "ws-deep", metadata: $x }) { __typename } }');
      socket.send(`{"type":"subscribe","id":"deep","payload":{"query":${query},"variables":{"id":"${accountId}","x":${nested}}}}`);
      const refused = await next('error');
      expect(refused.id).toBe('deep');
      expect(JSON.stringify(refused.payload)).toContain('INVALID_INPUT');
      socket.send(JSON.stringify({ type: 'subscribe', id: 'fine', payload: { query: '{ viewer { role } }' } }));
      expect((await next('next')).payload).toEqual({ data: { viewer: { role: 'ADMIN' } } });
    } finally {
      socket.close();
    }
  });
});

describe('input edges', () => {
  it('idempotency keys and tags refuse control and format characters (DEL, right-to-left override, zero-width)', async () => {
    for (const bad of ['key\u007f', 'pay\u202Emoc.evil', 'zero\u200Bwidth', 'c1\u0085', 'bom\uFEFF']) {
      const byKey = await recordUsage(server, { accountId, featureKey: feature, idempotencyKey: bad });
      expect(codes(byKey), JSON.stringify(bad)).toEqual(['INVALID_INPUT']);
      const byTag = await recordUsage(server, { accountId, featureKey: feature, tags: [bad] });
      expect(codes(byTag), JSON.stringify(bad)).toEqual(['INVALID_INPUT']);
    }
    expect(ok(await recordUsage(server, { accountId, featureKey: feature, idempotencyKey: unique('ok-ключ'), tags: ['workbook:42 é'] })).recordUsage.__typename).toBe('UsageRecorded');
  });

  it('occurredAt must be a real calendar date within the window (35 days back, 5 minutes ahead by default)', async () => {
    const now = Date.now();
    const at = (offsetMs: number) => new Date(now + offsetMs).toISOString();
    const day = 86_400_000;
    for (const occurredAt of ['2026-02-30T00:00:00Z', '2026-04-31T12:00:00Z', '2026-01-01T24:00:00Z', '2026-13-01T00:00:00Z', at(-36 * day), at(10 * 60_000)]) {
      const refused = await recordUsage(server, { accountId, featureKey: feature, occurredAt });
      expect(codes(refused), occurredAt).toEqual(['INVALID_INPUT']);
    }
    const accepted = ok(await recordUsage(server, { accountId, featureKey: feature, occurredAt: at(-30 * day) })).recordUsage;
    expect(accepted.__typename).toBe('UsageRecorded');
  });

  it('the occurredAt window is configurable', async () => {
    const pool = unique('credits');
    const own = await defineFeature(strict, { creditType: pool, unitCredits: 1 });
    const account = await createAccount(strict, await definePlan(strict, { allocations: [{ creditType: pool, amount: 10 }], featureKeys: [own] }));
    const occurredAt = new Date(Date.now() - 40 * 86_400_000).toISOString();
    expect(ok(await recordUsage(strict, { accountId: account, featureKey: own, occurredAt })).recordUsage.__typename).toBe('UsageRecorded');
  });

  it('test clocks refuse years outside 2000-2100, at creation and when advanced', async () => {
    const create = (frozenTime: string) => server.gql(`mutation($input: CreateTestClockInput!) { createTestClock(input: $input) { id } }`, { input: { frozenTime } });
    for (const frozenTime of ['0001-01-01T00:00:00Z', '1999-12-31T23:59:59Z', '2101-01-01T00:00:00Z', '9999-12-31T00:00:00Z']) {
      expect(codes(await create(frozenTime)), frozenTime).toEqual(['INVALID_INPUT']);
    }
    const clock = ok(await create('2000-01-01T00:00:00Z')).createTestClock.id;
    const advance = await server.gql(`mutation($input: AdvanceTestClockInput!) { advanceTestClock(input: $input) { id } }`, { input: { testClockId: clock, to: '9999-01-01T00:00:00Z' } });
    expect(codes(advance)).toEqual(['INVALID_INPUT']);
  });

  it('URL inputs have length caps', async () => {
    const long = `https://app.example/${'a'.repeat(3_000)}`;
    const purchase = await server.gql(`mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) { id } }`, {
      input: { accountId, packCode: pack, successUrl: long, cancelUrl: 'https://app.example/no', idempotencyKey: unique('buy') },
    });
    expect(codes(purchase)).toEqual(['INVALID_INPUT']);
    const hook = await server.gql(`mutation($input: ConfigureAlertWebhookInput!) { configureAlertWebhook(input: $input) { url } }`, { input: { accountId, url: long } });
    expect(codes(hook)).toEqual(['INVALID_INPUT']);
  });
});

describe('/metrics', () => {
  it('is open without METRICS_TOKEN, and needs the token when it is set', async () => {
    expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
    const bare = await fetch(`${strict.url}/metrics`);
    expect(bare.status).toBe(401);
    expect(bare.headers.get('www-authenticate')).toBe('Bearer');
    expect((await fetch(`${strict.url}/metrics`, { headers: { authorization: 'Bearer wrong-token-0123456789abcdef' } })).status).toBe(401);
    const allowed = await fetch(`${strict.url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(allowed.status).toBe(200);
    expect(await allowed.text()).toMatch(/^# HELP/m);
  });
});

describe("a period's usage total", () => {
  it('cannot pass 2^53 - 1: the debit that would is refused, typed, on the hot path, the complete path and in batches; balances stay readable', async () => {
    const MAX = Number.MAX_SAFE_INTEGER;
    const pool = unique('credits');
    const dynamic = await defineFeature(server, { creditType: pool, pricing: 'DYNAMIC' });
    const account = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1 }], featureKeys: [dynamic] }));
    await grantCredits(server, { accountId: account, creditType: pool, amount: MAX - 1 });
    expect(ok(await recordUsage(server, { accountId: account, featureKey: dynamic, credits: MAX })).recordUsage.__typename).toBe('UsageRecorded');
    await grantCredits(server, { accountId: account, creditType: pool, amount: 5 });

    // The plain case (the one-statement path), then with occurredAt (the complete path).
    const hot = await recordUsage(server, { accountId: account, featureKey: dynamic, credits: 1 });
    expect(codes(hot)).toEqual(['INVALID_CREDITS']);
    const complete = await recordUsage(server, { accountId: account, featureKey: dynamic, credits: 1, occurredAt: new Date().toISOString() });
    expect(codes(complete)).toEqual(['INVALID_CREDITS']);
    const batch = ok(
      await server.gql(`mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename ... on Error { code } } }`, {
        inputs: [{ accountId: account, featureKey: dynamic, credits: 1, idempotencyKey: unique('batch') }],
      }),
    ).recordUsageBatch;
    expect(batch).toEqual([{ __typename: 'UsageRejected', code: 'INVALID_CREDITS' }]);

    const read = ok(await server.gql(`query($id: ID!, $pool: String!) { account(id: $id) { balance(creditType: $pool) { available periodUsed } } }`, { id: account, pool }));
    expect(read.account.balance).toEqual({ available: 5, periodUsed: MAX });
  });
});
