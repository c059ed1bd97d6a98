import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GraphQLError } from 'graphql';
import { createYoga, maskError as defaultMaskError } from 'graphql-yoga';
import { pino, type Logger } from 'pino';
import { authenticate, ensureOperatorKey } from './auth/apiKeys.ts';
import type { AppConfig } from './config.ts';
import { openDatabase, type Database } from './db/database.ts';
import { applyMigrations, migrationsAreApplied } from './db/migrations.ts';
import { systemClock, type Clock } from './domain/clock.ts';
import { BillingError } from './domain/errors.ts';
import type { GraphQLContext } from './graphql/context.ts';
import { createLoaders } from './graphql/loaders.ts';
import { schema } from './graphql/schema.ts';
import { DueWorkRunner, throttle } from './jobs/dueWorkRunner.ts';
import { raiseExpiringSoonAlertsForAll } from './jobs/expiringSoon.ts';
import { deliverDueAlerts } from './alerts/alertWebhooks.ts';
import { attachEventPublisher } from './realtime/events.ts';
import { createEventBus } from './realtime/pubsub.ts';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';
import { execute as defaultExecute, subscribe as defaultSubscribe } from 'graphql';
import { PurchaseService } from './stripe/purchaseService.ts';
import { StripeGateway } from './stripe/stripeGateway.ts';

export interface App {
  /** Runs renewals, expiries and hold timeouts; started with the server unless JOBS_ENABLED=false. */
  dueWorkRunner: DueWorkRunner;
  /** Listens on the configured port (0: any free port) and resolves with the base URL. */
  start(): Promise<string>;
  stop(): Promise<void>;
  database: Database;
  logger: Logger;
}

export interface AppOptions {
  clock?: Clock;
  logger?: Logger;
}

const MAX_WEBHOOK_BYTES = 1024 * 1024;

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

/**
 * Expected failures (BillingError) reach the client with their stable code; GraphQL's own errors
 * (validation, coercion) pass as they are; anything else is masked as an internal error and logged.
 */
function createErrorMasker(logger: Logger, production: boolean) {
  return (error: unknown, message: string): Error => {
    const original = rootCause(error);
    if (original instanceof BillingError) {
      const graphQLError = isGraphQLError(error) ? error : undefined;
      return new GraphQLError(original.message, {
        nodes: graphQLError?.nodes,
        path: graphQLError?.path,
        extensions: { code: original.code, ...original.details },
      });
    }
    if (isGraphQLError(original) && isGraphQLError(error)) return error;
    logger.error({ err: original }, 'unexpected error');
    const masked = defaultMaskError(error, message, !production);
    return isGraphQLError(masked)
      ? new GraphQLError(masked.message, { nodes: masked.nodes, path: masked.path, extensions: { ...masked.extensions, code: 'INTERNAL_SERVER_ERROR' } })
      : masked;
  };
}

