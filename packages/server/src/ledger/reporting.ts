import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { invalidInput } from '../domain/errors.ts';
import { Prisma } from '../generated/prisma/client.ts';

export type UsageGroupBy = 'FEATURE' | 'SEAT' | 'TAG' | 'DAY';

export interface UsageGroupRecord {
  key: string;
  credits: number;
  events: number;
}

const GROUP_KEYS: Record<UsageGroupBy, Prisma.Sql> = {
  FEATURE: Prisma.sql`e.feature_key`,
  SEAT: Prisma.sql`coalesce(e.seat_id, '')`,
  TAG: Prisma.sql`t.tag`,
  DAY: Prisma.sql`to_char(date_trunc('day', e.occurred_at), 'YYYY-MM-DD')`,
};

/**
 * "Which feature used the most credits this month?": usage between `from` (inclusive) and `to`
 * (exclusive), by feature, seat (events without one under ""), tag (an event counts once under each
 * of its tags; untagged events are left out) or UTC day, credits net of refunds, most credits first.
 * Aggregated by the database, whatever the number of events; with `limit`, the first groups only.
 */
export async function summarizeUsage(
  tx: Tx,
  accountId: string,
  from: Date,
  to: Date,
  groupBy: UsageGroupBy,
  onlySeatId: string | null = null,
  limit: number | null = null,
): Promise<UsageGroupRecord[]> {
  if (to.getTime() <= from.getTime()) throw invalidInput('to must be after from', 'to');
  const tags = groupBy === 'TAG' ? Prisma.sql`CROSS JOIN LATERAL unnest(e.tags) AS t(tag)` : Prisma.empty;
  const seat = onlySeatId ? Prisma.sql`AND e.seat_id = ${onlySeatId}` : Prisma.empty;
  const rows = await tx.$queryRaw<Array<{ key: string; credits: bigint; events: bigint }>>`
    SELECT ${GROUP_KEYS[groupBy]} AS key, sum(e.credits - e.refunded_credits)::bigint AS credits, count(*)::bigint AS events
    FROM usage_events e ${tags}
    WHERE e.account_id = ${accountId} AND e.occurred_at >= ${from} AND e.occurred_at < ${to} ${seat}
    GROUP BY 1 ORDER BY 2 DESC, 1
    LIMIT ${limit}::int`;
  return rows.map((row) => ({ key: row.key, credits: toCredits(row.credits), events: Number(row.events) }));
}

/** The window the burn rate is measured over. */
export const FORECAST_WINDOW_DAYS = 7;

export interface ForecastRecord {
  creditType: string;
  burnRatePerDay: number;
  depletesAt: Date | null;
}

/**
 * The depletion forecast of a pool at the current burn rate: credits charged (net of refunds) over
 * the last 7 days, or since the account was created when that is shorter (at least a day), per day;
 * the available balance reaches zero after available / rate days. Null when nothing is being spent.
 */
export async function forecastDepletion(
  tx: Tx,
  account: { id: string; now: Date; createdAt: Date },
  creditType: string,
  available: number,
): Promise<ForecastRecord> {
  const windowStart = new Date(Math.max(account.now.getTime() - FORECAST_WINDOW_DAYS * 86_400_000, account.createdAt.getTime()));
  const windowDays = Math.max(1, (account.now.getTime() - windowStart.getTime()) / 86_400_000);
  const [row] = await tx.$queryRaw<Array<{ used: bigint }>>`
    SELECT coalesce(sum(credits - refunded_credits), 0)::bigint AS used FROM usage_events
    WHERE account_id = ${account.id} AND credit_type = ${creditType} AND occurred_at >= ${windowStart} AND occurred_at <= ${account.now}`;
  const burnRatePerDay = toCredits(row?.used) / windowDays;
  if (burnRatePerDay <= 0) return { creditType, burnRatePerDay: 0, depletesAt: null };
  return { creditType, burnRatePerDay, depletesAt: new Date(account.now.getTime() + (Math.max(0, available) / burnRatePerDay) * 86_400_000) };
}
