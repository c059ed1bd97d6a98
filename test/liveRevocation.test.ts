import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, createAccount, defineFeature, definePlan, grantCredits, ok } from './support/fixtures.ts';
import { BALANCE_SUBSCRIPTION, connectLive, waitUntilLive, type LiveClient } from './support/live.ts';
import { postgresService, redisService, SHARED_POSTGRES_URL, SHARED_REDIS_URL, skipUnless } from './support/optional.ts';
import { startServerProcess, type ServerProcess } from './support/processServer.ts';
import { createPostgresDatabase, startTestServer, testDatabaseUrl, unique, type GqlTarget, type TestServer } from './support/server.ts';

const CREATE_KEY = `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }`;

const clients: LiveClient[] = [];
function live(target: GqlTarget, key: string): LiveClient {
  const client = connectLive(target.url, key);
  clients.push(client);
  return client;
}

async function listeningKey(target: GqlTarget, role: 'ACCOUNT' | 'SEAT', listenOn: GqlTarget = target) {
  const pool = unique('credits');
  const feature = await defineFeature(target, { creditType: pool, unitCredits: 1 });
  const accountId = await createAccount(target, await definePlan(target, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
  const seatId = await addSeat(target, accountId);
  const created = ok(await target.gql(CREATE_KEY, { input: { role, accountId, ...(role === 'SEAT' ? { seatId } : {}) } })).createApiKey;
  const client = live(listenOn, created.secret);
  const probe = () => grantCredits(target, { accountId, creditType: unique('probe'), amount: 1 });
  await waitUntilLive(client, accountId, probe);
  let closedAt = 0;
  const closed = client.closed.then((code) => {
    closedAt = Date.now();
    return code;
  });
  return { accountId, seatId, keyId: created.apiKey.id as string, secret: created.secret as string, client, closed, closedAt: () => closedAt, probe };
}

/** How long after `at` the socket closed, with which code; fails the test when it stays open 3 s. */
async function closedWithin(key: Awaited<ReturnType<typeof listeningKey>>, at: number): Promise<{ code: number; ms: number }> {
  const code = await Promise.race([key.closed, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 3_000))]);
  return { code, ms: code === -1 ? Infinity : key.closedAt() - at };
}

afterAll(async () => {
  await Promise.all(clients.map((client) => client.dispose()));
});

describe('revoking a key closes its sockets', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ JOBS_ENABLED: 'false' });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('revokeApiKey: the socket listening with that key closes with 4403 within a second; other keys’ sockets stay', async () => {
    const revoked = await listeningKey(server, 'SEAT');
    const bystander = await listeningKey(server, 'SEAT');
    const at = Date.now();
    ok(await server.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }`, { id: revoked.keyId }));
    const { code, ms } = await closedWithin(revoked, at);
    expect(code).toBe(4403);
    expect(ms).toBeLessThan(1_000);
    // The bystander still hears its account's changes.
    const balances = bystander.client.subscribe(BALANCE_SUBSCRIPTION, { accountId: bystander.accountId }, (data) => data.balanceUpdated);
    await new Promise((resolve) => setTimeout(resolve, 200));
    await bystander.probe();
    await balances.take(1);
    // And the revoked key cannot open a new one.
    expect(await live(server, revoked.secret).closed).toBe(4403);
  });

  it('rotateApiKey and removeSeat close the replaced key’s and the removed seat’s sockets too', async () => {
    const rotated = await listeningKey(server, 'ACCOUNT');
    let at = Date.now();
    ok(await server.gql(`mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, { id: rotated.keyId }));
    let outcome = await closedWithin(rotated, at);
    expect(outcome.code).toBe(4403);
    expect(outcome.ms).toBeLessThan(1_000);

    const seat = await listeningKey(server, 'SEAT');
    at = Date.now();
    ok(await server.gql(`mutation($id: ID!) { removeSeat(seatId: $id) { id } }`, { id: seat.seatId }));
    outcome = await closedWithin(seat, at);
    expect(outcome.code).toBe(4403);
    expect(outcome.ms).toBeLessThan(1_000);
  });
});

// Several instances need one PostgreSQL and one Redis, whichever database the rest of the suite uses.
const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skipMulti = skipUnless('test/liveRevocation.test.ts (several instances)', [await postgresService(POSTGRES), await redisService(SHARED_REDIS_URL)]);

describe.skipIf(skipMulti)('on every instance (two processes sharing PostgreSQL and Redis)', () => {
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let instances: ServerProcess[] = [];
  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES);
    const env = { DATABASE_URL: database.url, REDIS_URL: SHARED_REDIS_URL, JOBS_ENABLED: 'false', ADMIN_API_KEY: `revoke-admin-${unique('k')}` };
    const started = await Promise.allSettled([startServerProcess(env), startServerProcess(env)]);
    instances = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failure = started.find((result) => result.status === 'rejected');
    if (failure) throw (failure as PromiseRejectedResult).reason;
  });
  afterAll(async () => {
    await Promise.all(clients.map((client) => client.dispose()));
    await Promise.all(instances.map((instance) => instance.stop()));
    await database?.drop();
  });

  it('a key revoked on instance A closes its socket on instance B with 4403 within a second', async () => {
    const [a, b] = instances as [ServerProcess, ServerProcess];
    const key = await listeningKey(a, 'SEAT', b);
    const at = Date.now();
    ok(await a.gql(`mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }`, { id: key.keyId }));
    const { code, ms } = await closedWithin(key, at);
    expect(code).toBe(4403);
    expect(ms).toBeLessThan(1_000);
  });
});
