import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockAccount } from '../packages/server/src/accounts/lockAccount.ts';
import { inTransaction } from '../packages/server/src/db/transaction.ts';
import { fixedClock } from '../packages/server/src/domain/clock.ts';
import { loadBalances } from '../packages/server/src/ledger/balances.ts';
import { processDueWork } from '../packages/server/src/periods/dueWork.ts';
import { renewDueBatch } from '../packages/server/src/periods/renewBatch.ts';
import type { RolloverKind } from '../packages/sdk/src/index.ts';
import { addSeat, advanceClock, createAccount, createTestClock, defineFeature, definePlan, expectLedgerConsistent, grantCredits, operator, type PlanSpec } from './support/fixtures.ts';
import { startTestServer, testDatabaseUrl, unique, type TestServer } from './support/server.ts';

let server: TestServer;
const pools = [unique('credits'), unique('credits')] as const;
let features: [string, string];

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  features = [await defineFeature(server, { creditType: pools[0], unitCredits: 1 }), await defineFeature(server, { creditType: pools[1], unitCredits: 1 })];
});
afterAll(async () => {
  await server?.stop();
});

const DAY = 86_400_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const rollover = fc.oneof(
  fc.constant({ rollover: 'NONE' as RolloverKind }),
  fc.record({ rollover: fc.constant('CAP_MULTIPLE' as RolloverKind), rolloverValue: fc.constantFrom(1, 1.5, 2, 3) }),
  fc.record({ rollover: fc.constant('PERCENT' as RolloverKind), rolloverValue: fc.constantFrom(1, 12.5, 15, 33.3, 100) }),
);

const allocation = fc.record({ amount: fc.integer({ min: 0, max: 300 }), rule: rollover });

const scenario = fc.record({
  interval: fc.constantFrom('MONTH' as const, 'MONTH' as const, 'YEAR' as const),
  shared: fc.tuple(allocation, fc.option(allocation)),
  perSeatAmount: fc.option(fc.integer({ min: 1, max: 50 }), { freq: 4 }),
  // Anchors late in a month too, where the next period's end is clamped to the month's last day.
  anchor: fc.record({
    year: fc.integer({ min: 2024, max: 2027 }),
    month: fc.integer({ min: 0, max: 11 }),
    day: fc.oneof(fc.integer({ min: 1, max: 28 }), fc.integer({ min: 28, max: 31 })),
    ms: fc.integer({ min: 0, max: DAY - 1 }),
  }),
  renewedBefore: fc.boolean(),
  usage: fc.array(fc.record({ pool: fc.integer({ min: 0, max: 1 }), quantity: fc.integer({ min: 1, max: 250 }) }), { maxLength: 4 }),
  grants: fc.array(
    fc.record({
      pool: fc.integer({ min: 0, max: 1 }),
      amount: fc.integer({ min: 1, max: 120 }),
      source: fc.constantFrom('BONUS' as const, 'PURCHASE' as const, 'PLAN' as const, 'ROLLOVER' as const, 'TRIAL' as const),
      // Days from the clock, 'end': exactly at the period end, null: never.
      expires: fc.oneof(fc.integer({ min: 1, max: 400 }), fc.constant('end' as const), fc.constant(null)),
      effectiveInDays: fc.option(fc.integer({ min: 1, max: 60 }), { freq: 4 }),
      spend: fc.integer({ min: 0, max: 60 }),
    }),
    { maxLength: 3 },
  ),
  // One thing at most that may send the account to the complete path (or, for some, may not).
  complication: fc.constantFrom(
    null,
    null,
    null,
    null,
    null,
    null,
    'upgrade' as const,
    'percents' as const,
    'downgrade' as const,
    'seat' as const,
    'lowBalance' as const,
    'expiring' as const,
    'hold' as const,
    'late' as const,
  ),
  // After the period end: within the next period, or ('late') possibly past it too.
  lateBy: fc.integer({ min: 0, max: 3 * DAY }),
  lateByMore: fc.integer({ min: 25 * DAY, max: 70 * DAY }),
});

type Scenario = typeof scenario extends fc.Arbitrary<infer T> ? T : never;

function anchorOf(spec: Scenario['anchor']): Date {
  const lastDay = new Date(Date.UTC(spec.year, spec.month + 1, 0)).getUTCDate();
  return new Date(Date.UTC(spec.year, spec.month, Math.min(spec.day, lastDay)) + spec.ms);
}

async function clockNow(testClockId: string): Promise<Date> {
  return new Date((await operator(server).testClock(testClockId))!.frozenTime);
}

async function periodEnd(accountId: string): Promise<Date> {
  const account = await server.app.database.prisma.account.findUniqueOrThrow({ where: { id: accountId } });
  return account.currentPeriodEnd;
}

