import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inTransaction } from '../packages/server/src/db/transaction.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { FeatureCache } from '../packages/server/src/catalog/featureCache.ts';
import { normalizeUsage, recordUsageComplete, recordUsageHot, type RecordUsageOutcome, type UsageHotPath } from '../packages/server/src/ledger/recordUsage.ts';
import { addSeat, createAccount, defineFeature, definePlan, expectLedgerConsistent, grantCredits, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let features: { perUnit: string; intent: string; tiered: string };
let payAsYouGo: string;
let hardStop: string;
let pool: string;

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  pool = unique('credits');
  features = {
    perUnit: await defineFeature(server, { creditType: pool, unitCredits: 3 }),
    intent: await defineFeature(server, { creditType: pool, unitCredits: 0, requiresPositiveBalance: true }),
    tiered: await defineFeature(server, { creditType: pool, pricing: 'TIERED', tiers: [{ upTo: 10, credits: 7 }, { upTo: null, credits: 40 }] }),
  };
  const allocations = [
    { creditType: pool, amount: 5, perSeat: true },
    { creditType: pool, amount: 60 },
  ];
  const featureKeys = Object.values(features);
  payAsYouGo = await definePlan(server, { allocations, featureKeys, overagePolicy: 'PAY_AS_YOU_GO', maxOverageCredits: 25 });
  hardStop = await definePlan(server, { allocations, featureKeys });
});
afterAll(async () => {
  await server?.stop();
});

/** The same account twice: one for each path. */
async function twinAccounts(plan: string, bonus: number) {
  const twins = [];
  for (let twin = 0; twin < 2; twin += 1) {
    const accountId = await createAccount(server, plan);
    const seat = await addSeat(server, accountId);
    const barred = await addSeat(server, accountId, false);
    if (bonus > 0) await grantCredits(server, { accountId, creditType: pool, amount: bonus, expiresAt: new Date(Date.now() + 86_400_000 * 400).toISOString() });
    twins.push({ accountId, seats: { none: null, own: seat, barred } as Record<string, string | null> });
  }
  return twins as [(typeof twins)[0], (typeof twins)[0]];
}

/**
 * What must agree between the paths: the outcome, the credits and overage charged, and the balance
 * (but its next expiry, which is each twin's own period end, created a moment apart).
 */
function comparable(outcome: RecordUsageOutcome) {
  if (outcome.kind !== 'recorded') return outcome;
  const { nextExpiry: _ownPeriodEnd, ...balance } = outcome.balance;
  return { kind: outcome.kind, credits: outcome.usageEvent.credits, overage: outcome.usageEvent.overageCredits, balance };
}

/** The balance an outcome reports must be the one stored, read afterwards through the API. */
async function expectStoredBalance(outcome: RecordUsageOutcome, accountId: string) {
  if (outcome.kind !== 'recorded') return;
  const stored = await operator(server).balance(accountId, outcome.balance.creditType);
  expect({ ...outcome.balance, nextExpiry: outcome.balance.nextExpiry?.toISOString() ?? null }).toEqual(stored);
}

const step = fc.record({
  feature: fc.constantFrom('perUnit', 'intent', 'tiered'),
  quantity: fc.integer({ min: 1, max: 14 }),
  seat: fc.constantFrom('none', 'own', 'barred'),
});

describe('the hot path and the complete path of recordUsage', () => {
  it('make the same decisions and leave the same balances on random sequences', async () => {
    const hotPath: UsageHotPath = { database: server.app.database, features: new FeatureCache(server.app.database) };
    let runs = 0;
    let charged = 0;
    const fellBack = new Set<string>();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('payg', 'hard'), fc.integer({ min: 0, max: 30 }), fc.array(step, { minLength: 1, maxLength: 8 }), async (planKind, bonus, steps) => {
        runs += 1;
        const [hot, complete] = await twinAccounts(planKind === 'payg' ? payAsYouGo : hardStop, bonus);
        for (const [index, spec] of steps.entries()) {
          const input = (twin: typeof hot) => ({
            accountId: twin.accountId,
            featureKey: features[spec.feature as keyof typeof features],
            quantity: spec.quantity,
            seatId: twin.seats[spec.seat],
            idempotencyKey: `step-${index}`,
          });
          const hotOutcome = await recordUsageHot(hotPath, systemClock, normalizeUsage(input(hot)), hot.accountId);
          if (hotOutcome.kind === 'recorded') charged += 1;
          else fellBack.add(hotOutcome.reason);
          const viaHot =
            hotOutcome.kind === 'recorded'
              ? hotOutcome
              : await inTransaction(server.app.database.prisma, (tx) => recordUsageComplete(tx, systemClock, normalizeUsage(input(hot)), hot.accountId));
          const viaComplete = await inTransaction(server.app.database.prisma, (tx) =>
            recordUsageComplete(tx, systemClock, normalizeUsage(input(complete)), complete.accountId),
          );
          expect(comparable(viaHot), `step ${index}`).toEqual(comparable(viaComplete));
          await expectStoredBalance(viaHot, hot.accountId);
          await expectStoredBalance(viaComplete, complete.accountId);
        }
      }),
      {
        numRuns: 15,
        // First, one sequence that surely crosses a usage level (42, then 54 of the 60 shared
        // credits) and then runs out, so that both hand-overs are exercised on every run.
        examples: [
          [
            'hard',
            0,
            [
              { feature: 'perUnit', quantity: 14, seat: 'none' },
              { feature: 'perUnit', quantity: 4, seat: 'none' },
              { feature: 'perUnit', quantity: 14, seat: 'none' },
            ],
          ],
        ],
      },
    );
    expect(runs).toBe(15);
    // Both kinds of step were exercised: charges on the hot path, and hand-overs to the complete one.
    expect(charged).toBeGreaterThan(10);
    expect(fellBack).toContain('credits');
    expect(fellBack).toContain('alert');
    await expectLedgerConsistent(server);
  });
});
