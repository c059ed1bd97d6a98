import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BillingApiError, type BillingClient } from '../packages/sdk/src/index.ts';
import { advanceClock, createKey, createTestClock, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/** Issue 20 item 6: a balance as of a past instant, and the ledger streamed out as NDJSON. */
let server: TestServer;
let admin: BillingClient;
let pool: string;
let feature: string;
let plan: string;

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  admin = operator(server);
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
});

afterAll(() => server?.stop());

async function allLedger(accountId: string) {
  const entries = [];
  for await (const entry of admin.ledger.list(accountId, { first: 500 })) entries.push(entry);
  return entries;
}

async function exportOf(query: string, key = server.adminKey): Promise<{ status: number; lines: Array<Record<string, unknown>>; text: string }> {
  const response = await fetch(`${server.url}/ledger/export.ndjson?${query}`, { headers: { authorization: `Bearer ${key}` } });
  const text = await response.text();
  const lines = response.status === 200 ? text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>) : [];
  return { status: response.status, lines, text };
}

describe('balanceAt', () => {
  it('answers the balance as it stood at each past instant: usage, a later bonus, its expiry, the next period', async () => {
    const clock = await createTestClock(server, '2025-01-01T00:00:00.000Z');
    const account = (await admin.createAccount({ name: 'history', planCode: plan, testClockId: clock })).id;
    await advanceClock(server, clock, '2025-01-05T00:00:00.000Z');
    await admin.recordUsage({ accountId: account, featureKey: feature, quantity: 10 });
    await advanceClock(server, clock, '2025-01-10T00:00:00.000Z');
    await admin.grantCredits({ accountId: account, creditType: pool, amount: 50, source: 'BONUS', expiresAt: '2025-01-20T00:00:00.000Z' });
    await advanceClock(server, clock, '2025-01-15T00:00:00.000Z');
    // The bonus expires first, so it pays: 30 of it are left to expire on the 20th.
    await admin.recordUsage({ accountId: account, featureKey: feature, quantity: 20 });
    await advanceClock(server, clock, '2025-02-03T00:00:00.000Z');

    const at = (instant: string) => admin.balanceAt(account, pool, instant);
    expect(await at('2025-01-01T00:00:00.000Z')).toBe(100);
    expect(await at('2025-01-06T00:00:00.000Z')).toBe(90);
    expect(await at('2025-01-12T00:00:00.000Z')).toBe(140);
    expect(await at('2025-01-16T00:00:00.000Z')).toBe(120);
    expect(await at('2025-01-21T00:00:00.000Z')).toBe(90);
    expect(await at('2025-02-02T00:00:00.000Z')).toBe(100);
    expect(await at('2025-02-03T00:00:00.000Z')).toBe((await admin.balance(account, pool))?.available);
    expect(await at('2024-12-31T00:00:00.000Z')).toBe(0);
    const refused = await admin.balanceAt(account, pool, '2025-02-04T00:00:00.000Z').catch((error: BillingApiError) => error.code);
    expect(refused).toBe('INVALID_INPUT');
  });

  it('refuses an instant that its offset carries out of the years 0001-9999, as INVALID_INPUT, nothing written', async () => {
    const account = (await admin.createAccount({ name: 'history offsets', planCode: plan })).id;
    const code = (promise: Promise<unknown>) => promise.then(() => 'accepted', (error: BillingApiError) => error.code);
    // The year 0, which PostgreSQL cannot hold: the statement failed (INTERNAL_SERVER_ERROR).
    expect(await code(admin.balanceAt(account, pool, '0001-01-01T00:00:00+00:01'))).toBe('INVALID_INPUT');
    // The year 10000, answered as "+010000-01-01T00:00:59.000Z", which no DateTime argument accepts back.
    const grant = { accountId: account, creditType: pool, amount: 5, source: 'BONUS' as const, expiresAt: '9999-12-31T23:59:59-00:01' };
    expect(await code(admin.grantCredits(grant))).toBe('INVALID_INPUT');
    expect((await admin.balance(account, pool))?.available).toBe(100);
  });

  it('costs a costly operation each: a few accounts a request, never a page of them', async () => {
    const account = (await admin.createAccount({ name: 'history cost', planCode: plan })).id;
    const now = new Date().toISOString();
    const query = (count: number) =>
      `query($id: ID!, $at: DateTime!) { account(id: $id) { ${Array.from({ length: count }, (_, index) => `b${index}: balanceAt(creditType: "${pool}", at: $at)`).join(' ')} } }`;
    const two = await server.gql(query(2), { id: account, at: now });
    expect(two.errors).toBeUndefined();
    expect(two.data.account).toEqual({ b0: 100, b1: 100 });
    // A page of five accounts is within the limit of 75,000; a page of fifty (250,000) is refused
    // before anything runs. (An instant before every test clock's now, which the page's accounts may be on.)
    const page = (first: number) =>
      server.gql(`query($at: DateTime!) { accounts(first: ${first}) { edges { node { balanceAt(creditType: "${pool}", at: $at) } } } }`, { at: '2024-06-01T00:00:00.000Z' });
    expect((await page(5)).errors).toBeUndefined();
    expect((await page(50)).errors?.[0]?.extensions).toMatchObject({ code: 'QUERY_TOO_COSTLY', limit: 75_000 });
  });
});

