import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareConsumptionOrder } from '../packages/server/src/ledger/consumptionOrder.ts';
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

  const events = await prisma.usageEvent.findMany({ where: { accountId }, include: { draws: { orderBy: { position: 'asc' }, include: { grant: true } } } });
  const keys = events.map((event) => event.idempotencyKey);
  expect(new Set(keys).size).toBe(keys.length);
  for (const [key, id] of charged) expect(events.filter((event) => event.idempotencyKey === key).map((event) => event.id)).toEqual([id]);

  for (const event of events) {
    const drawn = event.draws.map(({ grant }) => ({ ...grant, amount: Number(grant.amount), remaining: Number(grant.remaining) }));
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
