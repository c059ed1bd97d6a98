import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareConsumptionOrder } from './support/consumptionModel.ts';
import { addSeat, createAccount, createTestClock, defineFeature, definePlan, expectLedgerConsistent, ok, RECORD_USAGE } from './support/fixtures.ts';
import { startTestServer, unique, type GraphQLResponse, type TestServer } from './support/server.ts';

const RUNS = Number(process.env.PROPERTY_RUNS ?? 25);

type Step =
  | { kind: 'grant'; amount: number; expiresInDays: number | null; priority: number | null; toSeat: boolean }
  | { kind: 'usage'; quantity: number; bySeat: boolean; retry: boolean }
  | { kind: 'reserve'; credits: number; bySeat: boolean }
  | { kind: 'settle'; index: number; percent: number }
  | { kind: 'release'; index: number }
  | { kind: 'refund'; index: number; credits: number | null }
  | { kind: 'advance'; hours: number }
  | { kind: 'changePlan' };

const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('grant' as const),
    amount: fc.integer({ min: 1, max: 60 }),
    expiresInDays: fc.option(fc.integer({ min: 1, max: 60 }), { nil: null }),
    priority: fc.option(fc.integer({ min: 0, max: 100 }), { nil: null }),
    toSeat: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('usage' as const), quantity: fc.integer({ min: 1, max: 40 }), bySeat: fc.boolean(), retry: fc.boolean() }),
  fc.record({ kind: fc.constant('reserve' as const), credits: fc.integer({ min: 1, max: 40 }), bySeat: fc.boolean() }),
  fc.record({ kind: fc.constant('settle' as const), index: fc.nat(), percent: fc.integer({ min: 0, max: 120 }) }),
  fc.record({ kind: fc.constant('release' as const), index: fc.nat() }),
  fc.record({ kind: fc.constant('refund' as const), index: fc.nat(), credits: fc.option(fc.integer({ min: 1, max: 30 }), { nil: null }) }),
  fc.record({ kind: fc.constant('advance' as const), hours: fc.integer({ min: 1, max: 24 * 40 }) }),
  fc.constant({ kind: 'changePlan' as const }),
);

let server: TestServer;
let pool: string;
let feature: string;
let small: string;
let large: string;
let sequences = 0;
let steps = 0;

beforeAll(async () => {
  server = await startTestServer();
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const allocations = (amount: number) => [
    { creditType: pool, amount, rollover: 'CAP_MULTIPLE' as const, rolloverValue: 2 },
    { creditType: pool, amount: 10, perSeat: true },
  ];
  small = await definePlan(server, { allocations: allocations(50), featureKeys: [feature] });
  large = await definePlan(server, { allocations: allocations(120), featureKeys: [feature] });
  await server.gql(`mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`, {
    input: { code: large, name: large, interval: 'MONTH', price: { amount: 5000, currency: 'USD' }, allocations: allocations(120), featureKeys: [feature] },
  });
});
afterAll(async () => {
  await server?.stop();
  console.info(`properties: ${sequences} sequences, ${steps} steps`);
});

/** Every refusal must be typed: a business refusal or a coded error, never an internal one. */
function expectTyped(response: GraphQLResponse): void {
  expect(response.status).toBeLessThan(500);
  for (const error of response.errors ?? []) {
    expect(error.extensions?.code, JSON.stringify(error)).toBeTypeOf('string');
    expect(error.extensions?.code, JSON.stringify(error)).not.toBe('INTERNAL_SERVER_ERROR');
  }
}

