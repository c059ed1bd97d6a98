import { expect } from 'vitest';
import { createBillingClient, type BalanceFieldsFragment, type BillingClient, type RolloverKind } from '../../packages/sdk/src/index.ts';
import { unique, type GqlTarget, type GraphQLResponse, type TestServer } from './server.ts';

export interface FeatureSpec {
  key?: string;
  creditType: string;
  pricing?: 'PER_UNIT' | 'TIERED' | 'DYNAMIC';
  unitCredits?: number;
  tiers?: Array<{ upTo: number | null; credits: number }>;
  requiresPositiveBalance?: boolean;
}

/**
 * Fails the test with the server's words when a GraphQL call did not succeed. These helpers read
 * untyped JSON, hence `any` by default; the typed path is the SDK.
 */
export function ok<T>(response: GraphQLResponse<T>): T {
  expect(response.errors, JSON.stringify(response.errors)).toBeUndefined();
  expect(response.data).toBeDefined();
  return response.data as T;
}

const clients = new WeakMap<GqlTarget, BillingClient>();

/** The operator's SDK client for a server: the end-to-end tests set up through the SDK, as users do. */
export function operator(server: GqlTarget): BillingClient {
  let client = clients.get(server);
  if (!client) {
    client = createBillingClient({ url: `${server.url}/graphql`, apiKey: server.adminKey, retries: 0 });
    clients.set(server, client);
  }
  return client;
}

export async function defineFeature(server: GqlTarget, spec: FeatureSpec): Promise<string> {
  const pricing = spec.pricing ?? 'PER_UNIT';
  const feature = await operator(server).upsertFeature({
    key: spec.key ?? unique('feature'),
    name: spec.key ?? 'feature',
    creditType: spec.creditType,
    pricing,
    unitCredits: pricing === 'PER_UNIT' ? (spec.unitCredits ?? 1) : undefined,
    tiers: spec.tiers,
    requiresPositiveBalance: spec.requiresPositiveBalance,
  });
  return feature.key;
}

export interface PlanSpec {
  code?: string;
  interval?: 'MONTH' | 'YEAR';
  allocations: Array<{ creditType: string; amount: number; perSeat?: boolean; rollover?: RolloverKind; rolloverValue?: number; overagePrice?: { amount: number; perCredits: number } }>;
  featureKeys: string[];
  overagePolicy?: 'HARD_STOP' | 'PAY_AS_YOU_GO';
  maxOverageCredits?: number;
}

export async function definePlan(server: GqlTarget, spec: PlanSpec): Promise<string> {
  const code = spec.code ?? unique('plan');
  await operator(server).upsertPlan({
    code,
    name: code,
    interval: spec.interval ?? 'MONTH',
    price: { amount: 1000, currency: 'USD' },
    allocations: spec.allocations,
    featureKeys: spec.featureKeys,
    overagePolicy: spec.overagePolicy,
    maxOverageCredits: spec.maxOverageCredits,
  });
  return code;
}

export async function createAccount(server: GqlTarget, planCode: string, testClockId?: string): Promise<string> {
  return (await operator(server).createAccount({ name: unique('account'), planCode, testClockId })).id;
}

export async function addSeat(server: GqlTarget, accountId: string, canUseSharedPool = true): Promise<string> {
  return (await operator(server).addSeat({ accountId, name: unique('seat'), canUseSharedPool })).id;
}

export async function createKey(server: GqlTarget, role: 'ACCOUNT' | 'SEAT' | 'ADMIN', accountId?: string, seatId?: string): Promise<string> {
  return (await operator(server).createApiKey({ role, accountId, seatId })).secret;
}

export const RECORD_USAGE = `
  mutation($input: RecordUsageInput!) {
    recordUsage(input: $input) {
      __typename
      ... on UsageRecorded {
        usageEvent { id credits quantity tags seat { id } draws { credits grant { id source } } }
        balance { creditType available periodUsed }
      }
      ... on Error { code message }
      ... on InsufficientCredits { creditType required available }
      ... on FeatureNotAvailable { featureKey }
      ... on SpendLimitExceeded { spendLimit { id scope scopeValue limit used held } }
    }
  }`;

