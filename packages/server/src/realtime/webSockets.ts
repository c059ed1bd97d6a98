import type { IncomingMessage, Server } from 'node:http';
import { GraphQLError, execute as defaultExecute, subscribe as defaultSubscribe } from 'graphql';
import { useServer } from 'graphql-ws/use/ws';
import type { YogaServerInstance } from 'graphql-yoga';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import type { ApiKeyAuthenticator } from '../auth/apiKeys.ts';
import { TransportErrorCode } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import type { GraphQLContext } from '../graphql/context.ts';

/** What one key may hold open over graphql-ws; HTTP's body cap applies to every message. */
export interface WebSocketLimits {
  /** A larger message closes the socket (1009) before it is parsed: MAX_REQUEST_BODY_BYTES. */
  maxPayloadBytes: number;
  /** Operations running at once on one socket (WS_MAX_SUBSCRIPTIONS_PER_SOCKET). */
  maxSubscriptionsPerSocket: number;
  /** Sockets open at once with one key, on this instance (WS_MAX_SOCKETS_PER_KEY). */
  maxSocketsPerKey: number;
}

export const DEFAULT_WEBSOCKET_LIMITS: Omit<WebSocketLimits, 'maxPayloadBytes'> = { maxSubscriptionsPerSocket: 100, maxSocketsPerKey: 20 };

/** A socket refused or closed for its key's sake: the key is revoked (graphql-ws' own Forbidden). */
export const CLOSE_KEY_REVOKED = 4403;
/** Too many sockets for one key, or connection_init over the key's rate limit. */
export const CLOSE_TOO_MANY = 4429;

/** The keyId of a session token's actor (auth/sessionTokens.ts): `session:<id>`. */
const SESSION_KEY_PREFIX = 'session:';

export interface LiveSockets {
  readonly size: number;
  /** Closes (4403) every socket whose key has been revoked since it was opened. */
  closeRevoked(): Promise<void>;
  /** Closes every socket with 1001 (going away) and stops accepting. */
  dispose(): Promise<void>;
}

export interface LiveSocketsOptions {
  server: Server;
  // The yoga instance's server context is untyped (node's request and response).
  yoga: YogaServerInstance<Record<string, unknown>, GraphQLContext>;
  prisma: PrismaClient;
  apiKeys: ApiKeyAuthenticator;
  /** The HTTP rate limit, counted per key secret: null when allowed. */
  consumeRateLimit(secret: string): Promise<GraphQLError | null>;
  /** HTTP's checks of an operation's text and variables: null when they pass. */
  checkParams(params: { query?: string; variables?: unknown }): GraphQLError | null;
  /** The HTTP limit on requests without a valid key, counted per client address: null when allowed. */
  consumeUnauthenticated(request: IncomingMessage): Promise<GraphQLError | null>;
  limits: WebSocketLimits;
  logger: Logger;
}

function bearerToken(header: unknown): string | null {
  if (typeof header !== 'string') return null;
  return /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1] ?? null;
}

/** graphql-ws sends `extensions` as they are: the HTTP status meant for yoga's responses is dropped. */
function forSocket(error: GraphQLError): GraphQLError {
  const { http: _http, ...extensions } = error.extensions as Record<string, unknown>;
  return new GraphQLError(error.message, { nodes: error.nodes, path: error.path, extensions });
}

/** By name: graphql-armor may load graphql's other (CommonJS) build, whose errors are another class. */
function isGraphQLError(error: unknown): error is GraphQLError {
  return error instanceof Error && error.name === 'GraphQLError';
}

function operationError(code: string, message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code } });
}

/**
 * graphql-ws on the HTTP server's `/graphql`, with HTTP's limits: every operation counts against the
 * key's rate limit, a message is capped like a request body, subscriptions per socket and sockets
 * per key are capped, and a document that fails to parse or validate is an error for that operation
 * (the socket stays open). Sockets are remembered by key, so that revoking a key closes them.
 */
