import type { Clock } from '../domain/clock.ts';
import { isUsageRefusedBySubscription } from '../accounts/usageRefusal.ts';
import { isUsageTotalOverflow } from '../domain/credits.ts';
import { BillingError } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { flushEvents, type BillingEvent } from '../realtime/events.ts';
import { chargeHotBatch, type PricedHotUsage } from './hotUsageQueue.ts';
import {
  normalizeUsage,
  priceUsage,
  recordUsage,
  toRecordedOutcome,
  type NormalizedUsage,
  type RecordUsageCommand,
  type RecordUsageOutcome,
  type UsageHotPath,
} from './recordUsage.ts';

export const MAX_BATCH_EVENTS = 1_000;

/** Accounts whose events are charged one by one at once, when the set-based path cannot take them. */
const FALLBACK_CONCURRENCY = 8;

/**
 * A large batch is charged as this many statements at once, each on its own connection and for its
 * own accounts. Two batches sharing an account wait for each other (each locks its accounts for its
 * whole transaction); split by account, the parts of two batches overlap only part for part, so
 * they run side by side instead of one after the other.
 */
const PARTITIONS = 4;
/** Below this, one statement costs less than several (each is planned for its own events). */
const MIN_EVENTS_TO_PARTITION = 200;

/**
 * Items split into `count` groups by account: every event of an account in one group, in order.
 * Accounts are dealt round-robin in order of first appearance, so that with `count` accounts or more
 * no group is empty (a hash of the id left one empty now and then).
 */
function partitionByAccount<Item extends [number, { accountId: string }]>(items: readonly Item[], count: number): Item[][] {
  const groups = Array.from({ length: count }, (): Item[] => []);
  const groupOf = new Map<string, number>();
  for (const item of items) {
    let group = groupOf.get(item[1].accountId);
    if (group === undefined) {
      group = groupOf.size % count;
      groupOf.set(item[1].accountId, group);
    }
    groups[group]!.push(item);
  }
  return groups.filter((group) => group.length > 0);
}

export type BatchItemOutcome = RecordUsageOutcome | { kind: 'rejected'; code: string; message: string };

function rejected(error: unknown): BatchItemOutcome {
  if (!(error instanceof BillingError)) throw error;
  return { kind: 'rejected', code: error.code, message: error.message };
}

/**
 * Records up to MAX_BATCH_EVENTS usage events, each with its own idempotency key and result, in the
 * order given per account. Events invalid on their face (bad key, tags, metadata) are rejected
 * without touching the database. The rest go to the set-based database function in one round
 * trip; the accounts it cannot take as a whole (anything but the plain case: see its migration)
 * have their events charged one by one through recordUsage, which decides every case. An event
 * refused as invalid there (unknown feature, bad quantity, conflicting key, …) is reported and the
 * account's other events go on: those checks run before anything is written for that event.
 */
export async function recordUsageBatch(
  prisma: PrismaClient,
  hot: UsageHotPath,
  clock: Clock,
  inputs: readonly RecordUsageCommand[],
): Promise<{ outcomes: BatchItemOutcome[]; chargedSetBased: number }> {
  const outcomes: BatchItemOutcome[] = new Array(inputs.length);
  let chargedSetBased = 0;
  const normalized = new Map<number, NormalizedUsage>();
  inputs.forEach((input, index) => {
    try {
      normalized.set(index, normalizeUsage(input));
    } catch (error) {
      outcomes[index] = rejected(error);
    }
  });

  const oneByOne = new Set<string>();
  const priced = new Map<number, PricedHotUsage>();
  const byAccount = new Map<string, number[]>();
  for (const [index, usage] of normalized) {
    const accountId = inputs[index]!.accountId;
    const indexes = byAccount.get(accountId) ?? [];
    indexes.push(index);
    byAccount.set(accountId, indexes);
    const event = await priceUsage(hot.features, usage, accountId);
    if (event) priced.set(index, event);
    else oneByOne.add(accountId);
  }

  const setBased = [...priced].filter(([, event]) => !oneByOne.has(event.accountId));
  const partitions = partitionByAccount(setBased, setBased.length >= MIN_EVENTS_TO_PARTITION ? PARTITIONS : 1);
  const changed: BillingEvent[] = [];
  await Promise.all(
    partitions.map(async (partition) => {
      const events = partition.map(([, event]) => event);
      // A period total the statement would take past 2^53 - 1, or an account whose subscription
      // refuses usage, fails it whole (nothing written): its accounts go alone, where only the
      // offending usage is refused.
      const result = await chargeHotBatch(hot.database, clock.now(), events).catch((error: unknown) => {
        if (!isUsageTotalOverflow(error) && !isUsageRefusedBySubscription(error)) throw error;
        return { charged: [], fallback: [...new Set(events.map((event) => event.accountId))] };
      });
      for (const figures of result.charged) {
        const [index, event] = partition[figures.i]!;
        const outcome = toRecordedOutcome(event, figures);
        outcomes[index] = outcome;
        changed.push({ topic: 'balance', accountId: outcome.usageEvent.accountId, creditType: outcome.balance.creditType });
      }
      chargedSetBased += result.charged.length;
      for (const accountId of result.fallback) oneByOne.add(accountId);
    }),
  );
  flushEvents(prisma, changed);

  const queue = [...oneByOne].map((accountId) => byAccount.get(accountId) ?? []);
  // A set-based statement has just declined these accounts: their events go alone (a batch would
  // decline them again), each to record_usage_hot and then, if need be, the complete path.
  const alone: UsageHotPath = { database: hot.database, features: hot.features, occurredAtWindow: hot.occurredAtWindow };
  const worker = async () => {
    for (let indexes = queue.shift(); indexes; indexes = queue.shift()) {
      for (const index of indexes) {
        try {
          outcomes[index] = await recordUsage(prisma, alone, clock, inputs[index]!);
        } catch (error) {
          outcomes[index] = rejected(error);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(FALLBACK_CONCURRENCY, queue.length) }, worker));
  return { outcomes, chargedSetBased };
}
