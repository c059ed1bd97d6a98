import { BillingError, ErrorCode } from './errors.ts';

/** Credits are whole numbers that fit a JSON integer exactly. */
export const MAX_CREDITS = Number.MAX_SAFE_INTEGER;
/** The largest quantity one usage event may carry: beyond it is a caller's bug, not usage. */
export const MAX_QUANTITY = 1_000_000_000;

export function assertCredits(value: number, field: string, { allowZero = false } = {}): number {
  if (!Number.isSafeInteger(value) || value < 0 || (!allowZero && value === 0)) {
    throw new BillingError(
      ErrorCode.INVALID_CREDITS,
      `${field} must be a whole number of credits ${allowZero ? 'from 0' : 'from 1'} to ${MAX_CREDITS}`,
      { field },
    );
  }
  return value;
}

/** Converts what the database returns for a BIGINT or NUMERIC credit sum to a safe JS number. */
export function toCredits(value: bigint | number | string | null | undefined | { toString(): string }): number {
  if (value === null || value === undefined) return 0;
  const number = typeof value === 'number' ? value : Number(value.toString());
  if (!Number.isSafeInteger(number)) throw new Error(`credit amount out of range: ${String(value)}`);
  return number;
}

/** The database constraint holding each period's usage total within MAX_CREDITS. */
const USAGE_TOTAL_CONSTRAINT = 'period_usage_totals_within_credits';

/** Whether an error (or what it wraps) is that constraint refusing a write. */
export function isUsageTotalOverflow(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth += 1) {
    if (current instanceof Error && current.message.includes(USAGE_TOTAL_CONSTRAINT)) return true;
    const fields = current as { constraint?: unknown; meta?: unknown; cause?: unknown; originalError?: unknown };
    if (fields.constraint === USAGE_TOTAL_CONSTRAINT || JSON.stringify(fields.meta ?? null).includes(USAGE_TOTAL_CONSTRAINT)) return true;
    current = fields.cause ?? fields.originalError;
  }
  return false;
}
