import type { LockedAccount } from '../accounts/lockAccount.ts';
import type { Database } from '../db/database.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { toCredits } from '../domain/credits.ts';
import { Prisma } from '../generated/prisma/client.ts';

/** What a customer sees of one pool, all derived from grants, holds and usage of the current period. */
export interface BalanceRecord {
  creditType: string;
  /** Spendable now: unexpired, effective grants' remaining credits (holds already taken out). */
  available: number;
  /** Held by open reservations. */
  reserved: number;
  /** Included credits granted for the current period (plan and per-seat grants). */
  periodAllocation: number;
  /** Credits charged this period, net of refunds, overage included. */
  periodUsed: number;
  percentUsed: number;
  /** Available credits that expire by the end of the current period unless spent. */
  expiringAtPeriodEnd: number;
  /** Credits charged beyond the balance this period under PAY_AS_YOU_GO. */
  overageUsed: number;
  nextExpiry: Date | null;
}

export interface BalanceScope {
  accountId: string;
  planId: string;
  currentPeriodStart: Date;
  currentPeriodEnd: Date;
  now: Date;
}

interface BalanceRow {
  credit_type: string;
  available: bigint;
  reserved: bigint;
  period_allocation: bigint;
  period_used: bigint;
  expiring: bigint;
  overage: bigint;
  next_expiry: Date | null;
}

export function computePercentUsed(periodUsed: number, periodAllocation: number): number {
  if (periodAllocation <= 0) return periodUsed > 0 ? 100 : 0;
  return Math.round((periodUsed / periodAllocation) * 10_000) / 100;
}

/**
 * Balances of every credit type the account has (its plan's allocations and any grant), or of one.
 * One query: grants, open holds and this period's usage aggregated in the database.
 */
export async function loadBalances(tx: Tx, scope: BalanceScope, creditType?: string): Promise<BalanceRecord[]> {
  const onlyType = creditType === undefined ? Prisma.sql`` : Prisma.sql`AND credit_type = ${creditType}`;
  const rows = await tx.$queryRaw<BalanceRow[]>`
    WITH types AS (
      SELECT credit_type FROM grants WHERE account_id = ${scope.accountId} ${onlyType}
      UNION SELECT credit_type FROM plan_allocations WHERE plan_id = ${scope.planId} ${onlyType}
    ),
    g AS (
      SELECT credit_type,
        sum(remaining) FILTER (WHERE effective_at <= ${scope.now} AND (expires_at IS NULL OR expires_at > ${scope.now})) AS available,
        sum(amount) FILTER (WHERE source IN ('PLAN', 'SEAT') AND period_start = ${scope.currentPeriodStart}) AS period_allocation,
        sum(remaining) FILTER (WHERE effective_at <= ${scope.now} AND expires_at > ${scope.now}
                               AND expires_at <= ${scope.currentPeriodEnd}) AS expiring,
        min(expires_at) FILTER (WHERE remaining > 0 AND effective_at <= ${scope.now} AND expires_at > ${scope.now}) AS next_expiry
      FROM grants WHERE account_id = ${scope.accountId} ${onlyType}
      GROUP BY credit_type
    ),
    r AS (
      SELECT credit_type, sum(held) AS reserved FROM reservations
      WHERE account_id = ${scope.accountId} AND status = 'HELD' ${onlyType} GROUP BY credit_type
    ),
    u AS (
      SELECT credit_type, used AS period_used, overage FROM period_usage_totals
      WHERE account_id = ${scope.accountId} AND period_start = ${scope.currentPeriodStart} ${onlyType}
    )
    SELECT types.credit_type,
      coalesce(g.available, 0)::bigint AS available,
      coalesce(r.reserved, 0)::bigint AS reserved,
      coalesce(g.period_allocation, 0)::bigint AS period_allocation,
      coalesce(u.period_used, 0)::bigint AS period_used,
      coalesce(g.expiring, 0)::bigint AS expiring,
      coalesce(u.overage, 0)::bigint AS overage,
      g.next_expiry
    FROM types
    LEFT JOIN g ON g.credit_type = types.credit_type
    LEFT JOIN r ON r.credit_type = types.credit_type
    LEFT JOIN u ON u.credit_type = types.credit_type
    ORDER BY types.credit_type`;
  return rows.map((row) => toBalanceRecord(row.credit_type, row, row.next_expiry));
}

/** A balance from the sums a query answers (as bigint or its string, per driver). */
function toBalanceRecord(
  creditType: string,
  sums: Record<'available' | 'reserved' | 'period_allocation' | 'period_used' | 'expiring' | 'overage', Parameters<typeof toCredits>[0]>,
  nextExpiry: Date | null,
): BalanceRecord {
  const periodAllocation = toCredits(sums.period_allocation);
  const periodUsed = toCredits(sums.period_used);
  return {
    creditType,
    available: toCredits(sums.available),
    reserved: toCredits(sums.reserved),
    periodAllocation,
    periodUsed,
    percentUsed: computePercentUsed(periodUsed, periodAllocation),
    expiringAtPeriodEnd: toCredits(sums.expiring),
    overageUsed: toCredits(sums.overage),
    nextExpiry,
  };
}