/** The same account twice: one plan, one test clock (so every timestamp agrees), the same steps. */
async function twins(spec: Scenario): Promise<{ pair: [string, string]; testClockId: string }> {
  const allocations: PlanSpec['allocations'] = spec.shared.flatMap((shared, index) =>
    shared === null ? [] : [{ creditType: pools[index]!, amount: shared.amount, ...shared.rule }],
  );
  if (spec.perSeatAmount !== null) allocations.push({ creditType: pools[0], amount: spec.perSeatAmount, perSeat: true });
  const plan = await definePlan(server, { interval: spec.interval, allocations, featureKeys: features });
  const other = await definePlan(server, {
    interval: spec.interval,
    allocations: [{ creditType: pools[0], amount: 70, rollover: 'CAP_MULTIPLE', rolloverValue: 2 }],
    featureKeys: features,
  });
  const testClockId = await createTestClock(server, anchorOf(spec.anchor).toISOString());
  const pair = [await createAccount(server, plan, testClockId), await createAccount(server, plan, testClockId)] as [string, string];
  if (spec.renewedBefore) {
    await advanceClock(server, testClockId, new Date((await periodEnd(pair[0])).getTime() + 3_600_000));
  }
  const now = await clockNow(testClockId);
  const end = await periodEnd(pair[0]);
  for (const accountId of pair) {
    for (const [index, grant] of spec.grants.entries()) {
      const expiresAt = grant.expires === null ? undefined : grant.expires === 'end' ? end : new Date(now.getTime() + grant.expires * DAY);
      const effectiveAt = grant.effectiveInDays === null ? undefined : new Date(now.getTime() + grant.effectiveInDays * DAY);
      if (expiresAt && effectiveAt && effectiveAt >= expiresAt) continue;
      await grantCredits(server, {
        accountId,
        creditType: pools[grant.pool]!,
        amount: grant.amount,
        source: grant.source,
        // A priority of its own: grants alike in expiry and priority, created at the same instant of
        // the test clock, are taken in the order of their random ids, so each twin could draw a
        // usage from a different one (a test grant or the plan's, of other amounts or periods).
        priority: 60 + index,
        ...(expiresAt ? { expiresAt: expiresAt.toISOString() } : {}),
        ...(effectiveAt ? { effectiveAt: effectiveAt.toISOString() } : {}),
      });
    }
    for (const usage of spec.usage) {
      await operator(server).recordUsage({ accountId, featureKey: features[usage.pool]!, quantity: usage.quantity, idempotencyKey: unique('usage') });
    }
    const complication = spec.complication;
    if (complication === 'upgrade' || complication === 'downgrade') {
      await operator(server).changePlan({ accountId, planCode: other, timing: complication === 'upgrade' ? 'IMMEDIATELY' : 'AT_PERIOD_END' });
    }
    if (complication === 'seat') await addSeat(server, accountId);
    if (complication === 'percents' || complication === 'lowBalance' || complication === 'expiring') {
      await operator(server).setAlertSettings({
        accountId,
        creditType: pools[0],
        percents: [10, 50],
        ...(complication === 'lowBalance' ? { lowBalance: 5_000 } : {}),
        ...(complication === 'expiring' ? { expiringWithinDays: 30 } : {}),
      });
    }
    if (complication === 'hold') {
      await operator(server).reserveCredits({ accountId, featureKey: features[0], credits: 1, idempotencyKey: unique('hold'), ttlSeconds: 600 });
    }
  }
  // The runner renews only accounts on the real clock.
  await server.app.database.prisma.account.updateMany({ where: { id: { in: pair } }, data: { testClockId: null } });
  return { pair, testClockId };
}

/**
 * Expiries at one instant are written in grant id order (random ids, different for twins): within
 * such a run the order is made canonical, everywhere else the ledger order is compared as it is.
 */
function canonicalExpiries(ledger: Array<Record<string, unknown>>): Array<Record<string, unknown>> {
  const result: Array<Record<string, unknown>> = [];
  let run: Array<Record<string, unknown>> = [];
  const flush = () => {
    result.push(...run.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)));
    run = [];
  };
  for (const entry of ledger) {
    const continues = entry.type === 'EXPIRE' && run.length > 0 && String(run[0]!.entry_at) === String(entry.entry_at);
    if (!continues) flush();
    if (entry.type === 'EXPIRE') run.push(entry);
    else result.push(entry);
  }
  flush();
  return result;
}

