import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareConsumptionOrder, modelDraws, type ModelGrant } from './support/consumptionModel.ts';
import { addSeat, createAccount, defineFeature, definePlan } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * The one definition of the debit rules (`spendable_draws` and `debit_coverage`, which the
 * one-statement paths and the complete path all use) against a model written out in the test:
 * which grants the spender may draw from, in what order, what each gives, and whether they cover it.
 */
let server: TestServer;
let accountId: string;
let seats: { own: string; other: string };
const NOW = new Date(Date.UTC(2027, 0, 10));

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  accountId = await createAccount(server, await definePlan(server, { allocations: [], featureKeys: [feature] }));
  seats = { own: await addSeat(server, accountId), other: await addSeat(server, accountId) };
});
afterAll(async () => {
  await server?.stop();
});

const day = (offset: number) => new Date(NOW.getTime() + offset * 86_400_000);

const grantSpec = fc.record({
  seat: fc.constantFrom('shared', 'shared', 'own', 'other'),
  amount: fc.integer({ min: 1, max: 400 }),
  spent: fc.integer({ min: 0, max: 100 }),
  // Some already expired, some not yet effective, some never expiring.
  expiresIn: fc.option(fc.integer({ min: -2, max: 8 }), { nil: null }),
  effectiveIn: fc.constantFrom(-5, -5, -5, 1),
  priority: fc.integer({ min: 0, max: 3 }),
  createdSecond: fc.integer({ min: 0, max: 4 }),
  features: fc.constantFrom<string[]>([], [], ['chat'], ['image'], ['chat', 'image']),
});

type GrantSpec = typeof grantSpec extends fc.Arbitrary<infer Spec> ? Spec : never;

interface Inserted extends ModelGrant {
  effectiveAt: Date;
  features: string[];
}

async function insertGrants(creditType: string, specs: Array<GrantSpec>): Promise<Inserted[]> {
  const grants: Inserted[] = specs.map((spec) => ({
    id: randomUUID(),
    seatId: spec.seat === 'shared' ? null : seats[spec.seat as 'own' | 'other'],
    remaining: Math.max(0, spec.amount - spec.spent),
    expiresAt: spec.expiresIn === null ? null : day(spec.expiresIn),
    effectiveAt: day(spec.effectiveIn),
    priority: spec.priority,
    createdAt: new Date(Date.UTC(2027, 0, 1, 0, 0, spec.createdSecond)),
    features: spec.features,
  }));
  for (const [index, grant] of grants.entries()) {
    // Straight into the table: the definition is under test, not the operations that write grants.
    // The ledger entries say the same (a grant's remaining is the sum of its entries, which other
    // tests sharing the database check), the spent part as an ADJUST.
    await server.app.database.statement(
      `WITH g AS (
         INSERT INTO grants (id, account_id, seat_id, credit_type, source, amount, remaining, priority, effective_at, expires_at, feature_keys, created_at)
         VALUES ($1, $2, $3, $4, 'BONUS', $5, $6, $7, $8::timestamp(3), $9::timestamp(3), $10::text[], $11::timestamp(3))
         RETURNING id, account_id, amount, remaining, created_at)
       INSERT INTO ledger_entries (account_id, grant_id, type, credits, created_at)
       SELECT account_id, id, entry.type::"LedgerEntryType", entry.credits, created_at
       FROM g, LATERAL (VALUES ('GRANT', amount), ('ADJUST', remaining - amount)) AS entry(type, credits) WHERE entry.credits <> 0`,
      [grant.id, accountId, grant.seatId, creditType, specs[index]!.amount, grant.remaining, grant.priority, grant.effectiveAt.toISOString(),
        grant.expiresAt?.toISOString() ?? null, grant.features, grant.createdAt.toISOString()],
    );
  }
  return grants;
}

