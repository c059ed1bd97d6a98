import { BillingError, ErrorCode } from '../domain/errors.ts';

/**
 * What a session token (auth/sessionTokens.ts) allows beyond reading and following its account or
 * seat. A session holds only the `signedIn` scope (and `buyer` with `canBuy`), whatever its role.
 */
export interface SessionGrant {
  id: string;
  canBuy: boolean;
  expiresAt: Date;
}

/** Who is calling, as established from the API key or session token. */
export type Actor =
  | { role: 'ADMIN'; keyId: string; session?: undefined }
  | { role: 'ACCOUNT'; keyId: string; accountId: string; session?: SessionGrant }
  | { role: 'SEAT'; keyId: string; accountId: string; seatId: string; session?: SessionGrant };

export type ApiKeyRole = Actor['role'];

/**
 * The scopes a GraphQL field declares in `authScopes` where it is defined, and the key roles holding
 * each. A field is callable by a role only if the role holds one of its scopes; which account or
 * seat the call may touch is checked by the resolver on the ids it is given.
 */
export const SCOPE_ROLES = {
  /** Any valid key. */
  signedIn: ['ADMIN', 'ACCOUNT', 'SEAT'],
  /** The operator. */
  admin: ['ADMIN'],
  /** Changes an account's state (usage, holds, seats, settings): the operator or the account's back end. */
  writer: ['ADMIN', 'ACCOUNT'],
  /** Issues, rotates and revokes API keys and session tokens. */
  credentialManager: ['ADMIN', 'ACCOUNT'],
  /** Buys credit packs: the operator, the account's back end, and session tokens issued with `canBuy`. */
  buyer: ['ADMIN', 'ACCOUNT'],
  /** Reads what Stripe billed the account (invoices): the operator and the account, never a seat. */
  billingReader: ['ADMIN', 'ACCOUNT'],
  /**
   * Saves and removes the account's card on file and opens Stripe's Customer Portal: the operator,
   * the account's back end, and an account-wide session token issued with `canBuy` (the customer's
   * browser). Never a SEAT key or a seat's session: a seat's user does not manage the account's card.
   */
  cardManager: ['ADMIN', 'ACCOUNT'],
  /**
   * Corrects the ledger (voidGrant, adjustCredits, changeGrantExpiry): the operator alone. A positive
   * adjustment creates credits without money, a void or a negative one takes credits the customer
   * may have paid for; an account's own back end may do neither, a seat or a session still less.
   */
  corrector: ['ADMIN'],
} as const satisfies Record<string, readonly ApiKeyRole[]>;

export type AuthScope = keyof typeof SCOPE_ROLES;

/**
 * The scopes a caller holds; a request without a valid key holds none. A session token holds only
 * `signedIn` (reads, live feeds, acknowledging alerts), `buyer` if issued with `canBuy`, and
 * `billingReader` if it is account-wide (and `cardManager` too when it is also issued with `canBuy`).
 */
export function scopesOf(actor: Actor | null): Record<AuthScope, boolean> {
  if (actor?.session) {
    const { canBuy } = actor.session;
    const accountWide = actor.role === 'ACCOUNT';
    // An account-wide session (a billing page) may read the account's invoices; a seat's may not.
    return {
      signedIn: true,
      admin: false,
      writer: false,
      credentialManager: false,
      buyer: canBuy,
      billingReader: accountWide,
      cardManager: canBuy && accountWide,
      corrector: false,
    };
  }
  const held = (scope: AuthScope) => actor !== null && (SCOPE_ROLES[scope] as readonly ApiKeyRole[]).includes(actor.role);
  return {
    signedIn: held('signedIn'),
    admin: held('admin'),
    writer: held('writer'),
    credentialManager: held('credentialManager'),
    buyer: held('buyer'),
    billingReader: held('billingReader'),
    cardManager: held('cardManager'),
    corrector: held('corrector'),
  };
}

/**
 * The seat a caller is confined to within its account, or null when it sees the whole account. A
 * SEAT key sees its own seat's usage, holds, grants and limits and the shared pool, never another
 * seat's: every read of seat-owned rows filters by this.
 */
export function seatScopeOf(actor: Actor | null): string | null {
  return actor?.role === 'SEAT' ? actor.seatId : null;
}

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
  if (access === 'write' && actor.session) {
    throw new BillingError(ErrorCode.FORBIDDEN, 'a session token can only read its account, follow its alerts and (if allowed) buy credits');
  }
  if (access === 'write' && actor.role === 'SEAT') {
    throw new BillingError(ErrorCode.FORBIDDEN, 'a SEAT key can only read its account and follow its alerts');
  }
}
