import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, balance, createAccount, createKey, defineFeature, definePlan, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

describe('consumption order', () => {
  it('draws the grant expiring at period end to zero, then the later-expiring bonus', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
    const bonus = ok(
      await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id source expiresAt } }`, {
        input: {
          accountId,
          creditType: pool,
          amount: 500,
          source: 'BONUS',
          expiresAt: new Date(Date.now() + 400 * 86_400_000).toISOString(),
          idempotencyKey: unique('bonus'),
        },
      }),
    ).grantCredits;
    const grants = ok(await server.gql(`query($id: ID!) { account(id: $id) { grants { edges { node { id source } } } } }`, { id: accountId }));
    const planGrant = grants.account.grants.edges.map((edge: any) => edge.node).find((grant: any) => grant.source === 'PLAN');

    const result = await recordUsage(server, { accountId, featureKey: feature, quantity: 130 });
    const event = result.data.recordUsage.usageEvent;
    expect(event.draws).toEqual([
      { credits: 100, grant: { id: planGrant.id, source: 'PLAN' } },
      { credits: 30, grant: { id: bonus.id, source: 'BONUS' } },
    ]);
    const after = ok(
      await server.gql(`query($id: ID!) { account(id: $id) { grants { edges { node { id remaining } } } } }`, { id: accountId }),
    ).account.grants.edges.map((edge: any) => edge.node);
    expect(after).toEqual(expect.arrayContaining([{ id: planGrant.id, remaining: 0 }, { id: bonus.id, remaining: 470 }]));
  });

  it('among grants with the same expiry spends the lower priority number first, then the oldest', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [], featureKeys: [feature] }));
    const expiresAt = new Date(Date.now() + 30 * 86_400_000).toISOString();
    const grant = async (priority: number) =>
      ok(
        await server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
          input: { accountId, creditType: pool, amount: 10, source: 'ADJUSTMENT', expiresAt, priority, idempotencyKey: unique('g') },
        }),
      ).grantCredits.id as string;
    const older = await grant(5);
    const low = await grant(1);
    const newer = await grant(5);
    const result = await recordUsage(server, { accountId, featureKey: feature, quantity: 25 });
    expect(result.data.recordUsage.usageEvent.draws.map((draw: any) => [draw.grant.id, draw.credits])).toEqual([
      [low, 10],
      [older, 10],
      [newer, 5],
    ]);
  });
});

describe('per-seat grants (Hex style)', () => {
  it("spends the seat's own grant first, then the shared pool; a barred seat only its own", async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = await definePlan(server, {
      allocations: [
        { creditType: pool, amount: 10, perSeat: true },
        { creditType: pool, amount: 100 },
      ],
      featureKeys: [feature],
    });
    const accountId = await createAccount(server, plan);
    const seat = await addSeat(server, accountId);
    const barred = await addSeat(server, accountId, false);
    expect(await balance(server, accountId, pool)).toBe(120);

    const first = await recordUsage(server, { accountId, featureKey: feature, quantity: 15, seatId: seat });
    const draws = first.data.recordUsage.usageEvent.draws.map((draw: any) => [draw.grant.source, draw.credits]);
    expect(draws).toEqual([
      ['SEAT', 10],
      ['PLAN', 5],
    ]);
    expect(first.data.recordUsage.usageEvent.seat).toEqual({ id: seat });

    const own = await recordUsage(server, { accountId, featureKey: feature, quantity: 10, seatId: barred });
    expect(own.data.recordUsage.usageEvent.draws.map((draw: any) => draw.grant.source)).toEqual(['SEAT']);
    const refused = await recordUsage(server, { accountId, featureKey: feature, quantity: 1, seatId: barred });
    expect(refused.data.recordUsage).toMatchObject({ __typename: 'InsufficientCredits', available: 0, required: 1 });
    expect(await balance(server, accountId, pool)).toBe(95);

    const seatKey = await createKey(server, 'SEAT', accountId, seat);
    const viewer = ok(await server.gql(`{ viewer { role seat { id } account { id } } }`, {}, seatKey));
    expect(viewer.viewer).toEqual({ role: 'SEAT', seat: { id: seat }, account: { id: accountId } });
  });

  it('a seat added mid-period receives its full allocation at once', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 25, perSeat: true }], featureKeys: [feature] }));
    expect(await balance(server, accountId, pool)).toBe(0);
    await addSeat(server, accountId);
    await addSeat(server, accountId);
    expect(await balance(server, accountId, pool)).toBe(50);
  });

  it('barring a seat later confines it to its own grants; removing a seat expires its grants and its keys', async () => {
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const accountId = await createAccount(
      server,
      await definePlan(server, { allocations: [{ creditType: pool, amount: 5, perSeat: true }, { creditType: pool, amount: 100 }], featureKeys: [feature] }),
    );
    const seat = await addSeat(server, accountId);
    const seatKey = await createKey(server, 'SEAT', accountId, seat);
    ok(await server.gql(`mutation($input: UpdateSeatInput!) { updateSeat(input: $input) { canUseSharedPool } }`, { input: { seatId: seat, canUseSharedPool: false } }));
    const refused = await recordUsage(server, { accountId, featureKey: feature, quantity: 6, seatId: seat });
    expect(refused.data.recordUsage).toMatchObject({ __typename: 'InsufficientCredits', available: 5 });

    ok(await server.gql(`mutation($id: ID!) { removeSeat(seatId: $id) { id } }`, { id: seat }));
    expect(await balance(server, accountId, pool)).toBe(100);
    const ledger = ok(await server.gql(`query($id: ID!) { account(id: $id) { ledger { edges { node { type credits } } } } }`, { id: accountId }));
    expect(ledger.account.ledger.edges[0].node).toEqual({ type: 'EXPIRE', credits: -5 });
    const afterRemoval = await server.gql(`{ viewer { role } }`, {}, seatKey);
    expect(afterRemoval.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const usage = await recordUsage(server, { accountId, featureKey: feature, seatId: seat });
    expect(usage.errors?.[0]?.extensions?.code).toBe('SEAT_NOT_FOUND');
  });
});
