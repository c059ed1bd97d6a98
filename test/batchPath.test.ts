import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeatureCache } from '../packages/server/src/catalog/featureCache.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { recordUsage, type UsageHotPath } from '../packages/server/src/ledger/recordUsage.ts';
import { recordUsageBatch, type BatchItemOutcome } from '../packages/server/src/ledger/recordUsageBatch.ts';
import { createAccount, defineFeature, definePlan, expectLedgerConsistent, grantCredits, ok, operator } from './support/fixtures.ts';
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
    `SELECT e.idempotency_key AS key, row_number() OVER (PARTITION BY d.usage_event_id ORDER BY d.id)::int AS position, -d.credits AS credits
     FROM ledger_entries d JOIN usage_events e ON e.id = d.usage_event_id
     WHERE d.type = 'DEBIT' AND e.account_id = $1 ORDER BY e.idempotency_key, position`,
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
      {
        numRuns: 12,
        // First, one batch of 25 plain charges (3 credits each, spread over the three accounts' 400),
        // so that the count of set-based charges below never depends on the 11 random runs.
        examples: [
          [
            [],
            Array.from({ length: 25 }, (_, key) => ({ account: key % 3, feature: 'perUnit' as const, quantity: 1, key })),
            [{ account: 0, feature: 'perUnit' as const, quantity: 1, key: 25 }],
          ],
        ],
      },
    );
    expect(runs).toBe(12);
    // The set-based statement did charge (the property would hold trivially if everything fell back):
    // at least the example's 26 plain charges.
    expect(setBased).toBeGreaterThanOrEqual(26);
    await expectLedgerConsistent(server);
  });

  it('a full batch of 1,000 events over 40 accounts goes set-based in partitions and charges what one by one charges; 1,001 are refused whole', async () => {
    // A fixed pseudo-random sequence: the same batch on every run.
    let seed = 17;
    const next = (below: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed % below;
    };
    const pairs: Array<[string, string]> = [];
    for (let index = 0; index < 20; index += 1) pairs.push(await twins([{ amount: 50 + next(200), days: next(2) === 0 ? null : 1 + next(300) }]));
    // A usage level crossed sends an account to the complete path (its alert); the plain accounts
    // set one they will not reach.
    for (const pair of pairs.slice(0, 16)) {
      for (const accountId of pair) {
        ok(await server.gql(`mutation($input: SetAlertSettingsInput!) { setAlertSettings(input: $input) { creditType } }`, { input: { accountId, creditType: pool, percents: [1_000] } }));
      }
    }
    const kinds = ['perUnit', 'perUnit', 'perUnit', 'tiered', 'intent', 'outside'] as const;
    // Accounts 0-15 are the plain case the set-based statement takes whole; 16-19 mix in what sends
    // an account one by one (other pricing, a feature outside the plan, replayed keys).
    const specs = Array.from({ length: 1_000 }, (_, index) => {
      const pair = next(20);
      const plain = pair < 16;
      return { pair, feature: plain ? 'perUnit' : kinds[next(kinds.length)]!, quantity: plain ? 1 : 1 + next(14), key: plain ? `full-${index}` : `full-${index % 50}` };
    });
    const inputs = (twin: 0 | 1) => specs.map((spec) => ({ accountId: pairs[spec.pair]![twin], featureKey: features[spec.feature as keyof typeof features], quantity: spec.quantity, idempotencyKey: spec.key }));

    const batched = await recordUsageBatch(server.app.database.prisma, hotPath, systemClock, inputs(0));
    const oneByOne: BatchItemOutcome[] = [];
    for (const input of inputs(1)) {
      oneByOne.push(
        await recordUsage(server.app.database.prisma, hotPath, systemClock, input).catch((error: { code: string; message: string }) => ({ kind: 'rejected' as const, code: error.code, message: error.message })),
      );
    }
    expect(batched.outcomes.map(comparable)).toEqual(oneByOne.map(comparable));
    for (const [batchedAccount, oneByOneAccount] of pairs) {
      expect(await remainingByGrant(batchedAccount)).toEqual(await remainingByGrant(oneByOneAccount));
      expect(await drawsOf(batchedAccount)).toEqual(await drawsOf(oneByOneAccount));
    }
    const kindsSeen = new Set<string>(batched.outcomes.map((outcome) => (outcome.kind === 'recorded' && outcome.replayed ? 'replayed' : outcome.kind)));
    for (const kind of ['recorded', 'replayed', 'insufficientCredits']) expect(kindsSeen, kind).toContain(kind);
    // Most of the batch went through the set-based statement, not the one-by-one fallback.
    expect(batched.chargedSetBased).toBeGreaterThan(300);

    // Through the API: 1,000 is the cap, 1,001 is refused whole and charges nothing.
    const BATCH = `mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }`;
    const accountId = await createAccount(server, plan);
    const api = (count: number) => Array.from({ length: count }, (_, index) => ({ accountId, featureKey: features.intent, idempotencyKey: `cap-${index}` }));
    const over = await server.gql(BATCH, { inputs: api(1_001) });
    expect(over.errors?.map((error) => [error.extensions?.code, error.extensions?.field])).toEqual([['INVALID_INPUT', 'inputs']]);
    expect(await drawsOf(accountId)).toEqual([]);
    const full = await server.gql(BATCH, { inputs: api(1_000) });
    expect(full.errors).toBeUndefined();
    expect(full.data.recordUsageBatch).toHaveLength(1_000);
    expect(new Set(full.data.recordUsageBatch.map((item: { __typename: string }) => item.__typename))).toEqual(new Set(['UsageRecorded']));
    await expectLedgerConsistent(server);
  });
});
