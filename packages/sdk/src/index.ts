/**
 * The typed client of the credit billing API. Every operation of the schema has a method here (a
 * test keeps it so); results are the generated types, unions narrowed by `__typename`. Runs in Node
 * 20+ and in browsers: it needs `fetch`, and for subscriptions a WebSocket implementation (the
 * browser's, or `ws` in Node). It contains no server code.
 */
import { createClient as createWebSocketClient, type Client as WebSocketClient } from 'graphql-ws';
import * as operations from './generated/graphql.ts';
import type { TypedDocumentString } from './generated/graphql.ts';

export * from './generated/graphql.ts';

type Documents = typeof operations;
type Op<Name extends keyof Documents> = Documents[Name] extends TypedDocumentString<infer Result, infer Variables> ? { result: Result; variables: Variables } : never;

/** A GraphQL error the server answered, with its stable `extensions.code` (for example IDEMPOTENCY_CONFLICT). */
export class BillingApiError extends Error {
  constructor(
    message: string,
    /** The stable code: switch on it. HTTP-level failures use HTTP_<status>. */
    readonly code: string,
    readonly errors: ReadonlyArray<{ message: string; path?: ReadonlyArray<string | number>; extensions?: Record<string, unknown> }>,
    readonly status: number,
  ) {
    super(message);
    this.name = 'BillingApiError';
  }
}

/** The request never got an answer (connection refused, dropped, timed out). Safe to retry only with the same idempotency key. */
export class BillingNetworkError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'BillingNetworkError';
  }
}

export interface BillingClientOptions {
  /** The GraphQL endpoint over HTTP, for example `http://localhost:4000/graphql`. */
  url: string;
  /** An API key: ADMIN (operator), ACCOUNT (back end, partner) or SEAT (front end). */
  apiKey: string;
  /** The WebSocket endpoint for subscriptions; default: `url` with ws(s)://. */
  wsUrl?: string;
  /** A fetch implementation; default the global one. */
  fetch?: typeof fetch;
  /** A WebSocket implementation for subscriptions; default the global one (in Node 20 pass `WebSocket` from `ws`). */
  webSocketImpl?: unknown;
  /** Attempts after the first for idempotent calls that got no answer; default 3. */
  retries?: number;
  /** Delay before the first retry, doubling after; default 200 ms. */
  retryDelayMs?: number;
}

/** A live subscription: iterate it (`for await`), or pass a callback; `unsubscribe()` ends it. */
export interface LiveFeed<T> extends AsyncIterable<T> {
  unsubscribe(): Promise<void>;
}

function newIdempotencyKey(): string {
  return globalThis.crypto.randomUUID();
}

type WithOptionalKey<T> = T extends { idempotencyKey: string } ? Omit<T, 'idempotencyKey'> & { idempotencyKey?: string } : T;

