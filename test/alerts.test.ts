import { createHmac } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addSeat,
  advanceClock,
  balanceOf,
  createAccount,
  createKey,
  createTestClock,
  defineFeature,
  definePlan,
  grantCredits,
  ok,
  recordUsage,
} from './support/fixtures.ts';
import { verifyWebhook, WebhookVerificationError } from '../packages/sdk/src/index.ts';
import { ALERTS_SUBSCRIPTION, BALANCE_SUBSCRIPTION, connectLive, waitUntilLive, type LiveClient } from './support/live.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
const clients: LiveClient[] = [];
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  await Promise.all(clients.map((client) => client.dispose()));
  await server?.stop();
});

function live(key: string, target: TestServer = server): LiveClient {
  const client = connectLive(target.url, key);
  clients.push(client);
  return client;
}

async function setUp(target: TestServer = server, options: { clock?: string } = {}) {
  const pool = unique('credits');
  const feature = await defineFeature(target, { creditType: pool, unitCredits: 1 });
  const clock = options.clock ? await createTestClock(target, options.clock) : undefined;
  const accountId = await createAccount(target, await definePlan(target, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }), clock);
  const seat = await addSeat(target, accountId);
  const seatKey = await createKey(target, 'SEAT', accountId, seat);
  const probeType = unique('probe');
  const probe = () => grantCredits(target, { accountId, creditType: probeType, amount: 1 });
  return { pool, feature, accountId, seatKey, clock, probe };
}

const use = (accountId: string, featureKey: string, quantity: number, target: TestServer = server) =>
  recordUsage(target, { accountId, featureKey, quantity }).then((result) => {
    expect(result.data?.recordUsage?.__typename, JSON.stringify(result)).toBe('UsageRecorded');
  });

const thresholds = (events: Array<{ kind: string; threshold: number | null }>) =>
  events.filter((event) => event.kind === 'USAGE_THRESHOLD').map((event) => event.threshold);

