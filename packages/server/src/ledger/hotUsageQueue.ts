import { DEFAULT_ALERT_PERCENTS } from '../domain/alertLevels.ts';
import { Coalescer } from '../db/coalescer.ts';
import type { Database } from '../db/database.ts';
import type { Clock } from '../domain/clock.ts';
import { isUsageRefusedBySubscription } from '../accounts/usageRefusal.ts';
import { isUsageTotalOverflow } from '../domain/credits.ts';
import type { HotPathFigures, PricedUsage } from './recordUsage.ts';

const RECORD_USAGE_HOT = `SELECT record_usage_hot($1, $2, $3, $4, $5, $6::int, $7::bigint, $8::text[], $9, $10,
  $11::timestamp, $12::jsonb, $13::timestamp, $14::int[]) AS result`;

const RECORD_USAGE_HOT_BATCH = 'SELECT record_usage_hot_batch($1::jsonb, $2::timestamp, $3::int[]) AS result';

export interface HotBatchResult {
  charged: Array<HotPathFigures & { i: number }>;
  fallback: string[];
}

export type PricedHotUsage = PricedUsage & { fingerprint: string };

/** The batch function's input for one priced usage, `i` being its place in the batch. */
function toHotBatchEvent(i: number, { eventId, accountId, usage, feature, cost, fingerprint }: PricedHotUsage) {
  return {
    i,
    eventId,
    accountId,
    featureKey: feature.key,
    fingerprint,
    seatId: usage.seatId,
    quantity: usage.quantity,
    cost,
    tags: usage.tags,
    idempotencyKey: usage.idempotencyKey,
    requestHash: usage.requestHash,
    ...(usage.occurredAt ? { occurredAt: usage.occurredAt.toISOString() } : {}),
    ...(usage.metadata === null || usage.metadata === undefined ? {} : { metadata: usage.metadata }),
  };
}

/** Charges priced usages set-based in one statement (the database function `record_usage_hot_batch`). */
export async function chargeHotBatch(database: Pick<Database, 'statement'>, now: Date, usages: readonly PricedHotUsage[]): Promise<HotBatchResult> {
  const [row] = await database.statement<{ result: HotBatchResult | string }>(
    RECORD_USAGE_HOT_BATCH,
    [JSON.stringify(usages.map((usage, i) => toHotBatchEvent(i, usage))), now.toISOString(), DEFAULT_ALERT_PERCENTS],
    'record_usage_hot_batch',
  );
  if (!row) throw new Error('record_usage_hot_batch returned no row');
  return typeof row.result === 'string' ? (JSON.parse(row.result) as HotBatchResult) : row.result;
}

/**
 * What the hot path answers for one usage: the figures it was charged with, or why it was not
 * ('batch': its batch could not take it, though it alone may still be plain).
 */
export type HotCharge = { charged: HotPathFigures } | { reason: string };

/** Charges one priced usage in one statement (the database function `record_usage_hot`). */
export async function chargeHotOne(database: Pick<Database, 'statement'>, now: Date, priced: PricedHotUsage): Promise<HotCharge> {
  const { usage } = priced;
  const [row] = await database
    .statement<{ result: (HotPathFigures & { path: string; reason?: string }) | string }>(
    RECORD_USAGE_HOT,
    [
      priced.eventId,
      priced.accountId,
      priced.feature.key,
      priced.fingerprint,
      usage.seatId,
      usage.quantity,
      String(priced.cost),
      usage.tags,
      usage.idempotencyKey,
      usage.requestHash,
      usage.occurredAt?.toISOString() ?? null,
      usage.metadata === null || usage.metadata === undefined ? null : JSON.stringify(usage.metadata),
      now.toISOString(),
      DEFAULT_ALERT_PERCENTS,
    ],
    'record_usage_hot',
    )
    .catch((error: unknown) => {
      // The period's total would pass 2^53 - 1: nothing was written; the complete path refuses it, typed.
      if (isUsageTotalOverflow(error)) return [{ result: { path: 'complete', reason: 'total' } as HotPathFigures & { path: string; reason?: string } }];
      // The account's subscription refuses new usage (accounts/usageRefusal.ts): nothing was written.
      if (isUsageRefusedBySubscription(error)) return [{ result: { path: 'complete', reason: 'billing' } as HotPathFigures & { path: string; reason?: string } }];
      throw error;
    });
  if (!row) throw new Error('record_usage_hot returned no row');
  const result = typeof row.result === 'string' ? (JSON.parse(row.result) as Exclude<typeof row.result, string>) : row.result;
  return result.path === 'hot' ? { charged: result } : { reason: result.reason ?? 'unknown' };
}

/**
 * Group commit for recordUsage (a Coalescer): the usages that arrive while `concurrency` charges are
 * in flight go together as one set-based statement in one transaction, instead of each taking a
 * connection, a round trip and a commit of its own; on a hot account one lock then holds for many
 * debits.
 *
 * A batch of one is charged by `record_usage_hot`, which says why when it does not charge. A usage
 * a larger batch could not charge as a whole for its account (anything but the plain case: see the
 * functions' migration), or every usage of a batch that failed, is answered 'batch' and the caller
 * tries it alone, so the batch is only ever a faster way to the same decisions.
 */
export class HotUsageQueue {
  private readonly coalescer: Coalescer<PricedHotUsage, HotCharge>;

  constructor(
    private readonly database: Pick<Database, 'statement'>,
    private readonly clock: Clock,
    private readonly options: {
      concurrency: number;
      maxBatch: number;
      /** Told of every batch sent: its size, and how many of it were handed back. */
      observe?: (size: number, handedBack: number) => void;
    },
  ) {
    this.coalescer = new Coalescer({ concurrency: options.concurrency, maxBatch: options.maxBatch, run: (usages) => this.run(usages) });
  }

  charge(usage: PricedHotUsage): Promise<HotCharge> {
    return this.coalescer.submit(usage);
  }

  private async run(usages: PricedHotUsage[]): Promise<HotCharge[]> {
    if (usages.length === 1) {
      this.options.observe?.(1, 0);
      return [await chargeHotOne(this.database, this.clock.now(), usages[0]!)];
    }
    let result: HotBatchResult;
    try {
      result = await chargeHotBatch(this.database, this.clock.now(), usages);
    } catch {
      // Nothing of the batch was written (one statement, one transaction): each usage is charged
      // alone, where an error that is really its own reaches its caller.
      this.options.observe?.(usages.length, usages.length);
      return usages.map(() => ({ reason: 'batch' }));
    }
    const charged = new Map(result.charged.map((figures) => [figures.i, figures]));
    this.options.observe?.(usages.length, usages.length - charged.size);
    return usages.map((_usage, i): HotCharge => {
      const figures = charged.get(i);
      return figures ? { charged: figures } : { reason: 'batch' };
    });
  }
}
