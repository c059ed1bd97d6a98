import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { BillingApiError, createBillingClient, type BillingClient } from '../packages/sdk/src/index.ts';
import { addSeat, createAccount, createKey, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
const clients: BillingClient[] = [];
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.close()));
  await server?.stop();
});

function client(apiKey: string): BillingClient {
  const made = createBillingClient({ url: server.graphqlUrl, apiKey, webSocketImpl: WebSocket, retries: 0 });
  clients.push(made);
  return made;
}

async function setUp() {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
  const seatId = await addSeat(server, accountId);
  const accountKey = await createKey(server, 'ACCOUNT', accountId);
  return { pool, feature, accountId, seatId, accountKey, backEnd: client(accountKey) };
}

const codeOf = (promise: Promise<unknown>) => promise.then(() => 'ok', (error: unknown) => (error instanceof BillingApiError ? error.code : String(error)));

async function until(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('session tokens', () => {
  it('an ACCOUNT key issues an account session: it reads over HTTP and WebSocket and changes nothing', async () => {
    const { pool, feature, accountId, backEnd } = await setUp();
    const other = await setUp();
    const before = Date.now();
    const { token, session } = await backEnd.createSessionToken({ accountId, ttlMinutes: 30 });
    expect(token).toMatch(/^cbs_/);
    expect(session).toMatchObject({ accountId, seatId: null, canBuy: false, revokedAt: null });
    expect(new Date(session.expiresAt).getTime() - before).toBeGreaterThan(29 * 60_000);
    expect(new Date(session.expiresAt).getTime() - before).toBeLessThanOrEqual(30 * 60_000 + 5_000);

    const browser = client(token);
    expect(await browser.viewer()).toMatchObject({ role: 'ACCOUNT', account: { id: accountId }, seat: null, sessionExpiresAt: session.expiresAt });
    expect((await browser.balance(accountId, pool))?.available).toBe(100);
    expect(await codeOf(browser.balances(other.accountId))).toBe('ACCOUNT_NOT_FOUND');
    expect(await codeOf(browser.recordUsage({ accountId, featureKey: feature }))).toBe('FORBIDDEN');
    expect(await codeOf(browser.createApiKey({ role: 'SEAT', accountId, seatId: 'x' }))).toBe('FORBIDDEN');
    expect(await codeOf(browser.createSessionToken({ accountId }))).toBe('FORBIDDEN');
    expect(await codeOf(browser.setAlertSettings({ accountId, creditType: pool, percents: [50] }))).toBe('FORBIDDEN');
    expect(await codeOf(browser.purchaseCreditPack({ accountId, packCode: 'p', successUrl: 'https://a.example', cancelUrl: 'https://a.example' }))).toBe('FORBIDDEN');

    const balances: number[] = [];
    browser.subscribeToBalance(accountId, (balance) => balance.creditType === pool && balances.push(balance.available));
    await until(() => balances.length === 1, 'the balance snapshot over WebSocket');
    await operator(server).recordUsage({ accountId, featureKey: feature, quantity: 10 });
    await until(() => balances.at(-1) === 90, 'the change over WebSocket');

    // Only the hash is stored.
    const row = await server.app.database.prisma.sessionToken.findUniqueOrThrow({ where: { id: session.id } });
    expect(JSON.stringify(row)).not.toContain(token.slice(12));
  });

  it('a seat session sees what its seat sees; canBuy lets it buy through Checkout only', async () => {
    const { accountId, seatId, backEnd } = await setUp();
    const { token } = await backEnd.createSessionToken({ accountId, seatId, canBuy: true });
    const browser = client(token);
    expect(await browser.viewer()).toMatchObject({ role: 'SEAT', seat: { id: seatId } });
    expect(await codeOf(browser.purchaseCreditPack({ accountId, packCode: 'p', offSession: true }))).toBe('FORBIDDEN');
    // Past authorization: this server has no Stripe.
    expect(await codeOf(browser.purchaseCreditPack({ accountId, packCode: 'p', successUrl: 'https://a.example', cancelUrl: 'https://a.example' }))).toBe(
      'STRIPE_NOT_CONFIGURED',
    );
  });

  it('who may issue: ADMIN for any account, ACCOUNT for its own, never SEAT keys; TTL minutes to hours; seats of the account', async () => {
    const { accountId, seatId, backEnd } = await setUp();
    const other = await setUp();
    expect(await codeOf(operator(server).createSessionToken({ accountId: other.accountId }))).toBe('ok');
    expect(await codeOf(backEnd.createSessionToken({ accountId: other.accountId }))).toBe('ACCOUNT_NOT_FOUND');
    const seatKey = await createKey(server, 'SEAT', accountId, seatId);
    expect(await codeOf(client(seatKey).createSessionToken({ accountId, seatId }))).toBe('FORBIDDEN');
    expect(await codeOf(backEnd.createSessionToken({ accountId, ttlMinutes: 4 }))).toBe('INVALID_INPUT');
    expect(await codeOf(backEnd.createSessionToken({ accountId, ttlMinutes: 721 }))).toBe('INVALID_INPUT');
    expect(await codeOf(backEnd.createSessionToken({ accountId, seatId: other.seatId }))).toBe('SEAT_NOT_FOUND');
    expect(await server.app.database.prisma.sessionToken.count({ where: { accountId } })).toBe(0);
  });

  it('revoked: refused over HTTP at once, and its open WebSocket closes with 4403 (a typed error in the SDK)', async () => {
    const { accountId, backEnd } = await setUp();
    const { token, session } = await backEnd.createSessionToken({ accountId });
    const browser = client(token);
    await browser.viewer();
    const errors: BillingApiError[] = [];
    let snapshots = 0;
    browser.subscribeToBalance(accountId, { onData: () => (snapshots += 1), onError: (error) => errors.push(error) });
    await until(() => snapshots > 0, 'the snapshot');
    expect(await backEnd.revokeSessionToken(session.id)).toMatchObject({ id: session.id, revokedAt: expect.any(String) });
    expect(await codeOf(browser.viewer())).toBe('UNAUTHENTICATED');
    await until(() => errors.length > 0, 'the socket to close');
    expect(errors[0]).toMatchObject({ code: 'UNAUTHENTICATED', closeCode: 4403 });
    const other = await setUp();
    expect(await codeOf(other.backEnd.revokeSessionToken(session.id))).toBe('SESSION_NOT_FOUND');
  });

  it('expired: refused over HTTP, and a socket open at expiry is closed with 4403', async () => {
    const { accountId, backEnd } = await setUp();
    const prisma = server.app.database.prisma;
    const past = await backEnd.createSessionToken({ accountId });
    await prisma.sessionToken.update({ where: { id: past.session.id }, data: { expiresAt: new Date(Date.now() - 1_000) } });
    expect(await codeOf(client(past.token).viewer())).toBe('UNAUTHENTICATED');

    const soon = await backEnd.createSessionToken({ accountId });
    await prisma.sessionToken.update({ where: { id: soon.session.id }, data: { expiresAt: new Date(Date.now() + 2_000) } });
    const errors: BillingApiError[] = [];
    let snapshots = 0;
    client(soon.token).subscribeToBalance(accountId, { onData: () => (snapshots += 1), onError: (error) => errors.push(error) });
    await until(() => snapshots > 0, 'the snapshot');
    await until(() => errors.length > 0, 'the socket to close at expiry', 10_000);
    expect(errors[0]).toMatchObject({ code: 'UNAUTHENTICATED', closeCode: 4403 });
  });
});
