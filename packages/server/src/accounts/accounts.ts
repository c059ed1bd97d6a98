import { assertAccountMetadata, assertExternalId, setExternalId } from './accountDirectory.ts';
import { findPlanByCode, getPlanById, type PlanRecord } from '../catalog/plans.ts';
import { assertName } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { newId } from '../domain/ids.ts';
import { expireDueGrants } from '../ledger/creditMovements.ts';
import { insertGrant } from '../ledger/grants.ts';
import { computeBillingPeriod } from '../domain/billingPeriod.ts';
import { lockAccount, type LockedAccount } from './lockAccount.ts';
import { grantAllocationTopUps } from './periodAllocationBound.ts';

export interface SeatRecord {
  id: string;
  accountId: string;
  name: string;
  canUseSharedPool: boolean;
}

export interface CreateAccountCommand {
  name: string;
  planCode: string;
  testClockId?: string | null;
  externalId?: string | null;
  metadata?: unknown;
}

/**
 * Grants a period's shared allocations (per-seat ones go to each seat), expiring with the period.
 * Zero allocations grant nothing: a plan may list a credit type only to show it.
 */
export async function grantPeriodAllocations(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart' | 'currentPeriodEnd'>,
  plan: PlanRecord,
  seatIds: readonly string[],
  now: Date,
): Promise<void> {
  for (const allocation of plan.allocations) {
    if (allocation.amount === 0) continue;
    const owners = allocation.perSeat ? seatIds : [null];
    for (const seatId of owners) {
      await insertGrant(
        tx,
        {
          accountId: account.id,
          seatId,
          creditType: allocation.creditType,
          source: allocation.perSeat ? 'SEAT' : 'PLAN',
          amount: allocation.amount,
          effectiveAt: now,
          expiresAt: account.currentPeriodEnd,
          periodStart: account.currentPeriodStart,
        },
        now,
      );
    }
  }
}

/** Creates a customer account subscribed to a plan from now (its clock's now), with the first period granted. */
export async function createAccount(tx: Tx, clock: Clock, command: CreateAccountCommand): Promise<{ id: string }> {
  const name = assertName(command.name);
  const externalId = command.externalId === undefined || command.externalId === null ? null : assertExternalId(command.externalId);
  const metadata = assertAccountMetadata(command.metadata);
  const plan = await findPlanByCode(tx, command.planCode);
  if (!plan) throw new BillingError(ErrorCode.PLAN_NOT_FOUND, `plan ${command.planCode} not found`);
  let now = clock.now();
  if (command.testClockId) {
    const testClock = await tx.testClock.findUnique({ where: { id: command.testClockId } });
    if (!testClock) throw new BillingError(ErrorCode.TEST_CLOCK_NOT_FOUND, `test clock ${command.testClockId} not found`);
    now = testClock.frozenTime;
  }
  const period = computeBillingPeriod(now, plan.interval, 0);
  const id = newId();
  await tx.account.create({
    data: {
      id,
      name,
      planId: plan.id,
      periodAnchor: period.start,
      periodIndex: 0,
      currentPeriodStart: period.start,
      currentPeriodEnd: period.end,
      testClockId: command.testClockId ?? null,
      metadata,
      createdAt: now,
    },
  });
  if (externalId !== null) await setExternalId(tx, id, externalId);
  await grantPeriodAllocations(tx, { id, currentPeriodStart: period.start, currentPeriodEnd: period.end }, plan, [], now);
  return { id };
}

export interface AddSeatCommand {
  accountId: string;
  name: string;
  canUseSharedPool?: boolean | null;
}

/**
 * A seat added mid-period receives its full per-seat allocation at once (no proration), unless it
 * takes the place of a seat removed in this period: per-seat grants of a period never exceed the
 * peak number of seats held at once times the allocation (periodAllocationBound.ts), so adding and
 * removing seats cannot mint allocations.
 */
export async function addSeat(tx: Tx, clock: Clock, command: AddSeatCommand): Promise<SeatRecord> {
  const account = await lockAccount(tx, clock, command.accountId);
  const seat = await tx.seat.create({
    data: {
      accountId: account.id,
      name: assertName(command.name),
      canUseSharedPool: command.canUseSharedPool ?? true,
      createdAt: account.now,
    },
  });
  const plan = await getPlanById(tx, account.planId);
  const activeSeats = await tx.seat.count({ where: { accountId: account.id, removedAt: null } });
  await grantAllocationTopUps(tx, account, plan, { shared: false, seatIds: [seat.id], activeSeats }, account.now);
  return { id: seat.id, accountId: seat.accountId, name: seat.name, canUseSharedPool: seat.canUseSharedPool };
}

/**
 * Current seats, oldest first; with `page`, at most `size` after the seat `after` (its id); with
 * `onlySeatId`, that seat alone.
 */
export async function listSeats(
  tx: Tx,
  accountId: string,
  page: { size: number; after: string | null } | null = null,
  onlySeatId: string | null = null,
): Promise<SeatRecord[]> {
  const seats = await tx.seat.findMany({
    where: { accountId, removedAt: null, ...(onlySeatId ? { id: onlySeatId } : {}) },
    orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
    ...(page ? { take: page.size } : {}),
    ...(page?.after ? { cursor: { id: page.after }, skip: 1 } : {}),
  });
  return seats.map((seat) => ({ id: seat.id, accountId: seat.accountId, name: seat.name, canUseSharedPool: seat.canUseSharedPool }));
}

export interface UpdateSeatCommand {
  seatId: string;
  name?: string | null;
  canUseSharedPool?: boolean | null;
}

/** Renames a seat or bars it from (or lets it back into) the shared pool. */
export async function updateSeat(tx: Tx, clock: Clock, accountId: string, command: UpdateSeatCommand): Promise<SeatRecord> {
  await lockAccount(tx, clock, accountId);
  const seat = await tx.seat.findFirst({ where: { id: command.seatId, accountId, removedAt: null } });
  if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${command.seatId} not found in this account`);
  const updated = await tx.seat.update({
    where: { id: seat.id },
    data: {
      ...(command.name ? { name: assertName(command.name) } : {}),
      ...(command.canUseSharedPool !== undefined && command.canUseSharedPool !== null ? { canUseSharedPool: command.canUseSharedPool } : {}),
    },
  });
  return { id: updated.id, accountId: updated.accountId, name: updated.name, canUseSharedPool: updated.canUseSharedPool };
}

/**
 * Removes a seat: its own grants expire with it (per-seat credits are not transferable), recorded
 * as EXPIRE entries now, and its keys stop working.
 */
export async function removeSeat(tx: Tx, clock: Clock, accountId: string, seatId: string): Promise<SeatRecord> {
  const account = await lockAccount(tx, clock, accountId);
  const seat = await tx.seat.findFirst({ where: { id: seatId, accountId, removedAt: null } });
  if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${seatId} not found in this account`);
  await tx.seat.update({ where: { id: seat.id }, data: { removedAt: account.now } });
  await tx.$executeRaw`
    UPDATE grants SET expires_at = ${account.now}
    WHERE seat_id = ${seat.id} AND expired_at IS NULL AND (expires_at IS NULL OR expires_at > ${account.now})`;
  await expireDueGrants(tx, account.id, account.now);
  await tx.apiKey.updateMany({ where: { seatId: seat.id, revokedAt: null }, data: { revokedAt: account.now } });
  return { id: seat.id, accountId: seat.accountId, name: seat.name, canUseSharedPool: seat.canUseSharedPool };
}
