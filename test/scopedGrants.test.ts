import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeatureCache } from '../packages/server/src/catalog/featureCache.ts';
import { inTransaction } from '../packages/server/src/db/transaction.ts';
import { systemClock } from '../packages/server/src/domain/clock.ts';
import { normalizeUsage, recordUsageComplete, recordUsageHot, type UsageHotPath } from '../packages/server/src/ledger/recordUsage.ts';
import { recordUsageBatch } from '../packages/server/src/ledger/recordUsageBatch.ts';
import { createAccount, defineFeature, definePlan, expectLedgerConsistent, operator, ok } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/** Credits scoped to features (issue 20 item 3): a grant may pay only for listed features. */
let server: TestServer;
let pool: string;
let features: { chat: string; image: string; other: string };
let plan: string;
let hotPath: UsageHotPath;
const inAYear = () => new Date(Date.now() + 365 * 86_400_000).toISOString();
const inAMonthAndADay = () => new Date(Date.now() + 32 * 86_400_000).toISOString();

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  pool = unique('credits');
  features = {
    chat: await defineFeature(server, { creditType: pool, unitCredits: 1 }),
    image: await defineFeature(server, { creditType: pool, unitCredits: 1 }),
    other: await defineFeature(server, { creditType: unique('other'), unitCredits: 1 }),
  };
  plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 20 }], featureKeys: [features.chat, features.image] });
  hotPath = { database: server.app.database, features: new FeatureCache(server.app.database) };
});
afterAll(async () => {
  await server?.stop();
});

const USAGE = `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename
  ... on UsageRecorded { usageEvent { draws { credits grant { id source featureKeys } } } balance { available } }
  ... on InsufficientCredits { required available } } }`;

async function spend(accountId: string, featureKey: string, quantity: number) {
  return ok(await server.gql(USAGE, { input: { accountId, featureKey, quantity, idempotencyKey: unique('use') } })).recordUsage;
}

