/**
 * The first definite answer for an idempotency key is its answer: a refused usage or hold is not
 * charged by a late duplicate of its key, even after credits were granted in between (issue 16.1).
 */
import pg from 'pg';
import { purgeRefusals } from '../packages/server/src/ledger/refusals.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, defineFeature, definePlan, grantCredits, ok, RECORD_USAGE } from './support/fixtures.ts';
import { DependencyProxy } from './support/dependencyProxy.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { startServerProcess, type ServerProcess } from './support/processServer.ts';
import { createPostgresDatabase, isolatedDatabase, startTestServer, testDatabaseUrl, unique, type GqlTarget, type TestServer } from './support/server.ts';

const RESERVE = `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename ... on CreditsReserved { reservation { id held } } ... on Error { code } } }`;
const BATCH = `mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename ... on UsageRecorded { usageEvent { id } } ... on Error { code } } }`;

async function emptyAccount(server: GqlTarget): Promise<{ accountId: string; feature: string; pool: string }> {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 10 });
  const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 5 }], featureKeys: [feature] }));
  return { accountId, feature, pool };
}

describe('a refusal is final for its key', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ JOBS_ENABLED: 'false' });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('recordUsage: a refused key stays refused after a top-up, on the hot path and in a batch; a new key is charged', async () => {
    const { accountId, feature, pool } = await emptyAccount(server);
    const input = { accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('k') };
    const first = ok(await server.gql(RECORD_USAGE, { input })).recordUsage;
    expect(first).toMatchObject({ __typename: 'InsufficientCredits', required: 10, available: 5 });

    await grantCredits(server, { accountId, creditType: pool, amount: 1_000 });
    // The plain case after the grant: without the stored refusal the hot path would charge it.
    expect(ok(await server.gql(RECORD_USAGE, { input })).recordUsage).toEqual(first);
    expect(ok(await server.gql(BATCH, { inputs: [input] })).recordUsageBatch).toEqual([{ __typename: 'InsufficientCredits', code: 'INSUFFICIENT_CREDITS' }]);
    const conflicting = await server.gql(RECORD_USAGE, { input: { ...input, quantity: 2 } });
    expect(conflicting.errors?.[0]?.extensions?.code).toBe('IDEMPOTENCY_CONFLICT');

    const retried = ok(await server.gql(RECORD_USAGE, { input: { ...input, idempotencyKey: unique('k') } })).recordUsage;
    expect(retried.__typename).toBe('UsageRecorded');
    const events = ok(await server.gql(`query($id: ID!) { account(id: $id) { balance(creditType: "${pool}") { available } } }`, { id: accountId }));
    expect(events.account.balance.available).toBe(1_005 - 10);
  });

  it('recordUsageBatch: a key the batch refused stays refused in a later batch', async () => {
    const { accountId, feature, pool } = await emptyAccount(server);
    const inputs = [{ accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('b') }];
    expect(ok(await server.gql(BATCH, { inputs })).recordUsageBatch[0].__typename).toBe('InsufficientCredits');
    await grantCredits(server, { accountId, creditType: pool, amount: 1_000 });
    expect(ok(await server.gql(BATCH, { inputs })).recordUsageBatch[0].__typename).toBe('InsufficientCredits');
    expect(ok(await server.gql(RECORD_USAGE, { input: inputs[0] })).recordUsage.__typename).toBe('InsufficientCredits');
  });

  it('SpendLimitExceeded is final too: raising the limit does not let a late duplicate through', async () => {
    const { accountId, feature, pool } = await emptyAccount(server);
    await grantCredits(server, { accountId, creditType: pool, amount: 1_000 });
    const limit = `mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { id limit } }`;
    ok(await server.gql(limit, { input: { accountId, scope: 'ACCOUNT', period: 'BILLING_PERIOD', limit: 5 } }));
    const input = { accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('s') };
    expect(ok(await server.gql(RECORD_USAGE, { input })).recordUsage.__typename).toBe('SpendLimitExceeded');
    expect(ok(await server.gql(limit, { input: { accountId, scope: 'ACCOUNT', period: 'BILLING_PERIOD', limit: 500 } })).setSpendLimit.limit).toBe(500);
    expect(ok(await server.gql(RECORD_USAGE, { input })).recordUsage.__typename).toBe('SpendLimitExceeded');
    expect(ok(await server.gql(RECORD_USAGE, { input: { ...input, idempotencyKey: unique('s') } })).recordUsage.__typename).toBe('UsageRecorded');
  });

  it('FeatureNotAvailable is final too: adding the feature to the plan does not let a late duplicate through', async () => {
    const { accountId, feature, pool } = await emptyAccount(server);
    await grantCredits(server, { accountId, creditType: pool, amount: 1_000 });
    const extra = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const input = { accountId, featureKey: extra, quantity: 1, idempotencyKey: unique('f') };
    const first = ok(await server.gql(RECORD_USAGE, { input })).recordUsage;
    expect(first.__typename).toBe('FeatureNotAvailable');
    const plan = ok(await server.gql(`query($id: ID!) { account(id: $id) { subscription { plan { code } } } }`, { id: accountId })).account.subscription.plan.code;
    await definePlan(server, { code: plan, allocations: [{ creditType: pool, amount: 5 }], featureKeys: [feature, extra] });
    expect(ok(await server.gql(RECORD_USAGE, { input })).recordUsage).toEqual(first);
    expect(ok(await server.gql(BATCH, { inputs: [input] })).recordUsageBatch[0].__typename).toBe('FeatureNotAvailable');
    expect(ok(await server.gql(RECORD_USAGE, { input: { ...input, idempotencyKey: unique('f') } })).recordUsage.__typename).toBe('UsageRecorded');
  });

  it('reserveCredits: a refused hold key is not held after a top-up', async () => {
    const { accountId, feature, pool } = await emptyAccount(server);
    const input = { accountId, featureKey: feature, credits: 50, idempotencyKey: unique('h') };
    expect(ok(await server.gql(RESERVE, { input })).reserveCredits).toEqual({ __typename: 'InsufficientCredits', code: 'INSUFFICIENT_CREDITS' });
    await grantCredits(server, { accountId, creditType: pool, amount: 1_000 });
    expect(ok(await server.gql(RESERVE, { input })).reserveCredits).toEqual({ __typename: 'InsufficientCredits', code: 'INSUFFICIENT_CREDITS' });
    expect(ok(await server.gql(RESERVE, { input: { ...input, idempotencyKey: unique('h') } })).reserveCredits.__typename).toBe('CreditsReserved');
  });
});

