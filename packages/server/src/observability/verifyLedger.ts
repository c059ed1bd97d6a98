import type { PrismaClient } from '../generated/prisma/client.ts';

export interface LedgerMismatch {
  grantId: string;
  remaining: number;
  ledgerSum: number;
}

/** A record that disagrees with the ledger entries or rows it is derived from. */
export interface LedgerInconsistency {
  check: 'period_totals' | 'draws' | 'refunds' | 'holds';
  /** The period (account, credit type, start), usage event or reservation concerned. */
  subject: string;
  detail: string;
}

export interface LedgerVerification {
  grantsChecked: number;
  mismatches: LedgerMismatch[];
  /** Usage events, reservations and period totals checked against their entries. */
  recordsChecked: number;
  inconsistencies: LedgerInconsistency[];
}

/**
 * The ledger's invariants, each one pass in SQL, at most `limit` findings each:
 * - every grant's `remaining` equals the sum of its entries (a grant without entries sums to 0);
 * - per account, credit type and period, the usage totals equal the sums over the period's events
 *   (charged net of refunds, and overage);
 * - every usage event's draws (its DEBIT entries) with its overage make its cost; its REFUND
 *   entries equal what was refunded to grants (refunds beyond overage);
 * - every hold's draws equal its amount, and its RESERVE and RELEASE entries net to the amount
 *   while it is held and to nothing once it is closed.
 */
export async function verifyLedger(prisma: PrismaClient, limit = 1000): Promise<LedgerVerification> {
  const mismatches = await prisma.$queryRaw<Array<{ id: string; remaining: bigint; ledger_sum: bigint }>>`
    SELECT g.id, g.remaining, coalesce(e.total, 0)::bigint AS ledger_sum
    FROM grants g
    LEFT JOIN (SELECT grant_id, sum(credits) AS total FROM ledger_entries GROUP BY grant_id) e ON e.grant_id = g.id
    WHERE g.remaining <> coalesce(e.total, 0)
    ORDER BY g.id
    LIMIT ${limit}`;
  const [counted] = await prisma.$queryRaw<Array<{ grants: bigint; records: bigint }>>`
    SELECT (SELECT count(*) FROM grants) AS grants,
           (SELECT count(*) FROM usage_events) + (SELECT count(*) FROM reservations) + (SELECT count(*) FROM period_usage_totals) AS records`;

  const periods = await prisma.$queryRaw<Array<{ subject: string; total_used: bigint; events_used: bigint; total_overage: bigint; events_overage: bigint }>>`
    WITH events AS (
      SELECT account_id, credit_type, period_start,
             sum(credits - refunded_credits) AS used, sum(overage_credits - overage_refunded) AS overage
      FROM usage_events GROUP BY account_id, credit_type, period_start
    )
    SELECT concat_ws(' ', account_id, credit_type, to_char(period_start, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) AS subject,
           coalesce(t.used, 0)::bigint AS total_used, coalesce(e.used, 0)::bigint AS events_used,
           coalesce(t.overage, 0)::bigint AS total_overage, coalesce(e.overage, 0)::bigint AS events_overage
    FROM period_usage_totals t FULL JOIN events e USING (account_id, credit_type, period_start)
    WHERE coalesce(t.used, 0) <> coalesce(e.used, 0) OR coalesce(t.overage, 0) <> coalesce(e.overage, 0)
    ORDER BY 1 LIMIT ${limit}`;

  const events = await prisma.$queryRaw<Array<{ id: string; credits: bigint; overage: bigint; debited: bigint; to_grants: bigint; refunded: bigint }>>`
    SELECT e.id, e.credits, e.overage_credits AS overage, coalesce(l.debited, 0)::bigint AS debited,
           (e.refunded_credits - e.overage_refunded)::bigint AS to_grants, coalesce(l.refunded, 0)::bigint AS refunded
    FROM usage_events e
    LEFT JOIN (
      SELECT usage_event_id, -sum(credits) FILTER (WHERE type = 'DEBIT') AS debited, sum(credits) FILTER (WHERE type = 'REFUND') AS refunded
      FROM ledger_entries WHERE usage_event_id IS NOT NULL GROUP BY usage_event_id
    ) l ON l.usage_event_id = e.id
    WHERE e.credits <> coalesce(l.debited, 0) + e.overage_credits
       OR e.refunded_credits - e.overage_refunded <> coalesce(l.refunded, 0)
    ORDER BY e.id LIMIT ${limit}`;

  const holds = await prisma.$queryRaw<Array<{ id: string; status: string; held: bigint; drawn: bigint; net: bigint }>>`
    SELECT r.id, r.status::text AS status, r.held, coalesce(d.drawn, 0)::bigint AS drawn, coalesce(l.net, 0)::bigint AS net
    FROM reservations r
    LEFT JOIN (SELECT reservation_id, sum(credits) AS drawn FROM reservation_draws GROUP BY reservation_id) d ON d.reservation_id = r.id
    LEFT JOIN (
      SELECT reservation_id, -sum(credits) AS net FROM ledger_entries
      WHERE reservation_id IS NOT NULL AND type IN ('RESERVE', 'RELEASE') GROUP BY reservation_id
    ) l ON l.reservation_id = r.id
    WHERE coalesce(d.drawn, 0) <> r.held OR coalesce(l.net, 0) <> CASE WHEN r.status = 'HELD' THEN r.held ELSE 0 END
    ORDER BY r.id LIMIT ${limit}`;

  const inconsistencies: LedgerInconsistency[] = [
    ...periods.map((row) => ({
      check: 'period_totals' as const,
      subject: row.subject,
      detail: `totals used ${row.total_used} overage ${row.total_overage}, events used ${row.events_used} overage ${row.events_overage}`,
    })),
    ...events.flatMap((row) => [
      ...(row.credits !== row.debited + row.overage
        ? [{ check: 'draws' as const, subject: row.id, detail: `credits ${row.credits} (overage ${row.overage}), draws (DEBIT entries) ${row.debited}` }]
        : []),
      ...(row.to_grants !== row.refunded ? [{ check: 'refunds' as const, subject: row.id, detail: `refunded to grants ${row.to_grants}, REFUND entries ${row.refunded}` }] : []),
    ]),
    ...holds.map((row) => ({
      check: 'holds' as const,
      subject: row.id,
      detail: `${row.status} hold of ${row.held}: draws ${row.drawn}, RESERVE and RELEASE entries net ${row.net}`,
    })),
  ];
  return {
    grantsChecked: Number(counted?.grants ?? 0),
    mismatches: mismatches.map((row) => ({ grantId: row.id, remaining: Number(row.remaining), ledgerSum: Number(row.ledger_sum) })),
    recordsChecked: Number(counted?.records ?? 0),
    inconsistencies,
  };
}
