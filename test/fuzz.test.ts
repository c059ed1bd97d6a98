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
let accepted = 0;
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
/**
 * Mostly a value of the right GraphQL type, sometimes a hostile one: with every field hostile, almost
 * no input gets past GraphQL's own types, and the domain's checks would never be exercised.
 */
const mostly = (valid: fc.Arbitrary<unknown>, hostile: fc.Arbitrary<unknown>) => fc.oneof({ weight: 8, arbitrary: valid }, { weight: 1, arbitrary: hostile });
const plainKey = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}$/);
const anyInt32 = fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 });
const plainText = fc.string({ minLength: 0, maxLength: 40 });
const instant = fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((date) => date.toISOString());

type Outcome = 'accepted' | 'refusedByDomain' | 'refusedBeforeDomain';

/**
 * Sends one input and checks the answer is typed. Errors raised before any resolver ran (a whole
 * request refused with 400, variable coercion and validation errors) carry no `path`; a resolver's
 * refusal does, and a union refusal comes back as data with a code.
 */
async function typedAnswer(query: string, variables: Record<string, unknown>): Promise<Outcome> {
  fuzzed += 1;
  const response = await server.gql(query, variables);
  expect(response.status, JSON.stringify(response)).toBeLessThan(500);
  for (const error of response.errors ?? []) {
    const code = error.extensions?.code;
    expect(code, JSON.stringify(error)).toBeTypeOf('string');
    expect(code, JSON.stringify({ variables, error }).slice(0, 2_000)).not.toBe('INTERNAL_SERVER_ERROR');
    codesSeen.set(code as string, (codesSeen.get(code as string) ?? 0) + 1);
  }
  const roots = Object.values(response.data ?? {}) as Array<{ __typename?: string; code?: string } | null>;
  // A union refusal has a __typename and a code (a plan's or pack's `code` is no refusal).
  const refusals = roots.filter((root) => root?.__typename && root.code).map((root) => root!.code!);
  for (const code of refusals) codesSeen.set(code, (codesSeen.get(code) ?? 0) + 1);
  if (response.errors?.some((error) => !(error as { path?: unknown }).path)) return 'refusedBeforeDomain';
  if (response.errors?.length || roots.length === 0 || roots.some((root) => root === null) || refusals.length > 0) return 'refusedByDomain';
  return 'accepted';
}

const PRINTABLE = /^[^\u0000-\u001f]+$/;
const CODE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const wholeIn = (value: unknown, min: number, max = Number.MAX_SAFE_INTEGER) => Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max;
const keyOk = (key: unknown) => typeof key === 'string' && key.length <= 255 && PRINTABLE.test(key);
/** GraphQL takes a single value where a list is expected as a list of one. */
const tagsOk = (value: unknown) => {
  if (value === undefined || value === null) return true;
  const list: unknown[] = Array.isArray(value) ? value : [value];
  return new Set(list).size <= 32 && list.every((tag) => typeof tag === 'string' && tag.length <= 128 && PRINTABLE.test(tag));
};
// An empty seatId or creditType is taken as none given (the same request as leaving it out).
const metadataOk = (value: unknown) => value === undefined || value === null || Buffer.byteLength(JSON.stringify(value)) <= 16 * 1024;
const nameOk = (name: unknown) => typeof name === 'string' && name.trim().length >= 1 && name.trim().length <= 200;
const priceOk = (price: { amount: unknown; currency: unknown }) => wholeIn(price.amount, 0) && typeof price.currency === 'string' && /^[A-Za-z]{3}$/.test(price.currency);

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

/**
 * `accepted`: the bounds an accepted input must have respected (README "Limits", the domain's checks),
 * as an independent statement of them. `reach`: the least share of inputs that must get past
 * GraphQL's own types to the domain (accepted or refused there): a server refusing everything, or a
 * generator whose inputs never get that far, fails.
 */
