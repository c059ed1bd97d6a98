/**
 * Behaviour the README promises that no other test exercised (issue 17 item 2), each through the
 * public API or, for the database's own guarantees, against the database itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, advanceClock, balanceOf, createAccount, createTestClock, defineFeature, definePlan, expectLedgerConsistent, grantCredits, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  await server?.stop();
});

const REFUND = `mutation($input: RefundUsageInput!) { refundUsage(input: $input) { refundedCredits overageCredits } }`;

async function account(amount: number, plan: { overage?: number; clock?: string } = {}) {
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const other = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const code = await definePlan(server, {
    allocations: [{ creditType: pool, amount }],
    featureKeys: [feature, other],
    ...(plan.overage !== undefined ? { overagePolicy: 'PAY_AS_YOU_GO' as const, maxOverageCredits: plan.overage } : {}),
  });
  const clock = plan.clock ? await createTestClock(server, plan.clock) : undefined;
  return { pool, feature, other, accountId: await createAccount(server, code, clock), clock };
}

async function remainingBySource(accountId: string): Promise<Record<string, number>> {
  const grants = ok(await server.gql(`query($id: ID!) { account(id: $id) { grants { edges { node { source remaining } } } } }`, { id: accountId })).account.grants.edges;
  return Object.fromEntries(grants.map((edge: { node: { source: string; remaining: number } }) => [edge.node.source, edge.node.remaining]));
}

describe('README: the ledger is the product', () => {
  it('ledger_entries refuses UPDATE, DELETE and TRUNCATE (trigger), even inside a transaction', async () => {
    const { feature, accountId } = await account(100);
    ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 5 }));
    for (const sql of ['TRUNCATE ledger_entries', 'DELETE FROM ledger_entries WHERE account_id = $1', 'UPDATE ledger_entries SET credits = 0 WHERE account_id = $1']) {
      // In a transaction that is rolled back whatever happens: were the trigger missing, nothing is lost.
      const attempt = server.app.database.prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe(sql, ...(sql.includes('$1') ? [accountId] : []));
        throw new Error('the statement went through');
      });
      await expect(attempt, sql).rejects.toThrow(/append-only|ledger_entries/i);
    }
    await expectLedgerConsistent(server);
  });
});

describe('README: limits on keys and tags', () => {
  it('takes idempotency keys up to 255 characters and up to 32 tags of up to 128, refuses one more of each, charging nothing', async () => {
    const { pool, feature, accountId } = await account(1_000);
    const use = (input: Record<string, unknown>) => recordUsage(server, { accountId, featureKey: feature, quantity: 1, ...input });
    expect(ok(await use({ idempotencyKey: 'k'.repeat(255), tags: Array.from({ length: 32 }, (_, index) => `${index}`.padEnd(128, 't')) })).recordUsage.__typename).toBe('UsageRecorded');
    const refusals = [
      [{ idempotencyKey: 'k'.repeat(256) }, 'idempotencyKey'],
      [{ tags: ['t'.repeat(129)] }, 'tags'],
      [{ tags: Array.from({ length: 33 }, (_, index) => `tag-${index}`) }, 'tags'],
    ] as const;
    for (const [input, field] of refusals) {
      const refused = await use({ idempotencyKey: unique('key'), ...input });
      expect(refused.errors?.map((error) => [error.extensions?.code, error.extensions?.field]), field).toEqual([['INVALID_INPUT', field]]);
    }
    expect((await balanceOf(server, accountId, pool)).available).toBe(999);
  });
});

describe('README: idempotency fingerprints the whole request', () => {
  it('the same key with other metadata, occurredAt, seat or feature is IDEMPOTENCY_CONFLICT and charges nothing; the same input replays', async () => {
    const { pool, feature, other, accountId } = await account(1_000);
    const seat = await addSeat(server, accountId);
    const otherSeat = await addSeat(server, accountId);
    const occurred = new Date(Date.now() - 3_600_000);
    const first = { accountId, featureKey: feature, quantity: 2, idempotencyKey: unique('same'), metadata: { run: 1 }, occurredAt: occurred.toISOString(), seatId: seat };
    const recorded = ok(await recordUsage(server, first)).recordUsage;
    expect(recorded.__typename).toBe('UsageRecorded');
    for (const [change, value] of [
      ['metadata', { run: 2 }],
      ['occurredAt', new Date(occurred.getTime() + 1_000).toISOString()],
      ['seatId', otherSeat],
      ['featureKey', other],
    ] as const) {
      const conflict = await recordUsage(server, { ...first, [change]: value });
      expect(conflict.errors?.[0]?.extensions?.code ?? conflict.data?.recordUsage?.code, change).toBe('IDEMPOTENCY_CONFLICT');
    }
    expect(ok(await recordUsage(server, first)).recordUsage.usageEvent.id).toBe(recorded.usageEvent.id);
    expect((await balanceOf(server, accountId, pool)).available).toBe(998);
  });
});

describe('README: refunds', () => {
  it('go back newest draw first', async () => {
    const { feature, accountId, pool } = await account(10);
    await grantCredits(server, { accountId, creditType: pool, amount: 100, source: 'BONUS' });
    // The plan grant (expiring at the period end) is drawn first, then the bonus.
    const usage = ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 30 })).recordUsage.usageEvent;
    expect(await remainingBySource(accountId)).toEqual({ PLAN: 0, BONUS: 80 });
    ok(await server.gql(REFUND, { input: { usageEventId: usage.id, credits: 15, idempotencyKey: unique('refund') } }));
    expect(await remainingBySource(accountId)).toEqual({ PLAN: 0, BONUS: 95 });
    ok(await server.gql(REFUND, { input: { usageEventId: usage.id, credits: 10, idempotencyKey: unique('refund') } }));
    expect(await remainingBySource(accountId)).toEqual({ PLAN: 5, BONUS: 100 });
    await expectLedgerConsistent(server);
  });

  it('give back overage (the last part charged) before any grant', async () => {
    const { feature, accountId, pool } = await account(10, { overage: 100 });
    const usage = ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 25 })).recordUsage.usageEvent;
    expect(await remainingBySource(accountId)).toEqual({ PLAN: 0 });
    const first = ok(await server.gql(REFUND, { input: { usageEventId: usage.id, credits: 5, idempotencyKey: unique('refund') } })).refundUsage;
    expect(first).toEqual({ refundedCredits: 5, overageCredits: 15 });
    expect(await remainingBySource(accountId)).toEqual({ PLAN: 0 });
    ok(await server.gql(REFUND, { input: { usageEventId: usage.id, credits: 15, idempotencyKey: unique('refund') } }));
    expect(await remainingBySource(accountId)).toEqual({ PLAN: 5 });
    expect((await balanceOf(server, accountId, pool)).available).toBe(5);
    await expectLedgerConsistent(server);
  });
});

describe('README: periods', () => {
  it('a period that has ended is renewed by the first usage that needs it, before any job runs', async () => {
    const { feature, accountId, pool, clock } = await account(100, { clock: '2027-01-01T00:00:00.000Z' });
    ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 40 }));
    // Time passes without anything processing it (advanceTestClock would run the due work itself).
    await server.app.database.statement(`UPDATE test_clocks SET frozen_time = $2 WHERE id = $1`, [clock, new Date('2027-02-01T00:00:05.000Z')]);
    const used = ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 30 })).recordUsage;
    expect(used.__typename).toBe('UsageRecorded');
    expect(used.balance).toMatchObject({ available: 70, periodUsed: 30 });
    const renewals = await server.app.database.prisma.periodRenewal.findMany({ where: { accountId } });
    expect(renewals.map((renewal) => renewal.periodStart.toISOString())).toEqual(['2027-02-01T00:00:00.000Z']);
    expect((await balanceOf(server, accountId, pool)).available).toBe(70);
    await expectLedgerConsistent(server);
  });
});

describe('README: alerts are raised by every change that lowers a balance', () => {
  const alertsOf = async (accountId: string) =>
    ok(await server.gql(`query($id: ID!) { account(id: $id) { alerts { edges { node { kind threshold } } } } }`, { id: accountId })).account.alerts.edges.map(
      (edge: { node: { kind: string; threshold: number | null } }) => `${edge.node.kind} ${edge.node.threshold}`,
    );

  it('settling a hold raises the usage thresholds it crosses (the hold itself raises none)', async () => {
    const { feature, accountId } = await account(100);
    const hold = ok(
      await server.gql(`mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { ... on CreditsReserved { reservation { id } } } }`, {
        input: { accountId, featureKey: feature, credits: 80, idempotencyKey: unique('hold') },
      }),
    ).reserveCredits.reservation.id;
    expect(await alertsOf(accountId)).toEqual([]);
    ok(await server.gql(`mutation($input: SettleReservationInput!) { settleReservation(input: $input) { id } }`, { input: { reservationId: hold, credits: 80 } }));
    expect(await alertsOf(accountId)).toContain('USAGE_THRESHOLD 75');
  });

  it('expiry that takes a pool below its low-balance level raises LOW_BALANCE', async () => {
    const { accountId, pool, clock } = await account(10, { clock: '2027-01-01T00:00:00.000Z' });
    await grantCredits(server, { accountId, creditType: pool, amount: 100, source: 'BONUS', expiresAt: '2027-01-03T00:00:00.000Z' });
    ok(await server.gql(`mutation($input: SetAlertSettingsInput!) { setAlertSettings(input: $input) { creditType } }`, { input: { accountId, creditType: pool, percents: [75], lowBalance: 50 } }));
    expect(await alertsOf(accountId)).toEqual([]);
    await advanceClock(server, clock!, '2027-01-04T00:00:00.000Z');
    expect((await balanceOf(server, accountId, pool)).available).toBe(10);
    expect(await alertsOf(accountId)).toEqual(['LOW_BALANCE 50']);
  });
});

