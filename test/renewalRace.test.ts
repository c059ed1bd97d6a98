import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../packages/server/src/db/database.ts';
import { fixedClock } from '../packages/server/src/domain/clock.ts';
import { DueWorkRunner } from '../packages/server/src/jobs/dueWorkRunner.ts';
import { computeBillingPeriod } from '../packages/server/src/domain/billingPeriod.ts';
import { createAccount, defineFeature, definePlan, expectLedgerConsistent, recordUsage } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

// The runners process every due account they find, at a clock weeks ahead: they get a database of
// their own so that other test files' accounts are not renewed under them.
let server: TestServer;
let second: Database | null = null;
let database: Awaited<ReturnType<typeof isolatedDatabase>>;
beforeAll(async () => {
  database = await isolatedDatabase();
  server = await startTestServer({ JOBS_ENABLED: 'false', ...(database.url ? { DATABASE_URL: database.url } : {}) });
  // On PostgreSQL the second runner gets its own connection pool, as another instance would.
  if (database.url) second = await openDatabase({ databaseUrl: database.url, dataDir: 'memory://', poolSize: 10 });
});
afterAll(async () => {
  await second?.close();
  await server?.stop();
  await database?.drop();
});

const DAY = 86_400_000;
const silent = pino({ level: 'silent' });

describe('the due-work runner', () => {
  it('two runners racing on the same due periods renew each account exactly once', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100, rollover: 'CAP_MULTIPLE', rolloverValue: 2 }], featureKeys: [feature] });
    const accounts = await Promise.all(Array.from({ length: 20 }, () => createAccount(server, plan)));
    await Promise.all(accounts.map((accountId) => recordUsage(server, { accountId, featureKey: feature, quantity: 30 })));

    const later = fixedClock(new Date(Date.now() + 32 * DAY));
    const prismaA = server.app.database.prisma;
    const prismaB = second?.prisma ?? prismaA;
    const runners = [
      new DueWorkRunner({ prisma: prismaA, clock: later, logger: silent, intervalMs: 1000, concurrency: 4 }),
      new DueWorkRunner({ prisma: prismaB, clock: later, logger: silent, intervalMs: 1000, concurrency: 4 }),
    ];
    await Promise.all([...runners, ...runners].map((runner) => runner.runOnce()));
    await Promise.all(runners.map((runner) => runner.runOnce()));

    const renewals = await prismaA.periodRenewal.groupBy({ by: ['accountId'], where: { accountId: { in: accounts } }, _count: true });
    expect(renewals).toHaveLength(20);
    for (const row of renewals) expect(row._count).toBe(1);
    const grants = await prismaA.grant.groupBy({ by: ['source'], where: { accountId: { in: accounts } }, _count: true, _sum: { amount: true } });
    const bySource = Object.fromEntries(grants.map((row) => [row.source, { count: row._count, amount: Number(row._sum.amount) }]));
    expect(bySource).toEqual({ PLAN: { count: 40, amount: 4_000 }, ROLLOVER: { count: 20, amount: 1_400 } });
    await expectLedgerConsistent(server);
  });

  it('catches up every missed period after downtime, in order', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
    const runner = new DueWorkRunner({ prisma: server.app.database.prisma, clock: fixedClock(new Date(Date.now() + 100 * DAY)), logger: silent, intervalMs: 1000 });
    await runner.runOnce();
    const renewals = await server.app.database.prisma.periodRenewal.findMany({ where: { accountId }, orderBy: { periodStart: 'asc' } });
    expect(renewals).toHaveLength(3);
    // Exactly the three periods that ended, each following the last: catching up skips none and repeats none.
    const account = await server.app.database.prisma.account.findUniqueOrThrow({ where: { id: accountId } });
    expect(renewals.map((renewal) => [renewal.periodStart, renewal.periodEnd])).toEqual(
      [1, 2, 3].map((index) => {
        const period = computeBillingPeriod(account.periodAnchor, 'MONTH', index);
        return [period.start, period.end];
      }),
    );
    expect(account.periodIndex).toBe(3);
    expect(account.currentPeriodStart).toEqual(renewals[2]!.periodStart);
    const expired = await server.app.database.prisma.ledgerEntry.count({ where: { accountId, type: 'EXPIRE' } });
    expect(expired).toBe(3);
    expect(await runner.runOnce()).toBe(0);
    await expectLedgerConsistent(server);
  });
});
