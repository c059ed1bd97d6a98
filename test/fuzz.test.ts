import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, createAccount, defineFeature, definePlan, expectLedgerConsistent, ok, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

const RUNS = Number(process.env.FUZZ_RUNS ?? 60);

let server: TestServer;
let pool: string;
let feature: string;
let plan: string;
let accountId: string;
let seatId: string;
let usageEventId: string;
let fuzzed = 0;
const codesSeen = new Map<string, number>();

/** Values a careless or hostile client sends: edge numbers, odd text, enormous sizes. */
const hostileNumber = fc.oneof(
  fc.constantFrom(0, -1, 1, 2 ** 31, 2 ** 53, 2 ** 53 - 1, -(2 ** 53), 1e308, -1e308, 0.5, 1e-9, Number.MAX_SAFE_INTEGER + 2),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
const hostileString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'grapheme', maxLength: 300 }),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.constantFrom('', ' ', '\u0000', '\uD800', 'ü'.repeat(256), 'x'.repeat(256), 'x'.repeat(10_000), '💳'.repeat(200), "'; DROP TABLE grants; --", '../../etc/passwd', '{"$gt":""}'),
);
/** Values that pass GraphQL's own types, so that they reach the domain's validation. */
const int32 = fc.oneof(fc.constantFrom(0, -1, 1, 2 ** 31 - 1, -(2 ** 31)), fc.integer());
const credits = fc.oneof(fc.constantFrom(0, -1, 1, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER), fc.maxSafeInteger());
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(hostileNumber, hostileString, fc.boolean(), fc.constant(null), fc.array(hostileString, { maxLength: 3 }));
/** Any JSON value as metadata, bare strings included (they once came back as an internal error). */
const metadata = (arbitrary: fc.Arbitrary<unknown>) => fc.oneof(arbitrary, fc.string(), fc.constantFrom('', 'note', '123', 'true'));
const oversizedMetadata = fc.integer({ min: 1, max: 40 }).map((kib) => ({ blob: 'm'.repeat(kib * 1024) }));
const tags = fc.oneof(fc.array(hostileString, { maxLength: 40 }), fc.constant(Array.from({ length: 33 }, (_, index) => `t${index}`)));
const maybe = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined, freq: 3 });

async function expectTypedAnswer(query: string, variables: Record<string, unknown>): Promise<void> {
  fuzzed += 1;
  const response = await server.gql(query, variables);
  expect(response.status, JSON.stringify(response)).toBeLessThan(500);
  for (const error of response.errors ?? []) {
    const code = error.extensions?.code;
    expect(code, JSON.stringify(error)).toBeTypeOf('string');
    expect(code, JSON.stringify({ variables, error }).slice(0, 2_000)).not.toBe('INTERNAL_SERVER_ERROR');
    codesSeen.set(code as string, (codesSeen.get(code as string) ?? 0) + 1);
  }
  const refusal = Object.values(response.data ?? {})[0] as { __typename?: string; code?: string } | null | undefined;
  if (refusal?.code) codesSeen.set(refusal.code, (codesSeen.get(refusal.code) ?? 0) + 1);
}

beforeAll(async () => {
  server = await startTestServer();
  pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 3 });
  plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 1_000_000 }], featureKeys: [feature] });
  accountId = await createAccount(server, plan);
  seatId = await addSeat(server, accountId);
  usageEventId = ok(await recordUsage(server, { accountId, featureKey: feature, quantity: 10 })).recordUsage.usageEvent.id;
});
afterAll(async () => {
  await server?.stop();
});

