import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertCode } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { newId } from '../domain/ids.ts';
import { Prisma } from '../generated/prisma/client.ts';
import type { BalanceRecord } from '../ledger/balances.ts';
import { publishAfterCommit, type AlertPayload } from '../realtime/events.ts';

export type AlertKind =
  | 'USAGE_THRESHOLD'
  | 'LOW_BALANCE'
  | 'EXPIRING_SOON'
  | 'POOL_EXHAUSTED'
  | 'AUTO_TOP_UP_SUCCEEDED'
  | 'AUTO_TOP_UP_FAILED'
  | 'SPEND_LIMIT_REACHED'
  | 'AUTO_TOP_UP_PAUSED'
  | 'PAYMENT_ACTION_REQUIRED'
  | 'SUBSCRIPTION_PAST_DUE';

/** HubSpot's notification levels: 75, 85, 90 and 100 % of the period's allocation used. */
import { DEFAULT_ALERT_PERCENTS } from '../domain/alertLevels.ts';

export { DEFAULT_ALERT_PERCENTS };

export interface AlertRecord {
  id: string;
  accountId: string;
  kind: AlertKind;
  creditType: string | null;
  threshold: number | null;
  message: string;
  /** The seat it is about (a seat's spend limit): only that seat's keys, and the account's, see it. */
  seatId: string | null;
  seq: number;
  createdAt: Date;
  acknowledgedAt: Date | null;
}

export interface NewAlert {
  accountId: string;
  kind: AlertKind;
  creditType: string | null;
  threshold: number | null;
  message: string;
  seatId?: string | null;
  periodStart: Date | null;
  /** Identifies the alert: raising the same one again (concurrently or later) does nothing. */
  dedupeKey: string;
  at: Date;
}

interface AlertRow {
  id: string;
  account_id: string;
  kind: AlertKind;
  credit_type: string | null;
  threshold: number | null;
  message: string;
  seat_id: string | null;
  seq: bigint;
  created_at: Date;
  acknowledged_at: Date | null;
}

const ALERT_COLUMNS = Prisma.raw(`id, account_id, kind::text AS kind, credit_type, threshold, message, seat_id, seq, created_at, acknowledged_at`);

function toAlertRecord(row: AlertRow): AlertRecord {
  return {
    id: row.id,
    accountId: row.account_id,
    kind: row.kind,
    creditType: row.credit_type,
    threshold: row.threshold,
    message: row.message,
    seatId: row.seat_id,
    seq: Number(row.seq),
    createdAt: row.created_at,
    acknowledgedAt: row.acknowledged_at,
  };
}

export function toAlertPayload(alert: AlertRecord): AlertPayload {
  return {
    id: alert.id,
    accountId: alert.accountId,
    kind: alert.kind,
    creditType: alert.creditType,
    threshold: alert.threshold,
    message: alert.message,
    seatId: alert.seatId,
    createdAt: alert.createdAt.toISOString(),
    acknowledgedAt: alert.acknowledgedAt?.toISOString() ?? null,
  };
}

/**
 * Stores an alert once per dedupe key (the unique index makes concurrent raisers agree), queues it
 * for the account's alert webhook in the same transaction (the outbox), and announces it to live
 * subscribers after commit. Returns it when this call raised it, null when it existed already.
 */
export async function raiseAlert(tx: Tx, alert: NewAlert): Promise<AlertRecord | null> {
  const rows = await tx.$queryRaw<AlertRow[]>`
    INSERT INTO alerts (id, account_id, kind, credit_type, threshold, message, seat_id, period_start, dedupe_key, created_at)
    VALUES (${newId()}, ${alert.accountId}, ${alert.kind}::"AlertKind", ${alert.creditType}, ${alert.threshold}, ${alert.message},
            ${alert.seatId ?? null}, ${alert.periodStart}, ${alert.dedupeKey}, ${alert.at})
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING ${ALERT_COLUMNS}`;
  const row = rows[0];
  if (!row) return null;
  const record = toAlertRecord(row);
  await tx.$executeRaw`
    INSERT INTO alert_deliveries (id, alert_id, account_id, next_attempt_at)
    SELECT gen_random_uuid()::text, ${record.id}, account_id, ${alert.at} FROM alert_webhooks
    WHERE account_id = ${alert.accountId} AND enabled`;
  publishAfterCommit(tx, { topic: 'alert', accountId: alert.accountId, alert: toAlertPayload(record) });
  return record;
}

/** Raises the candidates not raised yet, in the given order (one query to learn which exist). */
async function raiseNew(tx: Tx, candidates: NewAlert[]): Promise<AlertRecord[]> {
  if (candidates.length === 0) return [];
  const existing = await tx.$queryRaw<Array<{ dedupe_key: string }>>`
    SELECT dedupe_key FROM alerts WHERE dedupe_key = ANY(${candidates.map((candidate) => candidate.dedupeKey)}::text[])`;
  const known = new Set(existing.map((row) => row.dedupe_key));
  const raised: AlertRecord[] = [];
  for (const candidate of candidates) {
    if (known.has(candidate.dedupeKey)) continue;
    const alert = await raiseAlert(tx, candidate);
    if (alert) raised.push(alert);
  }
  return raised;
}

