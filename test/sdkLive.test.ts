import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { BillingApiError, createBillingClient, type BillingClient, type LiveEvent } from '../packages/sdk/src/index.ts';
import { addSeat, createAccount, createKey, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { startTcpProxy, type TcpProxy } from './support/tcpProxy.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
const clients: BillingClient[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await Promise.all(clients.map((client) => client.close()));
  await server?.stop();
});

function client(apiKey: string, url = server.url, extra: Parameters<typeof createBillingClient>[0] extends infer O ? Partial<O> : never = {}): BillingClient {
  const made = createBillingClient({ url: `${url}/graphql`, apiKey, webSocketImpl: WebSocket, ...extra });
  clients.push(made);
  return made;
}

async function setUp() {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));
  const seatKey = await createKey(server, 'SEAT', accountId, await addSeat(server, accountId));
  return { pool, feature, accountId, seatKey };
}

async function until(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe('SDK live feeds', () => {
  it('a refused key (4403) reaches onError as a typed error, never as an unhandled rejection', async () => {
    const { accountId } = await setUp();
    const errors: BillingApiError[] = [];
    client('cbk_not_a_key').subscribeToAlerts(accountId, { onData: () => {}, onError: (error) => errors.push(error) });
    await until(() => errors.length > 0, 'the error');
    expect(errors[0]).toBeInstanceOf(BillingApiError);
    expect(errors[0]).toMatchObject({ code: 'UNAUTHENTICATED', closeCode: 4403 });

    // A bare callback (no onError) goes to the client's onLiveError: still no unhandled rejection.
    const reported: BillingApiError[] = [];
    client('cbk_not_a_key', server.url, { onLiveError: (error) => reported.push(error) }).subscribeToBalance(accountId, () => {});
    await until(() => reported.length > 0, 'the reported error');
    expect(reported[0]!.code).toBe('UNAUTHENTICATED');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(unhandled).toEqual([]);
  });

  it('for await throws a BillingApiError for a refused key and for another tenant’s account', async () => {
    const { accountId } = await setUp();
    const other = await setUp();
    const refused = await (async () => {
      for await (const _alert of client('cbk_not_a_key').subscribeToAlerts(accountId)) return null;
      return null;
    })().catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(BillingApiError);
    expect(refused).toMatchObject({ code: 'UNAUTHENTICATED', closeCode: 4403 });

    const foreign = await (async () => {
      for await (const _balance of client(other.seatKey).subscribeToBalance(accountId)) return null;
      return null;
    })().catch((error: unknown) => error);
    expect(foreign).toBeInstanceOf(BillingApiError);
    expect((foreign as BillingApiError).code).toBe('ACCOUNT_NOT_FOUND');

    const errors: BillingApiError[] = [];
    client(other.seatKey).subscribeToAlerts(accountId, { onData: () => {}, onError: (error) => errors.push(error) });
    await until(() => errors.length > 0, 'the error');
    expect(errors[0]!.code).toBe('ACCOUNT_NOT_FOUND');
    expect(unhandled).toEqual([]);
  });

  it('tells connected, reconnecting, reconnected, and the balance snapshot after reconnecting shows a change made while down', async () => {
    const { pool, feature, accountId, seatKey } = await setUp();
    const proxy: TcpProxy = await startTcpProxy(server.url);
    try {
      const events: string[] = [];
      const balances: number[] = [];
      const live = client(seatKey, proxy.url);
      live.subscribeToBalance(accountId, {
        onData: (balance) => balance.creditType === pool && balances.push(balance.available),
        onLiveEvent: (event: LiveEvent) => events.push(event.type),
      });
      await until(() => balances.length === 1, 'the first snapshot');
      expect(balances).toEqual([1_000]);
      expect(events).toEqual(['connected']);
      proxy.cut();
      await until(() => events.includes('reconnecting'), 'reconnecting');
      const result = await operator(server).recordUsage({ accountId, featureKey: feature, quantity: 30 });
      expect(result.__typename).toBe('UsageRecorded');
      proxy.restore();
      await until(() => events.includes('reconnected'), 'reconnected');
      await until(() => balances.length === 2, 'the snapshot after reconnecting');
      expect(balances).toEqual([1_000, 970]);
      expect(events[0]).toBe('connected');
      expect(events.at(-1)).toBe('reconnected');
      await live.close();
    } finally {
      await proxy.close();
    }
  });

  it('keep-alive pings find a frozen connection and reconnect', async () => {
    const { pool, feature, accountId, seatKey } = await setUp();
    const proxy = await startTcpProxy(server.url);
    try {
      const events: string[] = [];
      const balances: number[] = [];
      const live = client(seatKey, proxy.url, { keepAliveMs: 1_000 });
      live.subscribeToBalance(accountId, {
        onData: (balance) => balance.creditType === pool && balances.push(balance.available),
        onLiveEvent: (event) => events.push(event.type),
      });
      await until(() => balances.length === 1, 'the first snapshot');
      proxy.freeze();
      await operator(server).recordUsage({ accountId, featureKey: feature, quantity: 5 });
      // Nothing errors on a frozen connection: only the missing pong tells.
      await until(() => events.includes('reconnecting'), 'reconnecting after a missing pong', 10_000);
      proxy.restore();
      // Bytes sent while frozen are lost: only a new connection (and its snapshot) brings the change.
      await until(() => events.includes('reconnected'), 'reconnected', 20_000);
      await until(() => balances.at(-1) === 995, 'the balance after reconnecting');
      await live.close();
    } finally {
      await proxy.close();
    }
  });
});
