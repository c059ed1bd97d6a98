import { lockAccount } from '../accounts/lockAccount.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import { returnCreditsToGrants, type CreditReturn } from './creditMovements.ts';
import { assertIdempotencyKey, assertStorableText } from './usageInput.ts';
import { notifyBalanceChanged } from '../realtime/events.ts';
import { findUsageEvent, type UsageEventRecord } from './usageEvents.ts';

export interface RefundUsageCommand {
  usageEventId: string;
  credits?: number | null;
  reason?: string | null;
  idempotencyKey: string;
}

/**
 * Splits a refund over what is still refundable of each draw, newest draw first; overage (charged
 * after every grant was drawn) is the newest part of an event and is refunded before any grant.
 */
export function computeRefundSplit(
  credits: number,
  overageLeft: number,
  drawsLeft: ReadonlyArray<{ grantId: string; refundable: number }>,
): { overage: number; returns: CreditReturn[] } {
  let left = credits;
  const overage = Math.min(left, overageLeft);
  left -= overage;
  const returns: CreditReturn[] = [];
  for (const draw of [...drawsLeft].reverse()) {
    if (left === 0) break;
    const amount = Math.min(left, draw.refundable);
    if (amount > 0) returns.push({ grantId: draw.grantId, credits: amount });
    left -= amount;
  }
  return { overage, returns };
}

/**
 * Gives all or part of an event's credits back to the grants they came from (Clay refunds a failed
 * provider's credits). A grant that has expired meanwhile gets its share recorded and expired again:
 * refunds never resurrect expired credits. Refunding more than is left is refused; idempotent on the key.
 */
export async function refundUsage(tx: Tx, clock: Clock, command: RefundUsageCommand): Promise<UsageEventRecord> {
  const idempotencyKey = assertIdempotencyKey(command.idempotencyKey);
  const reason = command.reason === undefined || command.reason === null ? null : assertStorableText(command.reason.slice(0, 500), 'reason');
  if (command.credits !== undefined && command.credits !== null) assertCredits(command.credits, 'credits');
  const found = await findUsageEvent(tx, command.usageEventId);
  if (!found) throw new BillingError(ErrorCode.USAGE_EVENT_NOT_FOUND, `usage event ${command.usageEventId} not found`);
  const account = await lockAccount(tx, clock, found.accountId);
  const requestHash = hashRequest({ usageEventId: found.id, credits: command.credits ?? null, reason });

  const previous = await tx.refund.findUnique({ where: { accountId_idempotencyKey: { accountId: account.id, idempotencyKey } } });
  if (previous) {
    if (previous.requestHash !== requestHash) {
      throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${idempotencyKey} was already used with a different refund`);
    }
    const event = await findUsageEvent(tx, previous.usageEventId);
    if (!event) throw new Error('refunded usage event is missing');
    return event;
  }

  const event = await findUsageEvent(tx, found.id);
  if (!event) throw new Error('usage event vanished under its account lock');
  const refundable = event.credits - event.refundedCredits;
  const credits = command.credits ?? refundable;
  if (credits <= 0 || credits > refundable) {
    throw new BillingError(
      ErrorCode.REFUND_EXCEEDS_CHARGE,
      `cannot refund ${credits} credits: ${refundable} of the ${event.credits} charged are left to refund`,
      { refundable },
    );
  }
  if (reason !== null && reason.trim().length === 0) throw invalidInput('reason, when given, must not be blank', 'reason');

  // The event's draws are its DEBIT entries, in consumption order (by id); what each grant got back
  // so far is the sum of the event's REFUND entries for it.
  const drawRows = await tx.$queryRaw<Array<{ grant_id: string; drawn: bigint; refunded: bigint }>>`
    SELECT d.grant_id, -d.credits AS drawn,
      coalesce((SELECT sum(l.credits) FROM ledger_entries l
                WHERE l.usage_event_id = d.usage_event_id AND l.grant_id = d.grant_id AND l.type = 'REFUND'), 0)::bigint AS refunded
    FROM ledger_entries d WHERE d.usage_event_id = ${event.id} AND d.type = 'DEBIT' ORDER BY d.id`;
  const split = computeRefundSplit(
    credits,
    event.overageCredits - event.overageRefunded,
    drawRows.map((row) => ({ grantId: row.grant_id, refundable: toCredits(row.drawn) - toCredits(row.refunded) })),
  );
  await returnCreditsToGrants(tx, account.id, split.returns, 'REFUND', account.now, { usageEventId: event.id });
  notifyBalanceChanged(tx, account.id, event.creditType);
  await tx.$executeRaw`
    WITH refunded AS (
      UPDATE usage_events SET refunded_credits = refunded_credits + ${BigInt(credits)}, overage_refunded = overage_refunded + ${BigInt(split.overage)}
      WHERE id = ${event.id}
      RETURNING account_id, credit_type, period_start
    )
    UPDATE period_usage_totals t SET used = t.used - ${BigInt(credits)}, overage = t.overage - ${BigInt(split.overage)}
    FROM refunded WHERE t.account_id = refunded.account_id AND t.credit_type = refunded.credit_type AND t.period_start = refunded.period_start`;
  await tx.refund.create({
    data: { id: newId(), accountId: account.id, usageEventId: event.id, credits: BigInt(credits), reason, idempotencyKey, requestHash, createdAt: account.now },
  });
  const refunded = await findUsageEvent(tx, event.id);
  if (!refunded) throw new Error('usage event vanished inside its own transaction');
  return refunded;
}
