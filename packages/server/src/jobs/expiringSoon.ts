import { raiseExpiringSoonAlerts } from '../alerts/alerts.ts';
import { lockAccount } from '../accounts/lockAccount.ts';
import { inTransaction } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';

/**
 * "Use them or lose them": finds accounts on the real clock with credits expiring within their
 * configured days and raises the EXPIRING_SOON alerts not raised yet (one per pool and expiry
 * instant). Accounts busy elsewhere are skipped and found again on the next check.
 */
export async function raiseExpiringSoonAlertsForAll(prisma: PrismaClient, clock: Clock, now: Date): Promise<number> {
  const accounts = await prisma.$queryRaw<Array<{ account_id: string }>>`
    SELECT DISTINCT g.account_id FROM grants g
    JOIN alert_settings s ON s.account_id = g.account_id AND s.credit_type = g.credit_type
    JOIN accounts a ON a.id = g.account_id
    WHERE a.test_clock_id IS NULL AND s.expiring_within_days IS NOT NULL AND g.remaining > 0 AND g.expired_at IS NULL
      AND g.expires_at > ${now} AND g.expires_at <= ${now}::timestamp + make_interval(days => s.expiring_within_days)
    LIMIT 1000`;
  let raised = 0;
  for (const { account_id: accountId } of accounts) {
    raised += await inTransaction(prisma, async (tx) => {
      const claimed = await tx.$queryRaw<unknown[]>`SELECT id FROM accounts WHERE id = ${accountId} FOR UPDATE SKIP LOCKED`;
      if (claimed.length === 0) return 0;
      return (await raiseExpiringSoonAlerts(tx, await lockAccount(tx, clock, accountId), now)).length;
    });
  }
  return raised;
}