/** Every row a renewal can touch, with what differs between twins by construction (ids, keys) left out. */
async function rowsOf(accountId: string, now: Date) {
  const database = server.app.database;
  const [account] = await database.statement<Record<string, unknown>>(
    `SELECT plan_id, pending_plan_id, period_anchor, period_index, current_period_start, current_period_end, test_clock_id
     FROM accounts WHERE id = $1`,
    [accountId],
  );
  const grantColumns = `g.source::text AS source, g.credit_type, g.amount::text AS amount, g.remaining::text AS remaining, g.priority,
    g.effective_at, g.expires_at, g.expired_at, g.period_start, g.created_at, g.seat_id IS NOT NULL AS seat`;
  const grants = await database.statement<Record<string, unknown>>(
    `SELECT ${grantColumns} FROM grants g WHERE g.account_id = $1
     ORDER BY g.created_at, g.source, g.credit_type, g.amount, g.expires_at, g.effective_at, g.priority, g.remaining`,
    [accountId],
  );
  const ledger = await database.statement<Record<string, unknown>>(
    `SELECT l.type::text AS type, l.credits::text AS credits, l.created_at AS entry_at, l.usage_event_id IS NOT NULL AS usage,
            l.reservation_id IS NOT NULL AS hold, ${grantColumns}
     FROM ledger_entries l JOIN grants g ON g.id = l.grant_id WHERE l.account_id = $1 ORDER BY l.id`,
    [accountId],
  );
  const renewals = await database.statement<Record<string, unknown>>(
    `SELECT period_start, period_end, plan_id, created_at FROM period_renewals WHERE account_id = $1 ORDER BY period_start`,
    [accountId],
  );
  const alerts = await database.statement<{ dedupe_key: string }>(
    `SELECT kind::text AS kind, credit_type, threshold, message, period_start, created_at, dedupe_key FROM alerts WHERE account_id = $1 ORDER BY seq`,
    [accountId],
  );
  const totals = await database.statement<Record<string, unknown>>(
    `SELECT credit_type, period_start, used::text AS used, overage::text AS overage FROM period_usage_totals WHERE account_id = $1
     ORDER BY credit_type, period_start`,
    [accountId],
  );
  const holds = await database.statement<Record<string, unknown>>(
    `SELECT status::text AS status, held::text AS held, expires_at, closed_at FROM reservations WHERE account_id = $1 ORDER BY created_at`,
    [accountId],
  );
  const state = await server.app.database.prisma.account.findUniqueOrThrow({ where: { id: accountId } });
  const balances = await loadBalances(server.app.database.prisma, {
    accountId,
    planId: state.planId,
    currentPeriodStart: state.currentPeriodStart,
    currentPeriodEnd: state.currentPeriodEnd,
    now,
  });
  return {
    account,
    grants,
    ledger: canonicalExpiries(ledger),
    renewals,
    alerts: alerts.map((alert) => ({ ...alert, dedupe_key: alert.dedupe_key.replace(accountId, '<account>') })),
    totals,
    holds,
    balances,
  };
}

/** A plan of 100 credits a month without rollover, anchored on the 10th of a month of 2025. */
function plainRenewal(month: number, complication: Scenario['complication']): [Scenario] {
  return [
    {
      interval: 'MONTH',
      shared: [{ amount: 100, rule: { rollover: 'NONE' } }, null],
      perSeatAmount: null,
      anchor: { year: 2025, month, day: 10, ms: 0 },
      renewedBefore: false,
      usage: [{ pool: 0, quantity: 30 }],
      grants: [],
      complication,
      lateBy: 1_000,
      lateByMore: 25 * DAY,
    },
  ];
}

async function renewOneByOne(accountId: string, now: Date): Promise<void> {
  await inTransaction(server.app.database.prisma, async (tx) => {
    await processDueWork(tx, await lockAccount(tx, fixedClock(now), accountId), now);
  });
}

