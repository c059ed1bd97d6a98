import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, createAccount, createKey, defineFeature, definePlan, recordUsage } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

const CONFIGURE = `mutation($input: ConfigureAlertWebhookInput!) { configureAlertWebhook(input: $input) { url } }`;

/** Counts every TCP connection: a refused target must never be connected to, whatever the protocol. */
async function listener(): Promise<{ port: number; connections: () => number; close(): void }> {
  let connections = 0;
  const server: TcpServer = createTcpServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, connections: () => connections, close: () => server.close() };
}

// Databases of their own: another server's job runner (one allowing private targets) must not
// deliver this file's alerts, nor this file's runner another's.
let server: TestServer;
let database: Awaited<ReturnType<typeof isolatedDatabase>>;
let target: Awaited<ReturnType<typeof listener>>;
beforeAll(async () => {
  target = await listener();
  database = await isolatedDatabase();
  server = await startTestServer({ JOBS_ENABLED: 'true', JOBS_INTERVAL_MS: '50', ALERT_WEBHOOK_RETRY_BASE_MS: '100', ...(database.url ? { DATABASE_URL: database.url } : {}) });
});
afterAll(async () => {
  await server?.stop();
  await database?.drop();
  target?.close();
});

async function accountWithKey(on: TestServer = server) {
  const pool = unique('credits');
  const feature = await defineFeature(on, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(on, await definePlan(on, { allocations: [{ creditType: pool, amount: 1_000 }], featureKeys: [feature] }));
  await addSeat(on, accountId);
  return { accountId, feature, accountKey: await createKey(on, 'ACCOUNT', accountId) };
}

describe('alert webhook targets (SSRF)', () => {
  it('refuses loopback, private, link-local, multicast and unspecified addresses in every notation, user info and plain http', async () => {
    const { accountId, accountKey } = await accountWithKey();
    const port = target.port;
    const refused = [
      `http://127.0.0.1:${port}/internal/admin`,
      `https://127.0.0.1:${port}/internal/admin`,
      `https://[::1]:${port}/`,
      `https://0.0.0.0:${port}/`,
      `https://[::]:${port}/`,
      `https://2130706433:${port}/`,
      `https://0x7f000001:${port}/`,
      `https://0x7f.1:${port}/`,
      `https://0177.0.0.1:${port}/`,
      `https://127.1:${port}/`,
      `https://[::ffff:127.0.0.1]:${port}/`,
      `https://[::ffff:7f00:1]:${port}/`,
      `https://[::127.0.0.1]:${port}/`,
      'https://[::10.0.0.1]/',
      `https://[0:0:0:0:0:ffff:a00:1]/`,
      'https://10.0.0.1/',
      'https://172.16.5.4/',
      'https://192.168.1.1/',
      'https://100.64.0.1/',
      'https://169.254.169.254/latest/meta-data/',
      'https://[fe80::1]/',
      'https://[fd00::1]/',
      'https://224.0.0.1/',
      'https://[ff02::1]/',
      'https://255.255.255.255/',
      `https://localhost:${port}/`,
      `https://api.localhost:${port}/`,
      `https://vm:${port}/`,
      'https://user:pass@hooks.example/billing',
      'https://user@hooks.example/billing',
      'http://hooks.example/billing',
      'ftp://hooks.example/billing',
      'file:///etc/passwd',
    ];
    for (const url of refused) {
      const response = await server.gql(CONFIGURE, { input: { accountId, url } }, accountKey);
      expect(response.errors?.[0]?.extensions?.code, `${url}: ${JSON.stringify(response)}`).toBe('INVALID_INPUT');
    }
    expect(await server.app.database.prisma.alertWebhook.findUnique({ where: { accountId } })).toBeNull();

    for (const url of ['https://hooks.example/billing', 'https://93.184.216.34/hook', 'https://[2606:4700::1111]/hook']) {
      const response = await server.gql(CONFIGURE, { input: { accountId, url } }, accountKey);
      expect(response.data?.configureAlertWebhook, `${url}: ${JSON.stringify(response)}`).toEqual({ url });
    }
    expect(target.connections()).toBe(0);
  });

  it('a stored URL whose host resolves (or was written) to a private address is refused at delivery, never connected to', async () => {
    for (const url of [`https://vm:${target.port}/hook`, `http://127.0.0.1:${target.port}/internal/admin`, `https://2130706433:${target.port}/`]) {
      const { accountId, feature } = await accountWithKey();
      // As if configured before these rules, or before the name's DNS answer changed.
      await server.app.database.prisma.alertWebhook.create({ data: { accountId, url, enabled: true, secret: 'whsec_test', createdAt: new Date() } });
      expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 800 })).data?.recordUsage?.__typename).toBe('UsageRecorded');
      const deadline = Date.now() + 10_000;
      let delivery = await server.app.database.prisma.alertDelivery.findFirst({ where: { accountId } });
      while ((delivery?.attempts ?? 0) < 2 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        delivery = await server.app.database.prisma.alertDelivery.findFirst({ where: { accountId } });
      }
      expect(delivery?.attempts, url).toBeGreaterThanOrEqual(2);
      expect(delivery?.deliveredAt).toBeNull();
      expect(delivery?.lastError, url).toMatch(/public|https/);
    }
    expect(target.connections()).toBe(0);
  });

  it('redirects are not followed, a slow receiver times out, and a huge answer is not read whole', async () => {
    let redirectedTo = 0;
    const receiver = createHttpServer((request, response) => {
      if (request.url === '/redirect') return void response.writeHead(302, { location: '/final' }).end();
      if (request.url === '/final') {
        redirectedTo += 1;
        return void response.writeHead(200).end();
      }
      if (request.url === '/slow') return; // never answers
      response.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const pump = () => {
        while (response.write(chunk)) if (response.destroyed) return;
        response.once('drain', pump);
      };
      response.on('error', () => {});
      pump();
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    const devDatabase = await isolatedDatabase();
    const devServer = await startTestServer({
      JOBS_ENABLED: 'true',
      JOBS_INTERVAL_MS: '50',
      ALERT_WEBHOOK_RETRY_BASE_MS: '60000',
      ALERT_WEBHOOK_ALLOW_PRIVATE: 'true',
      ALERT_WEBHOOK_TIMEOUT_MS: '2000',
      ...(devDatabase.url ? { DATABASE_URL: devDatabase.url } : {}),
    });
    try {
      const outcomes: Record<string, { attempts: number; lastError: string | null; deliveredAt: Date | null } | null> = {};
      for (const path of ['/redirect', '/slow', '/huge']) {
        const { accountId, feature, accountKey } = await accountWithKey(devServer);
        const configured = await devServer.gql(CONFIGURE, { input: { accountId, url: `${base}${path}` } }, accountKey);
        expect(configured.data?.configureAlertWebhook, JSON.stringify(configured)).toBeTruthy();
        expect((await recordUsage(devServer, { accountId, featureKey: feature, quantity: 800 })).data?.recordUsage?.__typename).toBe('UsageRecorded');
        const deadline = Date.now() + 10_000;
        let delivery = null;
        while (Date.now() < deadline) {
          delivery = await devServer.app.database.prisma.alertDelivery.findFirst({ where: { accountId } });
          if ((delivery?.attempts ?? 0) >= 1) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        outcomes[path] = delivery;
      }
      expect(outcomes['/redirect']).toMatchObject({ attempts: 1, lastError: 'HTTP 302', deliveredAt: null });
      expect(redirectedTo).toBe(0);
      expect(outcomes['/slow']?.attempts).toBe(1);
      expect(outcomes['/slow']?.deliveredAt).toBeNull();
      expect(outcomes['/slow']?.lastError).toMatch(/2000 ms|abort|timeout/i);
      // A 200 whose body never ends still counts as delivered once the cap is reached.
      expect(outcomes['/huge']).toMatchObject({ attempts: 1, lastError: null });
    } finally {
      await devServer.stop();
      await devDatabase.drop();
      receiver.closeAllConnections();
      receiver.close();
    }
  });
});
