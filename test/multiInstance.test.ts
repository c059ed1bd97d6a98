import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, createAccount, createKey, defineFeature, definePlan, grantCredits, recordUsage } from './support/fixtures.ts';
import { ALERTS_SUBSCRIPTION, connectLive, waitUntilLive, type LiveClient } from './support/live.ts';
import { postgresService, redisService, SHARED_POSTGRES_URL, SHARED_REDIS_URL, skipUnless } from './support/optional.ts';
import { startServerProcess, type ServerProcess } from './support/processServer.ts';
import { createPostgresDatabase, testDatabaseUrl, unique } from './support/server.ts';

// Several instances need one PostgreSQL and one Redis, whichever database the rest of the suite uses.
const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const REDIS_URL = SHARED_REDIS_URL;
const skip = skipUnless('test/multiInstance.test.ts', [await postgresService(POSTGRES), await redisService(REDIS_URL)]);

let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
let instances: ServerProcess[] = [];
let subscriber: LiveClient | null = null;

beforeAll(async () => {
  database = await createPostgresDatabase(POSTGRES);
  const env = { DATABASE_URL: database.url, REDIS_URL, JOBS_ENABLED: 'false', ADMIN_API_KEY: `multi-admin-${unique('k')}` };
  // Started together: both apply migrations at once, which the advisory lock must make safe.
  const started = await Promise.allSettled([startServerProcess(env), startServerProcess(env)]);
  instances = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failure = started.find((result) => result.status === 'rejected');
  if (failure) throw (failure as PromiseRejectedResult).reason;
});
afterAll(async () => {
  await subscriber?.dispose();
  await Promise.all(instances.map((instance) => instance.stop()));
  await database?.drop();
});

describe.skipIf(skip)('several server processes on one PostgreSQL and one Redis (needs both whatever TEST_DB says)', () => {
  it('a subscriber on one instance receives the alerts caused by usage on the other', async () => {
    const [a, b] = instances as [ServerProcess, ServerProcess];
    const pool = unique('credits');
    const feature = await defineFeature(a, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(a, await definePlan(a, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
    const seatKey = await createKey(a, 'SEAT', accountId, await addSeat(a, accountId));

    subscriber = connectLive(b.url, seatKey);
    const alerts = subscriber.subscribe(ALERTS_SUBSCRIPTION, { accountId }, (data) => data.creditAlerts);
    await waitUntilLive(subscriber, accountId, () => grantCredits(a, { accountId, creditType: unique('probe'), amount: 1 }));

    const usage = await recordUsage(a, { accountId, featureKey: feature, quantity: 80 });
    expect(usage.data.recordUsage.__typename).toBe('UsageRecorded');
    const [alert] = await alerts.take(1);
    expect(alert).toMatchObject({ kind: 'USAGE_THRESHOLD', threshold: 75, creditType: pool });
  });
});
