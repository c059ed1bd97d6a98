import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GraphQLError } from 'graphql';
import { createYoga, maskError as defaultMaskError, type Plugin } from 'graphql-yoga';
import type { Logger } from 'pino';
import { ApiKeyAuthenticator, ensureOperatorKey } from './auth/apiKeys.ts';
import { FeatureCache } from './catalog/featureCache.ts';
import type { AppConfig } from './config.ts';
import { openDatabase, type Database } from './db/database.ts';
import { applyMigrations, migrationsAreApplied } from './db/migrations.ts';
import { isDatabaseUnavailable } from './db/unavailable.ts';
import { systemClock, type Clock } from './domain/clock.ts';
import { isUsageTotalOverflow, MAX_CREDITS } from './domain/credits.ts';
import { BillingError, ErrorCode, TransportErrorCode } from './domain/errors.ts';
import type { AccountReads, GraphQLContext } from './graphql/context.ts';
import { AccountRefResolver } from './graphql/accountRefs.ts';
import { parseInstant } from './graphql/builder.ts';
import { createLoaders } from './graphql/loaders.ts';
import { exportLedger } from './ledger/ledgerHistory.ts';
import { schema } from './graphql/schema.ts';
import { DueWorkRunner, throttle } from './jobs/dueWorkRunner.ts';
import { raiseExpiringSoonAlertsForAll } from './jobs/expiringSoon.ts';
import { analyzeGrownTables } from './jobs/tableStatistics.ts';
import { Coalescer } from './db/coalescer.ts';
import { readAccountsWithBalances, readAccountWithBalances } from './ledger/balances.ts';
import { HotUsageQueue } from './ledger/hotUsageQueue.ts';
import { wireLedgerPolicies } from './ledger/ledgerPolicies.ts';
import { billingPolicies } from './billingPolicies.ts';
import { purgeRefusals } from './ledger/refusals.ts';
import type { UsageHotPath } from './ledger/recordUsage.ts';
import { deliverDueAlerts } from './alerts/alertWebhooks.ts';
import { deliverDueLedgerEvents } from './alerts/ledgerWebhooks.ts';
import type { WebhookTargetPolicy } from './alerts/webhookTarget.ts';
import { attachEventPublisher } from './realtime/events.ts';
import { createEventBus } from './realtime/pubsub.ts';
import { attachWebSockets, type LiveSockets } from './realtime/webSockets.ts';
import { RedisWatch } from './realtime/redisWatch.ts';
import { PurchaseService } from './stripe/purchaseService.ts';
import { PurchaseReconciler } from './stripe/reconcilePurchases.ts';
import { SubscriptionService } from './subscriptions/subscriptionService.ts';
import { StripeGateway } from './stripe/stripeGateway.ts';
import { OverageInvoicer } from './stripe/overageInvoicing.ts';
import { useObservability } from './observability/graphqlObservability.ts';
import { createSecurityPlugins, type SecurityOptions } from './graphql/security.ts';
import { createLogger } from './observability/logger.ts';
import { Metrics } from './observability/metrics.ts';
import { dueWorkQueueStats, poolStatsOf } from './observability/sources.ts';

export interface App {
  /** Runs renewals, expiries and hold timeouts; started with the server unless JOBS_ENABLED=false. */
  dueWorkRunner: DueWorkRunner;
  /** Checks purchases left pending against Stripe (run by the job runner); null without Stripe. */
  purchaseReconciler: PurchaseReconciler | null;
  /** Listens on the configured port (0: any free port) and resolves with the base URL. */
  start(): Promise<string>;
  /**
   * Graceful: stops accepting, closes WebSockets with 1001 (going away) so that clients reconnect
   * elsewhere, lets in-flight requests and the current job finish (in-flight requests for at most
   * SHUTDOWN_TIMEOUT_MS), then closes the database.
   */
  stop(): Promise<void>;
  database: Database;
  logger: Logger;
  metrics: Metrics;
}

