import type { RolloverKind } from '../packages/sdk/src/index.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addSeat,
  advanceClock,
  balanceOf,
  createAccount,
  createTestClock,
  defineFeature,
  definePlan,
  expectLedgerConsistent,
  ok,
  recordUsage,
  subscriptionOf,
} from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  await server?.stop();
});

async function setUp(allocation: { amount: number; perSeat?: boolean; rollover?: RolloverKind; rolloverValue?: number }, interval: 'MONTH' | 'YEAR' = 'MONTH', start = '2027-01-15T09:00:00.000Z') {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(server, { interval, allocations: [{ creditType: pool, ...allocation }], featureKeys: [feature] });
  const clock = await createTestClock(server, start);
  const accountId = await createAccount(server, plan, clock);
  return { pool, feature, plan, clock, accountId };
}

describe('a simulated year with test clocks', () => {
  it('HubSpot-like: 500 a month, no rollover: 500 at every period start whatever was left', async () => {
    const { pool, feature, clock, accountId } = await setUp({ amount: 500 });
    for (let month = 0; month < 12; month += 1) {
      const balance = await balanceOf(server, accountId, pool);
      expect(balance, `month ${month}`).toMatchObject({ available: 500, periodAllocation: 500, periodUsed: 0, expiringAtPeriodEnd: 500 });
      const used = (month * 97) % 500;
      if (used > 0) expect((await recordUsage(server, { accountId, featureKey: feature, quantity: used })).data.recordUsage.__typename).toBe('UsageRecorded');
      const { currentPeriod } = await subscriptionOf(server, accountId);
      await advanceClock(server, clock, currentPeriod.end);
    }
    const { currentPeriod } = await subscriptionOf(server, accountId);
    expect(currentPeriod.start).toBe('2028-01-15T09:00:00.000Z');
    await expectLedgerConsistent(server);
  });

  it('Clay-like monthly: 1,000 with a 2x cap: unused for three periods gives 2,000, not 3,000', async () => {
    const { pool, feature, clock, accountId } = await setUp({ amount: 1_000, rollover: 'CAP_MULTIPLE', rolloverValue: 2 });
    const periodEnds = ['2027-02-15T09:00:00.000Z', '2027-03-15T09:00:00.000Z', '2027-04-15T09:00:00.000Z'];
    for (const end of periodEnds) await advanceClock(server, clock, end);
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 2_000, periodAllocation: 1_000 });
    await recordUsage(server, { accountId, featureKey: feature, quantity: 1_500 });
    await advanceClock(server, clock, '2027-05-15T09:00:00.000Z');
    expect((await balanceOf(server, accountId, pool)).available).toBe(1_500);
    await expectLedgerConsistent(server);
  });

  it('Clay-like annual: 12,000 with 15 %: 2,000 used carries 1,500', async () => {
    const { pool, feature, clock, accountId } = await setUp({ amount: 12_000, rollover: 'PERCENT', rolloverValue: 15 }, 'YEAR');
    await recordUsage(server, { accountId, featureKey: feature, quantity: 2_000 });
    await advanceClock(server, clock, '2028-01-15T09:00:00.000Z');
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 13_500, periodAllocation: 12_000, periodUsed: 0 });
    const grants = ok(await server.gql(`query($id: ID!) { account(id: $id) { grants { edges { node { source amount expiresAt } } } } }`, { id: accountId }));
    expect(grants.account.grants.edges.map((edge: any) => edge.node)).toEqual(
      expect.arrayContaining([
        { source: 'ROLLOVER', amount: 1_500, expiresAt: '2029-01-15T09:00:00.000Z' },
        { source: 'PLAN', amount: 12_000, expiresAt: '2029-01-15T09:00:00.000Z' },
      ]),
    );
  });

  it('Hex-like: per-seat grants are the seat’s own each period and never roll over', async () => {
    const { pool, feature, clock, accountId } = await setUp({ amount: 10, perSeat: true });
    const ada = await addSeat(server, accountId);
    const bob = await addSeat(server, accountId, false);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 4, seatId: ada });
    for (const end of ['2027-02-15T09:00:00.000Z', '2027-03-15T09:00:00.000Z']) {
      await advanceClock(server, clock, end);
      expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 20, periodAllocation: 20 });
    }
    const refused = await recordUsage(server, { accountId, featureKey: feature, quantity: 11, seatId: bob });
    expect(refused.data.recordUsage).toMatchObject({ __typename: 'InsufficientCredits', available: 10 });
  });

  it('B2B-Rocket-like: an anchor on January 31 renews on the last day of shorter months', async () => {
    const { pool, clock, accountId } = await setUp({ amount: 2_000 }, 'MONTH', '2027-01-31T12:00:00.000Z');
    const starts: string[] = [];
    for (let month = 0; month < 13; month += 1) {
      const { currentPeriod } = await subscriptionOf(server, accountId);
      await advanceClock(server, clock, currentPeriod.end);
      starts.push((await subscriptionOf(server, accountId)).currentPeriod.start.slice(0, 10));
      expect((await balanceOf(server, accountId, pool)).available).toBe(2_000);
    }
    expect(starts).toEqual([
      '2027-02-28', '2027-03-31', '2027-04-30', '2027-05-31', '2027-06-30', '2027-07-31', '2027-08-31',
      '2027-09-30', '2027-10-31', '2027-11-30', '2027-12-31', '2028-01-31', '2028-02-29',
    ]);
  });

  it('credits are spendable at the very instant the period starts', async () => {
    const { pool, feature, clock, accountId } = await setUp({ amount: 100 });
    await recordUsage(server, { accountId, featureKey: feature, quantity: 100 });
    await advanceClock(server, clock, '2027-02-15T09:00:00.000Z');
    const result = await recordUsage(server, { accountId, featureKey: feature, quantity: 100 });
    expect(result.data.recordUsage).toMatchObject({ __typename: 'UsageRecorded', balance: { available: 0 } });
    expect((await balanceOf(server, accountId, pool)).periodUsed).toBe(100);
  });

  it('catches up several missed periods in one advance, in order, and records what expired', async () => {
    const { pool, clock, accountId } = await setUp({ amount: 300 });
    await advanceClock(server, clock, '2027-06-20T00:00:00.000Z');
    expect((await subscriptionOf(server, accountId)).currentPeriod).toEqual({ start: '2027-06-15T09:00:00.000Z', end: '2027-07-15T09:00:00.000Z' });
    expect((await balanceOf(server, accountId, pool)).available).toBe(300);
    const ledger = ok(await server.gql(`query($id: ID!) { account(id: $id) { ledger(first: 100) { edges { node { type credits createdAt } } } } }`, { id: accountId }));
    const expiries = ledger.account.ledger.edges.map((edge: any) => edge.node).filter((entry: any) => entry.type === 'EXPIRE');
    expect(expiries.map((entry: any) => [entry.credits, entry.createdAt.slice(0, 10)]).reverse()).toEqual([
      [-300, '2027-02-15'],
      [-300, '2027-03-15'],
      [-300, '2027-04-15'],
      [-300, '2027-05-15'],
      [-300, '2027-06-15'],
    ]);
    await expectLedgerConsistent(server);
  });

  it('an expired grant is never counted, even before anything has processed it', async () => {
    const { pool, feature, clock, accountId } = await setUp({ amount: 0 });
    ok(
      await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
        input: { accountId, creditType: pool, amount: 40, source: 'BONUS', expiresAt: '2027-01-20T00:00:00.000Z', idempotencyKey: unique('g') },
      }),
    );
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 40, nextExpiry: '2027-01-20T00:00:00.000Z', expiringAtPeriodEnd: 40 });
    await server.app.database.prisma.testClock.update({ where: { id: clock }, data: { frozenTime: new Date('2027-01-21T00:00:00.000Z') } });
    expect((await balanceOf(server, accountId, pool)).available).toBe(0);
    expect((await recordUsage(server, { accountId, featureKey: feature })).data.recordUsage.__typename).toBe('InsufficientCredits');
  });

  it('refuses to move a clock backwards and changes nothing', async () => {
    const clock = await createTestClock(server, '2027-05-01T00:00:00.000Z');
    const response = await server.gql(`mutation($input: AdvanceTestClockInput!) { advanceTestClock(input: $input) { frozenTime } }`, {
      input: { testClockId: clock, to: '2027-04-30T00:00:00.000Z' },
    });
    expect(response.errors?.[0]?.extensions?.code).toBe('INVALID_CLOCK_ADVANCE');
    const read = ok(await server.gql(`query($id: ID!) { testClock(id: $id) { frozenTime } }`, { id: clock }));
    expect(read.testClock.frozenTime).toBe('2027-05-01T00:00:00.000Z');
  });
});