/** Builds the whole service: database, GraphQL over HTTP, health. Nothing listens until start(). */
export async function buildApp(config: AppConfig, options: AppOptions = {}): Promise<App> {
  const logger = options.logger ?? pino({ level: config.logLevel });
  const clock = options.clock ?? systemClock;
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: config.databasePoolSize });
  const applied = await applyMigrations(database);
  if (applied.length > 0) logger.info({ migrations: applied }, 'migrations applied');
  if (config.adminApiKey) await ensureOperatorKey(database.prisma, config.adminApiKey, clock.now());
  const { prisma } = database;
  const purchases = new PurchaseService(prisma, clock, config.stripe ? new StripeGateway(config.stripe) : null, logger);
  const eventBus = createEventBus(config.redisUrl);
  attachEventPublisher(prisma, eventBus.publisher);
  const { pubSub } = eventBus;

  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    graphqlEndpoint: '/graphql',
    graphiql: !config.production,
    landingPage: false,
    logging: false,
    maskedErrors: { maskError: createErrorMasker(logger, config.production) },
    // HTTP requests carry the key in their Authorization header; WebSocket operations in the
    // graphql-ws connection_init payload (`connectionParams`), checked once when the socket opens.
    context: async (initial) => {
      const connectionParams = initial.connectionParams as { authorization?: unknown } | undefined;
      const header =
        typeof connectionParams?.authorization === 'string' ? connectionParams.authorization : initial.request.headers.get('authorization');
      const token = bearerToken(header);
      return { prisma, clock, actor: token ? await authenticate(prisma, token) : null, loaders: createLoaders(prisma), purchases, pubSub };
    },
  });

  async function handleHealth(response: ServerResponse, ready: boolean) {
    response.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ status: ready ? 'ok' : 'unavailable' }));
  }

  const dueWorkRunner = new DueWorkRunner({
    prisma,
    clock,
    logger,
    intervalMs: config.jobsIntervalMs,
    concurrency: Math.max(1, Math.min(8, Math.floor(config.databasePoolSize / 4))),
    tasks: [
      (now) => purchases.retryStalePending(now),
      () => deliverDueAlerts({ prisma, clock, logger, retryBaseMs: config.alertWebhookRetryBaseMs }),
      throttle(config.expiringSoonCheckMs, (now) => raiseExpiringSoonAlertsForAll(prisma, clock, now)),
    ],
  });

  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path === '/healthz') return void handleHealth(response, true);
    if (path === '/readyz') {
      return void (async () => {
        const ready = (await database.ping()) && (await migrationsAreApplied(database).catch(() => false));
        await handleHealth(response, ready);
      })();
    }
    if (path === '/webhooks/stripe' && request.method === 'POST') return void handleStripeWebhook(request, response);
    return yoga(request, response);
  });

  /** Stripe signs the exact bytes it sent: the body is read raw, bounded, and never re-serialized. */
  async function handleStripeWebhook(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    };
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of request) {
        size += (chunk as Buffer).length;
        if (size > MAX_WEBHOOK_BYTES) return reply(413, { error: { code: 'PAYLOAD_TOO_LARGE' } });
        chunks.push(chunk as Buffer);
      }
      const signature = request.headers['stripe-signature'];
      const result = await purchases.handleWebhook(Buffer.concat(chunks), Array.isArray(signature) ? signature[0] : signature);
      reply(result.status, result.body);
    } catch (error) {
      logger.error({ err: error }, 'Stripe webhook failed; Stripe will deliver it again');
      reply(500, { error: { code: 'INTERNAL_SERVER_ERROR' } });
    }
  }

  const webSocketServer = new WebSocketServer({ server, path: '/graphql' });
  const webSockets = useServer<{ authorization?: string }>(
    {
      // A key that does not authenticate never gets a connection: graphql-ws closes it with 4403.
      onConnect: async (context) => {
        const token = bearerToken(typeof context.connectionParams?.authorization === 'string' ? context.connectionParams.authorization : null);
        return token !== null && (await authenticate(prisma, token)) !== null;
      },
      // The same envelop as HTTP: schema, context, plugins and error masking are shared.
      onSubscribe: async (context, _id, payload) => {
        const { schema: envelopedSchema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...context,
          req: context.extra.request,
          socket: context.extra.socket,
          params: payload,
        });
        const args = {
          schema: envelopedSchema,
          operationName: payload.operationName,
          document: parse(payload.query),
          variableValues: payload.variables,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe },
        };
        const errors = validate(args.schema, args.document);
        return errors.length > 0 ? errors : args;
      },
      execute: (args) => (args.rootValue as { execute: typeof defaultExecute }).execute(args),
      subscribe: (args) => (args.rootValue as { subscribe: typeof defaultSubscribe }).subscribe(args),
    },
    webSocketServer,
  );

  // Idle connections outlive the clients' (and load balancers') own keep-alive, so that a client
  // never reuses a socket the server is closing at that moment (ECONNRESET under load).
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  return {
    database,
    logger,
    dueWorkRunner,
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
    stop: async () => {
      await dueWorkRunner.stop();
      await webSockets.dispose();
      await eventBus.close();
      if (server.listening) {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
      }
      await database.close();
    },
  };
}
