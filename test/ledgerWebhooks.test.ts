import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BillingApiError, verifyLedgerWebhook, type BillingClient, type LedgerWebhookEvent } from '../packages/sdk/src/index.ts';
import { advanceClock, createKey, createTestClock, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Issue 20 item 6: ledger events go to operator endpoints as signed POSTs, filtered per endpoint,
 * through the alert outbox (retries after failures, each event delivered once per endpoint).
 */
let server: TestServer;
let database: { url: string | undefined; drop(): Promise<void> };
let admin: BillingClient;
let receiver: Server;
let baseUrl: string;
const received: Array<{ path: string; body: string; signature: string; status: number }> = [];

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return error instanceof BillingApiError ? error.code : String(error);
  }
}

beforeAll(async () => {
  receiver = createServer((request: IncomingMessage, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      // The first two deliveries fail: the outbox must retry them.
      const status = received.length < 2 ? 500 : 200;
      received.push({ path: request.url ?? '', body: Buffer.concat(chunks).toString(), signature: String(request.headers['billing-signature']), status });
      response.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  database = await isolatedDatabase();
  // The receiver is on this machine: only the development setting lets a webhook reach it.
  server = await startTestServer({
    JOBS_ENABLED: 'false',
    ALERT_WEBHOOK_ALLOW_PRIVATE: 'true',
    ALERT_WEBHOOK_RETRY_BASE_MS: '10',
    ...(database.url ? { DATABASE_URL: database.url } : {}),
  });
  admin = operator(server);
});

afterAll(async () => {
  await server?.stop();
  await database?.drop();
  receiver?.close();
});

/** Runs the delivery task until every delivery of the outbox is delivered (or the deadline passes). */
async function deliverAll(): Promise<void> {
  const prisma = server.app.database.prisma;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    await server.app.dueWorkRunner.runTasks();
    if ((await prisma.alertDelivery.count({ where: { endpointId: { not: null }, deliveredAt: null } })) === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('deliveries still pending');
}

describe('ledger event webhooks', () => {
  it('sends each event once per matching endpoint, signed, filtered by type and account, retried after failures', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool });
    const basic = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
    const pro = unique('plan');
    await admin.upsertPlan({ code: pro, name: pro, interval: 'MONTH', price: { amount: 5000, currency: 'USD' }, allocations: [{ creditType: pool, amount: 500 }], featureKeys: [feature] });
    const clock = await createTestClock(server, '2025-01-01T00:00:00.000Z');
    const accountA = (await admin.createAccount({ name: 'A', planCode: basic, testClockId: clock, externalId: unique('cus') })).id;
    const accountB = (await admin.createAccount({ name: 'B', planCode: basic, testClockId: clock })).id;

    const everything = await admin.createWebhookEndpoint({ url: `${baseUrl}/all` });
    const filtered = await admin.createWebhookEndpoint({ url: `${baseUrl}/filtered`, eventTypes: ['grant.expired', 'plan.changed'], accountId: accountA });
    const silenced = await admin.createWebhookEndpoint({ url: `${baseUrl}/silenced`, eventTypes: ['grant.created'] });
    expect(filtered.endpoint).toMatchObject({ accountId: accountA, eventTypes: ['grant.expired', 'plan.changed'], enabled: true });
    expect((await admin.updateWebhookEndpoint({ id: silenced.endpoint.id, enabled: false })).enabled).toBe(false);

    await admin.grantCredits({ accountId: accountA, creditType: pool, amount: 30, source: 'BONUS', expiresAt: '2025-01-06T00:00:00.000Z' });
    await admin.grantCredits({ accountId: accountB, creditType: pool, amount: 7, source: 'BONUS' });
    await admin.recordUsage({ accountId: accountA, featureKey: feature, quantity: 110 });
    await admin.changePlan({ accountId: accountA, planCode: pro, timing: 'IMMEDIATELY' });
    await advanceClock(server, clock, '2025-01-10T00:00:00.000Z');
    await deliverAll();

    const bodies = (path: string) =>
      received.filter((delivery) => delivery.path === path && delivery.status === 200).map((delivery) => JSON.parse(delivery.body) as LedgerWebhookEvent);
    const all = bodies('/all');
    const types = (events: LedgerWebhookEvent[], accountId: string) => [...new Set(events.filter((event) => event.accountId === accountId).map((event) => event.type))].sort();
    expect(types(all, accountA)).toEqual(['alert.raised', 'grant.created', 'grant.expired', 'plan.changed']);
    expect(types(all, accountB)).toEqual(['grant.created']);
    expect(types(bodies('/filtered'), accountA)).toEqual(['grant.expired', 'plan.changed']);
    expect(bodies('/filtered').every((event) => event.accountId === accountA)).toBe(true);
    expect(received.filter((delivery) => delivery.path === '/silenced')).toEqual([]);

    // Each event reached each endpoint once (a retry repeats its id, never a second 200).
    for (const path of ['/all', '/filtered']) {
      const ids = bodies(path).map((event) => event.id);
      expect(new Set(ids).size).toBe(ids.length);
    }
    const failed = received.filter((delivery) => delivery.status === 500).map((delivery) => JSON.parse(delivery.body) as LedgerWebhookEvent);
    expect(failed).toHaveLength(2);
    for (const event of failed) expect([...bodies('/all'), ...bodies('/filtered')].some((delivered) => delivered.id === event.id)).toBe(true);

    const expired = all.find((event) => event.type === 'grant.expired' && event.accountId === accountA)!;
    expect(expired).toMatchObject({ createdAt: '2025-01-06T00:00:00.000Z', data: { source: 'BONUS', creditType: pool } });
    expect(all.find((event) => event.type === 'plan.changed')!.data).toEqual({ fromPlan: basic, toPlan: pro });
    const created = all.find((event) => event.type === 'grant.created' && event.accountId === accountB)!;
    expect(created.data).toMatchObject({ source: 'BONUS', amount: 7, funding: 'PROMOTIONAL' });

    // Signed with each endpoint's own secret.
    const delivery = received.find((each) => each.path === '/filtered' && each.status === 200)!;
    expect(await verifyLedgerWebhook({ payload: delivery.body, signature: delivery.signature, secret: filtered.secret })).toMatchObject({ accountId: accountA });
    expect(await verifyLedgerWebhook({ payload: delivery.body, signature: delivery.signature, secret: everything.secret }).catch((error: Error) => error.name)).toBe('WebhookVerificationError');
    expect((await admin.webhookEndpoints()).map((endpoint) => endpoint.id)).toEqual([everything.endpoint.id, filtered.endpoint.id, silenced.endpoint.id]);
  });

  it('refuses unknown event types, URLs outside the rules and other keys than ADMIN', async () => {
    expect(await codeOf(admin.createWebhookEndpoint({ url: `${baseUrl}/x`, eventTypes: ['grant.exploded'] }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.createWebhookEndpoint({ url: 'ftp://example.com/hook' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.createWebhookEndpoint({ url: `${baseUrl}/x`, accountId: unique('nobody') }))).toBe('ACCOUNT_NOT_FOUND');
    expect(await codeOf(admin.updateWebhookEndpoint({ id: '00000000-0000-0000-0000-000000000000', enabled: false }))).toBe('WEBHOOK_ENDPOINT_NOT_FOUND');
    const pool = unique('credits');
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 1 }], featureKeys: [] });
    const account = (await admin.createAccount({ name: 'keyed', planCode: plan })).id;
    const backEnd = operator({ ...server, adminKey: await createKey(server, 'ACCOUNT', account) });
    expect(await codeOf(backEnd.createWebhookEndpoint({ url: `${baseUrl}/x` }))).toBe('FORBIDDEN');
    expect(await codeOf(backEnd.webhookEndpoints())).toBe('FORBIDDEN');
  });

  it('holds the limit of enabled endpoints when a disabled one is turned back on', async () => {
    const enabledCount = async () => (await admin.webhookEndpoints()).filter((endpoint) => endpoint.enabled).length;
    const parked = await admin.createWebhookEndpoint({ url: `${baseUrl}/parked` });
    await admin.updateWebhookEndpoint({ id: parked.endpoint.id, enabled: false });
    while ((await enabledCount()) < 20) await admin.createWebhookEndpoint({ url: `${baseUrl}/filler` });
    expect(await codeOf(admin.createWebhookEndpoint({ url: `${baseUrl}/one-more` }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.updateWebhookEndpoint({ id: parked.endpoint.id, enabled: true }))).toBe('INVALID_INPUT');
    expect(await enabledCount()).toBe(20);
    expect((await admin.updateWebhookEndpoint({ id: parked.endpoint.id, eventTypes: ['grant.created'] })).enabled).toBe(false);
  });
});