const cases: Array<{ name: string; query: string; input: () => fc.Arbitrary<Record<string, unknown>> }> = [
  {
    name: 'recordUsage',
    query: `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on Error { code } } }`,
    input: () =>
      fc.record(
        {
          accountId: fc.oneof(fc.constant(accountId), hostileString),
          featureKey: fc.oneof(fc.constant(feature), hostileString),
          quantity: maybe(hostileNumber),
          credits: maybe(hostileNumber),
          idempotencyKey: hostileString,
          seatId: maybe(fc.oneof(fc.constant(seatId), hostileString)),
          tags: maybe(tags),
          metadata: maybe(metadata(fc.oneof(oversizedMetadata, fc.jsonValue({ maxDepth: 6 })))),
          occurredAt: maybe(fc.oneof(hostileString, fc.date({ noInvalidDate: true }).map((date) => date.toISOString()))),
        },
        { requiredKeys: ['accountId', 'featureKey', 'idempotencyKey'] },
      ),
  },
  {
    name: 'reserveCredits',
    query: `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename ... on Error { code } } }`,
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          featureKey: fc.oneof(fc.constant(feature), hostileString),
          credits: hostileNumber,
          idempotencyKey: hostileString,
          ttlSeconds: maybe(hostileNumber),
          seatId: maybe(fc.oneof(fc.constant(seatId), hostileString)),
          tags: maybe(tags),
        },
        { requiredKeys: ['accountId', 'featureKey', 'credits', 'idempotencyKey'] },
      ),
  },
  {
    name: 'grantCredits',
    query: `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`,
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          creditType: fc.oneof(fc.constant(pool), hostileString),
          amount: hostileNumber,
          source: fc.oneof(fc.constantFrom('BONUS', 'PURCHASE', 'TRIAL', 'ADJUSTMENT'), hostileString),
          idempotencyKey: hostileString,
          expiresAt: maybe(fc.oneof(hostileString, fc.date({ noInvalidDate: true }).map((date) => date.toISOString()))),
          priority: maybe(hostileNumber),
          seatId: maybe(fc.oneof(fc.constant(seatId), hostileString)),
        },
        { requiredKeys: ['accountId', 'creditType', 'amount', 'source', 'idempotencyKey'] },
      ),
  },
  {
    name: 'refundUsage',
    query: `mutation($input: RefundUsageInput!) { refundUsage(input: $input) { id } }`,
    input: () =>
      fc.record(
        {
          usageEventId: fc.oneof(fc.constant(usageEventId), hostileString),
          credits: maybe(hostileNumber),
          idempotencyKey: hostileString,
          reason: maybe(hostileString),
        },
        { requiredKeys: ['usageEventId', 'idempotencyKey'] },
      ),
  },
  {
    name: 'setSpendLimit',
    query: `mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { id } }`,
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          scope: fc.oneof(fc.constantFrom('ACCOUNT', 'SEAT', 'FEATURE', 'TAG'), hostileString),
          scopeValue: maybe(fc.oneof(fc.constant(seatId), hostileString)),
          creditType: maybe(fc.oneof(fc.constant(pool), hostileString)),
          // Large limits only: a small one would refuse the other cases' usage, which is no finding.
          limit: fc.oneof(hostileNumber.map((value) => (typeof value === 'number' && value >= 0 && value < 1e9 ? value + 1e9 : value))),
          period: fc.oneof(fc.constantFrom('BILLING_PERIOD', 'LIFETIME'), hostileString),
        },
        { requiredKeys: ['accountId', 'scope', 'limit', 'period'] },
      ),
  },
  {
    name: 'upsertPlan',
    query: `mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`,
    input: () =>
      fc.record({
        code: hostileString,
        name: hostileString,
        interval: fc.oneof(fc.constantFrom('MONTH', 'YEAR'), hostileString),
        price: fc.record({ amount: hostileNumber, currency: fc.oneof(fc.constant('USD'), hostileString) }),
        allocations: fc.array(
          fc.record({
            creditType: fc.oneof(fc.constant(unique('fuzzpool')), hostileString),
            amount: hostileNumber,
            perSeat: fc.boolean(),
            rollover: fc.oneof(fc.constantFrom('NONE', 'CAP_MULTIPLE', 'PERCENT'), hostileString),
            rolloverValue: hostileNumber,
          }),
          { maxLength: 3 },
        ),
        featureKeys: fc.array(fc.oneof(fc.constant(feature), hostileString), { maxLength: 3 }),
      }),
  },
  {
    name: 'upsertFeature',
    query: `mutation($input: FeatureInput!) { upsertFeature(input: $input) { key } }`,
    input: () =>
      fc.record(
        {
          key: hostileString,
          name: hostileString,
          creditType: hostileString,
          pricing: fc.oneof(fc.constantFrom('PER_UNIT', 'TIERED', 'DYNAMIC'), hostileString),
          unitCredits: maybe(hostileNumber),
          tiers: maybe(fc.array(fc.record({ upTo: fc.oneof(hostileNumber, fc.constant(null)), credits: hostileNumber }), { maxLength: 4 })),
          requiresPositiveBalance: maybe(fc.boolean()),
        },
        { requiredKeys: ['key', 'name', 'creditType', 'pricing'] },
      ),
  },
  {
    name: 'upsertCreditPack',
    query: `mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`,
    input: () =>
      fc.record(
        {
          code: hostileString,
          name: hostileString,
          creditType: hostileString,
          credits: hostileNumber,
          price: fc.record({ amount: hostileNumber, currency: hostileString }),
          expiresAfterDays: maybe(hostileNumber),
        },
        { requiredKeys: ['code', 'name', 'creditType', 'credits', 'price'] },
      ),
  },
  {
    name: 'recordUsage with well-typed values',
    query: `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on Error { code } } }`,
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          featureKey: fc.constant(feature),
          quantity: maybe(int32),
          credits: maybe(credits),
          idempotencyKey: hostileString,
          tags: maybe(tags),
          metadata: maybe(metadata(fc.oneof(oversizedMetadata, fc.jsonValue({ maxDepth: 6 })))),
        },
        { requiredKeys: ['accountId', 'featureKey', 'idempotencyKey'] },
      ),
  },
  {
    name: 'reserveCredits and grantCredits with well-typed values',
    query: `mutation($hold: ReserveCreditsInput!, $grant: GrantCreditsInput!) {
      reserveCredits(input: $hold) { __typename ... on Error { code } }
      grantCredits(input: $grant) { id } }`,
    input: () =>
      fc.record({
        hold: fc.record({ accountId: fc.constant(accountId), featureKey: fc.constant(feature), credits, idempotencyKey: hostileString, ttlSeconds: int32, tags }),
        grant: fc.record({
          accountId: fc.constant(accountId),
          creditType: fc.constant(pool),
          amount: credits,
          source: fc.constantFrom('BONUS', 'PURCHASE', 'TRIAL', 'ADJUSTMENT'),
          idempotencyKey: hostileString,
          priority: int32,
          expiresAt: fc.date({ noInvalidDate: true }).map((date) => date.toISOString()),
        }),
      }),
  },
  {
    name: 'any field of any input (a hostile value where a valid one belongs)',
    query: `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }`,
    input: () =>
      fc
        .record({ field: fc.constantFrom('accountId', 'featureKey', 'quantity', 'credits', 'idempotencyKey', 'seatId', 'tags', 'metadata', 'occurredAt', 'unknownField'), value: hostileValue })
        .map(({ field, value }) => ({ accountId, featureKey: feature, idempotencyKey: unique('k'), [field]: value })),
  },
];

describe('hostile input to the mutations', () => {
  it.each(cases)('$name: every answer is a success or a typed error, never a 5xx or INTERNAL_SERVER_ERROR', async ({ query, input }) => {
    await fc.assert(
      fc.asyncProperty(input(), async (value) => {
        await expectTypedAnswer(query, 'hold' in value ? value : { input: value });
      }),
      { numRuns: RUNS },
    );
    await expectLedgerConsistent(server);
  });

  it('the ledger is consistent after all of it', async () => {
    await expectLedgerConsistent(server);
    console.info(`fuzzed ${fuzzed} inputs; codes seen: ${JSON.stringify(Object.fromEntries(codesSeen))}`);
    expect(fuzzed).toBe(cases.length * RUNS);
  });
});