const cases: Array<{ name: string; query: string; input: () => fc.Arbitrary<Record<string, unknown>>; reach: number; accepted: (value: any) => boolean }> = [
  {
    name: 'recordUsage',
    query: `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on Error { code } } }`,
    reach: 0.3,
    accepted: (v) => v.accountId === accountId && v.featureKey === feature && (v.quantity === undefined || v.quantity === null || wholeIn(v.quantity, 1, 1e9)) && (v.credits === undefined || v.credits === null) && keyOk(v.idempotencyKey) && tagsOk(v.tags) && metadataOk(v.metadata) && (!v.seatId || v.seatId === seatId),
    input: () =>
      fc.record(
        {
          accountId: mostly(fc.constant(accountId), hostileString),
          featureKey: mostly(fc.constant(feature), hostileString),
          quantity: maybe(mostly(anyInt32, hostileNumber)),
          credits: maybe(hostileNumber),
          idempotencyKey: mostly(plainKey, hostileString),
          seatId: maybe(mostly(fc.constant(seatId), hostileString)),
          tags: maybe(mostly(fc.array(plainText, { maxLength: 40 }), tags)),
          metadata: maybe(metadata(fc.oneof(oversizedMetadata, fc.jsonValue({ maxDepth: 6 })))),
          occurredAt: maybe(mostly(instant, hostileString)),
        },
        { requiredKeys: ['accountId', 'featureKey', 'idempotencyKey'] },
      ),
  },
  {
    name: 'reserveCredits',
    query: `mutation($input: ReserveCreditsInput!) { reserveCredits(input: $input) { __typename ... on Error { code } } }`,
    reach: 0.3,
    accepted: (v) => v.featureKey === feature && wholeIn(v.credits, 1) && keyOk(v.idempotencyKey) && (v.ttlSeconds === undefined || wholeIn(v.ttlSeconds, 1, 86_400)) && tagsOk(v.tags) && (!v.seatId || v.seatId === seatId),
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          featureKey: mostly(fc.constant(feature), hostileString),
          credits: mostly(credits, hostileNumber),
          idempotencyKey: mostly(plainKey, hostileString),
          ttlSeconds: maybe(mostly(anyInt32, hostileNumber)),
          seatId: maybe(mostly(fc.constant(seatId), hostileString)),
          tags: maybe(mostly(fc.array(plainText, { maxLength: 40 }), tags)),
        },
        { requiredKeys: ['accountId', 'featureKey', 'credits', 'idempotencyKey'] },
      ),
  },
  {
    name: 'grantCredits',
    query: `mutation($input: GrantCreditsInput!) { grantCredits(input: $input) { id } }`,
    reach: 0.3,
    accepted: (v) => typeof v.creditType === 'string' && CODE.test(v.creditType) && wholeIn(v.amount, 1) && keyOk(v.idempotencyKey) && (v.priority === undefined || wholeIn(v.priority, 0, 1_000_000)) && (!v.seatId || v.seatId === seatId),
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          creditType: mostly(fc.constant(pool), hostileString),
          amount: mostly(credits, hostileNumber),
          source: mostly(fc.constantFrom('BONUS', 'PURCHASE', 'TRIAL', 'ADJUSTMENT'), hostileString),
          idempotencyKey: mostly(plainKey, hostileString),
          expiresAt: maybe(mostly(instant, hostileString)),
          priority: maybe(mostly(anyInt32, hostileNumber)),
          seatId: maybe(mostly(fc.constant(seatId), hostileString)),
        },
        { requiredKeys: ['accountId', 'creditType', 'amount', 'source', 'idempotencyKey'] },
      ),
  },
  {
    name: 'refundUsage',
    query: `mutation($input: RefundUsageInput!) { refundUsage(input: $input) { id } }`,
    reach: 0.3,
    accepted: (v) => v.usageEventId === usageEventId && (v.credits === undefined || wholeIn(v.credits, 1, 30)) && keyOk(v.idempotencyKey) && (v.reason === undefined || !String(v.reason).includes('\u0000')),
    input: () =>
      fc.record(
        {
          usageEventId: mostly(fc.constant(usageEventId), hostileString),
          credits: maybe(mostly(credits, hostileNumber)),
          idempotencyKey: mostly(plainKey, hostileString),
          reason: maybe(mostly(plainText, hostileString)),
        },
        { requiredKeys: ['usageEventId', 'idempotencyKey'] },
      ),
  },
  {
    name: 'setSpendLimit',
    query: `mutation($input: SetSpendLimitInput!) { setSpendLimit(input: $input) { id } }`,
    reach: 0.3,
    accepted: (v) => ['ACCOUNT', 'SEAT', 'FEATURE', 'TAG'].includes(v.scope) && ['BILLING_PERIOD', 'LIFETIME'].includes(v.period) && wholeIn(v.limit, 0) && (v.scope === 'ACCOUNT' ? v.scopeValue === undefined : v.scope === 'SEAT' ? v.scopeValue === seatId : typeof v.scopeValue === 'string' && v.scopeValue.length >= 1 && v.scopeValue.length <= 128) && (!v.creditType || CODE.test(v.creditType)),
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          scope: mostly(fc.constantFrom('ACCOUNT', 'SEAT', 'FEATURE', 'TAG'), hostileString),
          scopeValue: maybe(mostly(fc.constantFrom(seatId, feature, 'team-a'), hostileString)),
          creditType: maybe(mostly(fc.constant(pool), hostileString)),
          // Large limits only: a small one would refuse the other cases' usage, which is no finding.
          limit: fc.oneof(mostly(credits, hostileNumber).map((value) => (typeof value === 'number' && value >= 0 && value < 1e9 ? value + 1e9 : value))),
          period: mostly(fc.constantFrom('BILLING_PERIOD', 'LIFETIME'), hostileString),
        },
        { requiredKeys: ['accountId', 'scope', 'limit', 'period'] },
      ),
  },
  {
    name: 'upsertPlan',
    query: `mutation($input: PlanInput!) { upsertPlan(input: $input) { code } }`,
    reach: 0.3,
    accepted: (v) => CODE.test(v.code) && nameOk(v.name) && ['MONTH', 'YEAR'].includes(v.interval) && priceOk(v.price) && v.allocations.every((allocation: any) => CODE.test(allocation.creditType) && wholeIn(allocation.amount, 0)),
    input: () =>
      fc.record({
        code: mostly(plainKey, hostileString),
        name: mostly(plainText, hostileString),
        interval: mostly(fc.constantFrom('MONTH', 'YEAR'), hostileString),
        price: fc.record({ amount: mostly(anyInt32, hostileNumber), currency: mostly(fc.constant('USD'), hostileString) }),
        allocations: fc.array(
          fc.record({
            creditType: mostly(fc.constant(unique('fuzzpool')), hostileString),
            amount: mostly(credits, hostileNumber),
            perSeat: fc.boolean(),
            rollover: mostly(fc.constantFrom('NONE', 'CAP_MULTIPLE', 'PERCENT'), hostileString),
            rolloverValue: hostileNumber,
          }),
          { maxLength: 2 },
        ),
        featureKeys: fc.array(mostly(fc.constant(feature), hostileString), { maxLength: 2 }),
      }),
  },
  {
    name: 'upsertFeature',
    query: `mutation($input: FeatureInput!) { upsertFeature(input: $input) { key } }`,
    reach: 0.3,
    accepted: (v) => CODE.test(v.key) && nameOk(v.name) && CODE.test(v.creditType) && (v.pricing !== 'TIERED' || (Array.isArray(v.tiers) && v.tiers.length > 0 && v.tiers.every((tier: any) => wholeIn(tier.credits, 0) && (tier.upTo === null || wholeIn(tier.upTo, 1))))),
    input: () =>
      fc.record(
        {
          key: mostly(plainKey, hostileString),
          name: mostly(plainText, hostileString),
          creditType: mostly(plainKey, hostileString),
          pricing: mostly(fc.constantFrom('PER_UNIT', 'TIERED', 'DYNAMIC'), hostileString),
          unitCredits: maybe(mostly(credits, hostileNumber)),
          tiers: maybe(fc.array(fc.record({ upTo: fc.oneof(mostly(anyInt32, hostileNumber), fc.constant(null)), credits: mostly(credits, hostileNumber) }), { maxLength: 4 })),
          requiresPositiveBalance: maybe(fc.boolean()),
        },
        { requiredKeys: ['key', 'name', 'creditType', 'pricing'] },
      ),
  },
  {
    name: 'upsertCreditPack',
    query: `mutation($input: CreditPackInput!) { upsertCreditPack(input: $input) { code } }`,
    reach: 0.3,
    accepted: (v) => CODE.test(v.code) && nameOk(v.name) && CODE.test(v.creditType) && wholeIn(v.credits, 1) && priceOk(v.price),
    input: () =>
      fc.record(
        {
          code: mostly(plainKey, hostileString),
          name: mostly(plainText, hostileString),
          creditType: mostly(plainKey, hostileString),
          credits: mostly(credits, hostileNumber),
          price: fc.record({ amount: mostly(anyInt32, hostileNumber), currency: mostly(fc.constantFrom('USD', 'eur'), hostileString) }),
          expiresAfterDays: maybe(mostly(anyInt32, hostileNumber)),
        },
        { requiredKeys: ['code', 'name', 'creditType', 'credits', 'price'] },
      ),
  },
  {
    name: 'recordUsage with well-typed values',
    query: `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on Error { code } } }`,
    reach: 0.75,
    accepted: (v) => (v.quantity === undefined || v.quantity === null || wholeIn(v.quantity, 1, 1e9)) && (v.credits === undefined || v.credits === null) && keyOk(v.idempotencyKey) && tagsOk(v.tags) && metadataOk(v.metadata),
    input: () =>
      fc.record(
        {
          accountId: fc.constant(accountId),
          featureKey: fc.constant(feature),
          quantity: maybe(int32),
          credits: maybe(credits),
          idempotencyKey: mostly(plainKey, hostileString),
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
    reach: 0.6,
    accepted: (v) => wholeIn(v.hold.credits, 1) && keyOk(v.hold.idempotencyKey) && wholeIn(v.hold.ttlSeconds, 1, 86_400) && tagsOk(v.hold.tags) && wholeIn(v.grant.amount, 1) && keyOk(v.grant.idempotencyKey) && wholeIn(v.grant.priority, 0, 1_000_000),
    input: () =>
      fc.record({
        hold: fc.record({ accountId: fc.constant(accountId), featureKey: fc.constant(feature), credits, idempotencyKey: mostly(plainKey, hostileString), ttlSeconds: int32, tags }),
        grant: fc.record({
          accountId: fc.constant(accountId),
          creditType: fc.constant(pool),
          amount: credits,
          source: fc.constantFrom('BONUS', 'PURCHASE', 'TRIAL', 'ADJUSTMENT'),
          idempotencyKey: mostly(plainKey, hostileString),
          priority: int32,
          expiresAt: instant,
        }),
      }),
  },
  {
    name: 'any field of any input (a hostile value where a valid one belongs)',
    query: `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }`,
    reach: 0.15,
    accepted: (v) => v.accountId === accountId && v.featureKey === feature && (v.quantity === undefined || v.quantity === null || wholeIn(v.quantity, 1, 1e9)) && (v.credits === undefined || v.credits === null) && keyOk(v.idempotencyKey) && tagsOk(v.tags) && metadataOk(v.metadata) && (!v.seatId || v.seatId === seatId) && v.unknownField === undefined,
    input: () =>
      fc
        .record({ field: fc.constantFrom('accountId', 'featureKey', 'quantity', 'credits', 'idempotencyKey', 'seatId', 'tags', 'metadata', 'occurredAt', 'unknownField'), value: hostileValue })
        .map(({ field, value }) => ({ accountId, featureKey: feature, idempotencyKey: unique('k'), [field]: value })),
  },
];

describe('hostile input to the mutations', () => {
  it.each(cases)('$name: every answer is a success or a typed error, enough reach the domain, and what is accepted is within bounds', async ({ query, input, reach, accepted: withinBounds }) => {
    const outcomes: Record<Outcome, number> = { accepted: 0, refusedByDomain: 0, refusedBeforeDomain: 0 };
    await fc.assert(
      fc.asyncProperty(input(), async (value) => {
        const outcome = await typedAnswer(query, 'hold' in value ? value : { input: value });
        outcomes[outcome] += 1;
        if (outcome === 'accepted') expect(withinBounds(value), `accepted out of bounds: ${JSON.stringify(value).slice(0, 1_000)}`).toBe(true);
      }),
      { numRuns: RUNS },
    );
    expect(outcomes.accepted + outcomes.refusedByDomain, JSON.stringify(outcomes)).toBeGreaterThanOrEqual(Math.ceil(RUNS * reach));
    accepted += outcomes.accepted;
    await expectLedgerConsistent(server);
  });

  it('the ledger is consistent after all of it', async () => {
    await expectLedgerConsistent(server);
    console.info(`fuzzed ${fuzzed} inputs, ${accepted} accepted; codes seen: ${JSON.stringify(Object.fromEntries(codesSeen))}`);
    expect(fuzzed).toBe(cases.length * RUNS);
    // About one in twelve inputs is valid throughout (the rest are refused, most by the domain): a
    // server that refuses everything fails here.
    expect(accepted).toBeGreaterThanOrEqual(Math.ceil(fuzzed * 0.04));
  });
});
