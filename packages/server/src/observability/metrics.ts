import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Label values a client chooses (operation names) are capped so that series cannot grow without end. */
const MAX_OPERATION_NAMES = 200;

export interface PoolStats {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
}

export interface JobQueueStats {
  dueAccounts: number;
  oldestDueSeconds: number;
}

export interface MetricsSources {
  /** Connections of this instance's PostgreSQL pool; null on the embedded database. */
  pool: () => PoolStats | null;
  /** Accounts due for renewal, expiry or hold timeout and not yet processed. */
  jobQueue: () => Promise<JobQueueStats>;
  openWebSockets: () => number;
}

/**
 * The service's metrics in a registry of its own: several apps share a process in the tests, and
 * prom-client's global registry would mix them.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly operationNames = new Set<string>();

  readonly operations = new Counter({
    name: 'graphql_operations_total',
    help: 'GraphQL operations by name, type and outcome (ok, refused: a business refusal, error)',
    labelNames: ['operation', 'type', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly operationDuration = new Histogram({
    name: 'graphql_operation_duration_seconds',
    help: 'Time from the request arriving to the operation finishing',
    labelNames: ['operation', 'type', 'outcome'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });

  readonly creditsDebited = new Counter({
    name: 'billing_credits_debited_total',
    help: 'Credits charged by recordUsage and settleReservation (replays not counted)',
    labelNames: ['credit_type'] as const,
    registers: [this.registry],
  });

  readonly creditsGranted = new Counter({
    name: 'billing_credits_granted_total',
    help: 'Credits granted by grantCredits (replays not counted)',
    labelNames: ['credit_type', 'source'] as const,
    registers: [this.registry],
  });

  readonly refusals = new Counter({
    name: 'billing_refusals_total',
    help: 'Usage and holds refused, by operation and reason',
    labelNames: ['operation', 'reason'] as const,
    registers: [this.registry],
  });

  readonly alertsRaised = new Counter({
    name: 'billing_alerts_raised_total',
    help: 'Alerts raised (published after commit) by this instance, by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  readonly alertDeliveries = new Counter({
    name: 'billing_alert_webhook_deliveries_total',
    help: 'Alert webhook POSTs by outcome (delivered, failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });

  readonly stripeWebhooks = new Counter({
    name: 'billing_stripe_webhook_events_total',
    help: 'Stripe webhook deliveries by event type (unverified when the signature failed) and outcome',
    labelNames: ['type', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly usageBatchSize = new Histogram({
    name: 'billing_usage_batch_size',
    help: 'recordUsage calls charged together in one statement (group commit), per statement',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers: [this.registry],
  });

  readonly usageBatchHandedBack = new Counter({
    name: 'billing_usage_batch_handed_back_total',
    help: 'recordUsage calls a batch of several could not charge and handed back to be charged alone',
    registers: [this.registry],
  });

  constructor(sources: MetricsSources) {
    collectDefaultMetrics({ register: this.registry });
    const registers = [this.registry];
    // Both job-queue gauges come from one query per scrape.
    let queued: { at: number; stats: Promise<JobQueueStats | null> } | null = null;
    const jobQueue = () => {
      if (!queued || Date.now() - queued.at > 1000) queued = { at: Date.now(), stats: sources.jobQueue().catch(() => null) };
      return queued.stats;
    };
    new Gauge({
      name: 'billing_job_queue_due_accounts',
      help: 'Accounts with due work (renewal, expiry, hold timeout) not yet processed',
      registers,
      async collect() {
        const stats = await jobQueue();
        if (stats) this.set(stats.dueAccounts);
      },
    });
    new Gauge({
      name: 'billing_job_queue_oldest_due_seconds',
      help: 'How long the oldest unprocessed due work has been waiting (0 when none)',
      registers,
      async collect() {
        const stats = await jobQueue();
        if (stats) this.set(stats.oldestDueSeconds);
      },
    });
    new Gauge({
      name: 'billing_db_pool_connections',
      help: "This instance's PostgreSQL pool: total, idle, and requests waiting for a connection",
      labelNames: ['state'] as const,
      registers,
      collect() {
        const pool = sources.pool();
        if (!pool) return;
        this.set({ state: 'total' }, pool.totalCount);
        this.set({ state: 'idle' }, pool.idleCount);
        this.set({ state: 'waiting' }, pool.waitingCount);
      },
    });
    new Gauge({
      name: 'billing_websocket_connections',
      help: 'Open WebSocket (graphql-ws) connections',
      registers,
      collect() {
        this.set(sources.openWebSockets());
      },
    });
  }

  /** The label for an operation name: anonymous, or one of the first names seen, else "other". */
  operationLabel(name: string | null | undefined): string {
    if (!name) return 'anonymous';
    if (this.operationNames.has(name)) return name;
    if (this.operationNames.size >= MAX_OPERATION_NAMES || !/^[_A-Za-z][_0-9A-Za-z]{0,99}$/.test(name)) return 'other';
    this.operationNames.add(name);
    return name;
  }
}
