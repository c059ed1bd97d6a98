import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { EnvelopArmor } from '@escape.tech/graphql-armor';
import { useCSRFPrevention } from '@graphql-yoga/plugin-csrf-prevention';
import { GraphQLError, type ValidationContext, type ValidationRule } from 'graphql';
import { createGraphQLError, type Plugin } from 'graphql-yoga';
import type { Redis } from 'ioredis';
import type { RedisWatch } from '../realtime/redisWatch.ts';
import { DEFAULT_QUERY_COST_BUDGET, DEFAULT_QUERY_COST_LIMIT, useQueryCost, type QueryCostOptions } from './queryCost.ts';
import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

/**
 * Limits against hostile operations. A legitimate client (the SDK's documents, GraphiQL) stays far
 * below each; an attacker hits one before the query reaches a resolver or the database.
 */
export const QUERY_LIMITS = {
  /** Nesting of selections (fragments flattened); the deepest SDK document is 7. */
  maxDepth: 10,
  /** Aliases per operation: stops one request from running a field hundreds of times. */
  maxAliases: 15,
  /** Directives per operation (`@include` flooding). */
  maxDirectives: 50,
  /** Lexer tokens per document, counted while parsing, so an enormous document is never built. */
  maxTokens: 2_000,
  /** Cost computed with the variables (queryCost.ts, the Pothos complexity plugin's calculation). */
  maxCost: DEFAULT_QUERY_COST_LIMIT,
} as const;

export interface RateLimitOptions {
  /** Sustained requests per second per API key. */
  perSecond: number;
  /** Extra requests a key may make over `burstWindowSeconds` once its per-second allowance is spent. */
  burst: number;
  burstWindowSeconds: number;
  /** Namespace of the counters in Redis (instances sharing one count share the prefix). */
  keyPrefix: string;
}

export const DEFAULT_RATE_LIMIT: RateLimitOptions = { perSecond: 1_000, burst: 5_000, burstWindowSeconds: 10, keyPrefix: 'billing:rate' };

/** How long a start waits for the rate limiter's Redis before counting per instance. */
const REDIS_READY_WAIT_MS = 3_000;

/** Bodies larger than this are refused with 413 before they are parsed (usage metadata is at most 16 KiB). */
export const DEFAULT_MAX_BODY_BYTES = 512 * 1024;

/** Browsers send this header only from scripts, which a cross-site form or `<img>` cannot do. */
export const CSRF_HEADER = 'x-billing-client';

export interface SecurityOptions {
  production: boolean;
  introspection: boolean;
  /** With Redis, instances share each key's count; without (or while it is away), each instance counts alone. */
  redisUrl?: string;
  /** Reports the rate limiter's Redis connection going away and coming back. */
  redisWatch?: RedisWatch;
  rateLimit?: Partial<RateLimitOptions>;
  maxBodyBytes?: number;
  /** The most an operation may cost, and the cost units executing at once (queryCost.ts). */
  queryCost?: Partial<QueryCostOptions>;
  /** Requests a minute from one client address that carry no key or a key that does not authenticate. */
  unauthenticatedPerMinute?: number;
  /** Behind a reverse proxy: the client address is the last one X-Forwarded-For names. */
  trustProxy?: boolean;
}

export const DEFAULT_UNAUTHENTICATED_PER_MINUTE = 60;

/** The address a request came from; with `trustProxy`, as the nearest proxy saw it. */
export function clientAddress(request: Pick<IncomingMessage, 'headers' | 'socket'>, trustProxy: boolean): string {
  if (trustProxy) {
    const forwarded = request.headers['x-forwarded-for'];
    const last = (Array.isArray(forwarded) ? forwarded.join(',') : forwarded ?? '').split(',').map((part) => part.trim()).filter(Boolean).at(-1);
    if (last && last.length <= 64) return last;
  }
  return request.socket.remoteAddress ?? 'unknown';
}

