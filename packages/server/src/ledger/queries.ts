import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { Prisma } from '../generated/prisma/client.ts';
import { GRANT_COLUMNS, toGrantRecord, type GrantRecord, type GrantRow } from './grants.ts';
import { USAGE_EVENT_COLUMNS, toUsageEventRecord, type UsageEventRecord, type UsageEventRow } from './usageEvents.ts';

/** Each list reads `limit` rows after the keyset position `after` (exclusive), in a stable order. */
export interface Page {
  limit: number;
  after: Array<string | number> | null;
}

export interface GrantListFilter {
  creditType?: string | null;
  includeExpired: boolean;
  /** Restricts to the shared pool and this seat's own grants (what a seat may see). */
  visibleToSeatId?: string | null;
  now: Date;
}

/** Grants oldest first. */
export async function listGrants(tx: Tx, accountId: string, filter: GrantListFilter, page: Page): Promise<GrantRecord[]> {
  const conditions = [Prisma.sql`account_id = ${accountId}`];
  if (filter.creditType) conditions.push(Prisma.sql`credit_type = ${filter.creditType}`);
  if (!filter.includeExpired) conditions.push(Prisma.sql`(expires_at IS NULL OR expires_at > ${filter.now})`);
  if (filter.visibleToSeatId) conditions.push(Prisma.sql`(seat_id IS NULL OR seat_id = ${filter.visibleToSeatId})`);
  if (page.after) conditions.push(Prisma.sql`(created_at, id) > (${new Date(String(page.after[0]))}, ${String(page.after[1])})`);
  const rows = await tx.$queryRaw<GrantRow[]>`
    SELECT ${Prisma.raw(GRANT_COLUMNS)} FROM grants WHERE ${Prisma.join(conditions, ' AND ')}
    ORDER BY created_at, id LIMIT ${page.limit}`;
  return rows.map(toGrantRecord);
}

export interface UsageListFilter {
  featureKey?: string | null;
  seatId?: string | null;
  tag?: string | null;
  from?: Date | null;
  to?: Date | null;
}

/** Usage events newest first (by when they occurred). */
export async function listUsageEvents(tx: Tx, accountId: string, filter: UsageListFilter, page: Page): Promise<UsageEventRecord[]> {
  const conditions = [Prisma.sql`account_id = ${accountId}`];
  if (filter.featureKey) conditions.push(Prisma.sql`feature_key = ${filter.featureKey}`);
  if (filter.seatId) conditions.push(Prisma.sql`seat_id = ${filter.seatId}`);
  if (filter.tag) conditions.push(Prisma.sql`tags @> ARRAY[${filter.tag}]::text[]`);
  if (filter.from) conditions.push(Prisma.sql`occurred_at >= ${filter.from}`);
  if (filter.to) conditions.push(Prisma.sql`occurred_at < ${filter.to}`);
  if (page.after) conditions.push(Prisma.sql`(occurred_at, id) < (${new Date(String(page.after[0]))}, ${String(page.after[1])})`);
  const rows = await tx.$queryRaw<UsageEventRow[]>`
    SELECT ${USAGE_EVENT_COLUMNS} FROM usage_events WHERE ${Prisma.join(conditions, ' AND ')}
    ORDER BY occurred_at DESC, id DESC LIMIT ${page.limit}`;
  return rows.map(toUsageEventRecord);
}

export type LedgerEntryType = 'GRANT' | 'DEBIT' | 'EXPIRE' | 'REFUND' | 'RESERVE' | 'RELEASE' | 'CLAWBACK' | 'ADJUST';

export interface LedgerEntryRecord {
  id: string;
  type: LedgerEntryType;
  credits: number;
  grantId: string;
  usageEventId: string | null;
  /** The operator's correction (ledger/corrections.ts) an ADJUST entry belongs to. */
  correctionId: string | null;
  createdAt: Date;
}

/** The columns of a ledger entry as `toLedgerEntryRecord` reads them. */
export const LEDGER_ENTRY_COLUMNS = Prisma.sql`id, type::text AS type, credits, grant_id, usage_event_id, correction_id, created_at`;

export interface LedgerEntryRow {
  id: bigint;
  type: LedgerEntryType;
  credits: bigint;
  grant_id: string;
  usage_event_id: string | null;
  correction_id: string | null;
  created_at: Date;
}

export function toLedgerEntryRecord(row: LedgerEntryRow): LedgerEntryRecord {
  return {
    id: row.id.toString(),
    type: row.type,
    credits: toCredits(row.credits),
    grantId: row.grant_id,
    usageEventId: row.usage_event_id,
    correctionId: row.correction_id,
    createdAt: row.created_at,
  };
}

/** The ledger newest first. */
export async function listLedgerEntries(tx: Tx, accountId: string, page: Page): Promise<LedgerEntryRecord[]> {
  const after = page.after ? Prisma.sql`AND id < ${BigInt(String(page.after[0]))}` : Prisma.empty;
  const rows = await tx.$queryRaw<LedgerEntryRow[]>`
    SELECT ${LEDGER_ENTRY_COLUMNS} FROM ledger_entries
    WHERE account_id = ${accountId} ${after} ORDER BY id DESC LIMIT ${page.limit}`;
  return rows.map(toLedgerEntryRecord);
}