describe('usage threshold alerts, live over graphql-ws', () => {
  it('a seat’s front end receives exactly one alert at each of 75, 85, 90 and 100 %, in order; 70 → 95 % yields 75, 85, 90; renewal re-arms', async () => {
    const { pool, feature, accountId, seatKey, clock, probe } = await setUp(server, { clock: '2027-03-01T00:00:00.000Z' });
    const front = live(seatKey);
    const alerts = front.subscribe(ALERTS_SUBSCRIPTION, { accountId }, (data) => data.creditAlerts);
    await waitUntilLive(front, accountId, probe);

    for (const quantity of [700, 100, 20, 30, 30, 20, 60, 40]) await use(accountId, feature, quantity);
    await alerts.take(5);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(thresholds(alerts.events)).toEqual([75, 85, 90, 100]);
    expect(alerts.events.filter((event) => event.kind === 'POOL_EXHAUSTED')).toHaveLength(1);
    expect(alerts.events).toHaveLength(5);
    expect(alerts.events[0].message).toBe(`75% of this period's ${pool} allocation used (800 of 1000 credits)`);

    await advanceClock(server, clock!, '2027-04-01T00:00:00.000Z');
    await use(accountId, feature, 700);
    await use(accountId, feature, 250);
    await alerts.take(8);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(thresholds(alerts.events.slice(5))).toEqual([75, 85, 90]);
    expect(alerts.events).toHaveLength(8);

    const stored = ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts(first: 100) { edges { node { id kind threshold } } } } }`, { id: accountId }));
    const storedNodes = stored.account.alerts.edges.map((edge: any) => edge.node);
    expect(thresholds(storedNodes).reverse()).toEqual([75, 85, 90, 100, 75, 85, 90]);
    expect(storedNodes.map((node: any) => node.id).reverse()).toEqual(alerts.events.map((event) => event.id));
  });

  it('50 concurrent debits crossing 90 %: one 90 % alert in storage and one on the wire', async () => {
    const { feature, accountId, seatKey, probe } = await setUp();
    await use(accountId, feature, 880);
    const front = live(seatKey);
    const alerts = front.subscribe(ALERTS_SUBSCRIPTION, { accountId }, (data) => data.creditAlerts);
    await waitUntilLive(front, accountId, probe);
    await Promise.all(Array.from({ length: 50 }, () => use(accountId, feature, 1)));
    await alerts.take(1);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(thresholds(alerts.events)).toEqual([90]);
    const count = await server.app.database.prisma.alert.count({ where: { accountId, kind: 'USAGE_THRESHOLD', threshold: 90 } });
    expect(count).toBe(1);
  });

  it('balanceUpdated follows a sequence of debits and ends at the stored balance', async () => {
    const { pool, feature, accountId, seatKey, probe } = await setUp();
    const front = live(seatKey);
    await waitUntilLive(front, accountId, probe);
    const balances = front.subscribe(BALANCE_SUBSCRIPTION, { accountId }, (data) => data.balanceUpdated);
    await waitUntilLive(front, accountId, probe);
    for (let index = 0; index < 10; index += 1) await use(accountId, feature, 7);
    const stored = (await balanceOf(server, accountId, pool)).available;
    expect(stored).toBe(930);
    const deadline = Date.now() + 10_000;
    const last = () => balances.events.filter((event) => event.creditType === pool).at(-1);
    while (last()?.available !== stored && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    const mine = balances.events.filter((event) => event.creditType === pool).map((event) => event.available);
    expect(mine.at(-1)).toBe(stored);
    expect(mine.length).toBeGreaterThanOrEqual(1);
    expect([...mine].sort((a, b) => b - a)).toEqual(mine);
  });

  it('balanceUpdated starts with the current balance of every pool, on each (re)subscribe: a change made while away is not missed', async () => {
    const { pool, feature, accountId, seatKey } = await setUp();
    const first = live(seatKey);
    const before = first.subscribe(BALANCE_SUBSCRIPTION, { accountId }, (data) => data.balanceUpdated);
    expect(await before.take(1)).toEqual([{ creditType: pool, available: 1_000, periodUsed: 0 }]);
    await first.dispose();
    await use(accountId, feature, 40);
    const again = live(seatKey).subscribe(BALANCE_SUBSCRIPTION, { accountId }, (data) => data.balanceUpdated);
    expect(await again.take(1)).toEqual([{ creditType: pool, available: 960, periodUsed: 40 }]);
    await use(accountId, feature, 10);
    expect((await again.take(2))[1]).toEqual({ creditType: pool, available: 950, periodUsed: 50 });
  });

  it('a key of account A cannot subscribe to B; a revoked key’s socket is refused', async () => {
    const a = await setUp();
    const b = await setUp();
    const front = live(a.seatKey);
    const refused = front.subscribe(ALERTS_SUBSCRIPTION, { accountId: b.accountId }, (data) => data.creditAlerts);
    await refused.ended;
    expect(JSON.stringify(refused.errors)).toMatch(/ACCOUNT_NOT_FOUND|not found/);
    expect(refused.events).toEqual([]);

    const key = ok(
      await server.gql(`mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }`, {
        input: { role: 'ACCOUNT', accountId: a.accountId },
      }),
    ).createApiKey;
    ok(await server.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: key.apiKey.id }));
    const revoked = live(key.secret);
    revoked.subscribe(ALERTS_SUBSCRIPTION, { accountId: a.accountId }, (data) => data.creditAlerts);
    expect(await revoked.closed).toBe(4403);
    const nobody = live('cbk_AAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB');
    nobody.subscribe(ALERTS_SUBSCRIPTION, { accountId: a.accountId }, (data) => data.creditAlerts);
    expect(await nobody.closed).toBe(4403);
  });
});

describe('alert records', () => {
  it('are listed newest first, filtered to unacknowledged, and acknowledged once', async () => {
    const { feature, accountId, seatKey } = await setUp();
    await use(accountId, feature, 760);
    await use(accountId, feature, 100);
    const query = `query($id: ID!, $only: Boolean) { account(id: $id) { alerts(unacknowledgedOnly: $only) { edges { node { id threshold acknowledgedAt } } } } }`;
    const all = ok(await server.gql(query, { id: accountId }, seatKey)).account.alerts.edges.map((edge: any) => edge.node);
    expect(all.map((node: any) => node.threshold)).toEqual([85, 75]);
    const acknowledged = ok(await server.gql(`mutation($id: ID!) { acknowledgeAlert(id: $id) { id acknowledgedAt } }`, { id: all[1].id }, seatKey)).acknowledgeAlert;
    expect(acknowledged.acknowledgedAt).not.toBeNull();
    const again = ok(await server.gql(`mutation($id: ID!) { acknowledgeAlert(id: $id) { acknowledgedAt } }`, { id: all[1].id })).acknowledgeAlert;
    expect(again.acknowledgedAt).toBe(acknowledged.acknowledgedAt);
    const open = ok(await server.gql(query, { id: accountId, only: true })).account.alerts.edges.map((edge: any) => edge.node.id);
    expect(open).toEqual([all[0].id]);
    const other = await setUp();
    const foreign = await server.gql(`mutation($id: ID!) { acknowledgeAlert(id: $id) { id } }`, { id: all[0].id }, other.seatKey);
    expect(foreign.errors?.[0]?.extensions?.code).toBe('ALERT_NOT_FOUND');
  });

  it('custom settings: percents, low balance, and credits expiring soon with the amount and the date', async () => {
    const { pool, feature, accountId, clock } = await setUp(server, { clock: '2027-05-01T00:00:00.000Z' });
    const settings = ok(
      await server.gql(`mutation($input: SetAlertSettingsInput!) { setAlertSettings(input: $input) { creditType percents lowBalance expiringWithinDays } }`, {
        input: { accountId, creditType: pool, percents: [50], lowBalance: 300, expiringWithinDays: 7 },
      }),
    ).setAlertSettings;
    expect(settings).toEqual({ creditType: pool, percents: [50], lowBalance: 300, expiringWithinDays: 7 });
    await grantCredits(server, { accountId, creditType: pool, amount: 40, expiresAt: '2027-06-05T00:00:00.000Z' });
    await use(accountId, feature, 760);
    await advanceClock(server, clock!, '2027-05-20T00:00:00.000Z');
    expect(await server.app.database.prisma.alert.count({ where: { accountId, kind: 'EXPIRING_SOON' } })).toBe(0);
    await advanceClock(server, clock!, '2027-05-30T00:00:00.000Z');
    const alerts = ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts { edges { node { kind threshold message } } } } }`, { id: accountId }))
      .account.alerts.edges.map((edge: any) => edge.node)
      .reverse();
    expect(alerts.map((alert: any) => [alert.kind, alert.threshold])).toEqual([
      ['USAGE_THRESHOLD', 50],
      ['LOW_BALANCE', 300],
      ['EXPIRING_SOON', 7],
      ['EXPIRING_SOON', 7],
    ]);
    expect(alerts[2].message).toMatch(/^240 .* 2027-06-01/);
    expect(alerts[3].message).toMatch(/^40 .* 2027-06-05/);
    const listed = ok(await server.gql(`query($id: ID!) { account(id: $id) { alertSettings { creditType percents } } }`, { id: accountId })).account.alertSettings;
    expect(listed).toEqual(expect.arrayContaining([{ creditType: pool, percents: [50] }]));
  });
});

