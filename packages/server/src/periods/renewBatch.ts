import type { PrismaClient } from '../generated/prisma/client.ts';
import { flushEvents, type BillingEvent } from '../realtime/events.ts';

export interface RenewBatchResult {
  /** Accounts claimed by the call (renewed or not). */
  claimed: number;
  renewed: string[];
  /** Claimed but not plain: still due, for the complete path (processDueWork). */
  fallback: string[];
}

interface RenewBatchAnswer {
  renewed: Record<string, string[]>;
  fallback: string[];
}

/**
 * Renews, in one transaction, up to `limit` accounts due for renewal at `now` whose renewal is plain
 * (the database function `renew_due_batch`, migration 20261122090000_renew_due_batch: one period
 * due, no seats, no pending plan change, nothing else due around it, a scheduled grant occurrence
 * included since 20261203143000_renew_due_batch_scheduled_grants); the other accounts it claimed
 * come back in `fallback`, untouched. `accountIds` limits it to those accounts.
 */
export async function renewDueBatch(prisma: PrismaClient, now: Date, limit: number, accountIds: readonly string[] | null = null): Promise<RenewBatchResult> {
  // The answer travels as text: the two database adapters do not hand jsonb back alike.
  const [row] = await prisma.$queryRaw<Array<{ answer: string }>>`
    SELECT renew_due_batch(${now}::timestamp(3), ${limit}::int, ${accountIds === null ? null : [...accountIds]}::text[])::text AS answer`;
  const answer = JSON.parse(row?.answer ?? '{"renewed":{},"fallback":[]}') as RenewBatchAnswer;
  const events: BillingEvent[] = [];
  for (const [accountId, creditTypes] of Object.entries(answer.renewed)) {
    for (const creditType of creditTypes) events.push({ topic: 'balance', accountId, creditType });
  }
  // The statement committed when it returned: its balance changes may be announced now.
  flushEvents(prisma, events);
  const renewed = Object.keys(answer.renewed);
  return { claimed: renewed.length + answer.fallback.length, renewed, fallback: answer.fallback };
}
