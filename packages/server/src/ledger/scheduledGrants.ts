import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertCode, assertMoney } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, MAX_CREDITS, toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import type { ScheduledGrant } from '../generated/prisma/client.ts';
import { computeBillingPeriod } from '../domain/billingPeriod.ts';
import { getActiveSeat } from './authorizeSpend.ts';
import { assertGrantFeatures, assertPoolRoom, assertStorableUnitCost, poolHasRoom } from './grantCredits.ts';
import { insertGrant, type GrantFunding, type GrantSource } from './grants.ts';
import { assertIdempotencyKey } from './usageInput.ts';

export type ScheduleInterval = 'ONCE' | 'MONTH' | 'YEAR';

/** The most occurrences one schedule may have: a monthly drip for 100 years. */
export const MAX_OCCURRENCES = 1200;
/** Occurrences issued for one schedule in one pass; the rest follow on the next (bounded work per transaction). */
const MAX_ISSUED_PER_PASS = 100;

export interface ScheduleGrantCommand {
  accountId: string;
  creditType: string;
  amount: number;
  source: GrantSource;
  interval: ScheduleInterval;
  startsAt: Date;
  endsAt?: Date | null;
  expiresAfterDays?: number | null;
  seatId?: string | null;
  priority?: number | null;
  costBasis?: { unitCost: number; currency?: string | null; funding: GrantFunding } | null;
  /** Each grant applies only to these features (as grantCredits' featureKeys). */
  featureKeys?: readonly string[] | null;
  idempotencyKey: string;
}

export interface ScheduledGrantRecord {
  id: string;
  accountId: string;
  seatId: string | null;
  creditType: string;
  source: GrantSource;
  amount: number;
  interval: ScheduleInterval;
  startsAt: Date;
  endsAt: Date | null;
  expiresAfterDays: number | null;
  featureKeys: string[];
  issued: number;
  nextAt: Date | null;
  canceledAt: Date | null;
  createdAt: Date;
}

export function toScheduledGrantRecord(row: ScheduledGrant): ScheduledGrantRecord {
  return {
    id: row.id,
    accountId: row.accountId,
    seatId: row.seatId,
    creditType: row.creditType,
    source: row.source,
    amount: toCredits(row.amount),
    interval: row.interval,
    startsAt: row.startsAt,
    endsAt: row.endsAt,
    expiresAfterDays: row.expiresAfterDays,
    featureKeys: row.featureKeys,
    issued: row.issued,
    nextAt: row.nextAt,
    canceledAt: row.canceledAt,
    createdAt: row.createdAt,
  };
}

/** The instant of occurrence `index` (0 first): the start plus index months or years, day clamped to the month. */
export function occurrenceAt(schedule: { startsAt: Date; interval: ScheduleInterval }, index: number): Date {
  if (schedule.interval === 'ONCE') return schedule.startsAt;
  return computeBillingPeriod(schedule.startsAt, schedule.interval, index).start;
}

/** How many occurrences fall before `endsAt` (exclusive). */
export function occurrenceCount(schedule: { startsAt: Date; interval: ScheduleInterval; endsAt: Date | null }): number {
  if (schedule.interval === 'ONCE') return 1;
  let count = 0;
  while (count <= MAX_OCCURRENCES && occurrenceAt(schedule, count).getTime() < schedule.endsAt!.getTime()) count += 1;
  return count;
}

/**
 * A grant in the future, or recurring monthly or yearly until `endsAt` (exclusive), each occurrence
 * issued by the job runner (or an advanced test clock) at its instant. Idempotent on the key like
 * grantCredits. Occurrences may lie in the past: the runner catches them up, each dated at its own
 * instant.
 */