describe('GET /ledger/export.ndjson', () => {
  it('streams every entry of the range in id order, a chunk at a time, equal to the ledger read through GraphQL', async () => {
    const externalId = unique('cus');
    const account = (await admin.createAccount({ name: 'export', planCode: plan, externalId })).id;
    await admin.grantCredits({ accountId: account, creditType: pool, amount: 5000, source: 'BONUS' });
    const from = new Date(Date.now() - 60_000).toISOString();
    for (let batch = 0; batch < 3; batch += 1) {
      await admin.recordUsageBatch(Array.from({ length: 450 }, () => ({ accountId: account, featureKey: feature, quantity: 1 })));
    }
    const to = new Date(Date.now() + 60_000).toISOString();
    const ledger = await allLedger(account);
    expect(ledger.length).toBeGreaterThan(1350);

    const exported = await exportOf(`from=${from}&to=${to}&accountId=${encodeURIComponent(externalId)}`);
    expect(exported.status).toBe(200);
    expect(exported.lines.map((line) => line.id)).toEqual(ledger.map((entry) => entry.id).reverse());
    expect(exported.lines.map((line) => line.credits)).toEqual(ledger.map((entry) => entry.credits).reverse());
    expect(exported.lines.every((line) => line.accountId === account && line.creditType === pool)).toBe(true);
    expect(exported.lines[0]).toMatchObject({ type: 'GRANT', source: 'PLAN', funding: 'PAID', costCurrency: 'USD' });

    // Without an account: at least this account's entries, none outside the range.
    const everyone = await exportOf(`from=${from}&to=${to}`);
    const mine = everyone.lines.filter((line) => line.accountId === account);
    expect(mine).toHaveLength(ledger.length);
    expect(everyone.lines.every((line) => String(line.createdAt) >= from && String(line.createdAt) < to)).toBe(true);
    const ids = everyone.lines.map((line) => BigInt(String(line.id)));
    expect(ids.every((id, index) => index === 0 || id > ids[index - 1]!)).toBe(true);
  });

  it('is for ADMIN keys only and refuses a bad range', async () => {
    const account = (await admin.createAccount({ name: 'export-refusals', planCode: plan })).id;
    const range = 'from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z';
    expect((await exportOf(range, 'not-a-key')).status).toBe(401);
    expect((await exportOf(range, await createKey(server, 'ACCOUNT', account))).status).toBe(403);
    expect((await exportOf('from=2026-01-01T00:00:00Z&to=2025-01-01T00:00:00Z')).status).toBe(400);
    expect((await exportOf('from=yesterday&to=2025-01-01T00:00:00Z')).status).toBe(400);
    expect(JSON.parse((await exportOf('to=2025-01-01T00:00:00Z')).text).errors[0].extensions.code).toBe('INVALID_INPUT');
    // An offset that carries an instant into the year 0 (which PostgreSQL refuses) or 10000.
    expect((await exportOf('from=0001-01-01T00:00:00%2B00:01&to=2025-01-01T00:00:00Z')).status).toBe(400);
    expect((await exportOf('from=2025-01-01T00:00:00Z&to=9999-12-31T23:59:59-00:01')).status).toBe(400);
    const nul = await exportOf(`${range}&accountId=a%00b`);
    expect(nul.status).toBe(400);
    expect(JSON.parse(nul.text).errors[0].extensions.code).toBe('INVALID_INPUT');
    const unknown = await exportOf(`${range}&accountId=${unique('nobody')}`);
    expect(unknown.status).toBe(404);
    expect(JSON.parse(unknown.text).errors[0].extensions.code).toBe('ACCOUNT_NOT_FOUND');
  });

  it("counts against its key's rate limit, shared with /graphql: beyond it 429 RATE_LIMITED with Retry-After, nothing read", async () => {
    const limited = await startTestServer({ JOBS_ENABLED: 'false' }, { security: { rateLimit: { perSecond: 2, burst: 1, burstWindowSeconds: 60, keyPrefix: unique('rate') } } });
    try {
      const range = 'from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z';
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const answers = await Promise.all(
        Array.from({ length: 12 }, () => fetch(`${limited.url}/ledger/export.ndjson?${range}`, { headers: { authorization: `Bearer ${limited.adminKey}` } })),
      );
      const refused = answers.filter((answer) => answer.status === 429);
      expect(answers.filter((answer) => answer.status === 200).length).toBeLessThanOrEqual(2 + 1);
      expect(refused.length).toBeGreaterThanOrEqual(12 - 2 * 2 - 1);
      for (const answer of refused) {
        expect(Number(answer.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        expect(((await answer.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]?.extensions.code).toBe('RATE_LIMITED');
      }
      // The same budget as /graphql: the key is refused there too while it lasts.
      const graphql = await fetch(`${limited.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${limited.adminKey}` },
        body: JSON.stringify({ query: '{ viewer { role } }' }),
      });
      expect(graphql.status).toBe(429);
    } finally {
      await limited.stop();
    }
  });
});
