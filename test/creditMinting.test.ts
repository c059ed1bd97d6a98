import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addSeat,
  advanceClock,
  balanceOf,
  createAccount,
  createKey,
  createTestClock,
  defineFeature,
  expectLedgerConsistent,
  ok,
  recordUsage,
  subscriptionOf,
} from './support/fixtures.ts';
import { startTestServer, unique, type GraphQLResponse, type TestServer } from './support/server.ts';

const RUNS = Number(process.env.PROPERTY_RUNS ?? 12);

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  await server?.stop();
});

interface PlanDefinition {
  interval?: 'MONTH' | 'YEAR';
  price: number;
  shared: number;
  perSeat?: number;
  selfServe?: boolean;
}

async function upsertPlan(pool: string, feature: string, definition: PlanDefinition): Promise<string> {
  const code = unique('plan');
  ok(
    await server.gql(`mutation($input: PlanInput!) { upsertPlan(input: $input) { code selfServe } }`, {
      input: {
        code,
        name: code,
        interval: definition.interval ?? 'MONTH',
        price: { amount: definition.price, currency: 'USD' },
        allocations: [
          { creditType: pool, amount: definition.shared },
          ...(definition.perSeat === undefined ? [] : [{ creditType: pool, amount: definition.perSeat, perSeat: true }]),
        ],
        featureKeys: [feature],
        selfServe: definition.selfServe ?? false,
      },
    }),
  );
  return code;
}

const CHANGE_PLAN = `mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } pendingPlan { code } currentPeriod { start end } } }`;

function changePlan(accountId: string, planCode: string, timing: 'IMMEDIATELY' | 'AT_PERIOD_END' | null, apiKey?: string) {
  return server.gql(CHANGE_PLAN, { input: { accountId, planCode, ...(timing ? { timing } : {}) } }, apiKey);
}

async function basicAndPro(selfServe: boolean) {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const basic = await upsertPlan(pool, feature, { price: 1_000, shared: 1_000, selfServe });
  const pro = await upsertPlan(pool, feature, { price: 10_000, shared: 100_000, selfServe });
  return { pool, feature, basic, pro };
}

/** Allocation grants (PLAN, shared, and SEAT) of one period of an account, summed. */
async function periodAllocationGrants(accountId: string, periodStart: string): Promise<{ shared: number; seats: Map<string, number> }> {
  const grants = await server.app.database.prisma.grant.findMany({
    where: { accountId, periodStart: new Date(periodStart), source: { in: ['PLAN', 'SEAT'] } },
    select: { seatId: true, amount: true },
  });
  const seats = new Map<string, number>();
  let shared = 0;
  for (const grant of grants) {
    if (grant.seatId === null) shared += Number(grant.amount);
    else seats.set(grant.seatId, (seats.get(grant.seatId) ?? 0) + Number(grant.amount));
  }
  return { shared, seats };
}

