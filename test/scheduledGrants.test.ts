import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTransaction } from '../packages/server/src/db/transaction.ts';
import { fixedClock, systemClock } from '../packages/server/src/domain/clock.ts';
import { scheduleGrant } from '../packages/server/src/ledger/scheduledGrants.ts';
import { DueWorkRunner } from '../packages/server/src/jobs/dueWorkRunner.ts';
import { lockAccount } from '../packages/server/src/accounts/lockAccount.ts';
import { processDueWork } from '../packages/server/src/periods/dueWork.ts';
import { renewDueBatch } from '../packages/server/src/periods/renewBatch.ts';
import { BillingApiError, type BillingClient } from '../packages/sdk/src/index.ts';
import { advanceClock, createKey, createTestClock, defineFeature, definePlan, operator } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Issue 20 item 4: scheduleGrant issues a future grant, or one every month or year until an end,
 * exactly once per occurrence, by the job runner on the real clock and by advancing a test clock.
 */
let server: TestServer;
let database: { url: string | undefined; drop(): Promise<void> };
let admin: BillingClient;
let plan: string;
let pool: string;

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return error instanceof BillingApiError ? error.code : String(error);
  }
}

async function scheduledGrantsOf(accountId: string, scheduleSource: string) {
  const grants = [];
  for await (const grant of admin.grants.list(accountId, { includeExpired: true, first: 500 })) grants.push(grant);
  return grants.filter((grant) => grant.source === scheduleSource).map((grant) => grant.effectiveAt).sort();
}

beforeAll(async () => {
  database = await isolatedDatabase();
  server = await startTestServer({ JOBS_ENABLED: 'false', ...(database.url ? { DATABASE_URL: database.url } : {}) });
  admin = operator(server);
  pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool });
  plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 10 }], featureKeys: [feature] });
});

afterAll(async () => {
  await server?.stop();
  await database?.drop();
});