/** The balance of one credit type, zero everywhere when the account has never had any. */
export async function loadBalance(tx: Tx, scope: BalanceScope, creditType: string): Promise<BalanceRecord> {
  const [balance] = await loadBalances(tx, scope, creditType);
  return balance ?? emptyBalance(creditType);
}

function emptyBalance(creditType: string): BalanceRecord {
  return { creditType, available: 0, reserved: 0, periodAllocation: 0, periodUsed: 0, percentUsed: 0, expiringAtPeriodEnd: 0, overageUsed: 0, nextExpiry: null };
}

/**
 * An account's state (as `findAccountState` reads it) and balances (as `loadBalance` and
 * `loadBalances` compute them) in one prepared statement: the read behind `account(id)` and its
 * `balance(creditType)` and `balances` fields. `types` lists the credit types to compute from $3,
 * the one asked for by name (or null). The account row is left-joined to the types, so an account
 * asked for none still comes back, and an unknown account returns no row. Times travel as epoch
 * milliseconds because `timestamp` columns carry no zone and pg would read them as local time.
 *
 * Two statements rather than one with a flag: PostgreSQL keeps planning a prepared statement anew
 * (a millisecond here, several times the execution) while a parameter lets a custom plan prune
 * what the generic plan must keep; without one, the generic plan is chosen and planned once.
 */
const accountBalancesSql = (types: string, accounts = `(SELECT $1::text AS account_id, $3::text AS asked, 1::bigint AS n) req`) => `
  WITH a AS (
    SELECT req.n, req.asked, a.id, a.name, a.plan_id, a.pending_plan_id, a.period_anchor, a.period_index,
           a.current_period_start, a.current_period_end, a.test_clock_id, tc.frozen_time,
           coalesce(tc.frozen_time, $2::timestamp(3)) AS now,
           EXISTS (SELECT 1 FROM auto_top_up_configs c WHERE c.account_id = a.id AND c.enabled) AS has_auto_top_up
    FROM ${accounts} JOIN accounts a ON a.id = req.account_id LEFT JOIN test_clocks tc ON tc.id = a.test_clock_id
  )
  SELECT a.n, a.id, a.name, a.plan_id, a.pending_plan_id, a.period_index, a.test_clock_id, a.has_auto_top_up,
         (extract(epoch FROM a.period_anchor) * 1000)::bigint AS period_anchor,
         (extract(epoch FROM a.current_period_start) * 1000)::bigint AS current_period_start,
         (extract(epoch FROM a.current_period_end) * 1000)::bigint AS current_period_end,
         (extract(epoch FROM a.frozen_time) * 1000)::bigint AS frozen_time,
         t.credit_type,
         (g.grants > 0 OR EXISTS (SELECT 1 FROM plan_allocations p WHERE p.plan_id = a.plan_id AND p.credit_type = t.credit_type)) AS known,
         coalesce(g.available, 0)::bigint AS available,
         coalesce(r.reserved, 0)::bigint AS reserved,
         coalesce(g.period_allocation, 0)::bigint AS period_allocation,
         coalesce(u.used, 0)::bigint AS period_used,
         coalesce(g.expiring, 0)::bigint AS expiring,
         coalesce(u.overage, 0)::bigint AS overage,
         (extract(epoch FROM g.next_expiry) * 1000)::bigint AS next_expiry
  FROM a
  LEFT JOIN LATERAL (${types}) t ON true
  LEFT JOIN LATERAL (
    SELECT count(*) AS grants,
      sum(remaining) FILTER (WHERE effective_at <= a.now AND (expires_at IS NULL OR expires_at > a.now)) AS available,
      sum(amount) FILTER (WHERE source IN ('PLAN', 'SEAT') AND period_start = a.current_period_start) AS period_allocation,
      sum(remaining) FILTER (WHERE effective_at <= a.now AND expires_at > a.now AND expires_at <= a.current_period_end) AS expiring,
      min(expires_at) FILTER (WHERE remaining > 0 AND effective_at <= a.now AND expires_at > a.now) AS next_expiry
    FROM grants WHERE account_id = a.id AND credit_type = t.credit_type
  ) g ON true
  LEFT JOIN LATERAL (
    SELECT sum(held) AS reserved FROM reservations WHERE account_id = a.id AND status = 'HELD' AND credit_type = t.credit_type
  ) r ON true
  LEFT JOIN period_usage_totals u ON u.account_id = a.id AND u.period_start = a.current_period_start AND u.credit_type = t.credit_type
  ORDER BY a.n, t.credit_type`;