describe('plan changes mint no credits (issue 15, item 1)', () => {
  it('an ACCOUNT key may not move its account to a plan the operator has not made self-serve (FORBIDDEN, nothing changes)', async () => {
    const { pool, feature, basic, pro } = await basicAndPro(false);
    const accountId = await createAccount(server, basic);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 20 });
    for (const timing of ['IMMEDIATELY', 'AT_PERIOD_END', null] as const) {
      const refused = await changePlan(accountId, pro, timing, accountKey);
      expect(refused.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    }
    expect(await subscriptionOf(server, accountId)).toMatchObject({ plan: { code: basic }, pendingPlan: null });
    expect((await balanceOf(server, accountId, pool)).available).toBe(980);
    const audited = await server.app.database.prisma.auditEvent.count({ where: { accountId, action: 'changePlan' } });
    expect(audited).toBe(0);

    const plans = ok(await server.gql(`query { plans { code selfServe } }`, {}, accountKey)).plans;
    expect(plans.find((plan: { code: string }) => plan.code === pro)).toEqual({ code: pro, selfServe: false });
  });

  it('pro then basic, IMMEDIATELY, three times with an ACCOUNT key on self-serve plans: 99,980 available, not 303,980', async () => {
    const { pool, feature, basic, pro } = await basicAndPro(true);
    const accountId = await createAccount(server, basic);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 20 });
    expect((await balanceOf(server, accountId, pool)).available).toBe(980);
    for (let round = 0; round < 3; round += 1) {
      ok(await changePlan(accountId, pro, 'IMMEDIATELY', accountKey));
      ok(await changePlan(accountId, basic, 'IMMEDIATELY', accountKey));
    }
    expect(await subscriptionOf(server, accountId)).toMatchObject({ plan: { code: basic }, pendingPlan: null });
    // The period granted basic's 1,000, then pro's 99,000 more once; the other changes granted nothing.
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 99_980, periodAllocation: 100_000 });
    const events = await server.app.database.prisma.auditEvent.findMany({ where: { accountId, action: 'changePlan' } });
    expect(events.map((event) => event.actorRole)).toEqual(Array(6).fill('ACCOUNT'));
    await expectLedgerConsistent(server);
  });

  it('the operator may change to any plan, under the same bound; a downgrade now grants nothing, the next period the new allocation', async () => {
    const { pool, feature, basic, pro } = await basicAndPro(false);
    const clock = await createTestClock(server, '2027-03-01T00:00:00.000Z');
    const accountId = await createAccount(server, pro, clock);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 60_000 });
    ok(await changePlan(accountId, basic, 'IMMEDIATELY'));
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 40_000, periodAllocation: 100_000 });
    ok(await changePlan(accountId, pro, 'IMMEDIATELY'));
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 40_000, periodAllocation: 100_000 });
    ok(await changePlan(accountId, basic, 'IMMEDIATELY'));
    await advanceClock(server, clock, '2027-04-01T00:00:00.000Z');
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 1_000, periodAllocation: 1_000 });
  });

  it('a change of interval now keeps the period in progress and starts the new interval at its end', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const monthly = await upsertPlan(pool, feature, { price: 1_000, shared: 1_000 });
    const yearly = await upsertPlan(pool, feature, { interval: 'YEAR', price: 10_000, shared: 12_000 });

    const clock = await createTestClock(server, '2027-01-15T00:00:00.000Z');
    const accountId = await createAccount(server, monthly, clock);
    await advanceClock(server, clock, '2027-03-20T00:00:00.000Z');
    const toYearly = ok(await changePlan(accountId, yearly, 'IMMEDIATELY')).changePlan;
    expect(toYearly.currentPeriod).toEqual({ start: '2027-03-15T00:00:00.000Z', end: '2027-04-15T00:00:00.000Z' });
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 12_000, periodAllocation: 12_000 });
    await advanceClock(server, clock, '2027-04-15T00:00:00.000Z');
    expect((await subscriptionOf(server, accountId)).currentPeriod).toEqual({ start: '2027-04-15T00:00:00.000Z', end: '2028-04-15T00:00:00.000Z' });
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 12_000, periodAllocation: 12_000 });

    await advanceClock(server, clock, '2027-09-01T00:00:00.000Z');
    ok(await changePlan(accountId, monthly, 'IMMEDIATELY'));
    expect((await subscriptionOf(server, accountId)).currentPeriod).toEqual({ start: '2027-04-15T00:00:00.000Z', end: '2028-04-15T00:00:00.000Z' });
    await advanceClock(server, clock, '2028-04-15T00:00:00.000Z');
    expect((await subscriptionOf(server, accountId)).currentPeriod).toEqual({ start: '2028-04-15T00:00:00.000Z', end: '2028-05-15T00:00:00.000Z' });
    await advanceClock(server, clock, '2028-05-15T00:00:00.000Z');
    expect((await subscriptionOf(server, accountId)).currentPeriod).toEqual({ start: '2028-05-15T00:00:00.000Z', end: '2028-06-15T00:00:00.000Z' });
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 1_000, periodAllocation: 1_000 });
    const renewals = await server.app.database.prisma.periodRenewal.findMany({ where: { accountId }, orderBy: { periodStart: 'asc' } });
    expect(renewals.map((renewal) => renewal.periodStart.toISOString())).toEqual([
      '2027-02-15T00:00:00.000Z',
      '2027-03-15T00:00:00.000Z',
      '2027-04-15T00:00:00.000Z',
      '2028-04-15T00:00:00.000Z',
      '2028-05-15T00:00:00.000Z',
    ]);
    await expectLedgerConsistent(server);
  });

  describe('property: random plan changes within a period grant at most the largest allocation among the plans held', () => {
    type Change = { plan: number; timing: 'IMMEDIATELY' | 'AT_PERIOD_END' | null; days: number; spend: number };
    const definitions: PlanDefinition[] = [
      { price: 1_000, shared: 1_000, perSeat: 100 },
      { price: 5_000, shared: 5_000, perSeat: 300 },
      { price: 9_000, shared: 100_000, perSeat: 50 },
      { price: 9_000, shared: 0, perSeat: 0 },
      { interval: 'YEAR', price: 10_000, shared: 12_000, perSeat: 1_000 },
      { interval: 'YEAR', price: 90_000, shared: 200_000, perSeat: 10 },
    ];
    const change: fc.Arbitrary<Change> = fc.record({
      plan: fc.integer({ min: 0, max: definitions.length - 1 }),
      timing: fc.constantFrom('IMMEDIATELY' as const, 'AT_PERIOD_END' as const, null),
      days: fc.integer({ min: 0, max: 3 }),
      spend: fc.integer({ min: 0, max: 2_000 }),
    });

    it('on this database', async () => {
      const pool = unique('credits');
      const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
      const codes: string[] = [];
      for (const definition of definitions) codes.push(await upsertPlan(pool, feature, { ...definition, selfServe: true }));

      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: definitions.length - 1 }), fc.array(change, { minLength: 1, maxLength: 8 }), async (initial, changes) => {
          // The first period runs Jan 15 to Feb 15 at least: 8 changes of at most 3 days stay inside it.
          let now = new Date('2027-01-15T00:00:00.000Z');
          const clock = await createTestClock(server, now.toISOString());
          const accountId = await createAccount(server, codes[initial]!, clock);
          const accountKey = await createKey(server, 'ACCOUNT', accountId);
          const seats = [await addSeat(server, accountId), await addSeat(server, accountId)];
          const start = (await subscriptionOf(server, accountId)).currentPeriod.start;
          const held = new Set([initial]);
          for (const step of changes) {
            if (step.days > 0) {
              now = new Date(now.getTime() + step.days * 86_400_000);
              await advanceClock(server, clock, now);
            }
            if (step.spend > 0) await recordUsage(server, { accountId, featureKey: feature, quantity: step.spend });
            const response: GraphQLResponse<any> = await changePlan(accountId, codes[step.plan]!, step.timing, accountKey);
            const changed = ok(response).changePlan;
            expect(changed.currentPeriod.start).toBe(start);
            held.add(codes.indexOf(changed.plan.code));
          }
          const granted = await periodAllocationGrants(accountId, start);
          const largest = (pick: (definition: PlanDefinition) => number) => Math.max(...[...held].map((index) => pick(definitions[index]!)));
          expect(granted.shared).toBe(largest((definition) => definition.shared));
          for (const seatId of seats) expect(granted.seats.get(seatId) ?? 0).toBe(largest((definition) => definition.perSeat ?? 0));
        }),
        { numRuns: RUNS },
      );
      await expectLedgerConsistent(server);
    });
  });
});
