/**
 * The typed client of the credit billing API. Every operation of the schema has a method here (a
 * test keeps it so); results are the generated types, unions narrowed by `__typename`. Runs in Node
 * 20+ and in browsers: it needs `fetch`, and for live feeds a WebSocket implementation (the
 * browser's, or `ws` in Node). It contains no server code.
 */
import { BillingApiError } from './errors.ts';
import * as operations from './generated/graphql.ts';
import type { TypedDocumentString } from './generated/graphql.ts';
import { LiveConnection, type LiveFeed, type LiveHandlers } from './live.ts';
import { eachNode, type Page } from './pagination.ts';
import { requestIdOf, sendOperation, type Repeatable, type RequestOptions } from './request.ts';

export * from './generated/graphql.ts';
export * from './errors.ts';
export type { LiveEvent, LiveFeed, LiveHandlers } from './live.ts';
export type { Page } from './pagination.ts';
export type { RequestOptions } from './request.ts';
export {
  verifyLedgerWebhook,
  verifyWebhook,
  WebhookVerificationError,
  type AlertWebhookEvent,
  type LedgerEventType,
  type LedgerWebhookEvent,
  type VerifyWebhookOptions,
  type WebhookEvent,
} from './webhooks.ts';

type Documents = typeof operations;
type Op<Name extends keyof Documents> = Documents[Name] extends TypedDocumentString<infer Result, infer Variables> ? { result: Result; variables: Variables } : never;
type Input<Name extends keyof Documents> = Op<Name>['variables'] extends { input: infer I } ? I : never;
/** The arguments of a paginated read other than the account. */
type PageArgs<Name extends keyof Documents> = Omit<Op<Name>['variables'], 'accountId'>;

export interface BillingClientOptions {
  /** The GraphQL endpoint over HTTP, for example `http://localhost:4000/graphql`. */
  url: string;
  /**
   * An API key (ADMIN for the operator, ACCOUNT for a back end or partner, SEAT for a front end) or
   * a session token (`createSessionToken`) for a browser.
   */
  apiKey: string;
  /** The WebSocket endpoint for live feeds; default: `url` with ws(s)://. */
  wsUrl?: string;
  /** A fetch implementation; default the global one. */
  fetch?: typeof fetch;
  /** A WebSocket implementation for live feeds; default the global one (in Node 20 pass `WebSocket` from `ws`). */
  webSocketImpl?: unknown;
  /** Milliseconds to wait for each attempt's answer before giving up on it; default 30,000. */
  timeout?: number;
  /** Attempts after the first, for repeatable calls that got no answer and for 429s; default 3. */
  retries?: number;
  /** Delay before the first retry, doubling after, with jitter; default 200 ms. */
  retryDelayMs?: number;
  /** A `Retry-After` longer than this is not waited for (the 429 is thrown); default 60,000 ms. */
  maxRetryAfterMs?: number;
  /** Headers sent with every call (for example a tracing header). */
  headers?: Record<string, string>;
  /** Live feeds ping the server this often and reconnect when no pong comes within half of it; default 15,000 ms. */
  keepAliveMs?: number;
  /** Errors of live feeds that have no `onError` of their own; default `console.error`. */
  onLiveError?: (error: BillingApiError) => void;
}

function newIdempotencyKey(): string {
  return globalThis.crypto.randomUUID();
}

type WithOptionalKey<T> = T extends { idempotencyKey: string } ? Omit<T, 'idempotencyKey'> & { idempotencyKey?: string } : T;