describe('scheduleGrant on a test clock', () => {
  it('issues each occurrence once, dated at its instant, however the clock moves; day 31 clamps in short months', async () => {
    const clock = await createTestClock(server, '2025-01-15T00:00:00.000Z');
    const account = (await admin.createAccount({ name: 'drip', planCode: plan, testClockId: clock })).id;
    const monthly = await admin.scheduleGrant({
      accountId: account,
      creditType: pool,
      amount: 100,
      source: 'TRIAL',
      interval: 'MONTH',
      startsAt: '2025-01-31T09:00:00.000Z',
      endsAt: '2026-01-01T00:00:00.000Z',
      expiresAfterDays: 40,
    });
    expect(monthly).toMatchObject({ issued: 0, nextAt: '2025-01-31T09:00:00.000Z' });
    await admin.scheduleGrant({ accountId: account, creditType: pool, amount: 5, source: 'BONUS', interval: 'ONCE', startsAt: '2025-03-10T00:00:00.000Z' });

    const expected = [
      '2025-01-31T09:00:00.000Z', '2025-02-28T09:00:00.000Z', '2025-03-31T09:00:00.000Z', '2025-04-30T09:00:00.000Z',
      '2025-05-31T09:00:00.000Z', '2025-06-30T09:00:00.000Z', '2025-07-31T09:00:00.000Z', '2025-08-31T09:00:00.000Z',
      '2025-09-30T09:00:00.000Z', '2025-10-31T09:00:00.000Z', '2025-11-30T09:00:00.000Z', '2025-12-31T09:00:00.000Z',
    ];
    expect(await scheduledGrantsOf(account, 'TRIAL')).toEqual([]);
    await advanceClock(server, clock, '2025-01-31T09:00:00.000Z');
    expect(await scheduledGrantsOf(account, 'TRIAL')).toEqual(expected.slice(0, 1));
    await advanceClock(server, clock, '2025-01-31T09:00:00.000Z');
    await advanceClock(server, clock, '2025-03-15T00:00:00.000Z');
    expect(await scheduledGrantsOf(account, 'TRIAL')).toEqual(expected.slice(0, 2));
    expect(await scheduledGrantsOf(account, 'BONUS')).toEqual(['2025-03-10T00:00:00.000Z']);
    await advanceClock(server, clock, '2025-11-01T00:00:00.000Z');
    expect(await scheduledGrantsOf(account, 'TRIAL')).toEqual(expected.slice(0, 10));
    await advanceClock(server, clock, '2026-06-01T00:00:00.000Z');
    expect(await scheduledGrantsOf(account, 'TRIAL')).toEqual(expected);
    expect(await scheduledGrantsOf(account, 'BONUS')).toHaveLength(1);

    const schedules = (await admin.scheduledGrants(account)).edges.map((edge) => edge.node);
    expect(schedules.find((schedule) => schedule.id === monthly.id)).toMatchObject({ issued: 12, nextAt: null });
    expect(schedules.find((schedule) => schedule.id !== monthly.id)).toMatchObject({ interval: 'ONCE', issued: 1, nextAt: null });
    // Each monthly grant expired 40 days after its occurrence: the period's 10 and the bonus that never expires are left.
    expect((await admin.balance(account, pool))?.available).toBe(10 + 5);
  });

  it('one advance over more than a pass of occurrences (11 years of a monthly drip) issues every one of them', async () => {
    const clock = await createTestClock(server, '2025-01-01T00:00:00.000Z');
    const account = (await admin.createAccount({ name: 'long jump', planCode: plan, testClockId: clock })).id;
    const schedule = await admin.scheduleGrant({
      accountId: account, creditType: pool, amount: 3, source: 'TRIAL', interval: 'MONTH', startsAt: '2025-01-31T00:00:00.000Z', endsAt: '2036-01-01T00:00:00.000Z',
    });
    await advanceClock(server, clock, '2036-06-01T00:00:00.000Z');
    const issued = await scheduledGrantsOf(account, 'TRIAL');
    expect(issued).toHaveLength(132);
    expect(new Set(issued).size).toBe(132);
    expect(issued.at(-1)).toBe('2035-12-31T00:00:00.000Z');
    const [state] = (await admin.scheduledGrants(account)).edges.map((edge) => edge.node).filter((each) => each.id === schedule.id);
    expect(state).toMatchObject({ issued: 132, nextAt: null });
    expect((await admin.balance(account, pool))?.available).toBe(10 + 3 * 132);
  });

  it('a schedule that cannot fit the pool is refused; an occurrence the pool has no more room for is skipped, and the clock still moves', async () => {
    const clock = await createTestClock(server, '2025-01-01T00:00:00.000Z');
    const account = (await admin.createAccount({ name: 'full pool', planCode: plan, testClockId: clock })).id;
    const max = Number.MAX_SAFE_INTEGER;
    expect(await codeOf(admin.scheduleGrant({ accountId: account, creditType: pool, amount: max - 5, source: 'BONUS', interval: 'ONCE', startsAt: '2025-01-10T00:00:00.000Z' }))).toBe('INVALID_CREDITS');
    expect((await admin.scheduledGrants(account)).edges).toEqual([]);
    const schedule = await admin.scheduleGrant({ accountId: account, creditType: pool, amount: 1000, source: 'BONUS', interval: 'ONCE', startsAt: '2025-01-10T00:00:00.000Z' });
    await admin.grantCredits({ accountId: account, creditType: pool, amount: max - 10 - 500, source: 'TRIAL' });
    await advanceClock(server, clock, '2025-01-15T00:00:00.000Z');
    expect(await scheduledGrantsOf(account, 'BONUS')).toEqual([]);
    expect((await admin.balance(account, pool))?.available).toBe(max - 500);
    const [state] = (await admin.scheduledGrants(account)).edges.map((edge) => edge.node).filter((each) => each.id === schedule.id);
    expect(state).toMatchObject({ issued: 1, nextAt: null });
  });

  it('an occurrence already due when scheduled is issued at once, spendable without waiting for the clock to move', async () => {
    const clock = await createTestClock(server, '2025-01-01T00:00:00.000Z');
    const account = (await admin.createAccount({ name: 'at once', planCode: plan, testClockId: clock })).id;
    const schedule = await admin.scheduleGrant({ accountId: account, creditType: pool, amount: 5, source: 'BONUS', interval: 'ONCE', startsAt: '2024-12-15T00:00:00.000Z' });
    expect(schedule).toMatchObject({ issued: 1, nextAt: null });
    expect(await scheduledGrantsOf(account, 'BONUS')).toEqual(['2024-12-15T00:00:00.000Z']);
    expect((await admin.balance(account, pool))?.available).toBe(10 + 5);
    await advanceClock(server, clock, '2025-01-02T00:00:00.000Z');
    expect(await scheduledGrantsOf(account, 'BONUS')).toHaveLength(1);
  });

  it('a canceled schedule issues nothing more', async () => {
    const clock = await createTestClock(server, '2025-01-01T00:00:00.000Z');
    const account = (await admin.createAccount({ name: 'cancel', planCode: plan, testClockId: clock })).id;
    const schedule = await admin.scheduleGrant({ accountId: account, creditType: pool, amount: 7, source: 'BONUS', interval: 'MONTH', startsAt: '2025-01-10T00:00:00.000Z', endsAt: '2025-12-31T00:00:00.000Z' });
    await advanceClock(server, clock, '2025-02-15T00:00:00.000Z');
    expect((await admin.cancelScheduledGrant(schedule.id)).canceledAt).not.toBeNull();
    await advanceClock(server, clock, '2025-08-01T00:00:00.000Z');
    expect(await scheduledGrantsOf(account, 'BONUS')).toEqual(['2025-01-10T00:00:00.000Z', '2025-02-10T00:00:00.000Z']);
  });
});