describe('plan changes', () => {
  async function plans() {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const small = await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000, rollover: 'CAP_MULTIPLE', rolloverValue: 2 }], featureKeys: [feature] });
    const large = unique('large');
    ok(
      await server.gql(`mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`, {
        input: {
          code: large,
          name: 'large',
          interval: 'MONTH',
          price: { amount: 5_000, currency: 'USD' },
          allocations: [{ creditType: pool, amount: 5_000, rollover: 'CAP_MULTIPLE', rolloverValue: 2 }],
          featureKeys: [feature],
        },
      }),
    );
    return { pool, feature, small, large };
  }

  it('an upgrade mid-period applies now and grants what the new allocation adds to the period’s for the rest of it', async () => {
    const { pool, feature, small, large } = await plans();
    const clock = await createTestClock(server, '2027-03-01T00:00:00.000Z');
    const accountId = await createAccount(server, small, clock);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 400 });
    await advanceClock(server, clock, '2027-03-10T00:00:00.000Z');
    const changed = ok(await server.gql(`mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } pendingPlan { code } currentPeriod { end } } }`, { input: { accountId, planCode: large } }));
    expect(changed.changePlan).toEqual({ plan: { code: large }, pendingPlan: null, currentPeriod: { end: '2027-04-01T00:00:00.000Z' } });
    // 600 left of small's 1,000, plus the 4,000 that large's 5,000 adds to what the period granted.
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 4_600, periodAllocation: 5_000, expiringAtPeriodEnd: 4_600 });
    await advanceClock(server, clock, '2027-04-01T00:00:00.000Z');
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 9_600, periodAllocation: 5_000 });
  });

  it('a downgrade waits for the period end; the excess stays usable until then and is cut to the new cap', async () => {
    const { pool, feature, small, large } = await plans();
    const clock = await createTestClock(server, '2027-03-01T00:00:00.000Z');
    const accountId = await createAccount(server, large, clock);
    const changed = ok(await server.gql(`mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } pendingPlan { code } } }`, { input: { accountId, planCode: small } }));
    expect(changed.changePlan).toEqual({ plan: { code: large }, pendingPlan: { code: small } });
    expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 3_000 })).data.recordUsage.__typename).toBe('UsageRecorded');
    await advanceClock(server, clock, '2027-04-01T00:00:00.000Z');
    expect(await subscriptionOf(server, accountId)).toMatchObject({ plan: { code: small }, pendingPlan: null });
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 2_000, periodAllocation: 1_000 });
  });

  it('refuses an unknown plan and changes nothing', async () => {
    const { small } = await plans();
    const accountId = await createAccount(server, small);
    const response = await server.gql(`mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } } }`, { input: { accountId, planCode: 'no-such-plan' } });
    expect(response.errors?.[0]?.extensions?.code).toBe('PLAN_NOT_FOUND');
    expect(await subscriptionOf(server, accountId)).toMatchObject({ plan: { code: small }, pendingPlan: null });
  });
});
