import type { PrismaClient } from '../generated/prisma/client.ts';
import type { JobQueueStats, PoolStats } from './metrics.ts';

/**
 * The due work the runner has not done yet: the same three conditions it claims on
 * (jobs/dueWorkRunner.ts), for accounts on the real clock. The age is how long the oldest has waited,
 * which is the runner's lag.
 */
export async function dueWorkQueueStats(prisma: PrismaClient, now: Date): Promise<JobQueueStats> {
  const [row] = await prisma.$queryRaw<Array<{ accounts: number; oldest: Date | null }>>`
    SELECT count(DISTINCT account_id)::int AS accounts, min(due_at) AS oldest FROM (
      SELECT id AS account_id, current_period_end AS due_at FROM accounts
      WHERE test_clock_id IS NULL AND current_period_end <= ${now}
      UNION ALL
      SELECT g.account_id, g.expires_at FROM grants g JOIN accounts a ON a.id = g.account_id
      WHERE a.test_clock_id IS NULL AND g.expired_at IS NULL AND g.expires_at <= ${now}
      UNION ALL
      SELECT r.account_id, r.expires_at FROM reservations r JOIN accounts a ON a.id = r.account_id
      WHERE a.test_clock_id IS NULL AND r.status = 'HELD' AND r.expires_at <= ${now}
    ) due`;
  return {
    dueAccounts: row?.accounts ?? 0,
    oldestDueSeconds: row?.oldest ? Math.max(0, (now.getTime() - row.oldest.getTime()) / 1000) : 0,
  };
}

/**
 * db/database.ts keeps its pg.Pool to itself; the pool is reachable as the `externalPool` of the
 * PrismaPg adapter the client was built with. Null on the embedded database (no pool).
 */
export function poolStatsOf(prisma: PrismaClient): () => PoolStats | null {
  const adapter = (prisma as unknown as { _engineConfig?: { adapter?: { externalPool?: PoolStats | null } } })._engineConfig?.adapter;
  const pool = adapter?.externalPool;
  return () => (pool && typeof pool.totalCount === 'number' ? { totalCount: pool.totalCount, idleCount: pool.idleCount, waitingCount: pool.waitingCount } : null);
}