export async function recordUsage(server: GqlTarget, input: Record<string, unknown>, apiKey?: string) {
  return server.gql(RECORD_USAGE, { input: { idempotencyKey: unique('usage'), ...input } }, apiKey);
}

export async function balance(server: GqlTarget, accountId: string, creditType: string, apiKey?: string): Promise<number> {
  const data = ok(
    await server.gql<{ account: { balance: { available: number } } }>(
      `query($id: ID!, $type: String!) { account(id: $id) { balance(creditType: $type) { available } } }`,
      { id: accountId, type: creditType },
      apiKey,
    ),
  );
  return data.account.balance.available;
}

export async function ledgerSum(server: GqlTarget, accountId: string): Promise<number> {
  let after: string | null = null;
  let sum = 0;
  for (;;) {
    const data: any = ok(
      await server.gql(`query($id: ID!, $after: String) { account(id: $id) { ledger(first: 500, after: $after) { edges { node { credits } } pageInfo { hasNextPage endCursor } } } }`, {
        id: accountId,
        after,
      }),
    );
    for (const edge of data.account.ledger.edges) sum += edge.node.credits;
    if (!data.account.ledger.pageInfo.hasNextPage) return sum;
    after = data.account.ledger.pageInfo.endCursor;
  }
}

export async function createTestClock(server: GqlTarget, frozenTime: string): Promise<string> {
  return (await operator(server).createTestClock({ frozenTime })).id;
}

export async function advanceClock(server: GqlTarget, testClockId: string, to: string | Date): Promise<void> {
  await operator(server).advanceTestClock({ testClockId, to: typeof to === 'string' ? to : to.toISOString() });
}

/** A balance as the SDK's BalanceFields fragment describes it (nextExpiry an ISO string). */
export type BalanceView = BalanceFieldsFragment;

export async function balanceOf(server: GqlTarget, accountId: string, creditType: string): Promise<BalanceView> {
  return ok(
    await server.gql<{ account: { balance: BalanceView } }>(
      `query($id: ID!, $type: String!) { account(id: $id) { balance(creditType: $type) {
        creditType available reserved periodAllocation periodUsed percentUsed expiringAtPeriodEnd overageUsed nextExpiry } } }`,
      { id: accountId, type: creditType },
    ),
  ).account.balance;
}

export async function subscriptionOf(server: GqlTarget, accountId: string) {
  return ok(
    await server.gql<{ account: { subscription: { plan: { code: string }; pendingPlan: { code: string } | null; currentPeriod: { start: string; end: string } } } }>(
      `query($id: ID!) { account(id: $id) { subscription { plan { code } pendingPlan { code } currentPeriod { start end } } } }`,
      { id: accountId },
    ),
  ).account.subscription;
}

export async function grantCredits(server: GqlTarget, input: { accountId: string; creditType: string; amount: number } & Record<string, unknown>): Promise<string> {
  const grant = await operator(server).grantCredits({ source: 'BONUS', idempotencyKey: unique('grant'), ...input } as Parameters<BillingClient['grantCredits']>[0]);
  return grant.id;
}

/** Every grant's remaining equals the sum of its ledger entries, and none is negative. */
export async function expectLedgerConsistent(server: TestServer): Promise<void> {
  const prisma = server.app.database.prisma;
  const mismatches = await prisma.$queryRaw<unknown[]>`
    SELECT g.id, g.remaining, coalesce(sum(l.credits), 0) AS ledger FROM grants g LEFT JOIN ledger_entries l ON l.grant_id = g.id
    GROUP BY g.id, g.remaining HAVING g.remaining <> coalesce(sum(l.credits), 0) OR g.remaining < 0`;
  expect(mismatches).toEqual([]);
}