describe('the one definition of the debit rules (spendable_draws, debit_coverage)', () => {
  it('draws what the documented order draws, from the grants the spender may use for the feature', async () => {
    let drawnSomewhere = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(grantSpec, { minLength: 3, maxLength: 9 }),
        fc.constantFrom('none', 'own', 'barred'),
        fc.constantFrom('chat', 'image', 'search'),
        fc.integer({ min: 0, max: 900 }),
        fc.boolean(),
        async (specs, spender, featureKey, cost, requiresPositive) => {
          const creditType = unique('pool');
          const grants = await insertGrants(creditType, specs);
          const seatId = spender === 'none' ? null : seats.own;
          const shared = spender !== 'barred';
          // The model: live at NOW, the spender's (own seat's, and the shared pool unless barred), for the feature.
          const spendable = grants.filter(
            (grant) =>
              grant.remaining > 0 &&
              grant.effectiveAt <= NOW &&
              (grant.expiresAt === null || grant.expiresAt > NOW) &&
              ((grant.seatId === null && shared) || (seatId !== null && grant.seatId === seatId)) &&
              (grant.features.length === 0 || grant.features.includes(featureKey)),
          );
          const expected = modelDraws(spendable, cost);
          const total = spendable.reduce((sum, grant) => sum + grant.remaining, 0);
          const expectedCoverage = requiresPositive && total <= 0 ? 'empty' : expected.shortfall > 0 ? 'short' : 'covered';

          const rows = await server.app.database.statement<{ grant_id: string; credits: string | number; coverage: string }>(
            `SELECT grant_id, credits, debit_coverage(sum(remaining) OVER (), 0, $7, $8) AS coverage
             FROM spendable_draws($1, $2, $3::timestamp(3), $4, $5, $6, $7) ORDER BY position`,
            [accountId, creditType, NOW.toISOString(), seatId, shared, featureKey, cost, requiresPositive],
          );
          expect(rows.map((row) => row.grant_id), 'spendable grants in order').toEqual(
            [...spendable].sort(compareConsumptionOrder).map((grant) => grant.id),
          );
          const draws = rows.filter((row) => Number(row.credits) > 0).map((row) => ({ grantId: row.grant_id, credits: Number(row.credits) }));
          expect(draws).toEqual(expected.draws);
          const [coverage] = await server.app.database.statement<{ coverage: string }>(
            `SELECT debit_coverage(coalesce(sum(remaining), 0)::bigint, 0, $7, $8) AS coverage
             FROM spendable_grants($1, $2, $3::timestamp(3), $4, $5, $6)`,
            [accountId, creditType, NOW.toISOString(), seatId, shared, featureKey, cost, requiresPositive],
          );
          expect(coverage!.coverage).toBe(expectedCoverage);
          if (draws.length > 1) drawnSomewhere += 1;
        },
      ),
      {
        numRuns: 66,
        // 60 random runs after six that surely draw from several grants (an own seat's and the shared pool's, expiries,
        // priorities, a scoped grant), so that the count below never depends on the random ones.
        examples: [20, 30, 45, 35, 40, 70].map((cost, index) => [
          [
            { seat: 'shared', amount: 10, spent: 0, expiresIn: null, effectiveIn: -5, priority: index % 4, createdSecond: 0, features: [] },
            { seat: 'own', amount: 20, spent: 5, expiresIn: 3, effectiveIn: -5, priority: 0, createdSecond: 1, features: [] },
            { seat: 'shared', amount: 30, spent: 0, expiresIn: 5, effectiveIn: -5, priority: 2, createdSecond: 2, features: index % 2 === 0 ? ['chat'] : [] },
            { seat: 'other', amount: 40, spent: 0, expiresIn: null, effectiveIn: -5, priority: 1, createdSecond: 3, features: [] },
          ],
          index < 3 ? 'own' : 'none',
          'chat',
          cost,
          index % 2 === 1,
        ] as [GrantSpec[], string, string, number, boolean]),
      },
    );
    // Not only empty pools: the examples above, at least, drew from several grants.
    expect(drawnSomewhere).toBeGreaterThanOrEqual(6);
  });

  it('splits the credits of several debits charged together exactly as one by one (drawn_credits)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 5 }), async (remaining, costs) => {
        const [row] = await server.app.database.statement<{ split: Array<Array<number | string>> }>(
          `WITH g AS (SELECT r AS remaining, sum(r) OVER (ORDER BY i) - r AS ahead, i FROM unnest($1::bigint[]) WITH ORDINALITY AS t(r, i)),
                d AS (SELECT c AS cost, sum(c) OVER (ORDER BY j) AS cum_end, j FROM unnest($2::bigint[]) WITH ORDINALITY AS t(c, j))
           SELECT coalesce(jsonb_agg(jsonb_build_array(d.j, g.i, drawn_credits(g.ahead, g.remaining, d.cum_end - d.cost, d.cum_end)) ORDER BY d.j, g.i)
                           FILTER (WHERE drawn_credits(g.ahead, g.remaining, d.cum_end - d.cost, d.cum_end) > 0), '[]') AS split
           FROM d CROSS JOIN g`,
          [remaining, costs],
        );
        // One by one: each debit walks the grants in order, taking what the debits before it left.
        const left = [...remaining];
        const expected: number[][] = [];
        costs.forEach((cost, debit) => {
          let owed = cost;
          left.forEach((credits, grant) => {
            const take = Math.min(owed, credits);
            if (take > 0) expected.push([debit + 1, grant + 1, take]);
            left[grant] = credits - take;
            owed -= take;
          });
        });
        const split = (typeof row!.split === 'string' ? JSON.parse(row!.split) : row!.split) as number[][];
        expect(split.map((entry) => entry.map(Number))).toEqual(expected);
      }),
      { numRuns: 60 },
    );
  });
});