export function attachWebSockets(options: LiveSocketsOptions): LiveSockets {
  const { yoga, apiKeys, limits, logger } = options;
  const webSocketServer = new WebSocketServer({ server: options.server, path: '/graphql', maxPayload: limits.maxPayloadBytes });
  const socketsByKey = new Map<string, Set<WebSocket>>();
  /** Bumped by every revocation check: a socket whose key was verified before one is checked again. */
  let revocations = 0;

  function forget(keyId: string, socket: WebSocket): void {
    const sockets = socketsByKey.get(keyId);
    sockets?.delete(socket);
    if (sockets?.size === 0) socketsByKey.delete(keyId);
  }

  async function closeRevokedAmong(keyIds: string[]): Promise<void> {
    if (keyIds.length === 0) return;
    // Session tokens' sockets are remembered as `session:<id>` (their actor's keyId).
    const sessionIds = keyIds.filter((id) => id.startsWith(SESSION_KEY_PREFIX)).map((id) => id.slice(SESSION_KEY_PREFIX.length));
    const apiKeyIds = keyIds.filter((id) => !id.startsWith(SESSION_KEY_PREFIX));
    const [revokedKeys, revokedSessions] = await Promise.all([
      apiKeyIds.length ? options.prisma.apiKey.findMany({ where: { id: { in: apiKeyIds }, revokedAt: { not: null } }, select: { id: true } }) : [],
      sessionIds.length ? options.prisma.sessionToken.findMany({ where: { id: { in: sessionIds }, revokedAt: { not: null } }, select: { id: true } }) : [],
    ]);
    const revoked = [...revokedKeys.map(({ id }) => id), ...revokedSessions.map(({ id }) => `${SESSION_KEY_PREFIX}${id}`)];
    for (const id of revoked) {
      for (const socket of socketsByKey.get(id) ?? []) socket.close(CLOSE_KEY_REVOKED, 'API key or session revoked');
      socketsByKey.delete(id);
    }
  }

  const server = useServer<{ authorization?: string }>(
    {
      onConnect: async (context) => {
        const secret = bearerToken(context.connectionParams?.authorization);
        const { socket } = context.extra;
        // A connection without a valid key counts against its address, as an HTTP request does.
        const refuse = async () => {
          if (await options.consumeUnauthenticated(context.extra.request)) socket.close(CLOSE_TOO_MANY, 'too many connections without a valid API key from this address');
          return false;
        };
        if (secret === null) return refuse();
        if (await options.consumeRateLimit(secret)) {
          socket.close(CLOSE_TOO_MANY, 'rate limit of this API key exceeded');
          return false;
        }
        const checkedAt = revocations;
        const actor = await apiKeys.authenticate(secret);
        // A key that does not authenticate never gets a connection: graphql-ws closes it with 4403.
        if (actor === null) return refuse();
        const sockets = socketsByKey.get(actor.keyId) ?? new Set<WebSocket>();
        if (sockets.size >= limits.maxSocketsPerKey) {
          socket.close(CLOSE_TOO_MANY, `at most ${limits.maxSocketsPerKey} sockets per API key`);
          return false;
        }
        sockets.add(socket);
        socketsByKey.set(actor.keyId, sockets);
        socket.once('close', () => forget(actor.keyId, socket));
        if (actor.session) {
          // A session token's socket ends when the token does, as its HTTP requests would.
          const expiry = setTimeout(() => socket.close(CLOSE_KEY_REVOKED, 'session expired'), Math.max(0, actor.session.expiresAt.getTime() - Date.now()));
          socket.once('close', () => clearTimeout(expiry));
        }
        // The key may have been revoked while it was being verified, after that check looked.
        if (checkedAt !== revocations) await closeRevokedAmong([actor.keyId]);
        return true;
      },
      // The same envelop as HTTP: schema, context, plugins (query limits) and error masking are shared.
      onSubscribe: async (context, _id, payload) => {
        const running = Object.keys(context.subscriptions).length;
        if (running > limits.maxSubscriptionsPerSocket) {
          return [operationError(TransportErrorCode.TOO_MANY_SUBSCRIPTIONS, `at most ${limits.maxSubscriptionsPerSocket} operations at once on one socket`)];
        }
        const secret = bearerToken(context.connectionParams?.authorization);
        const limited = secret === null ? null : await options.consumeRateLimit(secret);
        if (limited) return [forSocket(limited)];
        const unfit = options.checkParams(payload);
        if (unfit) return [forSocket(unfit)];
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...context,
          req: context.extra.request,
          socket: context.extra.socket,
          params: payload,
        });
        let document;
        try {
          document = parse(payload.query);
        } catch (error) {
          if (isGraphQLError(error)) return [forSocket(error)];
          throw error;
        }
        const errors = validate(schema, document);
        if (errors.length > 0) return errors.map(forSocket);
        return {
          schema,
          operationName: payload.operationName,
          document,
          variableValues: payload.variables,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe },
        };
      },
      execute: (args) => (args.rootValue as { execute: typeof defaultExecute }).execute(args),
      subscribe: (args) => (args.rootValue as { subscribe: typeof defaultSubscribe }).subscribe(args),
    },
    webSocketServer,
  );

  return {
    get size() {
      return webSocketServer.clients.size;
    },
    async closeRevoked() {
      revocations += 1;
      try {
        await closeRevokedAmong([...socketsByKey.keys()]);
      } catch (error) {
        logger.error({ err: error }, 'could not check open WebSockets against revoked keys');
      }
    },
    dispose: async () => {
      await server.dispose();
    },
  };
}
