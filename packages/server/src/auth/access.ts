import { BillingError, ErrorCode } from '../domain/errors.ts';

/** Who is calling, as established from the API key. */
export type Actor =
  | { role: 'ADMIN'; keyId: string }
  | { role: 'ACCOUNT'; keyId: string; accountId: string }
  | { role: 'SEAT'; keyId: string; accountId: string; seatId: string };

export function canReadAccount(actor: Actor, accountId: string): boolean {
  return actor.role === 'ADMIN' || actor.accountId === accountId;
}

/**
 * Refuses access to another tenant's account with the same error an unknown account gets, so that a
 * key learns nothing, not even whether the account exists.
 */
export function requireAccountAccess(actor: Actor, accountId: string, access: 'read' | 'write'): void {
  if (!canReadAccount(actor, accountId)) {
    throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${accountId} not found`);
  }
  if (access === 'write' && actor.role === 'SEAT') {
    throw new BillingError(ErrorCode.FORBIDDEN, 'a SEAT key can only read its account and follow its alerts');
  }
}

export function requireAdmin(actor: Actor, action: string): void {
  if (actor.role !== 'ADMIN') throw new BillingError(ErrorCode.FORBIDDEN, `only the operator (an ADMIN key) can ${action}`);
}
