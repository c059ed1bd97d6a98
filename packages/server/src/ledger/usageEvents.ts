import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { Prisma } from '../generated/prisma/client.ts';

export interface UsageEventRecord {
  id: string;
  accountId: string;
  seatId: string | null;
  featureKey: string;
  creditType: string;
  quantity: number;
  credits: number;
  refundedCredits: number;
  overageCredits: number;
  overageRefunded: number;
  tags: string[];
  idempotencyKey: string;
  requestHash: string;
  occurredAt: Date;
  metadata: unknown;
  createdAt: Date;
}

export interface UsageEventRow {
  id: string;
  account_id: string;
  seat_id: string | null;
  feature_key: string;
  credit_type: string;
  quantity: number;
  credits: bigint;
  refunded_credits: bigint;
  overage_credits: bigint;
  overage_refunded: bigint;
  tags: string[];
  idempotency_key: string;
  request_hash: string;
  occurred_at: Date;
  /** The JSON text: drivers differ in how they hand back a jsonb scalar, text is unambiguous. */
  metadata: string | null;
  created_at: Date;
}

export const USAGE_EVENT_COLUMNS = Prisma.raw(`id, account_id, seat_id, feature_key, credit_type, quantity, credits,
  refunded_credits, overage_credits, overage_refunded, tags, idempotency_key, request_hash, occurred_at, metadata::text AS metadata, created_at`);

export function toUsageEventRecord(row: UsageEventRow): UsageEventRecord {
  return {
    id: row.id,
    accountId: row.account_id,
    seatId: row.seat_id,
    featureKey: row.feature_key,
    creditType: row.credit_type,
    quantity: row.quantity,
    credits: toCredits(row.credits),
    refundedCredits: toCredits(row.refunded_credits),
    overageCredits: toCredits(row.overage_credits),
    overageRefunded: toCredits(row.overage_refunded),
    tags: row.tags,
    idempotencyKey: row.idempotency_key,
    requestHash: row.request_hash,
    occurredAt: row.occurred_at,
    metadata: row.metadata === null ? null : JSON.parse(row.metadata),
    createdAt: row.created_at,
  };
}

export async function findUsageEventByKey(tx: Tx, accountId: string, idempotencyKey: string): Promise<UsageEventRecord | null> {
  const rows = await tx.$queryRaw<UsageEventRow[]>`
    SELECT ${USAGE_EVENT_COLUMNS} FROM usage_events WHERE account_id = ${accountId} AND idempotency_key = ${idempotencyKey}`;
  return rows[0] ? toUsageEventRecord(rows[0]) : null;
}

export async function findUsageEvent(tx: Tx, id: string): Promise<UsageEventRecord | null> {
  const rows = await tx.$queryRaw<UsageEventRow[]>`SELECT ${USAGE_EVENT_COLUMNS} FROM usage_events WHERE id = ${id}`;
  return rows[0] ? toUsageEventRecord(rows[0]) : null;
}

/** Usage events by id, in one statement (reads: a page of ledger entries names their events). */
export async function findUsageEvents(tx: Tx, ids: readonly string[]): Promise<Map<string, UsageEventRecord>> {
  const rows = await tx.$queryRaw<UsageEventRow[]>`SELECT ${USAGE_EVENT_COLUMNS} FROM usage_events WHERE id = ANY(${[...ids]}::text[])`;
  return new Map(rows.map((row) => [row.id, toUsageEventRecord(row)]));
}

export interface UsageDrawRecord {
  grantId: string;
  credits: number;
}

/** The events' draws: their DEBIT ledger entries, in consumption order (by id). */
export async function loadDraws(tx: Tx, usageEventIds: readonly string[]): Promise<Map<string, UsageDrawRecord[]>> {
  const rows = await tx.$queryRaw<Array<{ usage_event_id: string; grant_id: string; credits: bigint }>>`
    SELECT usage_event_id, grant_id, -credits AS credits FROM ledger_entries
    WHERE usage_event_id = ANY(${[...usageEventIds]}::text[]) AND type = 'DEBIT' ORDER BY usage_event_id, id`;
  const byEvent = new Map<string, UsageDrawRecord[]>();
  for (const row of rows) {
    const list = byEvent.get(row.usage_event_id) ?? [];
    list.push({ grantId: row.grant_id, credits: toCredits(row.credits) });
    byEvent.set(row.usage_event_id, list);
  }
  return byEvent;
}
