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
  grantCredits,
  ok,
  recordUsage,
} from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false', DATABASE_POOL_SIZE: '30' });
});
afterAll(async () => {
  await server?.stop();
});

const RESERVE = `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) {
  __typename ... on CreditsReserved { reservation { id held status expiresAt } } ... on Error { code message } } }`;
const SETTLE = `mutation($input: SettleReservationInput!) { settleReservation(input: $input) { id credits draws { credits } } }`;
const RELEASE = `mutation($id: ID!) { releaseReservation(reservationId: $id) { id status } }`;
const REFUND = `mutation($input: RefundUsageInput!) { refundUsage(input: $input) { id credits refundedCredits } }`;

async function account(amount: number, options: { clockStart?: string; overage?: number } = {}) {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const plan = await definePlan(server, {
    allocations: [{ creditType: pool, amount }],
    featureKeys: [feature],
    ...(options.overage !== undefined ? { overagePolicy: 'PAY_AS_YOU_GO' as const, maxOverageCredits: options.overage } : {}),
  });
  const clock = options.clockStart ? await createTestClock(server, options.clockStart) : undefined;
  const accountId = await createAccount(server, plan, clock);
  return { pool, feature, accountId, clock };
}

async function reserve(accountId: string, featureKey: string, credits: number, extra: Record<string, unknown> = {}) {
  return server.gql(RESERVE, { input: { accountId, featureKey, credits, idempotencyKey: unique('hold'), ...extra } });
}

describe('reservations', () => {
  it('a hold reduces available and counts in reserved; settling charges the actual cost and releases the rest', async () => {
    const { pool, feature, accountId } = await account(100);
    const held = ok(await reserve(accountId, feature, 50)).reserveCredits;
    expect(held).toMatchObject({ __typename: 'CreditsReserved', reservation: { held: 50, status: 'HELD' } });
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 50, reserved: 50, periodUsed: 0 });
    const event = ok(await server.gql(SETTLE, { input: { reservationId: held.reservation.id, credits: 30 } })).settleReservation;
    expect(event).toMatchObject({ credits: 30, draws: [{ credits: 30 }] });
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 70, reserved: 0, periodUsed: 30 });
    const again = ok(await server.gql(SETTLE, { input: { reservationId: held.reservation.id, credits: 30 } })).settleReservation;
    expect(again.id).toBe(event.id);
    const different = await server.gql(SETTLE, { input: { reservationId: held.reservation.id, credits: 20 } });
    expect(different.errors?.[0]?.extensions?.code).toBe('RESERVATION_ALREADY_SETTLED');
    await expectLedgerConsistent(server);
  });

  it('releasing charges nothing, and a released hold cannot be settled', async () => {
    const { pool, feature, accountId } = await account(100);
    const { reservation } = ok(await reserve(accountId, feature, 80)).reserveCredits;
    expect(ok(await server.gql(RELEASE, { id: reservation.id })).releaseReservation.status).toBe('RELEASED');
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 100, reserved: 0, periodUsed: 0 });
    const settle = await server.gql(SETTLE, { input: { reservationId: reservation.id, credits: 1 } });
    expect(settle.errors?.[0]?.extensions?.code).toBe('RESERVATION_RELEASED');
    expect((await balanceOf(server, accountId, pool)).available).toBe(100);
  });

  it('an unsettled hold expires after its TTL (test clock) and cannot be settled after', async () => {
    const { pool, feature, accountId, clock } = await account(100, { clockStart: '2027-01-01T00:00:00.000Z' });
    const { reservation } = ok(await reserve(accountId, feature, 60, { ttlSeconds: 60 })).reserveCredits;
    expect(reservation.expiresAt).toBe('2027-01-01T00:01:00.000Z');
    await advanceClock(server, clock!, '2027-01-01T00:01:00.000Z');
    const state = ok(await server.gql(`query($id: ID!) { account(id: $id) { reservations { id status } } }`, { id: accountId }));
    expect(state.account.reservations).toEqual([{ id: reservation.id, status: 'EXPIRED' }]);
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 100, reserved: 0 });
    const settle = await server.gql(SETTLE, { input: { reservationId: reservation.id, credits: 10 } });
    expect(settle.errors?.[0]?.extensions?.code).toBe('RESERVATION_EXPIRED');
    await expectLedgerConsistent(server);
  });

  it('refuses settling more than the hold and a TTL beyond the maximum, changing nothing', async () => {
    const { pool, feature, accountId } = await account(100);
    const { reservation } = ok(await reserve(accountId, feature, 10)).reserveCredits;
    const over = await server.gql(SETTLE, { input: { reservationId: reservation.id, credits: 11 } });
    expect(over.errors?.[0]?.extensions?.code).toBe('SETTLE_EXCEEDS_HOLD');
    const ttl = await reserve(accountId, feature, 10, { ttlSeconds: 86_401 });
    expect(ttl.errors?.[0]?.extensions?.code).toBe('INVALID_TTL');
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 90, reserved: 10 });
  });

  it('concurrent holds never take available below zero', async () => {
    const { pool, feature, accountId } = await account(100);
    const results = await Promise.all(Array.from({ length: 30 }, () => reserve(accountId, feature, 7)));
    const held = results.filter((result) => result.data?.reserveCredits?.__typename === 'CreditsReserved');
    expect(held).toHaveLength(14);
    expect(results.filter((result) => result.data?.reserveCredits?.__typename === 'InsufficientCredits')).toHaveLength(16);
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 2, reserved: 98 });
    const usage = await recordUsage(server, { accountId, featureKey: feature, quantity: 3 });
    expect(usage.data.recordUsage.__typename).toBe('InsufficientCredits');
    await expectLedgerConsistent(server);
  });

  it('is idempotent on its key', async () => {
    const { pool, feature, accountId } = await account(100);
    const idempotencyKey = unique('hold');
    const first = ok(await reserve(accountId, feature, 10, { idempotencyKey })).reserveCredits;
    const second = ok(await reserve(accountId, feature, 10, { idempotencyKey })).reserveCredits;
    expect(second.reservation.id).toBe(first.reservation.id);
    expect((await balanceOf(server, accountId, pool)).reserved).toBe(10);
    const conflict = await reserve(accountId, feature, 11, { idempotencyKey });
    expect(conflict.errors?.[0]?.extensions?.code).toBe('IDEMPOTENCY_CONFLICT');
  });
});

