import { lockAccount } from '../accounts/lockAccount.ts';
import { inTransaction, type Tx } from '../db/transaction.ts';
import { systemClock } from '../domain/clock.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { processDueWork } from './dueWork.ts';

export interface TestClockRecord {
  id: string;
  name: string | null;
  frozenTime: Date;
}

/** Test clocks run within these years (UTC); period arithmetic is tested within them, not beyond. */
export const TEST_CLOCK_YEARS = { from: 2000, to: 2100 } as const;

function assertTestClockTime(time: Date, field: string): void {
  const year = time.getUTCFullYear();
  if (!(year >= TEST_CLOCK_YEARS.from && year <= TEST_CLOCK_YEARS.to)) {
    throw invalidInput(`${field} must be within the years ${TEST_CLOCK_YEARS.from} to ${TEST_CLOCK_YEARS.to}`, field);
  }
}

export async function createTestClock(tx: Tx, input: { frozenTime: Date; name?: string | null }): Promise<TestClockRecord> {
  assertTestClockTime(input.frozenTime, 'frozenTime');
  const name = input.name?.trim() || null;
  if (name && (name.length > 200 || name.includes('\u0000'))) throw invalidInput('name must be at most 200 characters, without NUL', 'name');
  const clock = await tx.testClock.create({ data: { frozenTime: input.frozenTime, name } });
  return { id: clock.id, name: clock.name, frozenTime: clock.frozenTime };
}

export async function findTestClock(tx: Tx, id: string): Promise<TestClockRecord | null> {
  const clock = await tx.testClock.findUnique({ where: { id } });
  return clock ? { id: clock.id, name: clock.name, frozenTime: clock.frozenTime } : null;
}

/**
 * Moves a test clock forward (as in Stripe) and runs, for every account attached to it, everything
 * that fell due in between, in time order: holds timing out, grants expiring, periods renewing. Each
 * account is processed in its own transaction under its lock; the clock moves once all are done, so
 * a caller that gets the answer sees the work finished. Time never goes backwards.
 */
export async function advanceTestClock(prisma: PrismaClient, id: string, to: Date): Promise<TestClockRecord> {
  const clock = await findTestClock(prisma, id);
  if (!clock) throw new BillingError(ErrorCode.TEST_CLOCK_NOT_FOUND, `test clock ${id} not found`);
  assertTestClockTime(to, 'to');
  if (to.getTime() < clock.frozenTime.getTime()) {
    throw new BillingError(
      ErrorCode.INVALID_CLOCK_ADVANCE,
      `a test clock only moves forward: ${to.toISOString()} is before ${clock.frozenTime.toISOString()}`,
    );
  }
  const accounts = await prisma.account.findMany({ where: { testClockId: id }, select: { id: true }, orderBy: { createdAt: 'asc' } });
  for (const { id: accountId } of accounts) {
    // A pass issues at most a bounded number of each schedule's occurrences (one transaction's
    // work): passes follow until none falls due by `to`, so that the answer finds them all issued.
    do {
      await inTransaction(prisma, async (tx) => processDueWork(tx, await lockAccount(tx, systemClock, accountId), to));
    } while ((await prisma.scheduledGrant.count({ where: { accountId, nextAt: { lte: to } } })) > 0);
  }
  await prisma.testClock.update({ where: { id }, data: { frozenTime: to } });
  return { ...clock, frozenTime: to };
}
