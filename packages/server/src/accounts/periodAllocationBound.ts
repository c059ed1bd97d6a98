import type { PlanRecord } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import { toCredits } from '../domain/credits.ts';
import { insertGrant } from '../ledger/grants.ts';
import type { LockedAccount } from './lockAccount.ts';

/** The allocation grants (PLAN and SEAT) the account's current period has made so far. */
interface PeriodAllocationGrants {
  /** Shared pool, by credit type. */
  shared: Map<string, number>;
  /** Per seat, by `seatId/creditType`. */
  seat: Map<string, number>;
  /** All seats together (removed ones included), by credit type. */
  seatsTotal: Map<string, number>;
}

async function readPeriodAllocationGrants(tx: Tx, account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>): Promise<PeriodAllocationGrants> {
  // period_start is set only on allocation grants made for a period; an operator's grantCredits
  // (even with source PLAN) has none and is not an allocation.
  const rows = await tx.$queryRaw<Array<{ seat_id: string | null; credit_type: string; granted: bigint }>>`
    SELECT seat_id, credit_type, sum(amount)::bigint AS granted FROM grants
    WHERE account_id = ${account.id} AND period_start = ${account.currentPeriodStart}
      AND ((source = 'PLAN' AND seat_id IS NULL) OR (source = 'SEAT' AND seat_id IS NOT NULL))
    GROUP BY seat_id, credit_type`;
  const grants: PeriodAllocationGrants = { shared: new Map(), seat: new Map(), seatsTotal: new Map() };
  for (const row of rows) {
    const granted = toCredits(row.granted);
    if (row.seat_id === null) {
      grants.shared.set(row.credit_type, granted);
    } else {
      grants.seat.set(`${row.seat_id}/${row.credit_type}`, granted);
      grants.seatsTotal.set(row.credit_type, (grants.seatsTotal.get(row.credit_type) ?? 0) + granted);
    }
  }
  return grants;
}

export interface AllocationTopUp {
  /** Top up the shared pool (a plan change) or not (a new seat). */
  shared: boolean;
  /** The seats whose own allocation to top up, oldest first. */
  seatIds: readonly string[];
  /** How many seats the account holds now, those included. */
  activeSeats: number;
}

/**
 * Grants, within the current period, what `plan` allocates beyond what the period has already
 * granted, so that no sequence of plan changes and seat changes mints credits:
 * - the shared pool of a credit type receives the plan's allocation minus the period's shared
 *   allocation grants so far (an upgrade grants the difference, a downgrade nothing), so the period
 *   never grants more than the largest allocation among the plans held in it;
 * - a seat receives its allocation minus what the period granted it, and never more than the
 *   seats held now times the allocation minus what the period granted all seats, removed ones
 *   included. Per-seat grants of a period thus never exceed its peak number of seats held at once
 *   times the largest per-seat allocation: a seat that replaces a removed one takes up the removed
 *   seat's allocation, while a seat beyond the period's peak receives its full allocation.
 * Grants expire with the period; the next period grants afresh.
 */
export async function grantAllocationTopUps(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart' | 'currentPeriodEnd'>,
  plan: PlanRecord,
  topUp: AllocationTopUp,
  now: Date,
): Promise<void> {
  const granted = await readPeriodAllocationGrants(tx, account);
  for (const allocation of plan.allocations) {
    if (allocation.amount === 0) continue;
    const base = {
      accountId: account.id,
      creditType: allocation.creditType,
      effectiveAt: now,
      expiresAt: account.currentPeriodEnd,
      periodStart: account.currentPeriodStart,
    };
    if (!allocation.perSeat) {
      const amount = allocation.amount - (granted.shared.get(allocation.creditType) ?? 0);
      if (topUp.shared && amount > 0) await insertGrant(tx, { ...base, seatId: null, source: 'PLAN', amount }, now);
      continue;
    }
    let seatsTotal = granted.seatsTotal.get(allocation.creditType) ?? 0;
    for (const seatId of topUp.seatIds) {
      const ownShortfall = allocation.amount - (granted.seat.get(`${seatId}/${allocation.creditType}`) ?? 0);
      const amount = Math.min(ownShortfall, topUp.activeSeats * allocation.amount - seatsTotal);
      if (amount <= 0) continue;
      await insertGrant(tx, { ...base, seatId, source: 'SEAT', amount }, now);
      seatsTotal += amount;
    }
  }
}
