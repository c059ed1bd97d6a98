import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { print } from 'graphql';
import {
  BalancesDocument,
  RecordUsageDocument,
  type BalancesQuery,
  type RecordUsageInput,
  type RecordUsageMutation,
} from './generated/graphql.ts';

export * from './generated/graphql.ts';

/** A GraphQL error answered by the server, with its stable `extensions.code`. */
export class BillingApiError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly errors: ReadonlyArray<{ message: string; extensions?: Record<string, unknown> }>,
  ) {
    super(message);
    this.name = 'BillingApiError';
  }
}

export interface BillingClientOptions {
  /** The GraphQL endpoint, for example http://localhost:4000/graphql. */
  url: string;
  apiKey: string;
  fetch?: typeof fetch;
}

/** A typed client of the credit billing API. */
export function createBillingClient(options: BillingClientOptions) {
  const doFetch = options.fetch ?? fetch;

  async function request<Result, Variables>(document: TypedDocumentNode<Result, Variables>, variables: Variables): Promise<Result> {
    const response = await doFetch(options.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${options.apiKey}` },
      body: JSON.stringify({ query: print(document), variables }),
    });
    const body = (await response.json()) as { data?: Result; errors?: Array<{ message: string; extensions?: Record<string, unknown> }> };
    if (body.errors?.length) {
      const first = body.errors[0]!;
      throw new BillingApiError(first.message, String(first.extensions?.code ?? 'UNKNOWN'), body.errors);
    }
    if (!body.data) throw new BillingApiError(`HTTP ${response.status} without data`, 'NO_DATA', []);
    return body.data;
  }

  return {
    request,
    async recordUsage(input: RecordUsageInput): Promise<RecordUsageMutation['recordUsage']> {
      return (await request(RecordUsageDocument, { input })).recordUsage;
    },
    async balances(accountId: string): Promise<NonNullable<BalancesQuery['account']>['balances']> {
      const { account } = await request(BalancesDocument, { accountId });
      if (!account) throw new BillingApiError(`account ${accountId} not found`, 'ACCOUNT_NOT_FOUND', []);
      return account.balances;
    },
  };
}

export type BillingClient = ReturnType<typeof createBillingClient>;