describe('outbound alert webhooks', () => {
  it('a receiver that fails twice gets the alert on the third try, once, signed', async () => {
    const received: Array<{ body: string; signature: string; status: number }> = [];
    const receiver = createServer((request: IncomingMessage, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const status = received.length < 2 ? 500 : 200;
        received.push({ body: Buffer.concat(chunks).toString(), signature: String(request.headers['billing-signature']), status });
        response.writeHead(status).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    // The receiver is on this machine: only the development setting lets a webhook reach it.
    // Its job runner delivers the webhooks: on a database of its own (it works on every account it finds).
    const hookDatabase = await isolatedDatabase();
    const hookServer = await startTestServer({
      JOBS_ENABLED: 'true',
      JOBS_INTERVAL_MS: '50',
      ALERT_WEBHOOK_RETRY_BASE_MS: '100',
      ALERT_WEBHOOK_ALLOW_PRIVATE: 'true',
      ...(hookDatabase.url ? { DATABASE_URL: hookDatabase.url } : {}),
    });
    try {
      const { feature, accountId } = await setUp(hookServer);
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/alerts`;
      const webhook = ok(
        await hookServer.gql(`mutation($input: ConfigureAlertWebhookInput!) { configureAlertWebhook(input: $input) { url enabled secret } }`, {
          input: { accountId, url },
        }),
      ).configureAlertWebhook;
      expect(webhook).toMatchObject({ url, enabled: true });
      await use(accountId, feature, 760, hookServer);
      const deadline = Date.now() + 15_000;
      while (received.length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(received.map((delivery) => delivery.status)).toEqual([500, 500, 200]);
      const bodies = received.map((delivery) => JSON.parse(delivery.body));
      expect(new Set(bodies.map((body) => body.alert.id)).size).toBe(1);
      expect(bodies[2].alert).toMatchObject({ accountId, kind: 'USAGE_THRESHOLD', threshold: 75 });
      const [timestamp, signature] = received[2]!.signature.split(',').map((part) => part.split('=')[1]);
      expect(signature).toBe(createHmac('sha256', webhook.secret).update(`${timestamp}.${received[2]!.body}`).digest('hex'));
      // The SDK's verifyWebhook accepts the real delivery, and refuses it tampered, re-signed with
      // another secret, or replayed after the tolerance.
      const delivered = { payload: received[2]!.body, signature: received[2]!.signature, secret: webhook.secret };
      expect(await verifyWebhook(delivered)).toEqual(bodies[2]);
      expect(await verifyWebhook({ ...delivered, payload: new TextEncoder().encode(delivered.payload) })).toEqual(bodies[2]);
      const refusals = await Promise.all([
        verifyWebhook({ ...delivered, payload: delivered.payload.replace('USAGE_THRESHOLD', 'LOW_BALANCE') }),
        verifyWebhook({ ...delivered, secret: 'whsec_other' }),
        verifyWebhook({ ...delivered, now: Number(timestamp) + 301 }),
        verifyWebhook({ ...delivered, signature: undefined }),
      ].map((check) => check.then(() => null, (error: unknown) => error)));
      for (const refusal of refusals) expect(refusal).toBeInstanceOf(WebhookVerificationError);
      const delivery = await hookServer.app.database.prisma.alertDelivery.findFirstOrThrow({ where: { accountId } });
      expect(delivery).toMatchObject({ attempts: 3, lastError: null });
      expect(delivery.deliveredAt).not.toBeNull();
    } finally {
      await hookServer.stop();
      await hookDatabase.drop();
      receiver.close();
    }
  });
});
