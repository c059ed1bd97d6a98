/**
 * The usage percentages of a period's allocation that raise an alert when an account has not set
 * its own: alerts/ raises them, and the ledger's one-statement paths hand a debit that would cross
 * one over to the complete path, which lets the alert policy see it.
 */
export const DEFAULT_ALERT_PERCENTS = [75, 85, 90, 100];
