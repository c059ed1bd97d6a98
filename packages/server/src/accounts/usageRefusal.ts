import type { Tx } from '../db/transaction.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import type { LockedAccount } from './lockAccount.ts';

const REFUSAL_TRIGGER = 'usage_refused_by_subscription';

/**
 * Whether an error (or what it wraps) is the trigger usage_refused_by_subscription refusing a
 * one-statement charge of an account whose usage is refused: nothing was written, and the usage
 * goes to the complete path, which answers the typed refusal.
 */
export function isUsageRefusedBySubscription(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth += 1) {
    if (current instanceof Error && current.message.includes(REFUSAL_TRIGGER)) return true;
    const fields = current as { constraint?: unknown; cause?: unknown; originalError?: unknown };
    if (fields.constraint === REFUSAL_TRIGGER) return true;
    current = fields.cause ?? fields.originalError;
  }
  return false;
}

/** Why new usage is refused: the renewal is unpaid past its grace period, or the subscription ended without a free plan. */
export type UsageRefusalReason = 'PAYMENT_OVERDUE' | 'SUBSCRIPTION_ENDED';

/**
 * Refuses new usage (usage, holds) of an account whose refusal instant has come: its renewal is
 * unpaid past the grace period (PAYMENT_OVERDUE) or its subscription ended without a free plan to
 * move to (SUBSCRIPTION_ENDED). Called under the account lock by the complete path; the one-statement
 * paths hand such accounts to it (they never charge an account whose `usage_refused_from` has come).
 * The state is set by subscriptions/subscriptions.ts.
 */
export async function assertUsageAllowed(tx: Tx, account: Pick<LockedAccount, 'id' | 'now'>): Promise<void> {
  const [row] = await tx.$queryRaw<Array<{ usage_refused_from: Date | null; usage_refused_reason: string | null; past_due_invoice_id: string | null }>>`
    SELECT usage_refused_from, usage_refused_reason, past_due_invoice_id FROM accounts WHERE id = ${account.id}`;
  if (!row?.usage_refused_from || row.usage_refused_from.getTime() > account.now.getTime()) return;
  if (row.usage_refused_reason === 'SUBSCRIPTION_ENDED') {
    throw new BillingError(ErrorCode.SUBSCRIPTION_ENDED, 'the subscription has ended: subscribe to a plan to use credits again', {
      since: row.usage_refused_from.toISOString(),
    });
  }
  throw new BillingError(ErrorCode.PAYMENT_OVERDUE, 'the subscription renewal is unpaid and its grace period is over: usage resumes once the invoice is paid', {
    since: row.usage_refused_from.toISOString(),
    invoiceId: row.past_due_invoice_id,
  });
}