export interface AppOptions {
  clock?: Clock;
  logger?: Logger;
  /** Overrides of the rate limit and body size defaults (graphql/security.ts). */
  security?: Pick<SecurityOptions, 'rateLimit' | 'maxBodyBytes'>;
}

const MAX_WEBHOOK_BYTES = 1024 * 1024;
const REDIS_PING_TIMEOUT_MS = 1000;

function bearerToken(header: string | null | undefined): string | null {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1] ?? null;
}

/**
 * GraphQL's errors are recognised by name, not `instanceof`: graphql ships CommonJS and ESM builds,
 * and a library loading the other one makes errors of another class.
 */
function isGraphQLError(error: unknown): error is GraphQLError {
  return error instanceof Error && error.name === 'GraphQLError';
}

/** The executor may wrap a resolver's error in GraphQLErrors more than once: find what was thrown. */
function rootCause(error: unknown): unknown {
  let current = error;
  while (isGraphQLError(current) && current.originalError) current = current.originalError;
  return current;
}

/** Seconds a client is asked to wait before retrying an UNAVAILABLE answer. */
const UNAVAILABLE_RETRY_AFTER_SECONDS = 1;

/**
 * Expected failures (BillingError) reach the client with their stable code; GraphQL's own errors
 * (validation, coercion) pass as they are; a lost database is UNAVAILABLE (503, retryable: the
 * request may or may not have committed, and its retry with the same key is safe); anything else is
 * masked as an internal error and logged.
 */
function createErrorMasker(logger: Logger, development: boolean) {
  let lastUnavailableLog = 0;
  return (error: unknown, message: string): Error => {
    const original = rootCause(error);
    if (original instanceof BillingError) {
      const graphQLError = isGraphQLError(error) ? error : undefined;
      return new GraphQLError(original.message, {
        nodes: graphQLError?.nodes,
        path: graphQLError?.path,
        extensions: {
          code: original.code,
          ...original.details,
          // RFC 6750: a request without a usable bearer token is 401 and says which scheme to use.
          ...(original.code === ErrorCode.UNAUTHENTICATED ? { http: { status: 401, headers: { 'WWW-Authenticate': 'Bearer' } } } : {}),
        },
      });
    }
    if (isGraphQLError(original) && isGraphQLError(error)) return error;
    if (isDatabaseUnavailable(original)) {
      // One line a few seconds during an outage, not one per failed request.
      if (Date.now() - lastUnavailableLog > 5_000) {
        lastUnavailableLog = Date.now();
        logger.warn({ reason: original instanceof Error ? original.message.split('\n')[0] : String(original) }, 'database unavailable: answering UNAVAILABLE (503)');
      }
      const graphQLError = isGraphQLError(error) ? error : undefined;
      return new GraphQLError('the database is unavailable; retry with the same idempotency key', {
        nodes: graphQLError?.nodes,
        path: graphQLError?.path,
        extensions: {
          code: TransportErrorCode.UNAVAILABLE,
          retryable: true,
          retryAfter: UNAVAILABLE_RETRY_AFTER_SECONDS,
          http: { status: 503, headers: { 'Retry-After': String(UNAVAILABLE_RETRY_AFTER_SECONDS) } },
        },
      });
    }
    if (isUsageTotalOverflow(original)) {
      // The constraint holding a period's usage total within 2^53 - 1 refused a write no check before it caught.
      const graphQLError = isGraphQLError(error) ? error : undefined;
      return new GraphQLError(`this period's usage would pass ${MAX_CREDITS} credits, the most a total can state`, {
        nodes: graphQLError?.nodes,
        path: graphQLError?.path,
        extensions: { code: ErrorCode.INVALID_CREDITS },
      });
    }
    logger.error({ err: original }, 'unexpected error');
    const masked = defaultMaskError(error, message, development);
    return isGraphQLError(masked)
      ? new GraphQLError(masked.message, { nodes: masked.nodes, path: masked.path, extensions: { ...masked.extensions, code: 'INTERNAL_SERVER_ERROR' } })
      : masked;
  };
}