describe('refusals are kept IDEMPOTENCY_REFUSAL_TTL_HOURS', () => {
  // A database of its own: a purge forgets every account's old refusals.
  let database: { url: string | undefined; drop(): Promise<void> };
  let server: TestServer;
  beforeAll(async () => {
    database = await isolatedDatabase();
    server = await startTestServer({ JOBS_ENABLED: 'false', ...(database.url ? { DATABASE_URL: database.url } : {}) });
  });
  afterAll(async () => {
    await server?.stop();
    await database?.drop();
  });

  it('a refusal is forgotten once purged (IDEMPOTENCY_REFUSAL_TTL_HOURS): the key may then be charged', async () => {
    const { accountId, feature, pool } = await emptyAccount(server);
    const input = { accountId, featureKey: feature, quantity: 1, idempotencyKey: unique('p') };
    expect(ok(await server.gql(RECORD_USAGE, { input })).recordUsage.__typename).toBe('InsufficientCredits');
    await grantCredits(server, { accountId, creditType: pool, amount: 1_000 });
    expect(await purgeRefusals(server.app.database.prisma, new Date(Date.now() - 3_600_000))).toBe(0);
    expect(ok(await server.gql(RECORD_USAGE, { input })).recordUsage.__typename).toBe('InsufficientCredits');
    expect(await purgeRefusals(server.app.database.prisma, new Date(Date.now() + 1_000))).toBeGreaterThanOrEqual(1);
    expect(ok(await server.gql(RECORD_USAGE, { input })).recordUsage.__typename).toBe('UsageRecorded');
  });
});

