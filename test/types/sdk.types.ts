/**
 * Type-level tests of the SDK, checked by `pnpm typecheck` (tsc): each @ts-expect-error must stay an
 * error, so a wrong argument type that starts compiling fails the check, and the narrowing below must
 * keep compiling.
 */
import { BillingApiError, createBillingClient, type ErrorCode, type RecordUsageMutation } from '../../packages/sdk/src/index.ts';

const client = createBillingClient({ url: 'http://localhost:4000/graphql', apiKey: 'cbk_example' });

export async function narrowsOnTypename(): Promise<number> {
  const result: RecordUsageMutation['recordUsage'] = await client.recordUsage({ accountId: 'a', featureKey: 'f', quantity: 3 });
  switch (result.__typename) {
    case 'UsageRecorded':
      return result.usageEvent.credits + result.balance.available;
    case 'InsufficientCredits':
      return result.required - result.available;
    case 'SpendLimitExceeded':
      return result.spendLimit.limit - result.spendLimit.used;
    case 'FeatureNotAvailable':
      return result.featureKey.length;
  }
}

export async function refusesWrongArguments(): Promise<void> {
  // @ts-expect-error quantity is an Int, not a string
  await client.recordUsage({ accountId: 'a', featureKey: 'f', quantity: '3' });
  // @ts-expect-error featureKey is required
  await client.recordUsage({ accountId: 'a' });
  // @ts-expect-error groupBy takes a UsageGroupBy, not any string
  await client.usageSummary('a', { groupBy: 'MONTH' });
  const result = await client.recordUsage({ accountId: 'a', featureKey: 'f' });
  // @ts-expect-error a refusal has no usageEvent: narrow on __typename first
  void result.usageEvent;
}

export function errorCodesAreAUnion(error: BillingApiError): string {
  const known: ErrorCode = 'IDEMPOTENCY_CONFLICT';
  // @ts-expect-error not a code the server sends
  const unknown: ErrorCode = 'NO_SUCH_CODE';
  switch (error.code) {
    case 'RATE_LIMITED':
      return `wait ${error.retryAfterMs ?? 0} ms (request ${error.requestId ?? '?'})`;
    case 'INSUFFICIENT_CREDITS':
      return known;
    default:
      return unknown;
  }
}

export async function listsKeepTheirTypes(): Promise<number> {
  const page = await client.usageEvents('a', { first: 10 });
  let credits = page.edges[0]?.cursor.length ?? 0;
  for await (const event of client.usageEvents.list('a', { filter: { featureKey: 'f' } })) credits += event.credits;
  // @ts-expect-error list pages by itself: no cursor to pass
  client.usageEvents.list('a', { after: 'cursor' });
  return credits;
}
