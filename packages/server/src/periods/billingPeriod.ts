/**
 * The billing calendar lives in domain/billingPeriod.ts (pure arithmetic the ledger uses too, which
 * imports nothing of periods/); importers here keep working.
 */
export * from '../domain/billingPeriod.ts';