export interface AlertSettingsRecord {
  accountId: string;
  creditType: string;
  percents: number[];
  lowBalance: number | null;
  expiringWithinDays: number | null;
}

export async function findAlertSettings(tx: Tx, accountId: string, creditType: string): Promise<AlertSettingsRecord> {
  const row = await tx.alertSettings.findUnique({ where: { accountId_creditType: { accountId, creditType } } });
  return {
    accountId,
    creditType,
    percents: row ? [...row.percents].sort((a, b) => a - b) : DEFAULT_ALERT_PERCENTS,
    lowBalance: row?.lowBalance === null || row?.lowBalance === undefined ? null : toCredits(row.lowBalance),
    expiringWithinDays: row?.expiringWithinDays ?? null,
  };
}

/** Settings of every credit type the account has, defaults where none were set. */
export async function listAlertSettings(tx: Tx, accountId: string, creditTypes: readonly string[]): Promise<AlertSettingsRecord[]> {
  const configured = await tx.alertSettings.findMany({ where: { accountId }, select: { creditType: true } });
  const types = [...new Set([...creditTypes, ...configured.map((row) => row.creditType)])].sort();
  return Promise.all(types.map((creditType) => findAlertSettings(tx, accountId, creditType)));
}

export interface SetAlertSettingsCommand {
  accountId: string;
  creditType: string;
  percents: number[];
  lowBalance?: number | null;
  expiringWithinDays?: number | null;
}

export async function setAlertSettings(tx: Tx, clock: Clock, command: SetAlertSettingsCommand): Promise<AlertSettingsRecord> {
  const account = await lockAccount(tx, clock, command.accountId);
  const creditType = assertCode(command.creditType, 'creditType');
  const percents = [...new Set(command.percents)].sort((a, b) => a - b);
  if (percents.length > 20 || percents.some((percent) => !Number.isInteger(percent) || percent < 1 || percent > 1_000)) {
    throw invalidInput('percents must be at most 20 whole numbers from 1 to 1000', 'percents');
  }
  const lowBalance = command.lowBalance === undefined || command.lowBalance === null ? null : assertCredits(command.lowBalance, 'lowBalance');
  const days = command.expiringWithinDays ?? null;
  if (days !== null && (!Number.isInteger(days) || days < 1 || days > 366)) {
    throw invalidInput('expiringWithinDays must be from 1 to 366', 'expiringWithinDays');
  }
  const data = { percents, lowBalance: lowBalance === null ? null : BigInt(lowBalance), expiringWithinDays: days };
  await tx.alertSettings.upsert({
    where: { accountId_creditType: { accountId: account.id, creditType } },
    create: { id: newId(), accountId: account.id, creditType, ...data },
    update: data,
  });
  return findAlertSettings(tx, account.id, creditType);
}

/**
 * Raises what a pool's balance now calls for: each usage threshold reached this period (ascending,
 * once per period: renewal re-arms them through the period in the key), the low-balance level, and
 * pool exhaustion. Called after every change that can lower a balance, in its transaction.
 */
export async function evaluateBalanceAlerts(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>,
  balance: BalanceRecord,
  now: Date,
): Promise<AlertRecord[]> {
  const settings = await findAlertSettings(tx, account.id, balance.creditType);
  const period = account.currentPeriodStart.toISOString();
  const base = { accountId: account.id, creditType: balance.creditType, periodStart: account.currentPeriodStart, at: now };
  const candidates: NewAlert[] = [];
  if (balance.periodAllocation > 0) {
    for (const percent of settings.percents) {
      if (balance.percentUsed < percent) break;
      candidates.push({
        ...base,
        kind: 'USAGE_THRESHOLD',
        threshold: percent,
        message: `${percent}% of this period's ${balance.creditType} allocation used (${balance.periodUsed} of ${balance.periodAllocation} credits)`,
        dedupeKey: `usage:${account.id}:${balance.creditType}:${percent}:${period}`,
      });
    }
  }
  if (settings.lowBalance !== null && balance.available < settings.lowBalance) {
    candidates.push({
      ...base,
      kind: 'LOW_BALANCE',
      threshold: settings.lowBalance <= 2_147_483_647 ? settings.lowBalance : null,
      message: `${balance.creditType} balance is ${balance.available}, below ${settings.lowBalance}`,
      dedupeKey: `low:${account.id}:${balance.creditType}:${settings.lowBalance}:${period}`,
    });
  }
  if (balance.available <= 0 && (balance.periodAllocation > 0 || balance.periodUsed > 0)) {
    candidates.push({
      ...base,
      kind: 'POOL_EXHAUSTED',
      threshold: 0,
      message: `${balance.creditType} credits are exhausted: its features are paused until credits are added or the period renews`,
      dedupeKey: `exhausted:${account.id}:${balance.creditType}:${period}`,
    });
  }
  return raiseNew(tx, candidates);
}