describe('scheduleGrant on the real clock', () => {
  it('a runner that comes late issues an overdue occurrence before it renews the period, never after', async () => {
    const account = (await admin.createAccount({ name: 'late runner', planCode: plan })).id;
    const plain = (await admin.createAccount({ name: 'late runner, no schedule', planCode: plan })).id;
    const occurrence = new Date(Date.now() + 10 * 86_400_000);
    await admin.scheduleGrant({ accountId: account, creditType: pool, amount: 4, source: 'BONUS', interval: 'ONCE', startsAt: occurrence.toISOString() });
    // The runner comes 40 days on: the period has ended and the occurrence is overdue. The
    // set-based renewal, which reads no schedules, leaves that account to the complete path.
    const late = new Date(Date.now() + 40 * 86_400_000);
    const prisma = server.app.database.prisma;
    expect(await renewDueBatch(prisma, late, 10, [account, plain])).toMatchObject({ renewed: [plain], fallback: [account] });
    await inTransaction(prisma, async (tx) => processDueWork(tx, await lockAccount(tx, fixedClock(late), account), late));
    const entries = await server.app.database.statement<{ type: string; created_at: Date | string }>(
      'SELECT type::text AS type, created_at FROM ledger_entries WHERE account_id = $1 ORDER BY id',
      [account],
    );
    // The plan's grant, the occurrence at its instant, then the period end: the plan's credits expire and the next period's come.
    expect(entries.map((entry) => entry.type)).toEqual(['GRANT', 'GRANT', 'EXPIRE', 'GRANT']);
    const instants = entries.map((entry) => new Date(entry.created_at).getTime());
    expect(instants).toEqual([...instants].sort((x, y) => x - y));
    expect(instants[1]).toBe(occurrence.getTime());
  });

  it('two runners racing issue every missed occurrence exactly once', async () => {
    const account = (await admin.createAccount({ name: 'race', planCode: plan })).id;
    const now = Date.now();
    const start = new Date(now - 95 * 86_400_000);
    // Scheduled as of a day before its first occurrence (scheduleGrant issues what is already due at
    // once), so that every occurrence since is missed and the runners race for them.
    const schedule = await inTransaction(server.app.database.prisma, (tx) =>
      scheduleGrant(tx, fixedClock(new Date(start.getTime() - 86_400_000)), {
        accountId: account,
        creditType: pool,
        amount: 11,
        source: 'ADJUSTMENT',
        interval: 'MONTH',
        startsAt: start,
        endsAt: new Date(now + 60 * 86_400_000),
        idempotencyKey: unique('race'),
      }),
    );
    expect(schedule.issued).toBe(0);
    const occurrencesDue = [0, 1, 2, 3, 4].filter((index) => {
      const at = new Date(start);
      at.setUTCMonth(at.getUTCMonth() + index);
      return at.getTime() <= now;
    }).length;
    const runner = () => new DueWorkRunner({ prisma: server.app.database.prisma, clock: systemClock, logger: pino({ level: 'silent' }), intervalMs: 1000, concurrency: 2 });
    const runners = [runner(), runner(), runner()];
    await Promise.all([...runners, ...runners].map((each) => each.runOnce()));
    await Promise.all(runners.map((each) => each.runOnce()));
    const issued = await scheduledGrantsOf(account, 'ADJUSTMENT');
    expect(issued).toHaveLength(occurrencesDue);
    expect(new Set(issued).size).toBe(occurrencesDue);
    expect((await admin.balance(account, pool))?.available).toBe(10 + 11 * occurrencesDue);
    const [state] = (await admin.scheduledGrants(account)).edges.map((edge) => edge.node);
    expect(state).toMatchObject({ id: schedule.id, issued: occurrencesDue });
    expect(Date.parse(state!.nextAt!)).toBeGreaterThan(now);
  });
});

