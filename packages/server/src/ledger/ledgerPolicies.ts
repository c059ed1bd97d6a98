import type { LockedAccount } from '../accounts/lockAccount.ts';
import type { Tx } from '../db/transaction.ts';
import type { BalanceRecord } from './balances.ts';
import type { SpendLimitRecord } from './spendLimits.ts';

/**
 * What the ledger reports as it works, to the billing policies that react to it: renewing periods
 * (periods/), auto top-up (stripe/), alerts (alerts/). The ledger imports none of them (a test
 * holds it to that); app.ts wires them in with wireLedgerPolicies. Each call is made in the
 * ledger's transaction, under the account lock, so a policy's writes commit or roll back with the
 * change it reacts to.
 */
export interface LedgerPolicies {
  /**
   * An account was locked for a change of its credits: work that fell due is done first (an ended
   * period renewed; with 'allDue', holds past their TTL and grants past their expiry too), and the
   * account is returned as it then stands.
   */
  accountLocked(tx: Tx, account: LockedAccount, due: 'periodEnded' | 'allDue'): Promise<LockedAccount>;
  /** A spend drew from the account's shared pool: its spendable credits before and after. */
  sharedPoolDrawn(tx: Tx, account: LockedAccount, creditType: string, change: { before: number; after: number }): Promise<void>;
  /** A change that can lower a pool's balance happened (a debit, a hold, a settlement, a correction): the balance after it. */
  balanceChanged(tx: Tx, account: LockedAccount, balance: BalanceRecord): Promise<void>;
  /** A spend limit was used up, or refused a spend. */
  spendLimitReached(tx: Tx, account: LockedAccount, limit: SpendLimitRecord): Promise<void>;
}

let wired: LedgerPolicies | null = null;

/** Sets the policies the ledger reports to (app.ts, once per process: the policies keep no state of their own). */
export function wireLedgerPolicies(policies: LedgerPolicies): void {
  wired = policies;
}

export function ledgerPolicies(): LedgerPolicies {
  if (!wired) throw new Error('the ledger reports to no policies: call wireLedgerPolicies first (app.ts does)');
  return wired;
}