describe('refunds', () => {
  it('after partial expiry: the expired grant’s share is recorded and stays expired, the rest is spendable again', async () => {
    const { pool, feature, accountId, clock } = await account(0, { clockStart: '2027-01-01T00:00:00.000Z' });
    const shortLived = await grantCredits(server, { accountId, creditType: pool, amount: 30, expiresAt: '2027-01-10T00:00:00.000Z' });
    const lasting = await grantCredits(server, { accountId, creditType: pool, amount: 100 });
    const used = await recordUsage(server, { accountId, featureKey: feature, quantity: 50 });
    expect(used.data.recordUsage.usageEvent.draws.map((draw: any) => [draw.grant.id, draw.credits])).toEqual([
      [shortLived, 30],
      [lasting, 20],
    ]);
    await advanceClock(server, clock!, '2027-01-11T00:00:00.000Z');
    expect((await balanceOf(server, accountId, pool)).available).toBe(80);

    const refunded = ok(await server.gql(REFUND, { input: { usageEventId: used.data.recordUsage.usageEvent.id, idempotencyKey: unique('refund') } })).refundUsage;
    expect(refunded).toMatchObject({ credits: 50, refundedCredits: 50 });
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 100, periodUsed: 0 });
    const grants = ok(await server.gql(`query($id: ID!) { account(id: $id) { grants(includeExpired: true) { edges { node { id remaining } } } } }`, { id: accountId }));
    expect(grants.account.grants.edges.map((edge: any) => edge.node)).toEqual(
      expect.arrayContaining([{ id: shortLived, remaining: 0 }, { id: lasting, remaining: 100 }]),
    );
    const ledger = ok(await server.gql(`query($id: ID!) { account(id: $id) { ledger { edges { node { type credits grant { id } } } } } }`, { id: accountId }));
    const shortLivedEntries = ledger.account.ledger.edges.map((edge: any) => edge.node).filter((entry: any) => entry.grant.id === shortLived);
    expect(shortLivedEntries.map((entry: any) => [entry.type, entry.credits]).reverse()).toEqual([
      ['GRANT', 30],
      ['DEBIT', -30],
      ['REFUND', 30],
      ['EXPIRE', -30],
    ]);
    await expectLedgerConsistent(server);
  });

  it('refuses refunding more than was charged; partial refunds add up; a retry with the same key refunds once', async () => {
    const { pool, feature, accountId } = await account(100);
    const event = (await recordUsage(server, { accountId, featureKey: feature, quantity: 50 })).data.recordUsage.usageEvent;
    const over = await server.gql(REFUND, { input: { usageEventId: event.id, credits: 51, idempotencyKey: unique('refund') } });
    expect(over.errors?.[0]?.extensions?.code).toBe('REFUND_EXCEEDS_CHARGE');
    const key = unique('refund');
    ok(await server.gql(REFUND, { input: { usageEventId: event.id, credits: 20, idempotencyKey: key } }));
    ok(await server.gql(REFUND, { input: { usageEventId: event.id, credits: 20, idempotencyKey: key } }));
    expect((await balanceOf(server, accountId, pool)).available).toBe(70);
    const tooMuch = await server.gql(REFUND, { input: { usageEventId: event.id, credits: 31, idempotencyKey: unique('refund') } });
    expect(tooMuch.errors?.[0]?.extensions?.code).toBe('REFUND_EXCEEDS_CHARGE');
    const rest = ok(await server.gql(REFUND, { input: { usageEventId: event.id, idempotencyKey: unique('refund') } })).refundUsage;
    expect(rest.refundedCredits).toBe(50);
    expect((await balanceOf(server, accountId, pool)).available).toBe(100);
    const nothingLeft = await server.gql(REFUND, { input: { usageEventId: event.id, idempotencyKey: unique('refund') } });
    expect(nothingLeft.errors?.[0]?.extensions?.code).toBe('REFUND_EXCEEDS_CHARGE');
  });
});