export interface SecurityPlugins {
  plugins: Array<Plugin>;
  /**
   * Counts one operation against the rate limit of the key with this bearer secret: null when
   * allowed, else the RATE_LIMITED error. WebSocket operations are counted here like HTTP requests.
   */
  consumeRateLimit(secret: string): Promise<GraphQLError | null>;
  /**
   * Counts a request without a valid key against its client address (guessing keys, or hammering
   * without one, costs a lookup each): null when allowed, else the RATE_LIMITED error.
   */
  consumeUnauthenticated(request: Pick<IncomingMessage, 'headers' | 'socket'>): Promise<GraphQLError | null>;
  /**
   * The checks of an operation's text and variables that HTTP makes before parsing (nesting, text
   * PostgreSQL cannot store): null when they pass. WebSocket operations are checked here too.
   */
  checkParams(params: { query?: string; variables?: unknown }): GraphQLError | null;
  close(): Promise<void>;
}

function rejection(code: string, message: string, status: number, headers?: Record<string, string>): GraphQLError {
  return createGraphQLError(message, { extensions: { code, http: { status, ...(headers ? { headers } : {}) } } });
}

/** graphql-armor's errors carry no code: give each limit its own, so clients can tell them apart. */
function coded(code: string) {
  return [(_context: ValidationContext | null, error: GraphQLError) => void Object.assign(error.extensions, { code })];
}

const refuseIntrospection: ValidationRule = (context) => ({
  Field(node) {
    if (node.name.value === '__schema' || node.name.value === '__type') {
      context.reportError(new GraphQLError('introspection is disabled on this server', { nodes: [node], extensions: { code: 'INTROSPECTION_DISABLED' } }));
    }
  },
});

/** PostgreSQL stores neither in text or JSON: refused up front instead of failing deep in a transaction. */
const UNSTORABLE_TEXT = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** A NUL written as an escape inside a GraphQL string literal (the lexer refuses lone surrogates itself). */
const UNSTORABLE_ESCAPE = /\\u0000|\\u\{0+\}|\u0000/i;

/** Variables nested deeper than any input of the schema needs (JSON metadata included). */
export const MAX_VARIABLE_DEPTH = 64;

/** How deep `value` nests, counted without recursion so that a hostile depth cannot overflow the stack. */
function exceedsDepth(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (!current || typeof current !== 'object') continue;
    if (depth >= limit) return true;
    for (const item of Array.isArray(current) ? current : Object.values(current)) stack.push([item, depth + 1]);
  }
  return false;
}

function containsUnstorableText(value: unknown): boolean {
  if (typeof value === 'string') return UNSTORABLE_TEXT.test(value);
  if (Array.isArray(value)) return value.some(containsUnstorableText);
  if (value && typeof value === 'object') return Object.entries(value).some(([key, item]) => UNSTORABLE_TEXT.test(key) || containsUnstorableText(item));
  return false;
}

function bearerSecret(request: Request): string | null {
  return /^Bearer\s+(\S+)\s*$/i.exec(request.headers.get('authorization') ?? '')?.[1] ?? null;
}

/**
 * The digest, not the key's row id: counting starts before (and without) a database lookup, and
 * instances on different databases holding the same key still share its count.
 */
