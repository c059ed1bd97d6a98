import type { ServerResponse } from 'node:http';
import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { invalidInput } from '../domain/errors.ts';
import { Prisma, type PrismaClient } from '../generated/prisma/client.ts';

/**
 * The available balance of a pool as it stood at a past instant: every grant effective then and not
 * yet expired, with the ledger entries dated up to that instant (holds out, as `available` now).
 * One statement over the account's grants of that type and their entries.
 */
export async function balanceAt(tx: Tx | PrismaClient, account: { id: string; now: Date }, creditType: string, at: Date): Promise<number> {
  if (at.getTime() > account.now.getTime()) throw invalidInput('at must not be after the account’s now', 'at');
  const [row] = await tx.$queryRaw<Array<{ available: bigint }>>`
    SELECT coalesce(sum(e.credits), 0)::bigint AS available
    FROM grants g JOIN ledger_entries e ON e.grant_id = g.id
    WHERE g.account_id = ${account.id} AND g.credit_type = ${creditType} AND g.effective_at <= ${at}
      AND (g.expires_at IS NULL OR g.expires_at > ${at}) AND e.created_at <= ${at}`;
  return toCredits(row?.available ?? 0n);
}

/** Rows read per statement while exporting: the memory an export holds at once. */
const EXPORT_CHUNK = 1000;

export interface LedgerExportFilter {
  from: Date;
  to: Date;
  accountId: string | null;
}

interface ExportRow {
  id: bigint;
  account_id: string;
  grant_id: string;
  usage_event_id: string | null;
  reservation_id: string | null;
  correction_id: string | null;
  type: string;
  credits: bigint;
  created_at: Date;
  credit_type: string;
  source: string;
  unit_cost: string;
  cost_currency: string | null;
  funding: string;
}

/**
 * Writes the ledger entries dated in [from, to) (optionally of one account) as NDJSON, in id order,
 * a chunk of rows per statement (keyset on the id), waiting for the client to take each chunk
 * before reading the next: memory stays at one chunk whatever the range, and a client that stops
 * reading stops the export. Each line is one entry with its grant's pool, source and cost basis.
 */
export async function exportLedger(prisma: PrismaClient, filter: LedgerExportFilter, response: ServerResponse): Promise<number> {
  let after = -1n;
  let written = 0;
  for (;;) {
    const account = filter.accountId === null ? Prisma.empty : Prisma.sql`AND l.account_id = ${filter.accountId}`;
    const rows = await prisma.$queryRaw<ExportRow[]>`
      SELECT l.id, l.account_id, l.grant_id, l.usage_event_id, l.reservation_id, l.correction_id, l.type::text AS type, l.credits, l.created_at,
             g.credit_type, g.source::text AS source, g.unit_cost::text AS unit_cost, g.cost_currency, g.funding::text AS funding
      FROM ledger_entries l JOIN grants g ON g.id = l.grant_id
      WHERE l.id > ${after} AND l.created_at >= ${filter.from} AND l.created_at < ${filter.to} ${account}
      ORDER BY l.id LIMIT ${EXPORT_CHUNK}`;
    if (rows.length === 0) return written;
    const text = rows
      .map((row) =>
        JSON.stringify({
          id: row.id.toString(),
          accountId: row.account_id,
          grantId: row.grant_id,
          usageEventId: row.usage_event_id,
          reservationId: row.reservation_id,
          correctionId: row.correction_id,
          type: row.type,
          credits: toCredits(row.credits),
          createdAt: row.created_at.toISOString(),
          creditType: row.credit_type,
          source: row.source,
          unitCost: row.unit_cost,
          costCurrency: row.cost_currency,
          funding: row.funding,
        }),
      )
      .join('\n');
    written += rows.length;
    after = rows.at(-1)!.id;
    if (response.destroyed) return written;
    if (!response.write(`${text}\n`)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          response.off('drain', done);
          response.off('close', done);
          resolve();
        };
        response.on('drain', done);
        response.on('close', done);
      });
    }
    if (rows.length < EXPORT_CHUNK) return written;
  }
}
