import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeatureCache } from '../packages/server/src/catalog/featureCache.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { recordUsage, type UsageHotPath } from '../packages/server/src/ledger/recordUsage.ts';
import { recordUsageBatch, type BatchItemOutcome } from '../packages/server/src/ledger/recordUsageBatch.ts';
import { createAccount, defineFeature, definePlan, expectLedgerConsistent, grantCredits, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let hotPath: UsageHotPath;
let pool: string;
let features: Record<'perUnit' | 'intent' | 'tiered' | 'outside', string>;
let plan: string;

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  hotPath = { database: server.app.database, features: new FeatureCache(server.app.database) };
  pool = unique('credits');
  features = {
    perUnit: await defineFeature(server, { creditType: pool, unitCredits: 3 }),
    intent: await defineFeature(server, { creditType: pool, unitCredits: 0, requiresPositiveBalance: true }),
    tiered: await defineFeature(server, { creditType: pool, pricing: 'TIERED', tiers: [{ upTo: 10, credits: 7 }, { upTo: null, credits: 40 }] }),
    outside: await defineFeature(server, { creditType: pool, unitCredits: 1 }),
  };
  plan = await definePlan(server, {
    allocations: [{ creditType: pool, amount: 400 }],
    featureKeys: [features.perUnit, features.intent, features.tiered],
  });
});
afterAll(async () => {
  await server?.stop();
});

/** Twin accounts: the same plan and the same bonus grants (amounts, expiries), created in the same order. */
async function twins(bonuses: Array<{ amount: number; days: number | null }>) {
  const pair: string[] = [];
  for (let twin = 0; twin < 2; twin += 1) {
    const accountId = await createAccount(server, plan);
    for (const bonus of bonuses) {
      await grantCredits(server, {
        accountId,
        creditType: pool,
        amount: bonus.amount,
        ...(bonus.days === null ? {} : { expiresAt: new Date(Date.now() + bonus.days * 86_400_000).toISOString() }),
      });
    }
    pair.push(accountId);
  }
  return pair as [string, string];
}

/** What must agree: the outcome, what it charged, and the balance it reports (but the period end, a moment apart). */
function comparable(outcome: BatchItemOutcome | undefined) {
  if (!outcome || outcome.kind !== 'recorded') return outcome;
  const { nextExpiry: _ownPeriodEnd, ...balance } = outcome.balance;
  return { kind: outcome.kind, credits: outcome.usageEvent.credits, replayed: outcome.replayed, balance };
}

async function remainingByGrant(accountId: string): Promise<number[]> {
  const rows = await server.app.database.statement<{ remaining: string | bigint }>(
    'SELECT remaining FROM grants WHERE account_id = $1 ORDER BY created_at, source, amount',
    [accountId],
  );
  return rows.map((row) => Number(row.remaining));
}

async function drawsOf(accountId: string): Promise<Array<[string, number, number]>> {
  const rows = await server.app.database.statement<{ key: string; position: number; credits: string | bigint }>(
    `SELECT e.idempotency_key AS key, d.position, d.credits FROM usage_draws d JOIN usage_events e ON e.id = d.usage_event_id
     WHERE e.account_id = $1 ORDER BY e.idempotency_key, d.position`,
    [accountId],
  );
  return rows.map((row) => [row.key, row.position, Number(row.credits)]);
}

const event = fc.record({
  account: fc.integer({ min: 0, max: 2 }),
  feature: fc.constantFrom('perUnit', 'perUnit', 'tiered', 'intent', 'outside', 'unknown'),
  quantity: fc.integer({ min: 1, max: 14 }),
  key: fc.integer({ min: 0, max: 40 }),
});

describe('recordUsageBatch, set-based', () => {
  it('charges exactly what recording the events one by one charges, on random batches', async () => {
    let runs = 0;
    let setBased = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ amount: fc.integer({ min: 1, max: 120 }), days: fc.option(fc.integer({ min: 1, max: 400 })) }), { maxLength: 3 }),
        fc.array(event, { minLength: 1, maxLength: 25 }),
        fc.array(event, { minLength: 1, maxLength: 25 }),
        async (bonuses, firstBatch, secondBatch) => {
          runs += 1;
          const accounts = [await twins(bonuses), await twins(bonuses), await twins(bonuses)];
          for (const batch of [firstBatch, secondBatch]) {
            const inputs = (twin: 0 | 1) =>
              batch.map((spec) => ({
                accountId: accounts[spec.account]![twin],
                featureKey: spec.feature === 'unknown' ? 'no.such.feature' : features[spec.feature as keyof typeof features],
                quantity: spec.quantity,
                idempotencyKey: `k-${spec.key}`,
              }));
            const batched = await recordUsageBatch(server.app.database.prisma, hotPath, systemClock, inputs(0));
            setBased += batched.chargedSetBased;
            const oneByOne: BatchItemOutcome[] = [];
            for (const input of inputs(1)) {
              oneByOne.push(
                await recordUsage(server.app.database.prisma, hotPath, systemClock, input).catch((error: { code: string; message: string }) => ({
                  kind: 'rejected' as const,
                  code: error.code,
                  message: error.message,
                })),
              );
            }
            expect(batched.outcomes.map(comparable)).toEqual(oneByOne.map(comparable));
          }
          for (const [batchedAccount, oneByOneAccount] of accounts) {
            expect(await remainingByGrant(batchedAccount)).toEqual(await remainingByGrant(oneByOneAccount));
            expect(await drawsOf(batchedAccount)).toEqual(await drawsOf(oneByOneAccount));
            expect(await operator(server).balance(batchedAccount, pool)).toEqual({
              ...(await operator(server).balance(oneByOneAccount, pool)),
              nextExpiry: (await operator(server).balance(batchedAccount, pool))?.nextExpiry,
            });
          }
        },
      ),
      { numRuns: 12 },
    );
    expect(runs).toBe(12);
    // The set-based statement did charge (the property would hold trivially if everything fell back).
    expect(setBased).toBeGreaterThan(20);
    await expectLedgerConsistent(server);
  });
});