const ASKED_TYPE = `SELECT a.asked AS credit_type WHERE a.asked IS NOT NULL`;
/** The asked type (or none) only. */
const ACCOUNT_BALANCE_SQL = accountBalancesSql(ASKED_TYPE);
/** The asked type and every type the account has, as loadBalances lists them. */
const ACCOUNT_ALL_BALANCES_SQL = accountBalancesSql(`${ASKED_TYPE}
    UNION SELECT credit_type FROM grants WHERE account_id = a.id
    UNION SELECT credit_type FROM plan_allocations WHERE plan_id = a.plan_id`);
/** The first statement for many accounts at once: $1 their ids, $3 the type asked of each (or null). */
const ACCOUNTS_BALANCE_SQL = accountBalancesSql(ASKED_TYPE, `unnest($1::text[], $3::text[]) WITH ORDINALITY AS req(account_id, asked, n)`);

/** pg returns BIGINT as a string, PGlite as a bigint. */
type Int8 = string | bigint;

interface AccountBalanceRow {
  n: Int8;
  id: string;
  name: string;
  plan_id: string;
  pending_plan_id: string | null;
  period_index: number;
  test_clock_id: string | null;
  has_auto_top_up: boolean;
  period_anchor: Int8;
  current_period_start: Int8;
  current_period_end: Int8;
  frozen_time: Int8 | null;
  credit_type: string | null;
  known: boolean | null;
  available: Int8;
  reserved: Int8;
  period_allocation: Int8;
  period_used: Int8;
  expiring: Int8;
  overage: Int8;
  next_expiry: Int8 | null;
}

export interface AccountWithBalances {
  account: LockedAccount;
  /** The balance of the type asked for, and with `allTypes` of every type the account has. */
  balances: Map<string, BalanceRecord>;
  /** With `allTypes`: what loadBalances answers, one per type the account has, in its order. */
  all: BalanceRecord[] | null;
}

/**
 * The account and the balance of `creditType` (null: none), and with `allTypes` those of every type
 * it has; null for an unknown account. `now` is the account's test clock's frozen time or the
 * clock's, as in findAccountState.
 */
export async function readAccountWithBalances(
  database: Pick<Database, 'statement'>,
  clock: Clock,
  accountId: string,
  creditType: string | null,
  allTypes = false,
): Promise<AccountWithBalances | null> {
  const clockNow = clock.now();
  const rows = await database.statement<AccountBalanceRow>(
    allTypes ? ACCOUNT_ALL_BALANCES_SQL : ACCOUNT_BALANCE_SQL,
    [accountId, clockNow.toISOString(), creditType],
    allTypes ? 'read_account_all_balances' : 'read_account_balance',
  );
  return rows.length === 0 ? null : toAccountWithBalances(rows, clockNow, allTypes);
}

/**
 * readAccountWithBalances (one type or none each) for many accounts in one statement: the reads of
 * concurrent requests, coalesced. Answers in the order asked, null for an unknown account.
 */
export async function readAccountsWithBalances(
  database: Pick<Database, 'statement'>,
  clock: Clock,
  reads: ReadonlyArray<{ accountId: string; creditType: string | null }>,
): Promise<Array<AccountWithBalances | null>> {
  const clockNow = clock.now();
  const rows = await database.statement<AccountBalanceRow>(
    ACCOUNTS_BALANCE_SQL,
    [reads.map((read) => read.accountId), clockNow.toISOString(), reads.map((read) => read.creditType)],
    'read_accounts_balance',
  );
  const byRead = new Map<number, AccountBalanceRow[]>();
  for (const row of rows) {
    const n = Number(row.n);
    const own = byRead.get(n) ?? [];
    own.push(row);
    byRead.set(n, own);
  }
  return reads.map((_read, index) => {
    const own = byRead.get(index + 1);
    return own ? toAccountWithBalances(own, clockNow, false) : null;
  });
}

function toAccountWithBalances(rows: AccountBalanceRow[], clockNow: Date, allTypes: boolean): AccountWithBalances {
  const first = rows[0]!;
  const account: LockedAccount = {
    id: first.id,
    name: first.name,
    planId: first.plan_id,
    pendingPlanId: first.pending_plan_id,
    periodAnchor: new Date(Number(first.period_anchor)),
    periodIndex: first.period_index,
    currentPeriodStart: new Date(Number(first.current_period_start)),
    currentPeriodEnd: new Date(Number(first.current_period_end)),
    testClockId: first.test_clock_id,
    hasAutoTopUp: first.has_auto_top_up,
    now: first.frozen_time === null ? clockNow : new Date(Number(first.frozen_time)),
  };
  const balances = new Map<string, BalanceRecord>();
  const all: BalanceRecord[] = [];
  for (const row of rows) {
    if (row.credit_type === null) continue;
    // A type neither granted nor allocated has no balance yet: zeros, exactly as loadBalance says.
    if (!row.known) {
      balances.set(row.credit_type, emptyBalance(row.credit_type));
      continue;
    }
    const balance = toBalanceRecord(row.credit_type, row, row.next_expiry === null ? null : new Date(Number(row.next_expiry)));
    balances.set(row.credit_type, balance);
    all.push(balance);
  }
  return { account, balances, all: allTypes ? all : null };
}