/** Account reads in flight at once before arriving ones wait and share the next statement. */
const ACCOUNT_READ_CONCURRENCY = 2;

/** How often the job runner checks whether the growing tables changed by a tenth (fresh planner statistics). */
const STATISTICS_CHECK_MS = 60_000;

/** How often it checks whether one grew several-fold (a fresh database filling up). */
const GROWTH_CHECK_MS = 2_000;

/** How often the job runner forgets refusals past IDEMPOTENCY_REFUSAL_TTL_HOURS. */
const REFUSAL_PURGE_MS = 10 * 60_000;

/** Builds the whole service: database, GraphQL over HTTP, health. Nothing listens until start(). */
export async function buildApp(config: AppConfig, options: AppOptions = {}): Promise<App> {
  const logger = options.logger ?? createLogger({ level: config.logLevel, development: !config.production });
  const clock = options.clock ?? systemClock;
  // The ledger reports its changes; renewal, auto top-up and alerts react to them.
  wireLedgerPolicies(billingPolicies);
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: config.databasePoolSize });
  const applied = await applyMigrations(database);
  if (applied.length > 0) logger.info({ migrations: applied }, 'migrations applied');
  if (config.adminApiKey) await ensureOperatorKey(database.prisma, config.adminApiKey, clock.now());
  const { prisma } = database;
  const stripeGateway = config.stripe ? await StripeGateway.create(config.stripe) : null;
  const purchases = new PurchaseService(prisma, clock, stripeGateway, logger);
  const overageInvoicer = new OverageInvoicer({ prisma, clock, gateway: stripeGateway, logger });
  const purchaseReconciler = stripeGateway
    ? new PurchaseReconciler({ prisma, clock, gateway: stripeGateway, logger, afterMs: config.purchaseReconcileAfterMs })
    : null;
  const subscriptions = new SubscriptionService(prisma, clock, stripeGateway, logger, config.subscriptions);
  purchases.setEventHook(subscriptions.asEventHook());
  const redisWatch = config.redisUrl ? new RedisWatch(logger) : undefined;
  const eventBus = await createEventBus(config.redisUrl, redisWatch);
  const { pubSub } = eventBus;
  const apiKeys = new ApiKeyAuthenticator(prisma, config.apiKeyCacheMs);
  let liveSockets = null as LiveSockets | null;
  // Every instance hears of every revocation (through Redis when configured): it forgets the keys
  // it had verified and closes the sockets of the revoked ones.
  const revocations = pubSub.subscribe('apiKeysRevoked');
  void (async () => {
    for await (const _revocation of revocations) {
      apiKeys.forgetAll();
      await liveSockets?.closeRevoked();
    }
  })();
  // Only readiness uses this connection: the event bus's own are busy subscribing.
  const redisProbe = config.redisUrl ? new (await import('ioredis')).Redis(config.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 0 }) : null;
  if (redisProbe) redisWatch?.watch(redisProbe, 'readiness probe');

  const metrics = new Metrics({
    pool: poolStatsOf(prisma),
    jobQueue: () => dueWorkQueueStats(prisma, clock.now()),
    openWebSockets: () => liveSockets?.size ?? 0,
  });
  const usageHotPath: UsageHotPath = {
    database,
    features: new FeatureCache(database),
    occurredAtWindow: config.occurredAtWindow,
    ...(config.usageBatchConcurrency > 0
      ? {
          queue: new HotUsageQueue(database, clock, {
            concurrency: config.usageBatchConcurrency,
            maxBatch: config.usageBatchMax,
            observe(size, handedBack) {
              metrics.usageBatchSize.observe(size);
              if (handedBack > 0) metrics.usageBatchHandedBack.inc(handedBack);
            },
          }),
        }
      : {}),
  };
  const accountReads: AccountReads = new Coalescer({
    concurrency: ACCOUNT_READ_CONCURRENCY,
    maxBatch: 500,
    run: async (reads) =>
      reads.length === 1
        ? [await readAccountWithBalances(database, clock, reads[0]!.accountId, reads[0]!.creditType)]
        : readAccountsWithBalances(database, clock, reads),
  });
  attachEventPublisher(prisma, {
    publish(event) {
      // Whatever spend queued it (usage, a batch, a hold), it is paid right after its commit, here.
      if (event.topic === 'autoTopUpQueued') return purchases.payInBackground(event.purchaseId);
      if (event.topic === 'alert') metrics.alertsRaised.inc({ kind: event.alert.kind });
      eventBus.publisher.publish(event);
    },
  });
  const accountRefs = new AccountRefResolver(database);
  const webhookTargets: WebhookTargetPolicy = { allowPrivate: config.alertWebhookAllowPrivate, timeoutMs: config.alertWebhookTimeoutMs };
  if (webhookTargets.allowPrivate) logger.warn('ALERT_WEBHOOK_ALLOW_PRIVATE=true: alert webhooks may use plain http and reach this network (development only)');

  // Observability stays first, so that it also times and logs what the security plugins refuse.
  const security = await createSecurityPlugins({
    production: config.production,
    introspection: config.introspection,
    redisUrl: config.redisUrl,
    redisWatch,
    rateLimit: { perSecond: config.rateLimitPerSecond, burst: config.rateLimitBurst },
    unauthenticatedPerMinute: config.unauthenticatedPerMinute,
    trustProxy: config.trustProxy,
    maxBodyBytes: config.maxRequestBodyBytes,
    queryCost: { limit: config.queryCostLimit, budget: config.queryCostBudget ?? config.queryCostLimit },
    ...options.security,
  });
  const plugins: Plugin[] = [useObservability({ schema, logger, metrics }), ...security.plugins];

  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    graphqlEndpoint: '/graphql',
    graphiql: config.graphiql,
    landingPage: false,
    logging: false,
    maskedErrors: { maskError: createErrorMasker(logger, config.development) },
    plugins,
    // HTTP requests carry the key in their Authorization header; WebSocket operations in the
    // graphql-ws connection_init payload (`connectionParams`), checked once when the socket opens.
    context: async (initial) => {
      const connectionParams = initial.connectionParams as { authorization?: unknown } | undefined;
      const header =
        typeof connectionParams?.authorization === 'string' ? connectionParams.authorization : initial.request.headers.get('authorization');
      const token = bearerToken(header);
      const actor = token ? await apiKeys.authenticate(token) : null;
      // A key that does not authenticate counts against its address, like a request without one.
      const incoming = (initial as { req?: IncomingMessage }).req;
      if (token && !actor && incoming) {
        const refused = await security.consumeUnauthenticated(incoming);
        if (refused) throw refused;
      }
      return { prisma, database, accountReads, clock, actor, loaders: createLoaders(prisma), purchases, subscriptions, pubSub, usageHotPath, apiKeys, webhookTargets, accountRefs };
    },
  });

  function handleHealth(response: ServerResponse, ready: boolean, checks?: Record<string, boolean | string>, degraded = false) {
    response.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ status: ready ? (degraded ? 'degraded' : 'ok') : 'unavailable', ...(checks ? { checks } : {}) }));
  }

  async function redisAnswers(): Promise<boolean> {
    if (!redisProbe) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), REDIS_PING_TIMEOUT_MS);
    });
    const pong = redisProbe.ping().then((answer) => answer === 'PONG', () => false);
    return Promise.race([pong, timeout]).finally(() => clearTimeout(timer));
  }

  /**
   * Draining (after SIGTERM) is unready too, so that the load balancer stops sending requests. Redis
   * away is "degraded", not unready: every instance would lose it at once, and each works without it.
   */
  async function readiness(response: ServerResponse): Promise<void> {
    const [databaseReady, redisReady] = await Promise.all([
      database.ping().then((up) => up && migrationsAreApplied(database).catch(() => false)),
      redisAnswers(),
    ]);
    const checks = { database: databaseReady, ...(redisProbe ? { redis: redisReady ? 'ok' : 'degraded' } : {}), accepting: !draining };
    handleHealth(response, databaseReady && !draining, checks, !redisReady);
  }

  /** With METRICS_TOKEN set, the metrics are for the scraper that presents it (digests compared in constant time). */
  function metricsAllowed(request: IncomingMessage): boolean {
    if (!config.metricsToken) return true;
    const digest = (text: string) => createHash('sha256').update(text).digest();
    return timingSafeEqual(digest(bearerToken(request.headers.authorization) ?? ''), digest(config.metricsToken));
  }

  async function handleMetrics(request: IncomingMessage, response: ServerResponse): Promise<void> {
    if (!metricsAllowed(request)) {
      response.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' });
      response.end('metrics need Authorization: Bearer <METRICS_TOKEN>\n');
      return;
    }
    try {
      const text = await metrics.registry.metrics();
      response.writeHead(200, { 'content-type': metrics.registry.contentType });
      response.end(text);
    } catch (error) {
      logger.error({ err: error }, 'metrics collection failed');
      response.writeHead(500, { 'content-type': 'text/plain' });
      response.end('metrics collection failed\n');
    }
  }

  const dueWorkRunner = new DueWorkRunner({
    prisma,
    clock,
    logger,
    intervalMs: config.jobsIntervalMs,
    concurrency: Math.max(1, Math.min(8, Math.floor(config.databasePoolSize / 4))),
    tasks: [
      (now) => purchases.retryStalePending(now),
      async () => overageInvoicer.kick(),
      ...(purchaseReconciler ? [() => purchaseReconciler.runOnce()] : []),
      () =>
        deliverDueAlerts({
          prisma,
          clock,
          logger,
          retryBaseMs: config.alertWebhookRetryBaseMs,
          target: webhookTargets,
          observe: (delivered) => metrics.alertDeliveries.inc({ outcome: delivered ? 'delivered' : 'failed' }),
        }),
      () =>
        deliverDueLedgerEvents({
          prisma,
          clock,
          logger,
          retryBaseMs: config.alertWebhookRetryBaseMs,
          target: webhookTargets,
          observe: (delivered) => metrics.alertDeliveries.inc({ outcome: delivered ? 'delivered' : 'failed' }),
        }),
      throttle(config.expiringSoonCheckMs, (now) => raiseExpiringSoonAlertsForAll(prisma, clock, now)),
      throttle(STATISTICS_CHECK_MS, () => analyzeGrownTables(database, 'changed')),
      throttle(GROWTH_CHECK_MS, () => analyzeGrownTables(database, 'grown')),
      throttle(REFUSAL_PURGE_MS, (now) => purgeRefusals(prisma, new Date(now.getTime() - config.refusalTtlHours * 3_600_000))),
    ],
  });

  // Requests being answered, which a graceful stop waits for. Event streams (subscriptions over
  // SSE) never end by themselves: they are closed with the connections instead.
  let draining = false;
  const inFlight = new Set<ServerResponse>();
  let drained: (() => void) | null = null;

  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? '/').split('?')[0];
    if (!(request.headers.accept ?? '').includes('text/event-stream')) {
      inFlight.add(response);
      response.once('close', () => {
        inFlight.delete(response);
        if (inFlight.size === 0) drained?.();
      });
    }
    // A request that arrives on a kept-alive connection while draining is still answered, but the
    // connection is not kept: the client's next request opens one to another instance.
    if (draining) response.setHeader('connection', 'close');
    if (path === '/healthz') return void handleHealth(response, true);
    if (path === '/readyz') return void readiness(response);
    if (path === '/metrics' && request.method === 'GET') return void handleMetrics(request, response);
    if (path === '/webhooks/stripe' && request.method === 'POST') return void handleStripeWebhook(request, response);
    if (path === '/ledger/export.ndjson' && request.method === 'GET') return void handleLedgerExport(request, response);
    return yoga(request, response);
  });

  function answerJson(response: ServerResponse, status: number, code: string, message: string): void {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ errors: [{ message, extensions: { code } }] }));
  }

  /**
   * GET /ledger/export.ndjson?from=<instant>&to=<instant>[&accountId=<id or external id>]: the ledger
   * entries dated in [from, to) as NDJSON, streamed a chunk at a time (ledger/ledgerHistory.ts), for
   * ADMIN keys only. Every request counts against its key's rate limit, or without a valid key its
   * address's, like one to /graphql: an export reads up to the whole ledger, a chunk at a time.
   */
  async function handleLedgerExport(request: IncomingMessage, response: ServerResponse): Promise<void> {
    try {
      const token = bearerToken(request.headers.authorization);
      const limited = token ? await security.consumeRateLimit(token) : null;
      if (limited) {
        const retryAfter = Number(limited.extensions.retryAfter);
        response.setHeader('retry-after', String(retryAfter));
        return answerJson(response, 429, TransportErrorCode.RATE_LIMITED, limited.message);
      }
      const actor = token ? await apiKeys.authenticate(token) : null;
      if (!actor) {
        const refused = await security.consumeUnauthenticated(request);
        return answerJson(response, refused ? 429 : 401, refused ? TransportErrorCode.RATE_LIMITED : ErrorCode.UNAUTHENTICATED, 'an ADMIN key is required (Authorization: Bearer <key>)');
      }
      if (actor.role !== 'ADMIN' || actor.session) return answerJson(response, 403, ErrorCode.FORBIDDEN, 'the ledger export is for ADMIN keys');
      const query = new URL(request.url ?? '/', 'http://localhost').searchParams;
      const from = parseInstant(query.get('from') ?? '');
      const to = parseInstant(query.get('to') ?? '');
      if (!from || !to || to.getTime() <= from.getTime()) {
        return answerJson(response, 400, ErrorCode.INVALID_INPUT, 'from and to must be ISO-8601 instants with Z or an offset, to after from');
      }
      const given = query.get('accountId');
      // PostgreSQL text cannot hold NUL: refused as /graphql refuses it, not a failed statement (500).
      if (given?.includes('\u0000')) return answerJson(response, 400, ErrorCode.INVALID_INPUT, 'accountId must not contain NUL characters');
      // The resolver looked the account up by id or external id: an unknown one (a mistyped id) is
      // refused as GraphQL refuses it, not answered as an account with no entries.
      const accountId = given === null ? null : ((await accountRefs.resolve(actor, [given])).get(given) ?? null);
      if (given !== null && accountId === null) return answerJson(response, 404, ErrorCode.ACCOUNT_NOT_FOUND, `account ${given} not found`);
      response.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store' });
      await exportLedger(prisma, { from, to, accountId }, response);
      response.end();
    } catch (error) {
      logger.error({ err: error }, 'ledger export failed');
      // Mid-stream, a cut connection (no final chunk) tells the client the export is incomplete.
      if (response.headersSent) response.destroy();
      else answerJson(response, isDatabaseUnavailable(error) ? 503 : 500, isDatabaseUnavailable(error) ? TransportErrorCode.UNAVAILABLE : TransportErrorCode.INTERNAL_SERVER_ERROR, 'the export failed');
    }
  }

  async function requestsFinished(timeoutMs: number): Promise<void> {
    if (inFlight.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      drained = resolve;
      timer = setTimeout(() => {
        logger.warn({ inFlight: inFlight.size }, 'shutdown deadline reached with requests still in flight');
        resolve();
      }, timeoutMs);
    });
    clearTimeout(timer);
  }

  /**
   * A request already sent but not yet taken in (its connection still in the listen backlog, or its
   * bytes not yet parsed while the event loop was busy with others) is lost if the server stops
   * listening or closes idle connections at the signal: the backlog is reset, and an unparsed
   * request counts as idle. So both wait until no request has been in flight for a moment; readiness
   * already says 503, and every answer meanwhile says `connection: close`.
   */
  async function requestsSettled(deadline: number): Promise<void> {
    do {
      await requestsFinished(Math.max(0, deadline - Date.now()));
      await new Promise((resolve) => setTimeout(resolve, 100));
    } while (inFlight.size > 0 && Date.now() < deadline);
  }

  /** The event type, read only from a body whose signature was verified (status 200 or 500). */
  function webhookEventType(body: Buffer): string {
    try {
      const type = (JSON.parse(body.toString('utf8')) as { type?: unknown }).type;
      return typeof type === 'string' && /^[a-z_.]{1,100}$/.test(type) ? type : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  /** Stripe signs the exact bytes it sent: the body is read raw, bounded, and never re-serialized. */
  async function handleStripeWebhook(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    };
    let body: Buffer | null = null;
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of request) {
        size += (chunk as Buffer).length;
        if (size > MAX_WEBHOOK_BYTES) {
          metrics.stripeWebhooks.inc({ type: 'unverified', outcome: 'too_large' });
          return reply(413, { error: { code: 'PAYLOAD_TOO_LARGE' } });
        }
        chunks.push(chunk as Buffer);
      }
      body = Buffer.concat(chunks);
      const signature = request.headers['stripe-signature'];
      const result = await purchases.handleWebhook(body, Array.isArray(signature) ? signature[0] : signature);
      const outcome = result.status === 200 ? 'processed' : result.status === 400 ? 'rejected' : result.status === 503 ? 'not_configured' : 'failed';
      metrics.stripeWebhooks.inc({ type: result.status === 200 ? webhookEventType(body) : 'unverified', outcome });
      reply(result.status, result.body);
    } catch (error) {
      // handleWebhook throws only after the signature was verified: the body's type can be trusted.
      metrics.stripeWebhooks.inc({ type: body ? webhookEventType(body) : 'unverified', outcome: 'failed' });
      logger.error({ err: error }, 'Stripe webhook failed; Stripe will deliver it again');
      reply(500, { error: { code: 'INTERNAL_SERVER_ERROR' } });
    }
  }

  const webSockets = attachWebSockets({
    server,
    yoga,
    prisma,
    apiKeys,
    consumeRateLimit: security.consumeRateLimit,
    checkParams: security.checkParams,
    consumeUnauthenticated: security.consumeUnauthenticated,
    limits: {
      maxPayloadBytes: options.security?.maxBodyBytes ?? config.maxRequestBodyBytes,
      maxSubscriptionsPerSocket: config.wsMaxSubscriptionsPerSocket,
      maxSocketsPerKey: config.wsMaxSocketsPerKey,
    },
    logger,
  });
  liveSockets = webSockets;

  // Idle connections outlive the clients' (and load balancers') own keep-alive, so that a client
  // never reuses a socket the server is closing at that moment (ECONNRESET under load).
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  let stopping: Promise<void> | null = null;
  const stop = async (): Promise<void> => {
    draining = true;
    for (const response of inFlight) if (!response.headersSent) response.setHeader('connection', 'close');
    await webSockets.dispose();
    await Promise.all([dueWorkRunner.stop(), requestsSettled(Date.now() + config.shutdownTimeoutMs)]);
    const closed = server.listening ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    server.closeIdleConnections();
    await overageInvoicer.drain();
    server.closeAllConnections();
    await closed;
    await revocations.return?.();
    redisWatch?.stop();
    await eventBus.close();
    await security.close();
    redisProbe?.disconnect();
    await database.close();
  };

  return {
    database,
    logger,
    metrics,
    dueWorkRunner,
    purchaseReconciler,
    start: () =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          const address = server.address() as AddressInfo;
          const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
          if (config.jobsEnabled) dueWorkRunner.start();
          resolve(`http://${host}:${address.port}`);
        });
      }),
    stop: () => (stopping ??= stop()),
  };
}
