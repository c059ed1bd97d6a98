import { z } from 'zod';

/**
 * The only reader of `process.env`. Everything the server can be told lives here, validated, so that
 * a wrong value stops the start with one line naming the variable instead of a stack trace later.
 */
const configSchema = z
  .object({
    PORT: z
      .string()
      .regex(/^\d{1,5}$/, 'must be a port number from 0 to 65535')
      .transform(Number)
      .refine((port) => port <= 65535, 'must be a port number from 0 to 65535')
      .default('4000'),
    HOST: z.string().default('0.0.0.0'),
    DATABASE_URL: z
      .string()
      .refine((value) => /^postgres(ql)?:\/\//.test(value) && URL.canParse(value) && new URL(value).hostname !== '', 'must be a postgres:// or postgresql:// URL with a host')
      .optional(),
    DATA_DIR: z.string().default('./.data'),
    DATABASE_CONNECT_TIMEOUT_MS: z.coerce.number().int().min(0).max(3_600_000).default(300_000),
    DATABASE_POOL_SIZE: z.coerce.number().int().min(1).max(500).default(20),
    ADMIN_API_KEY: z.string().min(16, 'must be at least 16 characters').optional(),
    REDIS_URL: z
      .string()
      .refine((value) => /^rediss?:\/\//.test(value) && URL.canParse(value) && new URL(value).hostname !== '', 'must be a redis:// or rediss:// URL with a host')
      .optional(),
    STRIPE_SECRET_KEY: z.string().optional(),
    STRIPE_WEBHOOK_SECRET: z.string().optional(),
    STRIPE_API_BASE: z.string().url().optional(),
    STRIPE_RETURN_URL: z.string().url().max(2_048).optional(),
    PURCHASE_RECONCILE_AFTER_MS: z.coerce.number().int().min(1_000).max(7 * 86_400_000).default(600_000),
    SUBSCRIPTION_GRACE_PERIOD_HOURS: z.coerce.number().min(0).max(24 * 90).default(72),
    SUBSCRIPTION_FREE_PLAN_CODE: z.string().min(1).max(64).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    NODE_ENV: z.string().optional(),
    GRAPHQL_INTROSPECTION: z.enum(['true', 'false']).optional(),
    GRAPHIQL: z.enum(['true', 'false']).optional(),
    JOBS_ENABLED: z.enum(['true', 'false']).default('true'),
    JOBS_INTERVAL_MS: z.coerce.number().int().min(10).max(3_600_000).default(1000),
    ALERT_WEBHOOK_RETRY_BASE_MS: z.coerce.number().int().min(10).max(3_600_000).default(5000),
    ALERT_WEBHOOK_ALLOW_PRIVATE: z.enum(['true', 'false']).default('false'),
    ALERT_WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(10_000),
    EXPIRING_SOON_CHECK_MS: z.coerce.number().int().min(10).max(86_400_000).default(60_000),
    SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(0).max(600_000).default(25_000),
    RATE_LIMIT_PER_SECOND: z.coerce.number().int().min(1).max(1_000_000).default(1_000),
    RATE_LIMIT_BURST: z.coerce.number().int().min(0).max(10_000_000).default(5_000),
    UNAUTHENTICATED_RATE_LIMIT_PER_MINUTE: z.coerce.number().int().min(1).max(1_000_000).default(60),
    TRUST_PROXY: z.enum(['true', 'false']).default('false'),
    METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').max(256).optional(),
    USAGE_OCCURRED_AT_MAX_PAST_DAYS: z.coerce.number().int().min(0).max(3_660).default(35),
    USAGE_OCCURRED_AT_MAX_FUTURE_MINUTES: z.coerce.number().int().min(0).max(1_440).default(5),
    API_KEY_CACHE_MS: z.coerce.number().int().min(0).max(60_000).default(5_000),
    USAGE_BATCH_CONCURRENCY: z.coerce.number().int().min(0).max(500).default(2),
    USAGE_BATCH_MAX: z.coerce.number().int().min(1).max(1_000).default(200),
    IDEMPOTENCY_REFUSAL_TTL_HOURS: z.coerce.number().int().min(24).max(24 * 366).default(24),
    MAX_REQUEST_BODY_BYTES: z.coerce.number().int().min(1_024).max(100 * 1024 * 1024).default(512 * 1024),
    QUERY_COST_LIMIT: z.coerce.number().int().min(100).max(10_000_000).default(75_000),
    QUERY_COST_BUDGET: z.coerce.number().int().min(100).max(100_000_000).optional(),
    WS_MAX_SUBSCRIPTIONS_PER_SOCKET: z.coerce.number().int().min(1).max(10_000).default(100),
    WS_MAX_SOCKETS_PER_KEY: z.coerce.number().int().min(1).max(100_000).default(20),
  })
  .superRefine((env, context) => {
    if (env.STRIPE_SECRET_KEY && !env.STRIPE_WEBHOOK_SECRET) {
      context.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['STRIPE_WEBHOOK_SECRET'],
        message: 'is required when STRIPE_SECRET_KEY is set',
      });
    }
  });