describe('overage (PAY_AS_YOU_GO)', () => {
  it('goes beyond the balance up to the period cap, never beyond it under concurrency, and resets at renewal', async () => {
    const { pool, feature, accountId, clock } = await account(100, { clockStart: '2027-01-01T00:00:00.000Z', overage: 50 });
    const results = await Promise.all(Array.from({ length: 60 }, () => recordUsage(server, { accountId, featureKey: feature, quantity: 3 })));
    expect(results.filter((result) => result.data?.recordUsage?.__typename === 'UsageRecorded')).toHaveLength(50);
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 0, overageUsed: 50, periodUsed: 150 });
    const refused = results.find((result) => result.data?.recordUsage?.__typename === 'InsufficientCredits');
    expect(refused?.data.recordUsage).toMatchObject({ required: 3, available: 0 });
    await advanceClock(server, clock!, '2027-02-01T00:00:00.000Z');
    expect(await balanceOf(server, accountId, pool)).toMatchObject({ available: 100, overageUsed: 0, periodUsed: 0 });
    await expectLedgerConsistent(server);
  });

  it('HARD_STOP refuses the part beyond the balance', async () => {
    const { feature, accountId } = await account(10);
    const result = await recordUsage(server, { accountId, featureKey: feature, quantity: 11 });
    expect(result.data.recordUsage).toMatchObject({ __typename: 'InsufficientCredits', required: 11, available: 10 });
  });
});

