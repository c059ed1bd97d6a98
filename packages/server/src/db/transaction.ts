import type { Prisma, PrismaClient } from '../generated/prisma/client.ts';
import { flushEvents, openEventBuffer, type BillingEvent } from '../realtime/events.ts';

/** A database transaction; domain functions take one so that callers can compose them. */
export type Tx = Prisma.TransactionClient;

const MAX_ATTEMPTS = 5;

/** PostgreSQL's codes for a transaction that lost a race and may simply be run again. */
function isRetryable(error: unknown): boolean {
  const text = String((error as { message?: string })?.message ?? '') + JSON.stringify(error ?? {});
  return /40001|40P01|could not serialize|deadlock detected/.test(text);
}

/**
 * Runs `work` in one READ COMMITTED transaction (row locks give the guarantees the ledger needs),
 * retrying the rare serialization failure. Nothing outside the database (Stripe, HTTP) may happen
 * inside `work`; events it announces are published once the transaction has committed.
 */
export async function inTransaction<T>(prisma: PrismaClient, work: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      let events: BillingEvent[] = [];
      const result = await prisma.$transaction(
        (tx) => {
          events = openEventBuffer(tx);
          return work(tx);
        },
        { maxWait: 60_000, timeout: 60_000 },
      );
      flushEvents(prisma, events);
      return result;
    } catch (error) {
      if (attempt >= MAX_ATTEMPTS || !isRetryable(error)) throw error;
    }
  }
}
