import type { Tx } from '../db/transaction.ts';
import { notifyBalanceChanged } from '../realtime/events.ts';

export type ReturnEntryType = 'REFUND' | 'RELEASE';

export interface CreditReturn {
  grantId: string;
  credits: number;
}

/**
 * Gives credits back to the grants they came from (a refund, a released hold). A grant that has
 * expired by `at` stays expired: the return is recorded and immediately expired again, so the ledger
 * shows what came back and what was lost, and nothing expired becomes spendable. A voided grant
 * stays void the same way: the return is recorded and leaves again in an ADJUST entry of its void.
 * A bought grant whose payment was refunded while some of its credits were spent or held (the
 * purchase's uncollected credits) takes them back the same way: the return leaves again in a
 * CLAWBACK entry, up to what is uncollected, so a usage refund or a released hold never gives the
 * customer credits whose money went back to them. That comes first, expired or void grant alike:
 * those credits' money went back, so they are clawed back (not breakage, not a second void), and
 * they leave the purchase's uncollected count; only the rest expires again or is voided again.
 */
export async function returnCreditsToGrants(
  tx: Tx,
  accountId: string,
  returns: CreditReturn[],
  type: ReturnEntryType,
  at: Date,
  links: { usageEventId?: string | null; reservationId?: string | null } = {},
): Promise<void> {
  const positive = returns.filter((entry) => entry.credits > 0);
  if (positive.length === 0) return;
  await tx.$executeRaw`
    WITH returned AS (
      SELECT grant_id, credits FROM unnest(${positive.map((entry) => entry.grantId)}::text[],
                                           ${positive.map((entry) => BigInt(entry.credits))}::bigint[]) AS r(grant_id, credits)
    ),
    state AS (
      SELECT grants.id, returned.credits, (grants.expires_at IS NOT NULL AND grants.expires_at <= ${at}) AS expired,
             CASE WHEN grants.voided_at IS NOT NULL
               THEN (SELECT c.id FROM corrections c WHERE c.grant_id = grants.id AND c.kind = 'VOID') END AS void_id,
             p.id AS purchase_id, coalesce(p.uncollected_credits, 0) AS uncollected
      FROM grants JOIN returned ON returned.grant_id = grants.id
      LEFT JOIN top_up_purchases p ON p.grant_id = grants.id AND p.uncollected_credits > 0
      WHERE grants.account_id = ${accountId}
    ),
    target AS (
      SELECT state.*, least(credits, uncollected) AS clawed FROM state
    ),
    restored AS (
      UPDATE grants SET remaining = grants.remaining + target.credits - target.clawed
      FROM target WHERE grants.id = target.id AND NOT target.expired AND target.void_id IS NULL
    ),
    collected AS (
      UPDATE top_up_purchases SET uncollected_credits = top_up_purchases.uncollected_credits - target.clawed,
                                  clawed_back_credits = top_up_purchases.clawed_back_credits + target.clawed
      FROM target WHERE top_up_purchases.id = target.purchase_id AND target.clawed > 0
    ),
    entries AS (
      SELECT id, credits, ${type}::"LedgerEntryType" AS type, 1 AS step, NULL::text AS correction_id FROM target
      UNION ALL
      SELECT id, -clawed, 'CLAWBACK'::"LedgerEntryType", 2, NULL FROM target WHERE clawed > 0
      UNION ALL
      SELECT id, clawed - credits, 'ADJUST'::"LedgerEntryType", 3, void_id FROM target WHERE void_id IS NOT NULL AND credits > clawed
      UNION ALL
      SELECT id, clawed - credits, 'EXPIRE'::"LedgerEntryType", 3, NULL FROM target WHERE expired AND void_id IS NULL AND credits > clawed
    )
    INSERT INTO ledger_entries (account_id, grant_id, usage_event_id, reservation_id, type, credits, correction_id, created_at)
    SELECT ${accountId}, id, ${links.usageEventId ?? null}, ${links.reservationId ?? null}, type, credits, correction_id, ${at}
    FROM entries ORDER BY id, step`;
}

/**
 * Records the expiry of every grant of the account whose time has come by `at`: its remaining
 * credits leave in an EXPIRE entry dated at the grant's expiry. Balances never wait for this (they
 * compare against the clock); this keeps the ledger telling what was lost, and when.
 */
export async function expireDueGrants(tx: Tx, accountId: string, at: Date): Promise<void> {
  const expired = await tx.$queryRaw<Array<{ credit_type: string }>>`
    WITH due AS (
      SELECT id, credit_type, remaining, expires_at FROM grants
      WHERE account_id = ${accountId} AND expired_at IS NULL AND expires_at <= ${at}
    ),
    expired AS (
      UPDATE grants SET remaining = 0, expired_at = due.expires_at FROM due WHERE grants.id = due.id
    ),
    entries AS (
      INSERT INTO ledger_entries (account_id, grant_id, type, credits, created_at)
      SELECT ${accountId}, id, 'EXPIRE'::"LedgerEntryType", -remaining, expires_at FROM due WHERE remaining > 0 ORDER BY expires_at, id
    )
    SELECT DISTINCT credit_type FROM due WHERE remaining > 0`;
  for (const { credit_type: creditType } of expired) notifyBalanceChanged(tx, accountId, creditType);
}
