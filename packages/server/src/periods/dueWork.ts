import { grantPeriodAllocations } from '../accounts/accounts.ts';
import type { LockedAccount } from '../accounts/lockAccount.ts';
import { getPlanById, type PlanRecord } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { newId } from '../domain/ids.ts';
import { expireDueGrants } from '../ledger/creditMovements.ts';
import { insertGrant } from '../ledger/grants.ts';
import { expireDueReservations } from '../ledger/reservations.ts';
import { issueDueScheduledGrants } from '../ledger/scheduledGrants.ts';
import { computeBillingPeriod } from '../domain/billingPeriod.ts';
import { computeRolloverCarry, type RolloverRule } from './rollover.ts';
import { evaluateBalanceAlerts, raiseExpiringSoonAlerts } from '../alerts/alerts.ts';
import { loadBalances } from '../ledger/balances.ts';

/** The earliest instant something falls due for the account: a hold's TTL, a grant's expiry, the period end. */
async function findNextDueInstant(tx: Tx, account: LockedAccount): Promise<Date> {
  const [row] = await tx.$queryRaw<Array<{ next: Date }>>`
    SELECT least(
      (SELECT min(expires_at) FROM grants WHERE account_id = ${account.id} AND expired_at IS NULL AND expires_at IS NOT NULL),
      (SELECT min(expires_at) FROM reservations WHERE account_id = ${account.id} AND status = 'HELD'),
      ${account.currentPeriodEnd}::timestamp
    ) AS next`;
  return row?.next ?? account.currentPeriodEnd;
}

function sharedRule(plan: PlanRecord, creditType: string): RolloverRule | null {
  const allocation = plan.allocations.find((candidate) => candidate.creditType === creditType && !candidate.perSeat);
  return allocation ? { rollover: allocation.rollover, rolloverValue: allocation.rolloverValue, amount: allocation.amount } : null;
}

/**
 * Ends the current period at its end instant, in the caller's transaction (one per account): the
 * rollover rule carries part of the unused plan-sourced credits (plan and earlier rollover grants of
 * the shared pool; per-seat grants never roll over), every grant due expires, a pending downgrade
 * takes effect, and the next period's allocations are granted, spendable from that same instant.
 * The unique (account, period start) renewal row makes a second renewal of one period impossible.
 */
async function renewPeriod(tx: Tx, account: LockedAccount): Promise<LockedAccount> {
  const at = account.currentPeriodEnd;
  const endedPlan = await getPlanById(tx, account.planId);
  const nextPlan = account.pendingPlanId ? await getPlanById(tx, account.pendingPlanId) : endedPlan;
  const planChanged = nextPlan.id !== endedPlan.id;

  const unusedRows = await tx.$queryRaw<Array<{ credit_type: string; unused: bigint }>>`
    SELECT credit_type, sum(remaining)::bigint AS unused FROM grants
    WHERE account_id = ${account.id} AND seat_id IS NULL AND source IN ('PLAN', 'ROLLOVER')
      AND expired_at IS NULL AND expires_at <= ${at}
    GROUP BY credit_type ORDER BY credit_type`;
  // In credit-type order, so that the ledger order of the rollover grants is the same every time
  // (renew_due_batch, the set-based renewal, writes them in that order too).
  const carries = unusedRows
    .map((row) => ({
      creditType: row.credit_type,
      credits: computeRolloverCarry(toCredits(row.unused), sharedRule(endedPlan, row.credit_type), sharedRule(nextPlan, row.credit_type), planChanged),
    }))
    .filter((carry) => carry.credits > 0);

  await expireDueGrants(tx, account.id, at);

  // A change of interval starts a new anniversary at the renewal; otherwise periods keep the anchor.
  const reanchor = planChanged && nextPlan.interval !== endedPlan.interval;
  const anchor = reanchor ? at : account.periodAnchor;
  const index = reanchor ? 0 : account.periodIndex + 1;
  const period = computeBillingPeriod(anchor, nextPlan.interval, index);
  await tx.$executeRaw`
    UPDATE accounts SET plan_id = ${nextPlan.id}, pending_plan_id = NULL, period_anchor = ${anchor}, period_index = ${index},
      current_period_start = ${period.start}, current_period_end = ${period.end}
    WHERE id = ${account.id}`;
  await tx.$executeRaw`
    INSERT INTO period_renewals (id, account_id, period_start, period_end, plan_id, closed_plan_id, created_at)
    VALUES (${newId()}, ${account.id}, ${period.start}, ${period.end}, ${nextPlan.id}, ${planChanged ? endedPlan.id : null}, ${at})`;

  const renewed: LockedAccount = {
    ...account,
    planId: nextPlan.id,
    pendingPlanId: null,
    periodAnchor: anchor,
    periodIndex: index,
    currentPeriodStart: period.start,
    currentPeriodEnd: period.end,
  };
  for (const carry of carries) {
    await insertGrant(
      tx,
      {
        accountId: account.id,
        seatId: null,
        creditType: carry.creditType,
        source: 'ROLLOVER',
        amount: carry.credits,
        effectiveAt: at,
        expiresAt: period.end,
        periodStart: period.start,
      },
      at,
    );
  }
  const seats = await tx.seat.findMany({ where: { accountId: account.id, removedAt: null }, select: { id: true }, orderBy: { createdAt: 'asc' } });
  await grantPeriodAllocations(tx, renewed, nextPlan, seats.map((seat) => seat.id), at);
  return renewed;
}

/**
 * Runs, in time order, everything that fell due for a locked account up to `upTo` (its now by
 * default): expired holds are released, expired grants recorded, and ended periods renewed, catching
 * up any number of missed periods. Safe to call at any time: work already done is not found again.
 * Returns the account as it stands after.
 */
export async function processDueWork(tx: Tx, account: LockedAccount, upTo: Date = account.now): Promise<LockedAccount> {
  let current = account;
  // Scheduled grants first, each dated at its occurrence: the expiries below then see them.
  let worked = (await issueDueScheduledGrants(tx, account, upTo)) > 0;
  for (;;) {
    const next = await findNextDueInstant(tx, current);
    if (next.getTime() > upTo.getTime()) break;
    worked = true;
    await expireDueReservations(tx, current.id, next);
    if (current.currentPeriodEnd.getTime() <= next.getTime()) {
      current = await renewPeriod(tx, current);
    } else {
      await expireDueGrants(tx, current.id, next);
    }
  }
  if (worked) {
    // Expiry can take a pool below its low-balance level or to zero; the new period may start low.
    for (const balance of await loadBalances(tx, { ...current, accountId: current.id, now: upTo })) {
      await evaluateBalanceAlerts(tx, current, balance, upTo);
    }
  }
  await raiseExpiringSoonAlerts(tx, current, upTo);
  return current;
}

/** Renews an account whose period has ended before it is used, so its credits are there the instant the period starts. */
export async function renewIfPeriodEnded(tx: Tx, account: LockedAccount): Promise<LockedAccount> {
  return account.currentPeriodEnd.getTime() <= account.now.getTime() ? processDueWork(tx, account) : account;
}
