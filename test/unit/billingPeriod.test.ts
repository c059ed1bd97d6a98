import { describe, expect, it } from 'vitest';
import { computeBillingPeriod } from '../../packages/server/src/domain/billingPeriod.ts';

describe('computeBillingPeriod', () => {
  it('anchors on the 31st and falls on the last day of shorter months, never drifting', () => {
    const anchor = new Date('2027-01-31T10:30:00.000Z');
    const starts = Array.from({ length: 6 }, (_, index) => computeBillingPeriod(anchor, 'MONTH', index).start.toISOString().slice(0, 10));
    expect(starts).toEqual(['2027-01-31', '2027-02-28', '2027-03-31', '2027-04-30', '2027-05-31', '2027-06-30']);
    expect(computeBillingPeriod(new Date('2028-01-31T00:00:00Z'), 'MONTH', 1).start.toISOString()).toBe('2028-02-29T00:00:00.000Z');
  });

  it('ends each period where the next begins, keeping the time of day', () => {
    const anchor = new Date('2026-08-04T12:00:00.000Z');
    const first = computeBillingPeriod(anchor, 'MONTH', 0);
    const second = computeBillingPeriod(anchor, 'MONTH', 1);
    expect(first.end).toEqual(second.start);
    expect(second.start.toISOString()).toBe('2026-09-04T12:00:00.000Z');
  });

  it('steps yearly plans by twelve months, Feb 29 anchors on Feb 28 in common years', () => {
    const anchor = new Date('2028-02-29T00:00:00.000Z');
    expect(computeBillingPeriod(anchor, 'YEAR', 1).start.toISOString()).toBe('2029-02-28T00:00:00.000Z');
    expect(computeBillingPeriod(anchor, 'YEAR', 4).start.toISOString()).toBe('2032-02-29T00:00:00.000Z');
  });
});

import { computeRolloverCarry } from '../../packages/server/src/periods/rollover.ts';

describe('computeRolloverCarry', () => {
  const cap2 = { rollover: 'CAP_MULTIPLE' as const, rolloverValue: 2, amount: 1_000 };
  const pct15 = { rollover: 'PERCENT' as const, rolloverValue: 15, amount: 12_000 };
  const none = { rollover: 'NONE' as const, rolloverValue: null, amount: 500 };

  it('caps the plan-sourced balance at N x the allocation (Clay monthly)', () => {
    expect(computeRolloverCarry(1_000, cap2, cap2, false)).toBe(1_000);
    expect(computeRolloverCarry(2_000, cap2, cap2, false)).toBe(1_000);
    expect(computeRolloverCarry(300, cap2, cap2, false)).toBe(300);
  });

  it('carries a percentage of the unused amount (Clay annual)', () => {
    expect(computeRolloverCarry(10_000, pct15, pct15, false)).toBe(1_500);
  });

  it('carries nothing without rollover, and a downgrade cuts to the new plan’s cap', () => {
    expect(computeRolloverCarry(400, none, none, false)).toBe(0);
    expect(computeRolloverCarry(5_000, { ...cap2, amount: 5_000 }, cap2, true)).toBe(1_000);
    expect(computeRolloverCarry(5_000, cap2, none, true)).toBe(0);
    expect(computeRolloverCarry(5_000, cap2, null, true)).toBe(0);
  });
});