export async function scheduleGrant(tx: Tx, clock: Clock, command: ScheduleGrantCommand): Promise<ScheduledGrantRecord> {
  const idempotencyKey = assertIdempotencyKey(command.idempotencyKey);
  const creditType = assertCode(command.creditType, 'creditType');
  const amount = assertCredits(command.amount, 'amount');
  if (command.source === 'PURCHASE' || command.source === 'AUTO_TOP_UP') {
    throw invalidInput('purchased credits come from Stripe purchases, not schedules', 'source');
  }
  const endsAt = command.endsAt ?? null;
  // Date.UTC reads the years 0 to 99 as 1900 to 1999: occurrences of such a start would fall
  // centuries away from it (a monthly schedule of the year 50 found none before its end).
  if (command.startsAt.getUTCFullYear() < 1970) throw invalidInput('startsAt must be from 1970 on', 'startsAt');
  if (command.interval === 'ONCE' && endsAt !== null) throw invalidInput('endsAt is for recurring schedules', 'endsAt');
  if (command.interval !== 'ONCE' && (endsAt === null || endsAt.getTime() <= command.startsAt.getTime())) {
    throw invalidInput('a recurring schedule needs endsAt after startsAt', 'endsAt');
  }
  const occurrences = occurrenceCount({ startsAt: command.startsAt, interval: command.interval, endsAt });
  if (occurrences > MAX_OCCURRENCES) throw invalidInput(`a schedule has at most ${MAX_OCCURRENCES} occurrences`, 'endsAt');
  if (BigInt(amount) * BigInt(occurrences) > BigInt(MAX_CREDITS)) {
    throw new BillingError(ErrorCode.INVALID_CREDITS, `amount × occurrences must stay within ${MAX_CREDITS} credits`, { field: 'amount' });
  }
  const expiresAfterDays = command.expiresAfterDays ?? null;
  if (expiresAfterDays !== null && (!Number.isSafeInteger(expiresAfterDays) || expiresAfterDays < 1 || expiresAfterDays > 36_500)) {
    throw invalidInput('expiresAfterDays must be a whole number from 1 to 36500', 'expiresAfterDays');
  }
  if (command.priority !== undefined && command.priority !== null && (!Number.isSafeInteger(command.priority) || command.priority < 0 || command.priority > 1_000_000)) {
    throw invalidInput('priority must be a whole number from 0 to 1000000', 'priority');
  }
  const basis = command.costBasis ?? null;
  if (basis) {
    if (!(Number.isFinite(basis.unitCost) && basis.unitCost >= 0 && basis.unitCost <= 1e12)) throw invalidInput('costBasis.unitCost must be from 0 to 10^12', 'costBasis.unitCost');
    assertStorableUnitCost(basis.unitCost);
    if (basis.unitCost > 0 && !basis.currency) throw invalidInput('costBasis.currency is required with a unit cost above 0', 'costBasis.currency');
    if (basis.funding === 'PAID' && basis.unitCost === 0) throw invalidInput('PAID credits have a unit cost above 0', 'costBasis.funding');
  }
  const currency = basis?.currency ? assertMoney(0, basis.currency).currency : null;
  const featureKeys = await assertGrantFeatures(tx, creditType, command.featureKeys);
  const requestHash = hashRequest({
    ...(featureKeys.length > 0 ? { featureKeys } : {}),
    creditType,
    amount,
    source: command.source,
    interval: command.interval,
    startsAt: command.startsAt.toISOString(),
    endsAt: endsAt?.toISOString() ?? null,
    expiresAfterDays,
    seatId: command.seatId ?? null,
    priority: command.priority ?? null,
    basis: basis ? { unitCost: basis.unitCost, currency, funding: basis.funding } : null,
  });
  const account = await lockAccount(tx, clock, command.accountId);
  const previous = await tx.scheduledGrant.findUnique({ where: { accountId_idempotencyKey: { accountId: account.id, idempotencyKey } } });
  if (previous) {
    if (previous.requestHash !== requestHash) {
      throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${idempotencyKey} was already used with a different schedule`);
    }
    return toScheduledGrantRecord(previous);
  }
  const seatId = command.seatId ? (await getActiveSeat(tx, account.id, command.seatId)).id : null;
  // Refused now, as grantCredits refuses it, rather than failing the job runner's pass later.
  await assertPoolRoom(tx, account, creditType, amount * occurrences, command.source);
  const row = await tx.scheduledGrant.create({
    data: {
      id: newId(),
      accountId: account.id,
      seatId,
      creditType,
      source: command.source,
      amount: BigInt(amount),
      priority: command.priority ?? null,
      interval: command.interval,
      startsAt: command.startsAt,
      endsAt,
      expiresAfterDays,
      unitCost: basis ? String(basis.unitCost) : null,
      costCurrency: currency,
      funding: basis?.funding ?? null,
      featureKeys,
      nextAt: occurrences > 0 ? command.startsAt : null,
      idempotencyKey,
      requestHash,
      createdAt: account.now,
    },
  });
  // An occurrence already due is issued now, as the runner's next pass would (an account on a test
  // clock would otherwise wait for the clock's next advance): one pass, the rest follow as theirs.
  if (row.nextAt !== null && row.nextAt.getTime() <= account.now.getTime()) {
    await issueDueScheduledGrants(tx, account, account.now);
    return toScheduledGrantRecord(await tx.scheduledGrant.findUniqueOrThrow({ where: { id: row.id } }));
  }
  return toScheduledGrantRecord(row);
}

/** Stops a schedule: occurrences already issued stay, none follow. */
export async function cancelScheduledGrant(tx: Tx, clock: Clock, scheduleId: string, accountId: string): Promise<ScheduledGrantRecord> {
  const account = await lockAccount(tx, clock, accountId);
  const found = await tx.scheduledGrant.findFirst({ where: { id: scheduleId, accountId: account.id } });
  if (!found) throw new BillingError(ErrorCode.SCHEDULED_GRANT_NOT_FOUND, `scheduled grant ${scheduleId} not found`);
  if (found.canceledAt) return toScheduledGrantRecord(found);
  return toScheduledGrantRecord(await tx.scheduledGrant.update({ where: { id: found.id }, data: { canceledAt: account.now, nextAt: null } }));
}

/**
 * Issues every occurrence of the account's schedules due by `upTo`, oldest first, each a grant
 * effective (and its GRANT entry dated) at its own instant. The caller holds the account lock; the
 * schedule rows are locked too, and each occurrence's grant carries the key
 * `scheduled:<schedule>:<index>`, unique per account: an occurrence is issued once, whoever runs it.
 */
export async function issueDueScheduledGrants(tx: Tx, account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>, upTo: Date): Promise<number> {
  const due = await tx.$queryRaw<Array<{ id: string }>>`
    SELECT id FROM scheduled_grants WHERE account_id = ${account.id} AND next_at <= ${upTo} ORDER BY next_at, id FOR UPDATE`;
  let issued = 0;
  for (const { id } of due) {
    const schedule = await tx.scheduledGrant.findUniqueOrThrow({ where: { id } });
    const total = occurrenceCount(schedule);
    let index = schedule.issued;
    // Read once a schedule: the account lock holds the seat as it is for the whole pass.
    const seatAlive = schedule.seatId === null || (await tx.seat.count({ where: { id: schedule.seatId, removedAt: null } })) > 0;
    while (index < total && index - schedule.issued < MAX_ISSUED_PER_PASS) {
      const at = occurrenceAt(schedule, index);
      if (at.getTime() > upTo.getTime()) break;
      const exists = await tx.grant.count({ where: { accountId: account.id, idempotencyKey: `scheduled:${schedule.id}:${index}` } });
      // Other grants may have filled the pool since the schedule was made: an occurrence that would
      // take it beyond the largest number of credits is skipped, as grantCredits would refuse it,
      // instead of failing every later pass of the account (and the advance of its test clock).
      const fits = seatAlive && exists === 0 && (await poolHasRoom(tx, account, schedule.creditType, toCredits(schedule.amount), schedule.source));
      if (fits) {
        await insertGrant(
          tx,
          {
            accountId: account.id,
            seatId: schedule.seatId,
            creditType: schedule.creditType,
            source: schedule.source,
            amount: toCredits(schedule.amount),
            priority: schedule.priority ?? undefined,
            effectiveAt: at,
            expiresAt: schedule.expiresAfterDays ? new Date(at.getTime() + schedule.expiresAfterDays * 86_400_000) : null,
            idempotencyKey: `scheduled:${schedule.id}:${index}`,
            featureKeys: schedule.featureKeys,
            cost:
              schedule.unitCost === null
                ? null
                : { unitCost: Number(schedule.unitCost), currency: schedule.costCurrency, funding: schedule.funding },
          },
          at,
        );
        issued += 1;
      }
      index += 1;
    }
    const nextAt = index < total ? occurrenceAt(schedule, index) : null;
    await tx.scheduledGrant.update({ where: { id }, data: { issued: index, nextAt } });
  }
  return issued;
}
