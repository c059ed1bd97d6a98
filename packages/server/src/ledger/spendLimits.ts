import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertCode } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { newId } from '../domain/ids.ts';
import { decideSpendLimits, type SpendLimitScope, type SpendScope } from './spendLimitDecision.ts';
import { MAX_TAG_LENGTH } from './usageInput.ts';

export type SpendLimitPeriod = 'BILLING_PERIOD' | 'LIFETIME';

export interface SpendLimitRecord {
  id: string;
  accountId: string;
  scope: SpendLimitScope;
  scopeValue: string | null;
  creditType: string | null;
  limit: number;
  period: SpendLimitPeriod;
  /** Credits charged within the limit's scope and period, net of refunds. */
  used: number;
  /** Credits held by open reservations within the scope (they count against the limit too). */
  held: number;
}

interface SpendLimitRow {
  id: string;
  account_id: string;
  scope: SpendLimitScope;
  scope_value: string | null;
  credit_type: string | null;
  limit: bigint;
  period: SpendLimitPeriod;
  used: bigint;
  held: bigint;
}

/**
 * Every limit of the account with what it has used, computed in the database: usage net of refunds
 * in the limit's period (the current billing period, or all time), and open holds.
 */
/** An account's limits; with `seatId`, those that bind that seat (account-wide ones and its own), not other seats'. */
export async function listSpendLimits(tx: Tx, account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>, seatId: string | null = null): Promise<SpendLimitRecord[]> {
  const rows = await tx.$queryRaw<SpendLimitRow[]>`
    SELECT l.id, l.account_id, l.scope::text AS scope, l.scope_value, l.credit_type, l."limit", l.period::text AS period,
      (SELECT coalesce(sum(e.credits - e.refunded_credits), 0)::bigint FROM usage_events e
        WHERE e.account_id = l.account_id
          AND (l.period = 'LIFETIME' OR e.period_start = ${account.currentPeriodStart})
          AND (l.credit_type IS NULL OR e.credit_type = l.credit_type)
          AND (l.scope <> 'SEAT' OR e.seat_id = l.scope_value)
          AND (l.scope <> 'FEATURE' OR e.feature_key = l.scope_value)
          AND (l.scope <> 'TAG' OR e.tags @> ARRAY[l.scope_value])) AS used,
      (SELECT coalesce(sum(r.held), 0)::bigint FROM reservations r
        WHERE r.account_id = l.account_id AND r.status = 'HELD'
          AND (l.credit_type IS NULL OR r.credit_type = l.credit_type)
          AND (l.scope <> 'SEAT' OR r.seat_id = l.scope_value)
          AND (l.scope <> 'FEATURE' OR r.feature_key = l.scope_value)
          AND (l.scope <> 'TAG' OR r.tags @> ARRAY[l.scope_value])) AS held
    FROM spend_limits l WHERE l.account_id = ${account.id}
      AND (${seatId}::text IS NULL OR l.scope <> 'SEAT' OR l.scope_value = ${seatId})
    ORDER BY l.created_at, l.id`;
  return rows.map((row) => ({
    id: row.id,
    accountId: row.account_id,
    scope: row.scope,
    scopeValue: row.scope_value,
    creditType: row.credit_type,
    limit: toCredits(row.limit),
    period: row.period,
    used: toCredits(row.used),
    held: toCredits(row.held),
  }));
}

/**
 * Checks a spend of `cost` more against the account's limits, under the account lock (so concurrent
 * usage cannot both fit under one limit): the first limit it would exceed, and the limits it would
 * use up exactly or beyond (for the "limit reached" alert).
 */
export async function checkSpendLimits(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>,
  spend: SpendScope,
  cost: number,
): Promise<{ exceeded: SpendLimitRecord | null; reached: SpendLimitRecord[] }> {
  if (cost <= 0) return { exceeded: null, reached: [] };
  return decideSpendLimits(await listSpendLimits(tx, account), spend, cost);
}

export interface SetSpendLimitCommand {
  accountId: string;
  scope: SpendLimitScope;
  scopeValue?: string | null;
  creditType?: string | null;
  limit: number;
  period: SpendLimitPeriod;
}

/**
 * Sets a budget. A limit is identified by its account, scope, value, credit type and period: setting
 * the same one again changes its amount instead of adding a second.
 */
/** Every charge checks the account's limits and every read lists them all: their number is bounded. */
export const MAX_SPEND_LIMITS_PER_ACCOUNT = 100;

export async function setSpendLimit(tx: Tx, clock: Clock, command: SetSpendLimitCommand): Promise<SpendLimitRecord> {
  const account = await lockAccount(tx, clock, command.accountId);
  const limit = assertCredits(command.limit, 'limit', { allowZero: true });
  const creditType = command.creditType ? assertCode(command.creditType, 'creditType') : null;
  const scopeValue: string | null = command.scopeValue ?? null;
  switch (command.scope) {
    case 'ACCOUNT':
      if (scopeValue !== null) throw invalidInput('an ACCOUNT limit has no scopeValue', 'scopeValue');
      break;
    case 'SEAT': {
      if (!scopeValue) throw invalidInput('a SEAT limit needs the seat id as scopeValue', 'scopeValue');
      const seat = await tx.seat.findFirst({ where: { id: scopeValue, accountId: account.id, removedAt: null } });
      if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${scopeValue} not found in this account`);
      break;
    }
    case 'FEATURE': {
      if (!scopeValue) throw invalidInput('a FEATURE limit needs the feature key as scopeValue', 'scopeValue');
      const feature = await tx.feature.findUnique({ where: { key: scopeValue } });
      if (!feature) throw new BillingError(ErrorCode.UNKNOWN_FEATURE, `unknown feature ${scopeValue}`, { featureKey: scopeValue });
      break;
    }
    case 'TAG':
      if (!scopeValue || scopeValue.length > MAX_TAG_LENGTH || /[\u0000-\u001f]/.test(scopeValue)) {
        throw invalidInput(`a TAG limit needs the tag (1-${MAX_TAG_LENGTH} characters) as scopeValue`, 'scopeValue');
      }
      break;
  }
  const existing = await tx.spendLimit.findFirst({
    where: { accountId: account.id, scope: command.scope, scopeValue, creditType, period: command.period },
  });
  if (!existing && (await tx.spendLimit.count({ where: { accountId: account.id } })) >= MAX_SPEND_LIMITS_PER_ACCOUNT) {
    throw invalidInput(`an account has at most ${MAX_SPEND_LIMITS_PER_ACCOUNT} spend limits: remove one first`, 'scope');
  }
  const id = existing?.id ?? newId();
  if (existing) {
    await tx.spendLimit.update({ where: { id }, data: { limit: BigInt(limit) } });
  } else {
    await tx.spendLimit.create({
      data: { id, accountId: account.id, scope: command.scope, scopeValue, creditType, limit: BigInt(limit), period: command.period, createdAt: account.now },
    });
  }
  const saved = (await listSpendLimits(tx, account)).find((record) => record.id === id);
  if (!saved) throw new Error('spend limit vanished inside its own transaction');
  return saved;
}

/** Removes a limit; false when the account has no such limit. */
export async function removeSpendLimit(tx: Tx, clock: Clock, accountId: string, id: string): Promise<boolean> {
  await lockAccount(tx, clock, accountId);
  const { count } = await tx.spendLimit.deleteMany({ where: { id, accountId } });
  return count > 0;
}