/** Creates a client. Nothing connects until the first call (subscriptions open one WebSocket, shared). */
export function createBillingClient(options: BillingClientOptions) {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const retries = options.retries ?? 3;
  const retryDelayMs = options.retryDelayMs ?? 200;
  let webSocketClient: WebSocketClient | null = null;

  async function send<Result, Variables>(document: TypedDocumentString<Result, Variables>, variables: Variables, retryable: boolean): Promise<Result> {
    for (let attempt = 0; ; attempt += 1) {
      let response: Response;
      try {
        response = await doFetch(options.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${options.apiKey}` },
          body: JSON.stringify({ query: document.toString(), variables }),
        });
      } catch (error) {
        if (!retryable || attempt >= retries) throw new BillingNetworkError('the billing API could not be reached', error);
        await new Promise((resolve) => setTimeout(resolve, retryDelayMs * 2 ** attempt));
        continue;
      }
      // A gateway answering for an unreachable server: as good as no answer.
      if (retryable && attempt < retries && [502, 503, 504].includes(response.status)) {
        await new Promise((resolve) => setTimeout(resolve, retryDelayMs * 2 ** attempt));
        continue;
      }
      let body: { data?: Result | null; errors?: BillingApiError['errors'] };
      try {
        body = (await response.json()) as typeof body;
      } catch (error) {
        throw new BillingApiError(`HTTP ${response.status} without a GraphQL answer`, `HTTP_${response.status}`, [], response.status);
      }
      const first = body.errors?.[0];
      if (first) {
        const code = typeof first.extensions?.code === 'string' ? first.extensions.code : `HTTP_${response.status}`;
        throw new BillingApiError(first.message, code, body.errors ?? [], response.status);
      }
      if (!body.data) throw new BillingApiError(`HTTP ${response.status} without data`, `HTTP_${response.status}`, [], response.status);
      return body.data;
    }
  }

  /** Queries and key-carrying mutations are safe to repeat; they retry on a lost answer. */
  const query = <Name extends keyof Documents>(name: Name, variables: Op<Name>['variables']) =>
    send(operations[name] as unknown as TypedDocumentString<Op<Name>['result'], Op<Name>['variables']>, variables, true);
  /** Other mutations are sent once: a lost answer is reported, not retried. */
  const mutateOnce = <Name extends keyof Documents>(name: Name, variables: Op<Name>['variables']) =>
    send(operations[name] as unknown as TypedDocumentString<Op<Name>['result'], Op<Name>['variables']>, variables, false);

  function account<T extends { account?: unknown }>(data: T, accountId: string): NonNullable<T['account']> {
    if (!data.account) throw new BillingApiError(`account ${accountId} not found`, 'ACCOUNT_NOT_FOUND', [], 200);
    return data.account as NonNullable<T['account']>;
  }

  function live(): WebSocketClient {
    if (webSocketClient) return webSocketClient;
    const webSocketImpl = options.webSocketImpl ?? (globalThis as { WebSocket?: unknown }).WebSocket;
    if (!webSocketImpl) throw new Error('no WebSocket implementation: pass webSocketImpl (in Node 20: WebSocket from "ws")');
    webSocketClient = createWebSocketClient({
      url: options.wsUrl ?? options.url.replace(/^http/, 'ws'),
      webSocketImpl,
      connectionParams: { authorization: `Bearer ${options.apiKey}` },
      // Reconnect (and resubscribe) for as long as it takes when the server restarts or a load
      // balancer drops the socket; a refused key (4403) is final.
      retryAttempts: Number.POSITIVE_INFINITY,
      retryWait: async (retries) => new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** retries, 5_000))),
      shouldRetry: (event) => !(typeof event === 'object' && event !== null && 'code' in event && (event as { code: number }).code === 4403),
    });
    return webSocketClient;
  }

  function subscribeTo<Name extends keyof Documents, T>(
    name: Name,
    variables: Op<Name>['variables'],
    pick: (data: Op<Name>['result']) => T,
    onEvent?: (event: T) => void,
  ): LiveFeed<T> {
    const iterator = live().iterate<Op<Name>['result']>({ query: operations[name].toString(), variables: variables as Record<string, unknown> });
    const feed: LiveFeed<T> = {
      async *[Symbol.asyncIterator]() {
        for await (const result of iterator) {
          if (result.errors?.length) {
            const first = result.errors[0]!;
            throw new BillingApiError(first.message, String(first.extensions?.code ?? 'SUBSCRIPTION_ERROR'), result.errors, 200);
          }
          if (result.data) yield pick(result.data);
        }
      },
      async unsubscribe() {
        await iterator.return?.();
      },
    };
    if (onEvent) {
      void (async () => {
        for await (const event of feed) onEvent(event);
      })();
    }
    return feed;
  }

  return {
    // Catalogue
    plans: async () => (await query('PlansDocument', {})).plans,
    plan: async (code: string) => (await query('PlanDocument', { code })).plan,
    features: async () => (await query('FeaturesDocument', {})).features,
    creditPacks: async () => (await query('CreditPacksDocument', {})).creditPacks,
    upsertPlan: async (input: Op<'UpsertPlanDocument'>['variables']['input']) => (await query('UpsertPlanDocument', { input })).upsertPlan,
    upsertFeature: async (input: Op<'UpsertFeatureDocument'>['variables']['input']) => (await query('UpsertFeatureDocument', { input })).upsertFeature,
    upsertCreditPack: async (input: Op<'UpsertCreditPackDocument'>['variables']['input']) =>
      (await query('UpsertCreditPackDocument', { input })).upsertCreditPack,

    // Who and where
    viewer: async () => (await query('ViewerDocument', {})).viewer,
    testClock: async (id: string) => (await query('TestClockDocument', { id })).testClock,
    /** The operator's audit log, newest first (ADMIN keys only). */
    auditEvents: async (filter: Op<'AuditEventsDocument'>['variables'] = {}) => (await query('AuditEventsDocument', filter)).auditEvents,
    account: async (accountId: string) => (await query('AccountDocument', { accountId })).account,

    // Reading an account
    balances: async (accountId: string) => account(await query('BalancesDocument', { accountId }), accountId).balances,
    balance: async (accountId: string, creditType: string) => account(await query('BalanceDocument', { accountId, creditType }), accountId).balance,
    grants: async (accountId: string, page: Omit<Op<'GrantsDocument'>['variables'], 'accountId'> = {}) =>
      account(await query('GrantsDocument', { accountId, ...page }), accountId).grants,
    usageEvents: async (accountId: string, page: Omit<Op<'UsageEventsDocument'>['variables'], 'accountId'> = {}) =>
      account(await query('UsageEventsDocument', { accountId, ...page }), accountId).usageEvents,
    usageSummary: async (accountId: string, args: Omit<Op<'UsageSummaryDocument'>['variables'], 'accountId'>) =>
      account(await query('UsageSummaryDocument', { accountId, ...args }), accountId).usageSummary,
    forecast: async (accountId: string, creditType: string) => account(await query('ForecastDocument', { accountId, creditType }), accountId).forecast,
    reservations: async (accountId: string, status?: Op<'ReservationsDocument'>['variables']['status']) =>
      account(await query('ReservationsDocument', { accountId, status }), accountId).reservations,
    spendLimits: async (accountId: string) => account(await query('SpendLimitsDocument', { accountId }), accountId).spendLimits,
    topUps: async (accountId: string, page: Omit<Op<'TopUpsDocument'>['variables'], 'accountId'> = {}) =>
      account(await query('TopUpsDocument', { accountId, ...page }), accountId).topUps,
    autoTopUps: async (accountId: string) => account(await query('AutoTopUpsDocument', { accountId }), accountId).autoTopUps,
    alertSettings: async (accountId: string) => account(await query('AlertSettingsListDocument', { accountId }), accountId).alertSettings,
    alerts: async (accountId: string, page: Omit<Op<'AlertsDocument'>['variables'], 'accountId'> = {}) =>
      account(await query('AlertsDocument', { accountId, ...page }), accountId).alerts,
    ledger: async (accountId: string, page: Omit<Op<'LedgerDocument'>['variables'], 'accountId'> = {}) =>
      account(await query('LedgerDocument', { accountId, ...page }), accountId).ledger,

    // Accounts and seats (sent once: not idempotent)
    createAccount: async (input: Op<'CreateAccountDocument'>['variables']['input']) => (await mutateOnce('CreateAccountDocument', { input })).createAccount,
    addSeat: async (input: Op<'AddSeatDocument'>['variables']['input']) => (await mutateOnce('AddSeatDocument', { input })).addSeat,
    updateSeat: async (input: Op<'UpdateSeatDocument'>['variables']['input']) => (await query('UpdateSeatDocument', { input })).updateSeat,
    removeSeat: async (seatId: string) => (await mutateOnce('RemoveSeatDocument', { seatId })).removeSeat,
    changePlan: async (input: Op<'ChangePlanDocument'>['variables']['input']) => (await mutateOnce('ChangePlanDocument', { input })).changePlan,

    // Money moves: idempotent on their keys, so retried on a lost answer with the same key
    grantCredits: async (input: WithOptionalKey<Op<'GrantCreditsDocument'>['variables']['input']>) =>
      (await query('GrantCreditsDocument', { input: { ...input, idempotencyKey: input.idempotencyKey ?? newIdempotencyKey() } })).grantCredits,
    recordUsage: async (input: WithOptionalKey<Op<'RecordUsageDocument'>['variables']['input']>) =>
      (await query('RecordUsageDocument', { input: { ...input, idempotencyKey: input.idempotencyKey ?? newIdempotencyKey() } })).recordUsage,
    /** Up to 1,000 events at once, each with its own key and result (keys are generated where missing). */
    recordUsageBatch: async (inputs: Array<WithOptionalKey<Op<'RecordUsageDocument'>['variables']['input']>>) =>
      (await query('RecordUsageBatchDocument', { inputs: inputs.map((input) => ({ ...input, idempotencyKey: input.idempotencyKey ?? newIdempotencyKey() })) }))
        .recordUsageBatch,
    reserveCredits: async (input: WithOptionalKey<Op<'ReserveCreditsDocument'>['variables']['input']>) =>
      (await query('ReserveCreditsDocument', { input: { ...input, idempotencyKey: input.idempotencyKey ?? newIdempotencyKey() } })).reserveCredits,
    settleReservation: async (input: Op<'SettleReservationDocument'>['variables']['input']) =>
      (await query('SettleReservationDocument', { input })).settleReservation,
    releaseReservation: async (reservationId: string) => (await query('ReleaseReservationDocument', { reservationId })).releaseReservation,
    refundUsage: async (input: WithOptionalKey<Op<'RefundUsageDocument'>['variables']['input']>) =>
      (await query('RefundUsageDocument', { input: { ...input, idempotencyKey: input.idempotencyKey ?? newIdempotencyKey() } })).refundUsage,
    purchaseCreditPack: async (input: WithOptionalKey<Op<'PurchaseCreditPackDocument'>['variables']['input']>) =>
      (await query('PurchaseCreditPackDocument', { input: { ...input, idempotencyKey: input.idempotencyKey ?? newIdempotencyKey() } }))
        .purchaseCreditPack,

    // Budgets, alerts, top-ups
    setSpendLimit: async (input: Op<'SetSpendLimitDocument'>['variables']['input']) => (await query('SetSpendLimitDocument', { input })).setSpendLimit,
    removeSpendLimit: async (id: string) => (await query('RemoveSpendLimitDocument', { id })).removeSpendLimit,
    setAlertSettings: async (input: Op<'SetAlertSettingsDocument'>['variables']['input']) => (await query('SetAlertSettingsDocument', { input })).setAlertSettings,
    acknowledgeAlert: async (id: string) => (await query('AcknowledgeAlertDocument', { id })).acknowledgeAlert,
    configureAlertWebhook: async (input: Op<'ConfigureAlertWebhookDocument'>['variables']['input']) =>
      (await query('ConfigureAlertWebhookDocument', { input })).configureAlertWebhook,
    configureAutoTopUp: async (input: Op<'ConfigureAutoTopUpDocument'>['variables']['input']) =>
      (await query('ConfigureAutoTopUpDocument', { input })).configureAutoTopUp,

    // Test clocks and keys
    createTestClock: async (input: Op<'CreateTestClockDocument'>['variables']['input']) => (await mutateOnce('CreateTestClockDocument', { input })).createTestClock,
    advanceTestClock: async (input: Op<'AdvanceTestClockDocument'>['variables']['input']) =>
      (await query('AdvanceTestClockDocument', { input })).advanceTestClock,
    createApiKey: async (input: Op<'CreateApiKeyDocument'>['variables']['input']) => (await mutateOnce('CreateApiKeyDocument', { input })).createApiKey,
    revokeApiKey: async (id: string) => (await query('RevokeApiKeyDocument', { id })).revokeApiKey,
    /** Not retried: a retry after a lost answer would find the key already rotated and its new secret lost. */
    rotateApiKey: async (id: string) => (await mutateOnce('RotateApiKeyDocument', { id })).rotateApiKey,

    // Live
    /** Alerts of the account as they are raised; reconnects and resubscribes after a lost connection. */
    subscribeToAlerts: (accountId: string, onAlert?: (alert: Op<'CreditAlertsDocument'>['result']['creditAlerts']) => void) =>
      subscribeTo('CreditAlertsDocument', { accountId }, (data) => data.creditAlerts, onAlert),
    /** The balance of a credit type each time it changes; reconnects like subscribeToAlerts. */
    subscribeToBalance: (accountId: string, onBalance?: (balance: Op<'BalanceUpdatedDocument'>['result']['balanceUpdated']) => void) =>
      subscribeTo('BalanceUpdatedDocument', { accountId }, (data) => data.balanceUpdated, onBalance),
    /** Closes the shared WebSocket (all subscriptions end). */
    close: async () => {
      await webSocketClient?.dispose();
      webSocketClient = null;
    },
  };
}

export type BillingClient = ReturnType<typeof createBillingClient>;