const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skipFreeze = skipUnless("test/refusalsFinal.test.ts's frozen-instance test", [await postgresService(POSTGRES)]);

describe.skipIf(skipFreeze)('a frozen instance (needs PostgreSQL whatever TEST_DB says)', () => {
  let database: { url: string; drop(): Promise<void> };
  let proxy: DependencyProxy;
  let frozen: ServerProcess;
  let other: ServerProcess;
  let direct: pg.Client;

  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES);
    proxy = await DependencyProxy.start(new URL(database.url), 5432);
    const adminKey = `refusal-admin-${unique('k')}-0123456789`;
    const env = { ADMIN_API_KEY: adminKey, JOBS_ENABLED: 'false', LOG_LEVEL: 'fatal', USAGE_BATCH_CONCURRENCY: '0' };
    other = await startServerProcess({ ...env, DATABASE_URL: database.url });
    // The frozen instance reaches PostgreSQL through the proxy, which holds its statements while it
    // is stopped, so that it decides only after the other instance's refusal and the grant.
    frozen = await startServerProcess({ ...env, DATABASE_URL: proxy.through(database.url) });
    direct = new pg.Client({ connectionString: database.url });
    await direct.connect();
  });
  afterAll(async () => {
    if (frozen?.child.exitCode === null) frozen.child.kill('SIGCONT');
    await frozen?.stop('SIGKILL');
    await other?.stop('SIGKILL');
    await direct?.end();
    await proxy?.close();
    await database?.drop();
  });

  for (const operation of ['recordUsage', 'reserveCredits'] as const) {
    it(`${operation}: K reaches instance A, which freezes; the client times out and retries K on B (refused); credits are granted; A thaws: K is never charged`, async () => {
      const { accountId, feature, pool } = await emptyAccount(other);
      const idempotencyKey = unique('frozen');
      const [query, input] =
        operation === 'recordUsage'
          ? [RECORD_USAGE, { accountId, featureKey: feature, quantity: 1, idempotencyKey }]
          : [RESERVE, { accountId, featureKey: feature, credits: 50, idempotencyKey }];
      const send = (target: ServerProcess, signal?: AbortSignal) =>
        fetch(`${target.url}/graphql`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${target.adminKey}` },
          body: JSON.stringify({ query, variables: { input } }),
          signal,
        });

      proxy.hold();
      const late = send(frozen).then(async (response) => ((await response.json()) as { data: Record<string, { __typename: string }> }).data[operation]!.__typename);
      await new Promise((resolve) => setTimeout(resolve, 300));
      frozen.child.kill('SIGSTOP');
      const timedOut = await send(frozen, AbortSignal.timeout(500)).then(
        () => false,
        () => true,
      );
      expect(timedOut).toBe(true);

      const retried = ok(await other.gql(query, { input }));
      expect(retried[operation].__typename).toBe('InsufficientCredits');
      await grantCredits(other, { accountId, creditType: pool, amount: 1_000 });

      proxy.release();
      frozen.child.kill('SIGCONT');
      expect(await late).toBe('InsufficientCredits');

      const { rows: events } = await direct.query(`SELECT id FROM usage_events WHERE account_id = $1`, [accountId]);
      const { rows: holds } = await direct.query(`SELECT id FROM reservations WHERE account_id = $1`, [accountId]);
      expect([...events, ...holds]).toEqual([]);
      const { rows } = await direct.query<{ remaining: string }>(`SELECT sum(remaining) AS remaining FROM grants WHERE account_id = $1`, [accountId]);
      expect(Number(rows[0]!.remaining)).toBe(1_005);
    });
  }
});
