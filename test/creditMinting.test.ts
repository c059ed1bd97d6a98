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
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
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

async function availablePlans(accountId: string, apiKey?: string): Promise<string[]> {
  const data = ok(await server.gql(`query($id: ID!) { account(id: $id) { subscription { availablePlans { code } } } }`, { id: accountId }, apiKey));
  return data.account.subscription.availablePlans.map((plan: { code: string }) => plan.code);
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
    expect(await availablePlans(accountId, accountKey)).not.toContain(pro);
    expect(await availablePlans(accountId)).toContain(pro);
  });

  it('pro then basic, IMMEDIATELY, three times with an ACCOUNT key on self-serve plans: 99,980 available, not 303,980', async () => {
    const { pool, feature, basic, pro } = await basicAndPro(true);
    const accountId = await createAccount(server, basic);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    await recordUsage(server, { accountId, featureKey: feature, quantity: 20 });
    expect((await balanceOf(server, accountId, pool)).available).toBe(980);
    const available = await availablePlans(accountId, accountKey);
    expect(available).toContain(pro);
    expect(available).not.toContain(basic);
    const seatKey = await createKey(server, 'SEAT', accountId, await addSeat(server, accountId));
    expect(await availablePlans(accountId, seatKey)).toEqual([]);
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

const SEAT_USAGE = `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on UsageRecorded { usageEvent { credits } } } }`;

describe('seat churn mints no credits (issue 15, item 2)', () => {
  async function perSeatPlan(perSeat: number, selfServe = false) {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = await upsertPlan(pool, feature, { price: 1_000, shared: 0, perSeat, selfServe });
    return { pool, feature, plan };
  }

  async function addSeatWith(accountId: string, apiKey: string): Promise<string> {
    return ok(await server.gql(`mutation($input: AddSeatInput!) { addSeat(input: $input) { id } }`, { input: { accountId, name: unique('seat') } }, apiKey)).addSeat.id;
  }

  async function removeSeatWith(seatId: string, apiKey: string): Promise<void> {
    ok(await server.gql(`mutation($seatId: ID!) { removeSeat(seatId: $seatId) { id } }`, { seatId }, apiKey));
  }

  it('addSeat → spend the seat’s allocation → removeSeat, three times with an ACCOUNT key, spends one allocation, not three', async () => {
    const { pool, feature, plan } = await perSeatPlan(500);
    const accountId = await createAccount(server, plan);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    let spent = 0;
    for (let round = 0; round < 3; round += 1) {
      const seatId = await addSeatWith(accountId, accountKey);
      const usage = ok(await server.gql(SEAT_USAGE, { input: { accountId, seatId, featureKey: feature, quantity: 500, idempotencyKey: unique('use') } }, accountKey));
      if (usage.recordUsage.__typename === 'UsageRecorded') spent += usage.recordUsage.usageEvent.credits;
      await removeSeatWith(seatId, accountKey);
    }
    expect(spent).toBe(500);
    expect((await server.app.database.prisma.seat.count({ where: { accountId, removedAt: null } }))).toBe(0);
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 0, periodAllocation: 500 });
    await expectLedgerConsistent(server);
  });

  it('a seat beyond the period’s peak receives its full allocation, a replacement none; the next period every seat its own', async () => {
    const { pool, plan } = await perSeatPlan(500);
    const clock = await createTestClock(server, '2027-03-01T00:00:00.000Z');
    const accountId = await createAccount(server, plan, clock);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    const first = await addSeatWith(accountId, accountKey);
    const second = await addSeatWith(accountId, accountKey);
    await removeSeatWith(first, accountKey);
    const replacement = await addSeatWith(accountId, accountKey);
    const third = await addSeatWith(accountId, accountKey);
    const start = (await subscriptionOf(server, accountId)).currentPeriod.start;
    const granted = await periodAllocationGrants(accountId, start);
    expect(Object.fromEntries([first, second, replacement, third].map((seat) => [seat, granted.seats.get(seat) ?? 0]))).toEqual({
      [first]: 500,
      [second]: 500,
      [replacement]: 0,
      [third]: 500,
    });
    await advanceClock(server, clock, '2027-04-01T00:00:00.000Z');
    const next = await periodAllocationGrants(accountId, '2027-04-01T00:00:00.000Z');
    expect([second, replacement, third].map((seat) => next.seats.get(seat))).toEqual([500, 500, 500]);
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 1_500, periodAllocation: 1_500 });
  });

  it('addSeat, updateSeat and removeSeat are in the audit log with the acting key', async () => {
    const { plan } = await perSeatPlan(10);
    const accountId = await createAccount(server, plan);
    const accountKey = await createKey(server, 'ACCOUNT', accountId);
    const seatId = await addSeatWith(accountId, accountKey);
    ok(await server.gql(`mutation($input: UpdateSeatInput!) { updateSeat(input: $input) { id } }`, { input: { seatId, name: 'renamed', canUseSharedPool: false } }, accountKey));
    await removeSeatWith(seatId, accountKey);
    const events = ok(
      await server.gql(`query($accountId: ID!) { auditEvents(accountId: $accountId, first: 10) { edges { node { action actorRole subjectId details } } } }`, { accountId }),
    ).auditEvents.edges.map((edge: { node: unknown }) => edge.node);
    expect(events.slice(0, 3)).toEqual([
      { action: 'removeSeat', actorRole: 'ACCOUNT', subjectId: seatId, details: null },
      { action: 'updateSeat', actorRole: 'ACCOUNT', subjectId: seatId, details: { name: 'renamed', canUseSharedPool: false } },
      { action: 'addSeat', actorRole: 'ACCOUNT', subjectId: seatId, details: { name: expect.any(String), canUseSharedPool: true } },
    ]);
  });

  it('property: random seat additions, removals and plan changes grant per-seat credits at most peak seats × the largest per-seat allocation', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const perSeat = [100, 300, 0, 50];
    const codes: string[] = [];
    for (const amount of perSeat) codes.push(await upsertPlan(pool, feature, { price: 1_000 + amount, shared: 10, perSeat: amount, selfServe: true }));
    type SeatStep = { kind: 'add' } | { kind: 'remove'; index: number } | { kind: 'plan'; plan: number };
    const seatStep: fc.Arbitrary<SeatStep> = fc.oneof(
      fc.constant({ kind: 'add' as const }),
      fc.record({ kind: fc.constant('remove' as const), index: fc.nat() }),
      fc.record({ kind: fc.constant('plan' as const), plan: fc.integer({ min: 0, max: perSeat.length - 1 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: perSeat.length - 1 }), fc.array(seatStep, { minLength: 1, maxLength: 12 }), async (initial, steps) => {
        const accountId = await createAccount(server, codes[initial]!);
        const accountKey = await createKey(server, 'ACCOUNT', accountId);
        const start = (await subscriptionOf(server, accountId)).currentPeriod.start;
        const active: string[] = [];
        let peak = 0;
        let largest = perSeat[initial]!;
        for (const step of steps) {
          if (step.kind === 'add') {
            active.push(await addSeatWith(accountId, accountKey));
            peak = Math.max(peak, active.length);
          } else if (step.kind === 'remove' && active.length > 0) {
            await removeSeatWith(active.splice(step.index % active.length, 1)[0]!, accountKey);
          } else if (step.kind === 'plan') {
            ok(await changePlan(accountId, codes[step.plan]!, 'IMMEDIATELY', accountKey));
            largest = Math.max(largest, perSeat[step.plan]!);
          }
        }
        const granted = await periodAllocationGrants(accountId, start);
        const total = [...granted.seats.values()].reduce((sum, amount) => sum + amount, 0);
        expect(total).toBeLessThanOrEqual(peak * largest);
        for (const amount of granted.seats.values()) expect(amount).toBeLessThanOrEqual(largest);
      }),
      { numRuns: RUNS },
    );
    await expectLedgerConsistent(server);
  });
});

