import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';

/** The subscription state of an account, read under its row lock, with the time that applies to it. */
export interface LockedAccount {
  id: string;
  name: string;
  planId: string;
  pendingPlanId: string | null;
  periodAnchor: Date;
  periodIndex: number;
  currentPeriodStart: Date;
  currentPeriodEnd: Date;
  testClockId: string | null;
  /** Whether any auto top-up is configured (saves the debit path a query when none is). */
  hasAutoTopUp: boolean;
  /** The account's test clock's frozen time, or the given clock's now. */
  now: Date;
}

export interface AccountRow {
  id: string;
  name: string;
  plan_id: string;
  pending_plan_id: string | null;
  period_anchor: Date;
  period_index: number;
  current_period_start: Date;
  current_period_end: Date;
  test_clock_id: string | null;
  has_auto_top_up: boolean;
  frozen_time: Date | null;
}

export function toLockedAccount(row: AccountRow, clock: Clock): LockedAccount {
  return {
    id: row.id,
    name: row.name,
    planId: row.plan_id,
    pendingPlanId: row.pending_plan_id,
    periodAnchor: row.period_anchor,
    periodIndex: row.period_index,
    currentPeriodStart: row.current_period_start,
    currentPeriodEnd: row.current_period_end,
    testClockId: row.test_clock_id,
    hasAutoTopUp: row.has_auto_top_up,
    now: row.frozen_time ?? clock.now(),
  };
}

/**
 * Takes the account's row lock. Every change to an account's grants takes it first, so changes to
 * one account are serialized (no overspend, no lost update) while other accounts proceed in
 * parallel, and a single lock per account means no lock-order deadlocks.
 */
export async function lockAccount(tx: Tx, clock: Clock, accountId: string): Promise<LockedAccount> {
  const rows = await tx.$queryRaw<AccountRow[]>`
    SELECT a.id, a.name, a.plan_id, a.pending_plan_id, a.period_anchor, a.period_index,
           a.current_period_start, a.current_period_end, a.test_clock_id, tc.frozen_time,
           EXISTS (SELECT 1 FROM auto_top_up_configs c WHERE c.account_id = a.id AND c.enabled) AS has_auto_top_up
    FROM accounts a LEFT JOIN test_clocks tc ON tc.id = a.test_clock_id
    WHERE a.id = ${accountId}
    FOR UPDATE OF a`;
  const row = rows[0];
  if (!row) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${accountId} not found`);
  return toLockedAccount(row, clock);
}

/** The same state without the lock, for reads. Returns null for an unknown account. */
export async function findAccountState(tx: Tx, clock: Clock, accountId: string): Promise<LockedAccount | null> {
  const rows = await tx.$queryRaw<AccountRow[]>`
    SELECT a.id, a.name, a.plan_id, a.pending_plan_id, a.period_anchor, a.period_index,
           a.current_period_start, a.current_period_end, a.test_clock_id, tc.frozen_time,
           EXISTS (SELECT 1 FROM auto_top_up_configs c WHERE c.account_id = a.id AND c.enabled) AS has_auto_top_up
    FROM accounts a LEFT JOIN test_clocks tc ON tc.id = a.test_clock_id
    WHERE a.id = ${accountId}`;
  const row = rows[0];
  return row ? toLockedAccount(row, clock) : null;
}
