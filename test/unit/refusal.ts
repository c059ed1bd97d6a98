import { expect } from 'vitest';
import { BillingError } from '../../packages/server/src/domain/errors.ts';

/** Runs `action`, expects a BillingError, and returns what a client would see of it. */
export function refusal(action: () => unknown): { code: string; message: string; details: Record<string, unknown> } {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(BillingError);
    const billingError = error as BillingError;
    return { code: billingError.code, message: billingError.message, details: billingError.details };
  }
  throw new Error('expected a refusal, but the call succeeded');
}