export interface AppConfig {
  port: number;
  host: string;
  /** Absent: the embedded database under `dataDir`. */
  databaseUrl?: string;
  /** Where the embedded database keeps its files; `memory://` keeps nothing. */
  dataDir: string;
  databasePoolSize: number;
  /** How long a start keeps retrying an unreachable DATABASE_URL (listening, unready) before it exits. */
  databaseConnectTimeoutMs: number;
  adminApiKey?: string;
  redisUrl?: string;
  stripe?: { secretKey: string; webhookSecret: string; apiBase?: string; returnUrl?: string };
  /** A purchase still pending this long is checked against Stripe by the job runner. */
  purchaseReconcileAfterMs: number;
  /** Plans sold through Stripe: the grace after a failed renewal, and the plan an ended subscription moves to. */
  subscriptions: { graceMs: number; freePlanCode: string | null };
  logLevel: string;
  production: boolean;
  /**
   * NODE_ENV=development, set explicitly: unexpected errors reach the client with their message and
   * stack. Unset (a plain `pnpm start`), they are masked as in production.
   */
  development: boolean;
  introspection: boolean;
  /** GraphiQL at GET /graphql for a browser: on unless NODE_ENV=production or GRAPHIQL=false. */
  graphiql: boolean;
  jobsEnabled: boolean;
  /** Pause between polls of the due-work runner when nothing was due. */
  jobsIntervalMs: number;
  /** First retry delay of a failed alert webhook delivery (doubling after). */
  alertWebhookRetryBaseMs: number;
  /** Development only: alert webhooks may use plain http and reach loopback and private addresses. */
  alertWebhookAllowPrivate: boolean;
  /** How long one alert webhook delivery may take before it counts as failed. */
  alertWebhookTimeoutMs: number;
  /** How often the runner looks for credits about to expire (EXPIRING_SOON alerts). */
  expiringSoonCheckMs: number;
  /** After SIGTERM, how long in-flight work may take before the process exits anyway. */
  shutdownTimeoutMs: number;
  /** Requests per second per API key, and the burst allowed on top over 10 s. */
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  /** Requests a minute per client address without a valid key. */
  unauthenticatedPerMinute: number;
  /** Behind a reverse proxy: the client address is the last X-Forwarded-For entry. */
  trustProxy: boolean;
  /** When set, GET /metrics needs `Authorization: Bearer <token>`. */
  metricsToken?: string;
  /** How far before and after the account's now a usage's occurredAt may lie. */
  occurredAtWindow: { maxPastDays: number; maxFutureMinutes: number };
  /** How long a verified API key is trusted without a lookup; revocations clear it at once (0: never cache). */
  apiKeyCacheMs: number;
  /**
   * recordUsage charges in flight at once before arriving ones wait and go together as one batch
   * (group commit); 0 charges every usage alone.
   */
  usageBatchConcurrency: number;
  /** The most usages charged together in one batch. */
  usageBatchMax: number;
  /** The largest request body accepted (413 beyond), and the largest WebSocket message. */
  maxRequestBodyBytes: number;
  /** How long a refused usage or hold key keeps its refusal as its answer (at least a day). */
  refusalTtlHours: number;
  /** The most one operation may cost, computed with its variables (QUERY_TOO_COSTLY beyond). */
  queryCostLimit: number;
  /** Cost units of costly operations executing at once; absent: the limit (one maximal operation at a time). */
  queryCostBudget?: number;
  /** Operations running at once on one WebSocket. */
  wsMaxSubscriptionsPerSocket: number;
  /** WebSockets open at once with one API key, per instance. */
  wsMaxSocketsPerKey: number;
}

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): AppConfig {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== ''));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = issue?.path.join('.') ?? 'environment';
    throw new ConfigError(`configuration error: ${variable} ${issue?.message ?? 'is invalid'}`);
  }
  const values = parsed.data;
  const production = values.NODE_ENV === 'production';
  return {
    port: values.PORT,
    host: values.HOST,
    databaseUrl: values.DATABASE_URL,
    dataDir: values.DATA_DIR,
    databasePoolSize: values.DATABASE_POOL_SIZE,
    databaseConnectTimeoutMs: values.DATABASE_CONNECT_TIMEOUT_MS,
    adminApiKey: values.ADMIN_API_KEY,
    redisUrl: values.REDIS_URL,
    purchaseReconcileAfterMs: values.PURCHASE_RECONCILE_AFTER_MS,
    stripe:
      values.STRIPE_SECRET_KEY && values.STRIPE_WEBHOOK_SECRET
        ? { secretKey: values.STRIPE_SECRET_KEY, webhookSecret: values.STRIPE_WEBHOOK_SECRET, apiBase: values.STRIPE_API_BASE, returnUrl: values.STRIPE_RETURN_URL }
        : undefined,
    subscriptions: { graceMs: values.SUBSCRIPTION_GRACE_PERIOD_HOURS * 3_600_000, freePlanCode: values.SUBSCRIPTION_FREE_PLAN_CODE ?? null },
    logLevel: values.LOG_LEVEL,
    production,
    development: values.NODE_ENV === 'development',
    introspection: values.GRAPHQL_INTROSPECTION ? values.GRAPHQL_INTROSPECTION === 'true' : !production,
    graphiql: values.GRAPHIQL ? values.GRAPHIQL === 'true' : !production,
    jobsEnabled: values.JOBS_ENABLED === 'true',
    jobsIntervalMs: values.JOBS_INTERVAL_MS,
    alertWebhookRetryBaseMs: values.ALERT_WEBHOOK_RETRY_BASE_MS,
    alertWebhookAllowPrivate: values.ALERT_WEBHOOK_ALLOW_PRIVATE === 'true',
    alertWebhookTimeoutMs: values.ALERT_WEBHOOK_TIMEOUT_MS,
    expiringSoonCheckMs: values.EXPIRING_SOON_CHECK_MS,
    shutdownTimeoutMs: values.SHUTDOWN_TIMEOUT_MS,
    rateLimitPerSecond: values.RATE_LIMIT_PER_SECOND,
    rateLimitBurst: values.RATE_LIMIT_BURST,
    unauthenticatedPerMinute: values.UNAUTHENTICATED_RATE_LIMIT_PER_MINUTE,
    trustProxy: values.TRUST_PROXY === 'true',
    metricsToken: values.METRICS_TOKEN,
    occurredAtWindow: { maxPastDays: values.USAGE_OCCURRED_AT_MAX_PAST_DAYS, maxFutureMinutes: values.USAGE_OCCURRED_AT_MAX_FUTURE_MINUTES },
    apiKeyCacheMs: values.API_KEY_CACHE_MS,
    usageBatchConcurrency: values.USAGE_BATCH_CONCURRENCY,
    usageBatchMax: values.USAGE_BATCH_MAX,
    maxRequestBodyBytes: values.MAX_REQUEST_BODY_BYTES,
    refusalTtlHours: values.IDEMPOTENCY_REFUSAL_TTL_HOURS,
    queryCostLimit: values.QUERY_COST_LIMIT,
    queryCostBudget: values.QUERY_COST_BUDGET,
    wsMaxSubscriptionsPerSocket: values.WS_MAX_SUBSCRIPTIONS_PER_SOCKET,
    wsMaxSocketsPerKey: values.WS_MAX_SOCKETS_PER_KEY,
  };
}