function rateLimitKey(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Reads at most `limit` bytes of the body; a chunked body gives no length to check up front. */
async function readBounded(request: Request, limit: number): Promise<string> {
  if (!request.body) return '';
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw tooLarge(limit);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function tooLarge(limit: number): GraphQLError {
  return rejection('PAYLOAD_TOO_LARGE', `the request body exceeds ${limit} bytes`, 413);
}

/**
 * With Redis the count is shared; while Redis is away (not connected, or a command fails) the
 * insurance limiter counts in this instance alone with the same limits, so requests go on.
 */
function makeLimiter(redis: Redis | null, keyPrefix: string, points: number, duration: number): RateLimiterAbstract {
  return redis
    ? new RateLimiterRedis({
        storeClient: redis,
        keyPrefix,
        points,
        duration,
        rejectIfRedisNotReady: true,
        insuranceLimiter: new RateLimiterMemory({ keyPrefix, points, duration }),
      })
    : new RateLimiterMemory({ keyPrefix, points, duration });
}

function createRateLimiter(options: RateLimitOptions, redis: Redis | null): BurstyRateLimiter {
  return new BurstyRateLimiter(
    makeLimiter(redis, `${options.keyPrefix}:second`, options.perSecond, 1),
    makeLimiter(redis, `${options.keyPrefix}:burst`, options.burst, options.burstWindowSeconds),
  );
}

/**
 * The HTTP-facing protections, as yoga plugins: request size, CSRF, rate limit per API key, query
 * limits, introspection and (in production) no field suggestions that would map the schema.
 */
export async function createSecurityPlugins(options: SecurityOptions): Promise<SecurityPlugins> {
  const rateLimit = { ...DEFAULT_RATE_LIMIT, ...options.rateLimit };
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  // ioredis is loaded only when Redis is configured, so that a single instance never holds it.
  // No offline queue: a count Redis cannot take now falls to the insurance limiter at once.
  const redis = options.redisUrl ? new (await import('ioredis')).Redis(options.redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false }) : null;
  if (redis) {
    if (options.redisWatch) options.redisWatch.watch(redis, 'rate limits');
    else redis.on('error', () => {});
    // A healthy start counts in Redis from the first request; a Redis that is away delays it briefly.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, REDIS_READY_WAIT_MS);
      redis.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  const limiter = createRateLimiter(rateLimit, redis);
  const unauthenticatedPerMinute = options.unauthenticatedPerMinute ?? DEFAULT_UNAUTHENTICATED_PER_MINUTE;
  const unauthenticatedLimiter = makeLimiter(redis, `${rateLimit.keyPrefix}:unauthenticated`, unauthenticatedPerMinute, 60);
  const addresses = new WeakMap<Request, string>();
  const csrf = useCSRFPrevention({ requestHeaders: [CSRF_HEADER] });

  const armor = new EnvelopArmor({
    maxDepth: { n: QUERY_LIMITS.maxDepth, flattenFragments: true, onReject: coded('QUERY_TOO_DEEP') },
    maxAliases: { n: QUERY_LIMITS.maxAliases, onReject: coded('TOO_MANY_ALIASES') },
    maxDirectives: { n: QUERY_LIMITS.maxDirectives, onReject: coded('TOO_MANY_DIRECTIVES') },
    maxTokens: { n: QUERY_LIMITS.maxTokens, onReject: coded('TOO_MANY_TOKENS') },
    // Cost is queryCost.ts's: graphql-armor's multiplies only literal `first` values, not variables.
    costLimit: { enabled: false },
    blockFieldSuggestion: { enabled: options.production },
  });

  async function consumeRateLimit(secret: string): Promise<GraphQLError | null> {
    try {
      await limiter.consume(rateLimitKey(secret));
      return null;
    } catch (error) {
      if (!(error instanceof RateLimiterRes)) throw error;
      const retryAfter = Math.max(1, Math.ceil(error.msBeforeNext / 1000));
      return createGraphQLError(`rate limit of ${rateLimit.perSecond} requests per second for this API key exceeded`, {
        extensions: { code: 'RATE_LIMITED', retryAfter, http: { status: 429, headers: { 'Retry-After': String(retryAfter) } } },
      });
    }
  }

  async function consumeAddress(address: string): Promise<GraphQLError | null> {
    try {
      await unauthenticatedLimiter.consume(address);
      return null;
    } catch (error) {
      if (!(error instanceof RateLimiterRes)) throw error;
      const retryAfter = Math.max(1, Math.ceil(error.msBeforeNext / 1000));
      return createGraphQLError(`too many requests without a valid API key from this address (${unauthenticatedPerMinute} a minute)`, {
        extensions: { code: 'RATE_LIMITED', retryAfter, http: { status: 429, headers: { 'Retry-After': String(retryAfter) } } },
      });
    }
  }

  const consumeUnauthenticated = (request: Pick<IncomingMessage, 'headers' | 'socket'>) => consumeAddress(clientAddress(request, options.trustProxy ?? false));

  const httpGuard: Plugin = {
    onRequest({ request, serverContext }) {
      const incoming = (serverContext as { req?: IncomingMessage } | undefined)?.req;
      if (incoming) addresses.set(request, clientAddress(incoming, options.trustProxy ?? false));
    },
    async onRequestParse(payload) {
      const { request } = payload;
      const declared = Number(request.headers.get('content-length') ?? 0);
      if (declared > maxBodyBytes) throw tooLarge(maxBodyBytes);
      // Throws the plugin's own 403; recoded so that clients see a stable code.
      try {
        (csrf.onRequestParse as (input: typeof payload) => void)(payload);
      } catch {
        throw rejection('CSRF_HEADER_REQUIRED', `a request that a browser could send cross-site needs the ${CSRF_HEADER} header (or content-type: application/json)`, 403);
      }
      const secret = bearerSecret(request);
      const refused = secret ? await consumeRateLimit(secret) : await consumeAddress(addresses.get(request) ?? 'unknown');
      if (refused) throw refused;
      if (request.method === 'POST' && !request.headers.has('content-length') && /json/i.test(request.headers.get('content-type') ?? '')) {
        const text = await readBounded(request, maxBodyBytes);
        payload.setRequestParser(async () => {
          try {
            return JSON.parse(text);
          } catch {
            throw rejection('BAD_REQUEST', 'the request body is not valid JSON', 400);
          }
        });
      }
    },
  };

  function checkParams(params: { query?: string; variables?: unknown }): GraphQLError | null {
    if (exceedsDepth(params.variables, MAX_VARIABLE_DEPTH)) {
      return rejection('INVALID_INPUT', `variables must not nest more than ${MAX_VARIABLE_DEPTH} levels deep`, 400);
    }
    if (UNSTORABLE_ESCAPE.test(params.query ?? '') || containsUnstorableText(params.variables)) {
      return rejection('INVALID_INPUT', 'text must not contain NUL characters or unpaired UTF-16 surrogates', 400);
    }
    return null;
  }

  const textGuard: Plugin = {
    onParams({ params }) {
      const refused = checkParams(params);
      if (refused) throw refused;
    },
  };

  const introspectionGuard: Plugin = {
    onValidate({ addValidationRule }) {
      if (!options.introspection) addValidationRule(refuseIntrospection);
    },
  };

  // graphql-js reports variables it cannot coerce (a float for an Int, an unknown enum value) with
  // no code; they are the client's input errors like any other.
  const codedInputErrors: Plugin = {
    onExecute() {
      return {
        onExecuteDone({ result, setResult }) {
          if (!('errors' in result) || !result.errors?.some((error) => !error.extensions?.code && !error.path)) return;
          setResult({
            ...result,
            errors: result.errors.map((error) =>
              error.extensions?.code || error.path ? error : new GraphQLError(error.message, { nodes: error.nodes, extensions: { ...error.extensions, code: 'INVALID_INPUT' } }),
            ),
          });
        },
      };
    },
  };

  return {
    plugins: [
      httpGuard,
      textGuard,
      codedInputErrors,
      ...(armor.protect().plugins as Array<Plugin>),
      introspectionGuard,
      useQueryCost({ limit: DEFAULT_QUERY_COST_LIMIT, budget: DEFAULT_QUERY_COST_BUDGET, ...options.queryCost }),
    ],
    consumeRateLimit,
    checkParams,
    consumeUnauthenticated,
    close: async () => {
      redis?.disconnect();
    },
  };
}