/** "Use them or lose them": credits of the account expiring within each pool's configured days. */
export async function raiseExpiringSoonAlerts(tx: Tx, account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>, now: Date): Promise<AlertRecord[]> {
  const rows = await tx.$queryRaw<Array<{ credit_type: string; expires_at: Date; credits: bigint; days: number }>>`
    SELECT g.credit_type, g.expires_at, sum(g.remaining)::bigint AS credits, s.expiring_within_days AS days
    FROM grants g JOIN alert_settings s ON s.account_id = g.account_id AND s.credit_type = g.credit_type
    WHERE g.account_id = ${account.id} AND s.expiring_within_days IS NOT NULL AND g.remaining > 0 AND g.expired_at IS NULL
      AND g.effective_at <= ${now} AND g.expires_at > ${now}
      AND g.expires_at <= ${now}::timestamp + make_interval(days => s.expiring_within_days)
    GROUP BY g.credit_type, g.expires_at, s.expiring_within_days
    ORDER BY g.expires_at, g.credit_type`;
  return raiseNew(
    tx,
    rows.map((row) => ({
      accountId: account.id,
      kind: 'EXPIRING_SOON' as const,
      creditType: row.credit_type,
      threshold: row.days,
      message: `${toCredits(row.credits)} ${row.credit_type} credits expire on ${row.expires_at.toISOString()}: use them or lose them`,
      periodStart: account.currentPeriodStart,
      dedupeKey: `expiring:${account.id}:${row.credit_type}:${row.expires_at.toISOString()}`,
      at: now,
    })),
  );
}

export interface AlertPage {
  limit: number;
  afterSeq: number | null;
}

/** Alerts newest first. */
/** With `seatId`, the account's alerts and that seat's, not other seats'. */
export async function listAlerts(tx: Tx, accountId: string, unacknowledgedOnly: boolean, page: AlertPage, seatId: string | null = null): Promise<AlertRecord[]> {
  const rows = await tx.$queryRaw<AlertRow[]>`
    SELECT ${ALERT_COLUMNS} FROM alerts
    WHERE account_id = ${accountId}
      ${seatId !== null ? Prisma.sql`AND (seat_id IS NULL OR seat_id = ${seatId})` : Prisma.empty}
      ${unacknowledgedOnly ? Prisma.sql`AND acknowledged_at IS NULL` : Prisma.empty}
      ${page.afterSeq !== null ? Prisma.sql`AND seq < ${BigInt(page.afterSeq)}` : Prisma.empty}
    ORDER BY seq DESC LIMIT ${page.limit}`;
  return rows.map(toAlertRecord);
}

export async function findAlert(tx: Tx, id: string): Promise<AlertRecord | null> {
  const rows = await tx.$queryRaw<AlertRow[]>`SELECT ${ALERT_COLUMNS} FROM alerts WHERE id = ${id}`;
  return rows[0] ? toAlertRecord(rows[0]) : null;
}

/** Marks an alert seen; acknowledging again keeps the first time. */
export async function acknowledgeAlert(tx: Tx, clock: Clock, id: string): Promise<AlertRecord> {
  await tx.$executeRaw`UPDATE alerts SET acknowledged_at = ${clock.now()} WHERE id = ${id} AND acknowledged_at IS NULL`;
  const alert = await findAlert(tx, id);
  if (!alert) throw new BillingError(ErrorCode.ALERT_NOT_FOUND, `alert ${id} not found`);
  return alert;
}

/** A budget is used up: raised once per limit and period (lifetime limits once). */
export async function raiseSpendLimitReached(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart' | 'now'>,
  limit: { id: string; scope: string; scopeValue: string | null; creditType: string | null; limit: number; period: string },
): Promise<AlertRecord | null> {
  const scope = limit.scopeValue ? `${limit.scope} ${limit.scopeValue}` : limit.scope;
  const window = limit.period === 'LIFETIME' ? 'lifetime' : account.currentPeriodStart.toISOString();
  return raiseAlert(tx, {
    accountId: account.id,
    kind: 'SPEND_LIMIT_REACHED',
    creditType: limit.creditType,
    threshold: limit.limit <= 2_147_483_647 ? limit.limit : null,
    message: `spend limit on ${scope} reached (${limit.limit} credits${limit.period === 'LIFETIME' ? '' : ' this period'})`,
    seatId: limit.scope === 'SEAT' ? limit.scopeValue : null,
    periodStart: account.currentPeriodStart,
    dedupeKey: `spend-limit:${limit.id}:${window}`,
    at: account.now,
  });
}
