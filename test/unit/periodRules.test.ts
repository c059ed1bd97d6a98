import { describe, expect, it } from 'vitest';
import { addMonthsClamped, computeBillingPeriod } from '../../packages/server/src/domain/billingPeriod.ts';
import { computeRolloverCarry } from '../../packages/server/src/periods/rollover.ts';

describe('addMonthsClamped', () => {
  it('keeps the time of day to the millisecond and crosses year ends both ways', () => {
    const anchor = new Date('2026-11-30T23:59:58.123Z');
    expect(addMonthsClamped(anchor, 0).toISOString()).toBe('2026-11-30T23:59:58.123Z');
    expect(addMonthsClamped(anchor, 3).toISOString()).toBe('2027-02-28T23:59:58.123Z');
    expect(addMonthsClamped(anchor, 14).toISOString()).toBe('2028-01-30T23:59:58.123Z');
    expect(addMonthsClamped(anchor, -11).toISOString()).toBe('2025-12-30T23:59:58.123Z');
    expect(addMonthsClamped(anchor, -23).toISOString()).toBe('2024-12-30T23:59:58.123Z');
  });

  it('clamps to the last day of the target month only when the anchor day does not exist there', () => {
    expect(addMonthsClamped(new Date('2027-03-31T00:00:00Z'), 1).toISOString()).toBe('2027-04-30T00:00:00.000Z');
    expect(addMonthsClamped(new Date('2027-03-30T00:00:00Z'), 1).toISOString()).toBe('2027-04-30T00:00:00.000Z');
    expect(addMonthsClamped(new Date('2027-03-29T00:00:00Z'), 11).toISOString()).toBe('2028-02-29T00:00:00.000Z');
    expect(addMonthsClamped(new Date('2027-01-15T00:00:00Z'), 1).toISOString()).toBe('2027-02-15T00:00:00.000Z');
  });
});

describe('computeBillingPeriod', () => {
  it('gives consecutive periods that touch, monthly and yearly, from any index', () => {
    const anchor = new Date('2027-01-31T10:30:00.000Z');
    expect(computeBillingPeriod(anchor, 'MONTH', 0)).toEqual({ start: anchor, end: new Date('2027-02-28T10:30:00.000Z') });
    expect(computeBillingPeriod(anchor, 'MONTH', 13)).toEqual({
      start: new Date('2028-02-29T10:30:00.000Z'),
      end: new Date('2028-03-31T10:30:00.000Z'),
    });
    expect(computeBillingPeriod(anchor, 'YEAR', 0)).toEqual({ start: anchor, end: new Date('2028-01-31T10:30:00.000Z') });
    expect(computeBillingPeriod(anchor, 'YEAR', 2)).toEqual({
      start: new Date('2029-01-31T10:30:00.000Z'),
      end: new Date('2030-01-31T10:30:00.000Z'),
    });
  });
});

describe('computeRolloverCarry', () => {
  const cap2 = { rollover: 'CAP_MULTIPLE' as const, rolloverValue: 2, amount: 1_000 };
  const pct15 = { rollover: 'PERCENT' as const, rolloverValue: 15, amount: 12_000 };

  it('carries nothing under NONE, whatever value the rule holds', () => {
    expect(computeRolloverCarry(1_000, { rollover: 'NONE', rolloverValue: 50, amount: 1_000 }, null, false)).toBe(0);
  });

  it('carries nothing of nothing, or of a negative remainder', () => {
    expect(computeRolloverCarry(0, cap2, cap2, false)).toBe(0);
    expect(computeRolloverCarry(-5, pct15, pct15, false)).toBe(0);
    expect(computeRolloverCarry(1, cap2, cap2, false)).toBe(1);
  });

  it('rounds a percentage down and reads a missing percentage as none', () => {
    expect(computeRolloverCarry(99, pct15, pct15, false)).toBe(14);
    expect(computeRolloverCarry(100, pct15, pct15, false)).toBe(15);
    expect(computeRolloverCarry(100, { ...pct15, rolloverValue: null }, null, false)).toBe(0);
  });

  it('caps by (multiple - 1) x allocation, rounding down, never below zero; a missing multiple carries nothing', () => {
    expect(computeRolloverCarry(5_000, { ...cap2, rolloverValue: 1.5 }, null, false)).toBe(500);
    expect(computeRolloverCarry(5_000, { ...cap2, rolloverValue: 1.5, amount: 3 }, null, false)).toBe(1);
    expect(computeRolloverCarry(5_000, { ...cap2, rolloverValue: 0.5 }, null, false)).toBe(0);
    expect(computeRolloverCarry(5_000, { ...cap2, rolloverValue: null }, null, false)).toBe(0);
    expect(computeRolloverCarry(5_000, { ...cap2, rolloverValue: 3 }, null, false)).toBe(2_000);
  });

  it("without a plan change ignores the next rule; with one, the smaller of the two carries", () => {
    expect(computeRolloverCarry(5_000, cap2, null, false)).toBe(1_000);
    expect(computeRolloverCarry(5_000, { ...cap2, rolloverValue: 3 }, cap2, true)).toBe(1_000);
    expect(computeRolloverCarry(5_000, cap2, { ...cap2, rolloverValue: 3 }, true)).toBe(1_000);
    expect(computeRolloverCarry(10_000, cap2, pct15, true)).toBe(1_000);
    expect(computeRolloverCarry(1_000, cap2, pct15, true)).toBe(150);
  });
});