describe('spend limits', () => {
  const SET = `mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { id scope scopeValue limit period used } }`;

  it('a tag limit (Clay workbook) holds under 50 concurrent calls and leaves other usage alone', async () => {
    const { pool, feature, accountId } = await account(10_000);
    const limit = ok(await server.gql(SET, { input: { accountId, scope: 'TAG', scopeValue: 'workbook:42', limit: 100, period: 'BILLING_PERIOD' } })).setSpendLimit;
    const results = await Promise.all(
      Array.from({ length: 50 }, () => recordUsage(server, { accountId, featureKey: feature, quantity: 3, tags: ['workbook:42', 'run'] })),
    );
    const outcomes = results.map((result) => result.data?.recordUsage?.__typename);
    expect(outcomes.filter((outcome) => outcome === 'UsageRecorded')).toHaveLength(33);
    expect(outcomes.filter((outcome) => outcome === 'SpendLimitExceeded')).toHaveLength(17);
    const refusal = await recordUsage(server, { accountId, featureKey: feature, quantity: 2, tags: ['workbook:42'] });
    expect(refusal.data.recordUsage).toMatchObject({ __typename: 'SpendLimitExceeded', code: 'SPEND_LIMIT_EXCEEDED' });
    const limits = ok(await server.gql(`query($id: ID!) { account(id: $id) { spendLimits { id used limit } } }`, { id: accountId }));
    expect(limits.account.spendLimits).toEqual([{ id: limit.id, used: 99, limit: 100 }]);
    expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 500, tags: ['workbook:7'] })).data.recordUsage.__typename).toBe('UsageRecorded');
    expect((await balanceOf(server, accountId, pool)).available).toBe(10_000 - 99 - 500);
  });

  it('account, seat and feature limits, per period and lifetime; removal lifts the limit', async () => {
    const { feature, accountId, clock } = await account(1_000, { clockStart: '2027-01-01T00:00:00.000Z' });
    const lifetime = ok(await server.gql(SET, { input: { accountId, scope: 'FEATURE', scopeValue: feature, limit: 30, period: 'LIFETIME' } })).setSpendLimit;
    ok(await server.gql(SET, { input: { accountId, scope: 'ACCOUNT', limit: 25, period: 'BILLING_PERIOD' } }));
    expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 20 })).data.recordUsage.__typename).toBe('UsageRecorded');
    expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 6 })).data.recordUsage).toMatchObject({
      __typename: 'SpendLimitExceeded',
      spendLimit: { scope: 'ACCOUNT', limit: 25, used: 20 },
    });
    await advanceClock(server, clock!, '2027-02-01T00:00:00.000Z');
    expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 11 })).data.recordUsage).toMatchObject({
      __typename: 'SpendLimitExceeded',
      spendLimit: { id: lifetime.id, used: 20 },
    });
    expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 10 })).data.recordUsage.__typename).toBe('UsageRecorded');
    expect(ok(await server.gql(`mutation($id: ID!) { removeSpendLimit(id: $id) }`, { id: lifetime.id })).removeSpendLimit).toBe(true);
    expect((await recordUsage(server, { accountId, featureKey: feature, quantity: 10 })).data.recordUsage.__typename).toBe('UsageRecorded');
  });

  it("a SEAT limit counts that seat's open holds and its usage net of refunds, leaves other seats alone, and alerts once used up", async () => {
    const { feature, accountId } = await account(1_000);
    const [seat, otherSeat] = [await addSeat(server, accountId), await addSeat(server, accountId)];
    const limit = ok(await server.gql(SET, { input: { accountId, scope: 'SEAT', scopeValue: seat, limit: 50, period: 'BILLING_PERIOD' } })).setSpendLimit;
    const use = async (quantity: number, seatId?: string) => (await recordUsage(server, { accountId, featureKey: feature, quantity, ...(seatId ? { seatId } : {}) })).data.recordUsage;
    const limitAlerts = async () =>
      ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts { edges { node { kind message } } } } }`, { id: accountId })).account.alerts.edges
        .map((edge: { node: { kind: string; message: string } }) => edge.node)
        .filter((alert: { kind: string }) => alert.kind === 'SPEND_LIMIT_REACHED');

    const first = await use(30, seat);
    expect(first.__typename).toBe('UsageRecorded');
    const hold = ok(await reserve(accountId, feature, 15, { seatId: seat })).reserveCredits;
    expect(hold.__typename).toBe('CreditsReserved');
    // Other seats and seatless usage are outside the limit.
    expect((await use(100, otherSeat)).__typename).toBe('UsageRecorded');
    expect((await use(100)).__typename).toBe('UsageRecorded');
    expect(ok(await server.gql(REFUND, { input: { usageEventId: first.usageEvent.id, credits: 20, idempotencyKey: unique('refund') } })).refundUsage.refundedCredits).toBe(20);
    expect(await limitAlerts()).toEqual([]);

    // 10 net of the refund + 15 held + 25 = 50: exactly used up, allowed, and alerted.
    expect(await use(25, seat)).toMatchObject({ __typename: 'UsageRecorded' });
    expect(await limitAlerts()).toEqual([{ kind: 'SPEND_LIMIT_REACHED', message: `spend limit on SEAT ${seat} reached (50 credits this period)` }]);
    // One more credit, or one more held, would exceed it because of the hold.
    expect(await use(1, seat)).toMatchObject({ __typename: 'SpendLimitExceeded', spendLimit: { id: limit.id, scope: 'SEAT', scopeValue: seat, used: 35, held: 15 } });
    expect(ok(await reserve(accountId, feature, 1, { seatId: seat })).reserveCredits).toMatchObject({ __typename: 'SpendLimitExceeded', code: 'SPEND_LIMIT_EXCEEDED' });
    // Released, the hold no longer counts.
    expect(ok(await server.gql(RELEASE, { id: hold.reservation.id })).releaseReservation.status).toBe('RELEASED');
    expect((await use(15, seat)).__typename).toBe('UsageRecorded');
    expect(await use(1, seat)).toMatchObject({ __typename: 'SpendLimitExceeded', spendLimit: { used: 50, held: 0 } });
    expect(await limitAlerts()).toHaveLength(1);
    await expectLedgerConsistent(server);
  });

  it('refuses a limit on an unknown seat or feature', async () => {
    const { accountId } = await account(10);
    const seat = await server.gql(SET, { input: { accountId, scope: 'SEAT', scopeValue: 'nope', limit: 1, period: 'LIFETIME' } });
    expect(seat.errors?.[0]?.extensions?.code).toBe('SEAT_NOT_FOUND');
    const feature = await server.gql(SET, { input: { accountId, scope: 'FEATURE', scopeValue: 'nope', limit: 1, period: 'LIFETIME' } });
    expect(feature.errors?.[0]?.extensions?.code).toBe('UNKNOWN_FEATURE');
  });
});
