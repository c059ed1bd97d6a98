import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError } from '../domain/errors.ts';
import { recordUsage, type RecordUsageCommand, type RecordUsageOutcome } from './recordUsage.ts';

export const MAX_BATCH_EVENTS = 1_000;

export type BatchItemOutcome = RecordUsageOutcome | { kind: 'rejected'; code: string; message: string };

/**
 * Records one account's share of a batch in one transaction, in the order given: each event with
 * its own idempotency key and its own result. An event refused as invalid (unknown feature, bad
 * quantity, conflicting key, …) is reported and the others go on: those checks run before anything
 * is written for that event.
 */
export async function recordUsageForAccount(tx: Tx, clock: Clock, events: readonly RecordUsageCommand[]): Promise<BatchItemOutcome[]> {
  const outcomes: BatchItemOutcome[] = [];
  for (const event of events) {
    try {
      outcomes.push(await recordUsage(tx, clock, event));
    } catch (error) {
      if (!(error instanceof BillingError)) throw error;
      outcomes.push({ kind: 'rejected', code: error.code, message: error.message });
    }
  }
  return outcomes;
}