describe('renew_due_batch, the set-based renewal', () => {
  it('writes exactly the rows the per-account renewal writes, or leaves the account to it', async () => {
    let runs = 0;
    let setBased = 0;
    let fellBack = 0;
    await fc.assert(
      fc.asyncProperty(scenario, async (spec) => {
        runs += 1;
        const { pair } = await twins(spec);
        const [batched, oneByOne] = pair;
        const now = new Date((await periodEnd(batched)).getTime() + (spec.complication === 'late' ? spec.lateByMore : spec.lateBy));
        const before = await rowsOf(batched, now);

        const result = await renewDueBatch(server.app.database.prisma, now, 10, [batched]);
        expect(result.claimed).toBe(1);
        if (result.renewed.length === 1) {
          setBased += 1;
          expect(result.renewed).toEqual([batched]);
          const rows = await server.app.database.statement<{ id: string }>(
            `SELECT id FROM period_renewals WHERE account_id = $1 UNION ALL SELECT id FROM grants WHERE account_id = $1 AND created_at = $2`,
            [batched, before.account!.current_period_end],
          );
          for (const row of rows) expect(row.id).toMatch(UUID);
        } else {
          // Left untouched for the complete path, which the runner then runs.
          fellBack += 1;
          expect(result.fallback).toEqual([batched]);
          expect(await rowsOf(batched, now)).toEqual(before);
          await renewOneByOne(batched, now);
        }
        await renewOneByOne(oneByOne, now);
        expect(await rowsOf(batched, now)).toEqual(await rowsOf(oneByOne, now));

        // Renewed: nothing is due any more, for either path.
        expect((await renewDueBatch(server.app.database.prisma, now, 10, pair)).claimed).toBe(0);
      }),
      {
        numRuns: 45,
        // 30 random runs after fifteen examples: eleven plain accounts (one period due, nothing
        // unusual: the set-based path) and four with a pending downgrade (the complete path), so
        // that the counts below never depend on the random ones (about 1 run in 30 fell short).
        examples: [...Array.from({ length: 11 }, (_, month) => plainRenewal(month, null)), ...[0, 1, 2, 3].map((month) => plainRenewal(month, 'downgrade' as const))],
      },
    );
    expect(runs).toBe(45);
    // Both paths were exercised (the property would hold trivially if everything fell back).
    expect(setBased).toBeGreaterThan(10);
    expect(fellBack).toBeGreaterThan(3);
    await expectLedgerConsistent(server);
  });

  // PGlite runs one transaction at a time: a lock held by another transaction needs PostgreSQL.
  it.skipIf(!testDatabaseUrl())('skips an account whose lock another transaction holds, and renews it once that one is done', async () => {
    const plan = await definePlan(server, { allocations: [{ creditType: pools[0], amount: 100 }], featureKeys: features });
    const testClockId = await createTestClock(server, '2027-05-10T08:00:00.000Z');
    const accounts = [await createAccount(server, plan, testClockId), await createAccount(server, plan, testClockId)] as [string, string];
    await server.app.database.prisma.account.updateMany({ where: { id: { in: accounts } }, data: { testClockId: null } });
    const now = new Date('2027-06-10T09:00:00.000Z');
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let locked = () => {};
    const isLocked = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const holder = inTransaction(server.app.database.prisma, async (tx) => {
      await lockAccount(tx, fixedClock(now), accounts[0]);
      locked();
      await released;
    });
    await isLocked;
    const whileLocked = await renewDueBatch(server.app.database.prisma, now, 10, accounts);
    release();
    await holder;
    expect(whileLocked).toEqual({ claimed: 1, renewed: [accounts[1]], fallback: [] });
    expect(await renewDueBatch(server.app.database.prisma, now, 10, accounts)).toEqual({ claimed: 1, renewed: [accounts[0]], fallback: [] });
    expect(await server.app.database.prisma.periodRenewal.count({ where: { accountId: { in: accounts } } })).toBe(2);
  });

  it('renews the plain cases the runner meets: rollover rules, clamped month ends, several credit types', async () => {
    const plan = await definePlan(server, {
      allocations: [
        { creditType: pools[0], amount: 100, rollover: 'CAP_MULTIPLE', rolloverValue: 2 },
        { creditType: pools[1], amount: 40, rollover: 'PERCENT', rolloverValue: 15 },
      ],
      featureKeys: features,
    });
    const testClockId = await createTestClock(server, '2027-01-31T10:00:00.000Z');
    const pair = [await createAccount(server, plan, testClockId), await createAccount(server, plan, testClockId)] as [string, string];
    for (const accountId of pair) {
      await operator(server).recordUsage({ accountId, featureKey: features[0], quantity: 30, idempotencyKey: unique('usage') });
      await operator(server).recordUsage({ accountId, featureKey: features[1], quantity: 7, idempotencyKey: unique('usage') });
    }
    await server.app.database.prisma.account.updateMany({ where: { id: { in: pair } }, data: { testClockId: null } });
    const now = new Date('2027-03-01T00:00:00.000Z');
    const result = await renewDueBatch(server.app.database.prisma, now, 10, [pair[0]]);
    expect(result).toEqual({ claimed: 1, renewed: [pair[0]], fallback: [] });
    await renewOneByOne(pair[1], now);
    const rows = await rowsOf(pair[0], now);
    expect(rows).toEqual(await rowsOf(pair[1], now));
    expect(await server.app.database.prisma.account.findUniqueOrThrow({ where: { id: pair[0] } })).toMatchObject({
      periodIndex: 1,
      currentPeriodStart: new Date('2027-02-28T10:00:00.000Z'),
      currentPeriodEnd: new Date('2027-03-31T10:00:00.000Z'),
    });
    const rollovers = rows.grants.filter((grant) => grant.source === 'ROLLOVER').map((grant) => [grant.credit_type, grant.amount]);
    // 70 unused, capped at (2 - 1) x 100; 33 unused, 15 % of it.
    expect(rollovers).toEqual([[pools[0], '70'], [pools[1], '4']].sort((a, b) => (a[0]! < b[0]! ? -1 : 1)));
  });
});