async function runSequence(sequence: Step[]): Promise<void> {
  sequences += 1;
  let now = new Date('2026-01-15T09:00:00Z');
  const clockId = await createTestClock(server, now.toISOString());
  const accountId = await createAccount(server, small, clockId);
  const seatId = await addSeat(server, accountId);
  let plan = small;
  const charged = new Map<string, string>();
  const holds: string[] = [];

  for (const action of sequence) {
    steps += 1;
    let response: GraphQLResponse<any>;
    switch (action.kind) {
      case 'grant':
        response = await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
          input: {
            accountId,
            creditType: pool,
            amount: action.amount,
            source: 'BONUS',
            idempotencyKey: randomUUID(),
            expiresAt: action.expiresInDays === null ? undefined : new Date(now.getTime() + action.expiresInDays * 86_400_000).toISOString(),
            priority: action.priority ?? undefined,
            seatId: action.toSeat ? seatId : undefined,
          },
        });
        break;
      case 'usage': {
        const input = { accountId, featureKey: feature, quantity: action.quantity, idempotencyKey: randomUUID(), seatId: action.bySeat ? seatId : undefined };
        response = await server.gql(RECORD_USAGE, { input });
        const event = response.data?.recordUsage?.usageEvent;
        if (event) {
          charged.set(input.idempotencyKey, event.id);
          if (action.retry) {
            const again = await server.gql(RECORD_USAGE, { input });
            expectTyped(again);
            expect(again.data.recordUsage.usageEvent.id).toBe(event.id);
          }
        }
        break;
      }
      case 'reserve':
        response = await server.gql(
          `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename ... on CreditsReserved { reservation { id } } } }`,
          { input: { accountId, featureKey: feature, credits: action.credits, idempotencyKey: randomUUID(), seatId: action.bySeat ? seatId : undefined } },
        );
        if (response.data?.reserveCredits?.reservation) holds.push(response.data.reserveCredits.reservation.id);
        break;
      case 'settle': {
        const hold = holds[action.index % Math.max(1, holds.length)];
        if (!hold) continue;
        const held = await server.app.database.prisma.reservation.findUnique({ where: { id: hold }, select: { held: true } });
        response = await server.gql(`mutation($input: SettleReservationInput!) { settleReservation(input: $input) { id } }`, {
          input: { reservationId: hold, credits: Math.floor((Number(held?.held ?? 0) * action.percent) / 100) },
        });
        break;
      }
      case 'release': {
        const hold = holds[action.index % Math.max(1, holds.length)];
        if (!hold) continue;
        response = await server.gql(`mutation($id: ID!) { releaseReservation(reservationId: $id) { id } }`, { id: hold });
        break;
      }
      case 'refund': {
        const events = [...charged.values()];
        const event = events[action.index % Math.max(1, events.length)];
        if (!event) continue;
        response = await server.gql(`mutation($input: RefundUsageInput!) { refundUsage(input: $input) { id } }`, {
          input: { usageEventId: event, credits: action.credits ?? undefined, idempotencyKey: randomUUID() },
        });
        break;
      }
      case 'advance':
        now = new Date(now.getTime() + action.hours * 3_600_000);
        response = await server.gql(`mutation($input: AdvanceTestClockInput!) { advanceTestClock(input: $input) { id } }`, {
          input: { testClockId: clockId, to: now.toISOString() },
        });
        break;
      case 'changePlan':
        plan = plan === small ? large : small;
        response = await server.gql(`mutation($input: ChangePlanInput!) { changePlan(input: $input) { plan { code } } }`, { input: { accountId, planCode: plan } });
        break;
    }
    expectTyped(response);
  }
  await expectInvariants(accountId, now, charged);
}