/** Creates a client. Nothing connects until the first call (live feeds share one WebSocket). */
export function createBillingClient(options: BillingClientOptions) {
  const authorization = () => `Bearer ${options.apiKey}`;
  const transport = {
    url: options.url,
    authorization,
    fetch: options.fetch ?? globalThis.fetch.bind(globalThis),
    headers: options.headers ?? {},
    timeoutMs: options.timeout ?? 30_000,
    retries: options.retries ?? 3,
    retryDelayMs: options.retryDelayMs ?? 200,
    maxRetryAfterMs: options.maxRetryAfterMs ?? 60_000,
  };

  function call<Name extends keyof Documents>(name: Name, variables: Op<Name>['variables'], repeatable: Repeatable, request?: RequestOptions): Promise<Op<Name>['result']> {
    return sendOperation<Op<Name>['result']>(transport, operations[name].toString(), variables, repeatable, request);
  }
  /** Queries and key-carrying mutations are safe to repeat: they are retried on a lost answer. */
  const query = <Name extends keyof Documents>(name: Name, variables: Op<Name>['variables'], request?: RequestOptions) =>
    call(name, variables, 'idempotent', request);
  /** Other mutations are sent once: a lost answer is reported, not retried (a 429 is, nothing ran). */
  const mutateOnce = <Name extends keyof Documents>(name: Name, variables: Op<Name>['variables'], request?: RequestOptions) =>
    call(name, variables, 'once', request);
  /** The input with its idempotency key: the input's, the call's, or a new one (the same for every retry). */
  const keyed = <T extends { idempotencyKey?: string | null }>(input: T, request?: RequestOptions) => ({
    ...input,
    idempotencyKey: input.idempotencyKey ?? request?.idempotencyKey ?? newIdempotencyKey(),
  });

  function account<T extends { account?: unknown }>(data: T, accountId: string): NonNullable<T['account']> {
    if (!data.account) throw new BillingApiError(`account ${accountId} not found`, 'ACCOUNT_NOT_FOUND', [], 200, { requestId: requestIdOf(data) });
    return data.account as NonNullable<T['account']>;
  }

  /** A page reader with `.list()`, iterating every node of the connection. */
  function paginated<Args extends object, Result extends Page<unknown>>(read: (accountId: string, args?: Args, request?: RequestOptions) => Promise<Result>) {
    return Object.assign(read, {
      /** Every node, page after page, fetched as the loop asks (`for await`; a `break` stops fetching). */
      list: (accountId: string, args?: Omit<Args, 'after'>, request?: RequestOptions): AsyncIterable<Result['edges'][number]['node']> =>
        eachNode((after) => read(accountId, { ...args, ...(after ? { after } : {}) } as Args, request)),
    });
  }

  const live = new LiveConnection({
    url: options.wsUrl ?? options.url.replace(/^http/, 'ws'),
    authorization,
    webSocketImpl: options.webSocketImpl,
    keepAliveMs: options.keepAliveMs ?? 15_000,
    onLiveError: options.onLiveError,
  });

  function subscribeTo<Name extends keyof Documents, T>(
    name: Name,
    variables: Op<Name>['variables'],
    pick: (data: Op<Name>['result']) => T,
    handlers: LiveHandlers<T> | ((event: T) => void) = {},
  ): LiveFeed<T> {
    return live.subscribe(operations[name].toString(), variables as Record<string, unknown>, pick, typeof handlers === 'function' ? { onData: handlers } : handlers);
  }

  type Alert = Op<'CreditAlertsDocument'>['result']['creditAlerts'];
  type Balance = Op<'BalanceUpdatedDocument'>['result']['balanceUpdated'];
  type TopUp = Op<'TopUpUpdatedDocument'>['result']['topUpUpdated'];

  return {
    // Catalogue

    /** Every plan of the catalogue. */
    plans: async (request?: RequestOptions) => (await query('PlansDocument', {}, request)).plans,
    /** One plan by its code, or null. */
    plan: async (code: string, request?: RequestOptions) => (await query('PlanDocument', { code }, request)).plan,
    /** Every feature (what usage is recorded against) and its pricing. */
    features: async (request?: RequestOptions) => (await query('FeaturesDocument', {}, request)).features,
    /** The credit packs customers can buy. */
    creditPacks: async (request?: RequestOptions) => (await query('CreditPacksDocument', {}, request)).creditPacks,
    /** Creates or replaces a plan by its code (ADMIN). */
    upsertPlan: async (input: Input<'UpsertPlanDocument'>, request?: RequestOptions) => (await query('UpsertPlanDocument', { input }, request)).upsertPlan,
    /** Creates or replaces a feature by its key (ADMIN). */
    upsertFeature: async (input: Input<'UpsertFeatureDocument'>, request?: RequestOptions) =>
      (await query('UpsertFeatureDocument', { input }, request)).upsertFeature,
    /** Creates or replaces a credit pack by its code (ADMIN). */
    upsertCreditPack: async (input: Input<'UpsertCreditPackDocument'>, request?: RequestOptions) =>
      (await query('UpsertCreditPackDocument', { input }, request)).upsertCreditPack,

    // Who and where

    /** Who the key (or session token) is: its role, account and seat. */
    viewer: async (request?: RequestOptions) => (await query('ViewerDocument', {}, request)).viewer,
    /** A test clock by id, or null. */
    testClock: async (id: string, request?: RequestOptions) => (await query('TestClockDocument', { id }, request)).testClock,
    /** The operator's audit log, newest first (ADMIN keys only); `.list()` iterates every event. */
    auditEvents: Object.assign(async (filter: Op<'AuditEventsDocument'>['variables'] = {}, request?: RequestOptions) => (await query('AuditEventsDocument', filter, request)).auditEvents, {
      list: (filter: Omit<Op<'AuditEventsDocument'>['variables'], 'after'> = {}, request?: RequestOptions) =>
        eachNode((after) => query('AuditEventsDocument', { ...filter, ...(after ? { after } : {}) }, request).then((data) => data.auditEvents)),
    }),
    /**
     * One page of accounts, oldest first, filtered by name (a part, any case), external id or plan
     * (ADMIN keys only); `.list()` iterates every account.
     */
    accounts: Object.assign(async (args: Op<'AccountsDocument'>['variables'] = {}, request?: RequestOptions) => (await query('AccountsDocument', args, request)).accounts, {
      list: (args: Omit<Op<'AccountsDocument'>['variables'], 'after'> = {}, request?: RequestOptions) =>
        eachNode((after) => query('AccountsDocument', { ...args, ...(after ? { after } : {}) }, request).then((data) => data.accounts)),
    }),
    /**
     * The finance reports over [from, to) per currency (ADMIN): deferred revenue at both ends, then
     * issued, recognised, refunded, breakage, clawed back and adjusted, in minor units at cost basis.
     */
    financeReport: async (args: Op<'FinanceReportDocument'>['variables'], request?: RequestOptions) => (await query('FinanceReportDocument', args, request)).financeReport,
    /** One flow report over [from, to) per currency (ADMIN). */
    financeFlow: async (args: Op<'FinanceFlowDocument'>['variables'], request?: RequestOptions) => (await query('FinanceFlowDocument', args, request)).financeFlow,
    /** Deferred revenue (PAID credits not yet consumed) before an instant, per currency (ADMIN). */
    deferredRevenue: async (args: Op<'DeferredRevenueDocument'>['variables'], request?: RequestOptions) => (await query('DeferredRevenueDocument', args, request)).deferredRevenue,
    /** An account with its subscription, seats and balances, or null when the key cannot see it (its id or external id). */
    account: async (accountId: string, request?: RequestOptions) => (await query('AccountDocument', { accountId }, request)).account,

    // Reading an account (each throws ACCOUNT_NOT_FOUND for an account the key cannot see)

    /** The balance of every credit type of the account. */
    balances: async (accountId: string, request?: RequestOptions) => account(await query('BalancesDocument', { accountId }, request), accountId).balances,
    /** The balance of one credit type (zeros for a type the account has none of). */
    balance: async (accountId: string, creditType: string, request?: RequestOptions) =>
      account(await query('BalanceDocument', { accountId, creditType }, request), accountId).balance,
    /** The available balance of a credit type as it stood at a past instant. */
    balanceAt: async (accountId: string, creditType: string, at: string, request?: RequestOptions) =>
      account(await query('BalanceAtDocument', { accountId, creditType, at }, request), accountId).balanceAt,
    /** One page of the account's grants; `.list()` iterates every grant. */
    grants: paginated(async (accountId: string, page: PageArgs<'GrantsDocument'> = {}, request?: RequestOptions) =>
      account(await query('GrantsDocument', { accountId, ...page }, request), accountId).grants),
    /** One page of the account's usage events, newest first; `.list()` iterates every event. */
    usageEvents: paginated(async (accountId: string, page: PageArgs<'UsageEventsDocument'> = {}, request?: RequestOptions) =>
      account(await query('UsageEventsDocument', { accountId, ...page }, request), accountId).usageEvents),
    /** Credits and events grouped by feature, seat, tag or day (default: this period). */
    usageSummary: async (accountId: string, args: PageArgs<'UsageSummaryDocument'>, request?: RequestOptions) =>
      account(await query('UsageSummaryDocument', { accountId, ...args }, request), accountId).usageSummary,
    /** The burn rate of a credit type and the day it runs out at that rate (null: never). */
    forecast: async (accountId: string, creditType: string, request?: RequestOptions) =>
      account(await query('ForecastDocument', { accountId, creditType }, request), accountId).forecast,
    /** The account's holds (reserveCredits), optionally of one status. */
    reservations: async (accountId: string, status?: Op<'ReservationsDocument'>['variables']['status'], request?: RequestOptions) =>
      account(await query('ReservationsDocument', { accountId, status }, request), accountId).reservations,
    /** The account's spend limits with what they have used and hold. */
    spendLimits: async (accountId: string, request?: RequestOptions) => account(await query('SpendLimitsDocument', { accountId }, request), accountId).spendLimits,
    /**
     * One page of what Stripe billed the account (plan, proration and overage lines, status, hosted
     * invoice page), newest first; `.list()` iterates every invoice. ADMIN and ACCOUNT keys and
     * account-wide session tokens.
     */
    invoices: paginated(async (accountId: string, page: PageArgs<'InvoicesDocument'> = {}, request?: RequestOptions) =>
      account(await query('InvoicesDocument', { accountId, ...page }, request), accountId).invoices),
    /** One page of the account's credit pack purchases; `.list()` iterates every purchase. */
    topUps: paginated(async (accountId: string, page: PageArgs<'TopUpsDocument'> = {}, request?: RequestOptions) =>
      account(await query('TopUpsDocument', { accountId, ...page }, request), accountId).topUps),
    /** The card off-session purchases and auto top-ups charge: brand, last four, expiry; null when none is saved. */
    paymentMethod: async (accountId: string, request?: RequestOptions) =>
      account(await query('PaymentMethodDocument', { accountId }, request), accountId).paymentMethod,
    /** The account's auto top-up settings per credit type. */
    autoTopUps: async (accountId: string, request?: RequestOptions) => account(await query('AutoTopUpsDocument', { accountId }, request), accountId).autoTopUps,
    /** When the account is alerted, per credit type (defaults where none were set). */
    alertSettings: async (accountId: string, request?: RequestOptions) =>
      account(await query('AlertSettingsListDocument', { accountId }, request), accountId).alertSettings,
    /** One page of the account's alerts, newest first; `.list()` iterates every alert. */
    alerts: paginated(async (accountId: string, page: PageArgs<'AlertsDocument'> = {}, request?: RequestOptions) =>
      account(await query('AlertsDocument', { accountId, ...page }, request), accountId).alerts),
    /** One page of the account's scheduled grants; `.list()` iterates every one. */
    scheduledGrants: paginated(async (accountId: string, page: PageArgs<'ScheduledGrantsDocument'> = {}, request?: RequestOptions) =>
      account(await query('ScheduledGrantsDocument', { accountId, ...page }, request), accountId).scheduledGrants),
    /** One page of the account's ledger entries; `.list()` iterates every entry. */
    ledger: paginated(async (accountId: string, page: PageArgs<'LedgerDocument'> = {}, request?: RequestOptions) =>
      account(await query('LedgerDocument', { accountId, ...page }, request), accountId).ledger),

    // Accounts and seats (sent once: not idempotent)

    /** Creates an account on a plan (ADMIN). Sent once: a lost answer is not retried. */
    createAccount: async (input: Input<'CreateAccountDocument'>, request?: RequestOptions) =>
      (await mutateOnce('CreateAccountDocument', { input }, request)).createAccount,
    /** Renames an account, sets its external id (once) or replaces its metadata (ADMIN). Safe to repeat. */
    updateAccount: async (input: Input<'UpdateAccountDocument'>, request?: RequestOptions) => (await query('UpdateAccountDocument', { input }, request)).updateAccount,
    /** Adds a seat to an account. Sent once. */
    addSeat: async (input: Input<'AddSeatDocument'>, request?: RequestOptions) => (await mutateOnce('AddSeatDocument', { input }, request)).addSeat,
    /** Renames a seat or changes whether it may use the shared pool. */
    updateSeat: async (input: Input<'UpdateSeatDocument'>, request?: RequestOptions) => (await query('UpdateSeatDocument', { input }, request)).updateSeat,
    /** Removes a seat. Sent once. */
    removeSeat: async (seatId: string, request?: RequestOptions) => (await mutateOnce('RemoveSeatDocument', { seatId }, request)).removeSeat,
    /** Moves the account to another plan, now or at the period's end. Sent once. */
    changePlan: async (input: Input<'ChangePlanDocument'>, request?: RequestOptions) => (await mutateOnce('ChangePlanDocument', { input }, request)).changePlan,

    // Money moves: idempotent on their keys, so retried on a lost answer with the same key

    /** Grants credits (ADMIN). Idempotent on its key (generated when missing), so retried safely. */
    grantCredits: async (input: WithOptionalKey<Input<'GrantCreditsDocument'>>, request?: RequestOptions) =>
      (await query('GrantCreditsDocument', { input: keyed(input, request) }, request)).grantCredits,
    /**
     * Voids a grant (ADMIN): what is left of it is removed in an ADJUST ledger entry, what was spent
     * stays spent. Requires a reason. Idempotent on its key (generated when missing), so retried safely.
     */
    voidGrant: async (input: WithOptionalKey<Input<'VoidGrantDocument'>>, request?: RequestOptions) =>
      (await query('VoidGrantDocument', { input: keyed(input, request) }, request)).voidGrant,
    /**
     * Adds credits (a positive amount: a new ADJUSTMENT grant) or takes them back (negative: in
     * consumption order, never below zero) (ADMIN). Answers `CreditsCorrected` or, when taking more
     * than the pool holds, `InsufficientCredits` with nothing written: switch on `__typename`.
     * Requires a reason. Idempotent on its key (generated when missing).
     */
    adjustCredits: async (input: WithOptionalKey<Input<'AdjustCreditsDocument'>>, request?: RequestOptions) =>
      (await query('AdjustCreditsDocument', { input: keyed(input, request) }, request)).adjustCredits,
    /**
     * Moves a grant's expiry (`expiresAt`) or removes it (`removeExpiry: true`) (ADMIN). Requires a
     * reason. Idempotent on its key (generated when missing).
     */
    changeGrantExpiry: async (input: WithOptionalKey<Input<'ChangeGrantExpiryDocument'>>, request?: RequestOptions) =>
      (await query('ChangeGrantExpiryDocument', { input: keyed(input, request) }, request)).changeGrantExpiry,
    /**
     * Schedules credits for later, once or monthly/yearly until `endsAt` (ADMIN); each occurrence is
     * issued once by the server's job runner. Idempotent on its key (generated when missing).
     */
    scheduleGrant: async (input: WithOptionalKey<Input<'ScheduleGrantDocument'>>, request?: RequestOptions) =>
      (await query('ScheduleGrantDocument', { input: keyed(input, request) }, request)).scheduleGrant,
    /** Stops a scheduled grant; what was issued stays (ADMIN). */
    cancelScheduledGrant: async (id: string, request?: RequestOptions) => (await query('CancelScheduledGrantDocument', { id }, request)).cancelScheduledGrant,
    /**
     * Charges usage of a feature. Answers `UsageRecorded` or a refusal (`InsufficientCredits`,
     * `SpendLimitExceeded`, `FeatureNotAvailable`): switch on `__typename`. Idempotent on its key.
     */
    recordUsage: async (input: WithOptionalKey<Input<'RecordUsageDocument'>>, request?: RequestOptions) =>
      (await query('RecordUsageDocument', { input: keyed(input, request) }, request)).recordUsage,
    /** Up to 1,000 events at once, each with its own key and result (keys are generated where missing). */
    recordUsageBatch: async (inputs: Array<WithOptionalKey<Input<'RecordUsageDocument'>>>, request?: RequestOptions) =>
      (
        await query(
          'RecordUsageBatchDocument',
          {
            inputs: inputs.map((input, index) => ({
              ...input,
              idempotencyKey: input.idempotencyKey ?? (request?.idempotencyKey ? `${request.idempotencyKey}:${index}` : newIdempotencyKey()),
            })),
          },
          request,
        )
      ).recordUsageBatch,
    /** Holds credits for work whose cost is known only afterwards; settle or release the hold. Idempotent on its key. */
    reserveCredits: async (input: WithOptionalKey<Input<'ReserveCreditsDocument'>>, request?: RequestOptions) =>
      (await query('ReserveCreditsDocument', { input: keyed(input, request) }, request)).reserveCredits,
    /** Charges what a held task cost (at most the hold) and frees the rest. */
    settleReservation: async (input: Input<'SettleReservationDocument'>, request?: RequestOptions) =>
      (await query('SettleReservationDocument', { input }, request)).settleReservation,
    /** Frees a hold without charging. */
    releaseReservation: async (reservationId: string, request?: RequestOptions) =>
      (await query('ReleaseReservationDocument', { reservationId }, request)).releaseReservation,
    /** Gives back credits of a usage event (all or part). Idempotent on its key. */
    refundUsage: async (input: WithOptionalKey<Input<'RefundUsageDocument'>>, request?: RequestOptions) =>
      (await query('RefundUsageDocument', { input: keyed(input, request) }, request)).refundUsage,
    /**
     * Buys a credit pack through Stripe: off session with the saved payment method, or a Checkout
     * URL to send the customer to. Idempotent on its key: one key per purchase intent.
     */
    purchaseCreditPack: async (input: WithOptionalKey<Input<'PurchaseCreditPackDocument'>>, request?: RequestOptions) =>
      (await query('PurchaseCreditPackDocument', { input: keyed(input, request) }, request)).purchaseCreditPack,
    /** One credit purchase (its status, failure code, grant), or null when it is not the key's account's. */
    topUpPurchase: async (id: string, request?: RequestOptions) => (await query('TopUpPurchaseDocument', { id }, request)).topUpPurchase,
    /**
     * Starts saving a card: a Stripe Checkout URL in setup mode to send the customer to. Once Stripe
     * confirms, the card is the account's default for off-session purchases and auto top-ups.
     */
    createPaymentMethodSetup: async (input: Input<'CreatePaymentMethodSetupDocument'>, request?: RequestOptions) =>
      (await query('CreatePaymentMethodSetupDocument', { input }, request)).createPaymentMethodSetup,
    /** Detaches the account's card on file in Stripe; returns the account (paymentMethod then null). */
    removePaymentMethod: async (accountId: string, request?: RequestOptions) =>
      (await query('RemovePaymentMethodDocument', { input: { accountId } }, request)).removePaymentMethod,
    /** A Stripe Customer Portal URL where the customer manages their cards themselves. */
    createBillingPortalSession: async (input: Input<'CreateBillingPortalSessionDocument'>, request?: RequestOptions) =>
      (await query('CreateBillingPortalSessionDocument', { input }, request)).createBillingPortalSession,
    /**
     * Subscribes the account to a plan sold through Stripe: a Checkout URL (subscription mode) to
     * send the customer to; the account is on the plan once Stripe confirms. Idempotent on its key.
     */
    subscribeToPlan: async (input: WithOptionalKey<Input<'SubscribeToPlanDocument'>>, request?: RequestOptions) =>
      (await query('SubscribeToPlanDocument', { input: keyed(input, request) }, request)).subscribeToPlan,
    /** Ends the account's Stripe subscription at the period end (then the free plan, or usage refused). */
    cancelSubscription: async (input: Input<'CancelSubscriptionDocument'>, request?: RequestOptions) =>
      (await query('CancelSubscriptionDocument', { input }, request)).cancelSubscription,
    /** Sells a plan through Stripe (ADMIN): links it to a recurring Price given by id, or to one created from the plan. */
    linkPlanToStripePrice: async (input: Input<'LinkPlanToStripePriceDocument'>, request?: RequestOptions) =>
      (await query('LinkPlanToStripePriceDocument', { input }, request)).linkPlanToStripePrice,

    // Budgets, alerts, top-ups

    /** Sets a spend limit (account, seat, feature or tag; per period or lifetime). */
    setSpendLimit: async (input: Input<'SetSpendLimitDocument'>, request?: RequestOptions) => (await query('SetSpendLimitDocument', { input }, request)).setSpendLimit,
    /** Removes a spend limit. */
    removeSpendLimit: async (id: string, request?: RequestOptions) => (await query('RemoveSpendLimitDocument', { id }, request)).removeSpendLimit,
    /** Sets when to alert about one credit type. */
    setAlertSettings: async (input: Input<'SetAlertSettingsDocument'>, request?: RequestOptions) =>
      (await query('SetAlertSettingsDocument', { input }, request)).setAlertSettings,
    /** Marks an alert seen. */
    acknowledgeAlert: async (id: string, request?: RequestOptions) => (await query('AcknowledgeAlertDocument', { id }, request)).acknowledgeAlert,
    /** Sends the account's alerts to a URL as signed POSTs (check them with `verifyWebhook`); answers the secret. */
    configureAlertWebhook: async (input: Input<'ConfigureAlertWebhookDocument'>, request?: RequestOptions) =>
      (await query('ConfigureAlertWebhookDocument', { input }, request)).configureAlertWebhook,
    /** The operator's ledger event endpoints (ADMIN). */
    webhookEndpoints: async (request?: RequestOptions) => (await query('WebhookEndpointsDocument', {}, request)).webhookEndpoints,
    /**
     * Sends ledger events (grant created, expired, voided, adjustment, purchase completed or failed,
     * plan changed, alert raised) to a URL as signed POSTs, optionally only some types or one
     * account (ADMIN); answers the signing secret once (check deliveries with `verifyLedgerWebhook`). Sent once.
     */
    createWebhookEndpoint: async (input: Input<'CreateWebhookEndpointDocument'>, request?: RequestOptions) =>
      (await mutateOnce('CreateWebhookEndpointDocument', { input }, request)).createWebhookEndpoint,
    /** Changes an endpoint's event types or turns it off or on (ADMIN). */
    updateWebhookEndpoint: async (input: Input<'UpdateWebhookEndpointDocument'>, request?: RequestOptions) =>
      (await query('UpdateWebhookEndpointDocument', { input }, request)).updateWebhookEndpoint,
    /** Buys a pack automatically when a credit type falls below a threshold. */
    configureAutoTopUp: async (input: Input<'ConfigureAutoTopUpDocument'>, request?: RequestOptions) =>
      (await query('ConfigureAutoTopUpDocument', { input }, request)).configureAutoTopUp,

    // Test clocks and keys

    /** Creates a test clock (ADMIN): accounts on it live at its frozen time. Sent once. */
    createTestClock: async (input: Input<'CreateTestClockDocument'>, request?: RequestOptions) =>
      (await mutateOnce('CreateTestClockDocument', { input }, request)).createTestClock,
    /** Moves a test clock forward, running the renewals and expiries due (ADMIN). */
    advanceTestClock: async (input: Input<'AdvanceTestClockDocument'>, request?: RequestOptions) =>
      (await query('AdvanceTestClockDocument', { input }, request)).advanceTestClock,
    /** Creates an API key; its secret is answered once. Sent once. */
    createApiKey: async (input: Input<'CreateApiKeyDocument'>, request?: RequestOptions) =>
      (await mutateOnce('CreateApiKeyDocument', { input }, request)).createApiKey,
    /** Revokes an API key at once, on every instance. */
    revokeApiKey: async (id: string, request?: RequestOptions) => (await query('RevokeApiKeyDocument', { id }, request)).revokeApiKey,
    /** Replaces a key's secret. Not retried: a retry after a lost answer would find the key already rotated and its new secret lost. */
    rotateApiKey: async (id: string, request?: RequestOptions) => (await mutateOnce('RotateApiKeyDocument', { id }, request)).rotateApiKey,

    /**
     * Issues a short-lived session token for a browser (ADMIN, or an ACCOUNT key for its own
     * account): reads and follows the account or one seat (`seatId`), buys through Checkout if
     * `canBuy`; `ttlMinutes` 5 to 720, default 60. Hand `token` to the browser outside the URL (for
     * example in the fragment, `#session=…`) and use it there as the client's `apiKey`. Sent once.
     */
    createSessionToken: async (input: Input<'CreateSessionTokenDocument'>, request?: RequestOptions) =>
      (await mutateOnce('CreateSessionTokenDocument', { input }, request)).createSessionToken,
    /** Ends a session token at once, on every instance; its open WebSockets close with 4403. */
    revokeSessionToken: async (id: string, request?: RequestOptions) => (await query('RevokeSessionTokenDocument', { id }, request)).revokeSessionToken,

    // Live

    /**
     * Alerts of the account as they are raised. Pass `onData` (or a function) to be called back, or
     * iterate the feed with `for await`. Reconnects and resubscribes after a lost connection
     * (`onLiveEvent` tells); ends with a typed error (`onError`, or thrown by the loop) when the key
     * is refused or the account is not the key's.
     */
    subscribeToAlerts: (accountId: string, handlers?: LiveHandlers<Alert> | ((alert: Alert) => void)) =>
      subscribeTo('CreditAlertsDocument', { accountId }, (data) => data.creditAlerts, handlers),
    /**
     * The balance of every credit type when the feed starts and after each reconnection (so a
     * change made while the connection was down is not missed), then each change. Callbacks and
     * errors as subscribeToAlerts.
     */
    subscribeToBalance: (accountId: string, handlers?: LiveHandlers<Balance> | ((balance: Balance) => void)) =>
      subscribeTo('BalanceUpdatedDocument', { accountId }, (data) => data.balanceUpdated, handlers),
    /**
     * Credit purchases of the account as they start and change status (Checkout completed, payment
     * failed, refunded). With `purchaseId`, only that purchase, sent first as it stands, so a page
     * opened after the payment still learns of it. Callbacks and errors as subscribeToAlerts.
     */
    subscribeToTopUps: (accountId: string, handlers?: LiveHandlers<TopUp> | ((purchase: TopUp) => void), purchaseId?: string) =>
      subscribeTo('TopUpUpdatedDocument', { accountId, ...(purchaseId ? { purchaseId } : {}) }, (data) => data.topUpUpdated, handlers),
    /** Closes the shared WebSocket (all live feeds end). */
    close: async () => {
      await live.close();
    },
  };
}

/** The client `createBillingClient` makes. */
export type BillingClient = ReturnType<typeof createBillingClient>;
