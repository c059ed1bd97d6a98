import type { PrismaClient } from '../generated/prisma/client.ts';

export interface LedgerMismatch {
  grantId: string;
  remaining: number;
  ledgerSum: number;
}

export interface LedgerVerification {
  grantsChecked: number;
  mismatches: LedgerMismatch[];
}

/**
 * The ledger's invariant: every grant's `remaining` equals the sum of its entries. One pass in SQL
 * (a grant without entries sums to 0); the mismatches are listed, at most `limit` of them.
 */
export async function verifyLedger(prisma: PrismaClient, limit = 1000): Promise<LedgerVerification> {
  const mismatches = await prisma.$queryRaw<Array<{ id: string; remaining: bigint; ledger_sum: bigint }>>`
    SELECT g.id, g.remaining, coalesce(e.total, 0)::bigint AS ledger_sum
    FROM grants g
    LEFT JOIN (SELECT grant_id, sum(credits) AS total FROM ledger_entries GROUP BY grant_id) e ON e.grant_id = g.id
    WHERE g.remaining <> coalesce(e.total, 0)
    ORDER BY g.id
    LIMIT ${limit}`;
  const [counted] = await prisma.$queryRaw<Array<{ grants: bigint }>>`SELECT count(*) AS grants FROM grants`;
  return {
    grantsChecked: Number(counted?.grants ?? 0),
    mismatches: mismatches.map((row) => ({ grantId: row.id, remaining: Number(row.remaining), ledgerSum: Number(row.ledger_sum) })),
  };
}