async function expectInvariants(accountId: string, now: Date, charged: Map<string, string>): Promise<void> {
  const prisma = server.app.database.prisma;
  const grants = await prisma.grant.findMany({ where: { accountId }, include: { ledgerEntries: { select: { credits: true } } } });
  for (const grant of grants) {
    expect(grant.remaining, `grant ${grant.id}`).toBe(grant.ledgerEntries.reduce((sum, entry) => sum + entry.credits, 0n));
    expect(grant.remaining >= 0n).toBe(true);
  }

  const unexpired = grants.filter((grant) => grant.effectiveAt <= now && (grant.expiresAt === null || grant.expiresAt > now));
  const available = ok(await server.gql(`query($id: ID!, $type: String!) { account(id: $id) { balance(creditType: $type) { available } } }`, { id: accountId, type: pool }))
    .account.balance.available;
  expect(available).toBe(Number(unexpired.reduce((sum, grant) => sum + grant.remaining, 0n)));

  // An event's draws are its DEBIT entries, in consumption order (by id).
  const events = await prisma.usageEvent.findMany({
    where: { accountId },
    include: { ledgerEntries: { where: { type: 'DEBIT' }, orderBy: { id: 'asc' }, include: { grant: true } } },
  });
  const keys = events.map((event) => event.idempotencyKey);
  expect(new Set(keys).size).toBe(keys.length);
  for (const [key, id] of charged) expect(events.filter((event) => event.idempotencyKey === key).map((event) => event.id)).toEqual([id]);

  for (const event of events) {
    const drawn = event.ledgerEntries.map(({ grant }) => ({ ...grant, amount: Number(grant.amount), remaining: Number(grant.remaining) }));
    for (let index = 1; index < drawn.length; index += 1) {
      expect(compareConsumptionOrder(drawn[index - 1]!, drawn[index]!), `draws of ${event.id}`).toBeLessThan(0);
    }
  }
}

describe('ledger properties over random sequences on one account', () => {
  it('grants, usage, holds, refunds, clock advances and plan changes keep the ledger invariants', async () => {
    await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 4, maxLength: 14 }), runSequence), { numRuns: RUNS });
    await expectLedgerConsistent(server);
    expect(sequences).toBeGreaterThanOrEqual(RUNS);
  });
});

type ModelStep =
  | { kind: 'grant'; amount: number }
  | { kind: 'usage'; quantity: number }
  | { kind: 'concurrentUsage'; calls: number; quantity: number }
  | { kind: 'reserve'; credits: number }
  | { kind: 'settle'; index: number; percent: number }
  | { kind: 'release'; index: number }
  | { kind: 'refund'; index: number; credits: number };

const modelStep: fc.Arbitrary<ModelStep> = fc.oneof(
  fc.record({ kind: fc.constant('grant' as const), amount: fc.integer({ min: 1, max: 60 }) }),
  fc.record({ kind: fc.constant('usage' as const), quantity: fc.integer({ min: 1, max: 50 }) }),
  fc.record({ kind: fc.constant('concurrentUsage' as const), calls: fc.integer({ min: 2, max: 12 }), quantity: fc.integer({ min: 1, max: 20 }) }),
  fc.record({ kind: fc.constant('reserve' as const), credits: fc.integer({ min: 1, max: 50 }) }),
  fc.record({ kind: fc.constant('settle' as const), index: fc.nat(), percent: fc.integer({ min: 0, max: 100 }) }),
  fc.record({ kind: fc.constant('release' as const), index: fc.nat() }),
  fc.record({ kind: fc.constant('refund' as const), index: fc.nat(), credits: fc.integer({ min: 1, max: 40 }) }),
);