describe('grants scoped to features', () => {
  it('pays only for its features: other usage skips it, even when it comes first in the order; the draws show it', async () => {
    const accountId = await createAccount(server, plan);
    // A promotion for chat alone, expiring before the plan credits, so first in the order for chat.
    const promo = await operator(server).grantCredits({
      accountId, creditType: pool, amount: 10, source: 'BONUS', expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
      featureKeys: [features.chat, features.chat], idempotencyKey: unique('promo'),
    });
    expect(promo.featureKeys).toEqual([features.chat]);

    const image = await spend(accountId, features.image, 5);
    expect(image.__typename).toBe('UsageRecorded');
    expect(image.usageEvent.draws).toEqual([{ credits: 5, grant: expect.objectContaining({ source: 'PLAN', featureKeys: [] }) }]);
    const chat = await spend(accountId, features.chat, 12);
    expect(chat.usageEvent.draws).toEqual([
      { credits: 10, grant: { id: promo.id, source: 'BONUS', featureKeys: [features.chat] } },
      { credits: 2, grant: expect.objectContaining({ source: 'PLAN' }) },
    ]);
    // 13 plan credits left, none of the promotion: image may take 13 and no more.
    const tooMuch = await spend(accountId, features.image, 14);
    expect(tooMuch).toMatchObject({ __typename: 'InsufficientCredits', required: 14, available: 13 });
    expect((await spend(accountId, features.image, 13)).__typename).toBe('UsageRecorded');
    await expectLedgerConsistent(server);
  });

  it('refuses features that do not exist or spend another pool, granting nothing', async () => {
    const accountId = await createAccount(server, plan);
    const attempt = (featureKeys: string[]) =>
      server.gql(`mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`, {
        input: { accountId, creditType: pool, amount: 5, source: 'BONUS', featureKeys, idempotencyKey: unique('bad') },
      });
    expect((await attempt(['no-such-feature'])).errors?.[0]?.extensions?.code).toBe('UNKNOWN_FEATURE');
    expect((await attempt([features.other])).errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
    expect((await attempt(Array.from({ length: 51 }, (_, index) => `f${index}`))).errors?.[0]?.extensions?.code).toBe('INVALID_INPUT');
    const grants = await server.app.database.statement<{ n: string | number }>('SELECT count(*) AS n FROM grants WHERE account_id = $1 AND source = $2', [accountId, 'BONUS']);
    expect(Number(grants[0]!.n)).toBe(0);
  });

  it('the one-statement path, the complete path and the set-based batch agree with scoped grants', async () => {
    const grantSpec = fc.record({ amount: fc.integer({ min: 1, max: 15 }), scope: fc.constantFrom('chat', 'image', 'both', 'all'), later: fc.boolean() });
    const useSpec = fc.record({ feature: fc.constantFrom('chat', 'image'), quantity: fc.integer({ min: 1, max: 12 }) });
    let charged = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(grantSpec, { maxLength: 4 }), fc.array(useSpec, { minLength: 1, maxLength: 8 }), async (grants, uses) => {
        const twins = [await createAccount(server, plan), await createAccount(server, plan), await createAccount(server, plan)];
        for (const accountId of twins) {
          for (const [index, grant] of grants.entries()) {
            const scope = { chat: [features.chat], image: [features.image], both: [features.chat, features.image], all: [] }[grant.scope];
            await operator(server).grantCredits({
              accountId, creditType: pool, amount: grant.amount, source: 'BONUS', featureKeys: scope,
              expiresAt: grant.later ? inAYear() : inAMonthAndADay(), priority: index, idempotencyKey: `g-${index}`,
            });
          }
        }
        const [viaHot, viaComplete, viaBatch] = twins as [string, string, string];
        const input = (accountId: string, index: number) => ({
          accountId, featureKey: features[uses[index]!.feature as 'chat' | 'image'], quantity: uses[index]!.quantity, idempotencyKey: `u-${index}`,
        });
        const outcomes: string[][] = [[], [], []];
        for (const index of uses.keys()) {
          const hot = await recordUsageHot(hotPath, systemClock, normalizeUsage(input(viaHot, index)), viaHot);
          if (hot.kind === 'recorded') charged += 1;
          const first =
            hot.kind === 'recorded' ? hot : await inTransaction(server.app.database.prisma, (tx) => recordUsageComplete(tx, systemClock, normalizeUsage(input(viaHot, index)), viaHot));
          outcomes[0]!.push(first.kind);
          const complete = await inTransaction(server.app.database.prisma, (tx) =>
            recordUsageComplete(tx, systemClock, normalizeUsage(input(viaComplete, index)), viaComplete),
          );
          outcomes[1]!.push(complete.kind);
        }
        const batch = await recordUsageBatch(server.app.database.prisma, hotPath, systemClock, uses.map((_use, index) => input(viaBatch, index)));
        outcomes[2] = batch.outcomes.map((outcome) => outcome.kind);
        expect(outcomes[0]).toEqual(outcomes[1]);
        expect(outcomes[2]).toEqual(outcomes[1]);
        const [hotDraws, completeDraws, batchDraws] = await Promise.all(twins.map(drawsBySource));
        expect(hotDraws).toEqual(completeDraws);
        expect(batchDraws).toEqual(completeDraws);
      }),
      {
        numRuns: 15,
        // First, eight plain charges of one credit from the plan's 20 (no usage level crossed), so that
        // the count of one-statement charges below never depends on the 14 random runs.
        examples: [[[], Array.from({ length: 8 }, () => ({ feature: 'chat' as const, quantity: 1 }))]],
      },
    );
    expect(charged).toBeGreaterThanOrEqual(8);
    await expectLedgerConsistent(server);
  });
});

/** Each usage's draws by grant (its idempotency key, the twins' grants being keyed alike). */
async function drawsBySource(accountId: string): Promise<Array<[string, string, number]>> {
  const rows = await server.app.database.statement<{ usage: string; grant: string | null; credits: string | number }>(
    `SELECT e.idempotency_key AS usage, coalesce(g.idempotency_key, g.source::text) AS grant, -d.credits AS credits
     FROM ledger_entries d JOIN usage_events e ON e.id = d.usage_event_id JOIN grants g ON g.id = d.grant_id
     WHERE d.type = 'DEBIT' AND e.account_id = $1 ORDER BY e.idempotency_key, d.id`,
    [accountId],
  );
  return rows.map((row) => [row.usage, row.grant ?? '', Number(row.credits)]);
}
