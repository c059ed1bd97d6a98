import { evaluateBalanceAlerts, raiseSpendLimitReached } from './alerts/alerts.ts';
import type { LedgerPolicies } from './ledger/ledgerPolicies.ts';
import { processDueWork, renewIfPeriodEnded } from './periods/dueWork.ts';
import { queueAutoTopUp } from './stripe/autoTopUp.ts';

/**
 * The billing policies that react to what the ledger reports (ledger/ledgerPolicies.ts): an ended
 * period renewed before credits are spent, an auto top-up queued when a spend takes the shared pool
 * below its threshold, balance and spend-limit alerts raised.
 */
export const billingPolicies: LedgerPolicies = {
  accountLocked: (tx, account, due) => (due === 'allDue' ? processDueWork(tx, account) : renewIfPeriodEnded(tx, account)),
  async sharedPoolDrawn(tx, account, creditType, change) {
    if (account.hasAutoTopUp) await queueAutoTopUp(tx, account, creditType, change);
  },
  async balanceChanged(tx, account, balance) {
    await evaluateBalanceAlerts(tx, account, balance, account.now);
  },
  async spendLimitReached(tx, account, limit) {
    await raiseSpendLimitReached(tx, account, limit);
  },
};