describe('ledger properties against a model of the balance', () => {
  it('every step has the result the model expects, concurrent usages included, and the balance is the model’s after each', async () => {
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
    const RESERVE = `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename ... on CreditsReserved { reservation { id } } } }`;
    await fc.assert(
      fc.asyncProperty(fc.array(modelStep, { minLength: 3, maxLength: 12 }), async (sequence) => {
        const accountId = await createAccount(server, plan);
        // The model: what is spendable (grants less open holds), the open holds, and what each event may still refund.
        let available = 100;
        const holds: Array<{ id: string; held: number }> = [];
        const refundable: Array<{ id: string; left: number }> = [];
        const use = (quantity: number) => server.gql(RECORD_USAGE, { input: { accountId, featureKey: feature, quantity, idempotencyKey: randomUUID() } });
        for (const action of sequence) {
          switch (action.kind) {
            case 'grant':
              ok(await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
                input: { accountId, creditType: pool, amount: action.amount, source: 'BONUS', idempotencyKey: randomUUID() },
              }));
              available += action.amount;
              break;
            case 'usage': {
              const result = ok(await use(action.quantity)).recordUsage;
              const fits = action.quantity <= available;
              expect(result.__typename, JSON.stringify(action)).toBe(fits ? 'UsageRecorded' : 'InsufficientCredits');
              if (fits) {
                available -= action.quantity;
                refundable.push({ id: result.usageEvent.id, left: action.quantity });
                expect(result.balance.available).toBe(available);
              }
              break;
            }
            case 'concurrentUsage': {
              const results = await Promise.all(Array.from({ length: action.calls }, () => use(action.quantity)));
              const recorded = results.map((result) => ok(result).recordUsage).filter((result) => result.__typename === 'UsageRecorded');
              // However they interleave, exactly as many fit as the balance allows, and no more.
              const fitting = Math.min(action.calls, Math.floor(available / action.quantity));
              expect(recorded.length, JSON.stringify(action)).toBe(fitting);
              available -= fitting * action.quantity;
              for (const result of recorded) refundable.push({ id: result.usageEvent.id, left: action.quantity });
              break;
            }
            case 'reserve': {
              const result = ok(await server.gql(RESERVE, { input: { accountId, featureKey: feature, credits: action.credits, idempotencyKey: randomUUID() } })).reserveCredits;
              const fits = action.credits <= available;
              expect(result.__typename, JSON.stringify(action)).toBe(fits ? 'CreditsReserved' : 'InsufficientCredits');
              if (fits) {
                available -= action.credits;
                holds.push({ id: result.reservation.id, held: action.credits });
              }
              break;
            }
            case 'settle': {
              const hold = holds.splice(action.index % Math.max(1, holds.length), 1)[0];
              if (!hold) continue;
              const credits = Math.floor((hold.held * action.percent) / 100);
              const event = ok(await server.gql(`mutation($input: SettleReservationInput!) { settleReservation(input: $input) { id credits } }`, { input: { reservationId: hold.id, credits } }))
                .settleReservation;
              expect(event.credits).toBe(credits);
              available += hold.held - credits;
              if (credits > 0) refundable.push({ id: event.id, left: credits });
              break;
            }
            case 'release': {
              const hold = holds.splice(action.index % Math.max(1, holds.length), 1)[0];
              if (!hold) continue;
              expect(ok(await server.gql(`mutation($id: ID!) { releaseReservation(reservationId: $id) { status } }`, { id: hold.id })).releaseReservation.status).toBe('RELEASED');
              available += hold.held;
              break;
            }
            case 'refund': {
              const event = refundable[action.index % Math.max(1, refundable.length)];
              if (!event) continue;
              const response = await server.gql(`mutation($input: RefundUsageInput!) { refundUsage(input: $input) { refundedCredits } }`, {
                input: { usageEventId: event.id, credits: action.credits, idempotencyKey: randomUUID() },
              });
              if (action.credits <= event.left) {
                expect(response.errors, JSON.stringify(action)).toBeUndefined();
                event.left -= action.credits;
                available += action.credits;
              } else {
                expect(response.errors?.[0]?.extensions?.code, JSON.stringify(action)).toBe('REFUND_EXCEEDS_CHARGE');
              }
              break;
            }
          }
          const balance = ok(await server.gql(`query($id: ID!, $type: String!) { account(id: $id) { balance(creditType: $type) { available } } }`, { id: accountId, type: pool }))
            .account.balance.available;
          expect(balance, `after ${JSON.stringify(action)}`).toBe(available);
        }
      }),
      { numRuns: RUNS },
    );
    await expectLedgerConsistent(server);
  });
});