describe('scheduleGrant scoped to features', () => {
  it('each issued grant applies only to the listed features; another feature of the pool cannot spend it', async () => {
    const scoped = await defineFeature(server, { creditType: pool });
    const other = await defineFeature(server, { creditType: pool });
    const promoPlan = await definePlan(server, { allocations: [{ creditType: pool, amount: 0 }], featureKeys: [scoped, other] });
    const account = (await admin.createAccount({ name: 'promo', planCode: promoPlan })).id;
    const schedule = await admin.scheduleGrant({
      accountId: account, creditType: pool, amount: 9, source: 'BONUS', interval: 'ONCE', startsAt: new Date(Date.now() - 1000).toISOString(), featureKeys: [scoped],
    });
    expect(schedule.featureKeys).toEqual([scoped]);
    await new DueWorkRunner({ prisma: server.app.database.prisma, clock: systemClock, logger: pino({ level: 'silent' }), intervalMs: 1000 }).runOnce();
    const [grant] = (await admin.grants(account)).edges.map((edge) => edge.node).filter((each) => each.source === 'BONUS');
    expect(grant).toMatchObject({ amount: 9, featureKeys: [scoped] });
    expect((await admin.recordUsage({ accountId: account, featureKey: other, quantity: 1 })).__typename).toBe('InsufficientCredits');
    expect((await admin.recordUsage({ accountId: account, featureKey: scoped, quantity: 1 })).__typename).toBe('UsageRecorded');
    expect(await codeOf(admin.scheduleGrant({ accountId: account, creditType: pool, amount: 1, source: 'BONUS', interval: 'ONCE', startsAt: '2030-01-01T00:00:00Z', featureKeys: [unique('nope')] }))).toBe('UNKNOWN_FEATURE');
  });
});

describe('scheduleGrant refusals', () => {
  it('bad input is INVALID_INPUT and schedules nothing; ACCOUNT keys may not schedule; the key makes it idempotent', async () => {
    const account = (await admin.createAccount({ name: 'refusals', planCode: plan })).id;
    const base = { accountId: account, creditType: pool, amount: 5, source: 'BONUS' as const, startsAt: '2030-01-01T00:00:00.000Z' };
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'MONTH' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'MONTH', endsAt: '2029-01-01T00:00:00.000Z' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'MONTH', endsAt: '2140-01-01T00:00:00.000Z' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'ONCE', endsAt: '2031-01-01T00:00:00.000Z' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'ONCE', source: 'PURCHASE' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'ONCE', expiresAfterDays: 0 }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'ONCE', amount: 0 }))).toBe('INVALID_CREDITS');
    expect(await codeOf(admin.scheduleGrant({ ...base, interval: 'MONTH', startsAt: '0050-01-15T00:00:00.000Z', endsAt: '0060-01-01T00:00:00.000Z' }))).toBe('INVALID_INPUT');
    expect((await admin.scheduledGrants(account)).edges).toEqual([]);

    const backEnd = operator({ ...server, adminKey: await createKey(server, 'ACCOUNT', account) });
    expect(await codeOf(backEnd.scheduleGrant({ ...base, interval: 'ONCE' }))).toBe('FORBIDDEN');

    const key = unique('schedule');
    const first = await admin.scheduleGrant({ ...base, interval: 'ONCE', idempotencyKey: key });
    expect((await admin.scheduleGrant({ ...base, interval: 'ONCE', idempotencyKey: key })).id).toBe(first.id);
    expect(await codeOf(admin.scheduleGrant({ ...base, amount: 6, interval: 'ONCE', idempotencyKey: key }))).toBe('IDEMPOTENCY_CONFLICT');
    expect(await codeOf(backEnd.cancelScheduledGrant(first.id))).toBe('FORBIDDEN');
    expect(await codeOf(admin.cancelScheduledGrant('00000000-0000-0000-0000-000000000000'))).toBe('SCHEDULED_GRANT_NOT_FOUND');
    expect((await backEnd.scheduledGrants(account)).edges.map((edge) => edge.node.id)).toEqual([first.id]);
  });
});