describe('webhooks complete only the purchase they match (issue 15, item 3)', () => {
  const WEBHOOK_SECRET = 'whsec_minting_test';
  let fake: FakeStripe;
  let stripeServer: TestServer;
  beforeAll(async () => {
    fake = await startFakeStripe();
    stripeServer = await startTestServer({ STRIPE_SECRET_KEY: 'sk_test_fake', STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_API_BASE: fake.url, JOBS_ENABLED: 'false' });
  });
  afterAll(async () => {
    await stripeServer?.stop();
    await fake?.close();
  });

  async function deliver(type: string, object: unknown): Promise<Response> {
    const { body, signature } = fake.signedPayload(fake.event(type, object), WEBHOOK_SECRET);
    return fetch(`${stripeServer.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
  }

  /** An account with a pending Checkout purchase of `quantity` packs of 1,000 credits at 15.00 each. */
  async function pendingPurchase(quantity: number) {
    const pool = unique('credits');
    const feature = await defineFeature(stripeServer, { creditType: pool, unitCredits: 1 });
    const pack = unique('pack');
    ok(
      await stripeServer.gql(`mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`, {
        input: { code: pack, name: 'Credits', creditType: pool, credits: 1_000, price: { amount: 1_500, currency: 'USD' } },
      }),
    );
    const plan = unique('plan');
    ok(
      await stripeServer.gql(`mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`, {
        input: { code: plan, name: plan, interval: 'MONTH', price: { amount: 0, currency: 'USD' }, allocations: [{ creditType: pool, amount: 0 }], featureKeys: [feature] },
      }),
    );
    const accountId = await createAccount(stripeServer, plan);
    const purchase = ok(
      await stripeServer.gql(`mutation($input: PurchaseCreditPackInput!) { purchaseCreditPack(input: $input) { id status credits } }`, {
        input: { accountId, packCode: pack, quantity, successUrl: 'https://app.example/ok', cancelUrl: 'https://app.example/no', idempotencyKey: unique('buy') },
      }),
    ).purchaseCreditPack;
    const session = [...fake.checkoutSessions.values()].find((candidate) => candidate.metadata.purchase_id === purchase.id)!;
    return { pool, accountId, purchase, session };
  }

  async function purchaseState(purchaseId: string) {
    const row = await stripeServer.app.database.prisma.topUpPurchase.findUniqueOrThrow({ where: { id: purchaseId } });
    return { status: row.status, grantId: row.grantId };
  }

  it('the reported forgery: another session id, no metadata, client_reference_id = a pending purchase of 100 packs, amount_total 100: acknowledged, nothing granted', async () => {
    const { pool, accountId, purchase } = await pendingPurchase(100);
    expect(purchase).toMatchObject({ status: 'PENDING', credits: 100_000 });
    const forged = {
      id: `cs_${unique('other')}`,
      object: 'checkout.session',
      mode: 'payment',
      client_reference_id: purchase.id,
      metadata: {},
      customer: null,
      payment_intent: `pi_${unique('other')}`,
      payment_status: 'paid',
      status: 'complete',
      amount_total: 100,
      currency: 'usd',
    };
    const response = await deliver('checkout.session.completed', forged);
    expect(response.status).toBe(200);
    expect(await purchaseState(purchase.id)).toEqual({ status: 'PENDING', grantId: null });
    expect((await balanceOf(stripeServer, accountId, pool)).available).toBe(0);
    expect(await stripeServer.app.database.prisma.grant.count({ where: { accountId } })).toBe(0);
  });

  it('the recorded session with another amount, currency, customer or purchase, a PaymentIntent nobody recorded, or another session expiring: nothing changes; the genuine event then completes it once', async () => {
    const { pool, accountId, purchase, session } = await pendingPurchase(100);
    const { session: paid, paymentIntent } = fake.completeCheckout(session.id);
    const other = await pendingPurchase(1);
    const forgeries: Array<[string, unknown]> = [
      ['checkout.session.completed', { ...paid, amount_total: 100 }],
      ['checkout.session.completed', { ...paid, currency: 'eur' }],
      ['checkout.session.completed', { ...paid, customer: `cus_${unique('x')}` }],
      ['checkout.session.completed', { ...paid, metadata: { purchase_id: other.purchase.id, account_id: accountId } }],
      ['checkout.session.completed', { ...paid, metadata: { purchase_id: purchase.id, account_id: other.accountId } }],
      ['checkout.session.completed', { ...other.session, payment_status: 'paid', client_reference_id: purchase.id, metadata: { purchase_id: purchase.id, account_id: accountId } }],
      ['payment_intent.succeeded', { ...paymentIntent }],
      ['payment_intent.succeeded', { ...paymentIntent, id: `pi_${unique('x')}` }],
      ['checkout.session.expired', { ...other.session, id: `cs_${unique('x')}`, client_reference_id: purchase.id, metadata: { purchase_id: purchase.id } }],
    ];
    for (const [type, object] of forgeries) {
      expect((await deliver(type, object)).status, `${type} ${JSON.stringify(object)}`).toBe(200);
      expect(await purchaseState(purchase.id), `${type} ${JSON.stringify(object)}`).toEqual({ status: 'PENDING', grantId: null });
    }
    expect(await purchaseState(other.purchase.id)).toEqual({ status: 'PENDING', grantId: null });
    expect((await balanceOf(stripeServer, accountId, pool)).available).toBe(0);

    expect((await deliver('checkout.session.completed', paid)).status).toBe(200);
    expect((await deliver('payment_intent.succeeded', paymentIntent)).status).toBe(200);
    expect((await purchaseState(purchase.id)).status).toBe('COMPLETED');
    expect((await balanceOf(stripeServer, accountId, pool)).available).toBe(100_000);
    expect(await stripeServer.app.database.prisma.grant.count({ where: { accountId, source: 'PURCHASE' } })).toBe(1);
    await expectLedgerConsistent(stripeServer);
  });
});
