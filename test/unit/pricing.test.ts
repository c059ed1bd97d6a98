import { describe, expect, it } from 'vitest';
import { computeUsageCost, type FeaturePricing } from '../../packages/server/src/ledger/pricing.ts';

const base: FeaturePricing = { key: 'f', pricing: 'PER_UNIT', unitCredits: 10, tiers: null, maxCreditsPerEvent: null };

describe('computeUsageCost', () => {
  it('multiplies PER_UNIT prices', () => {
    expect(computeUsageCost(base, { quantity: 7 })).toBe(70);
    expect(computeUsageCost({ ...base, unitCredits: 0 }, { quantity: 1_000 })).toBe(0);
  });

  it('prices a whole TIERED event by its band, whatever order the tiers were given in', () => {
    const tiered: FeaturePricing = {
      ...base,
      pricing: 'TIERED',
      unitCredits: null,
      tiers: [
        { upTo: null, credits: 200 },
        { upTo: 1_000, credits: 25 },
        { upTo: 100_000, credits: 100 },
      ],
    };
    expect([1, 1_000, 1_001, 100_000, 100_001].map((quantity) => computeUsageCost(tiered, { quantity }))).toEqual([25, 25, 100, 100, 200]);
  });

  it('takes DYNAMIC costs from the caller within the per-event budget', () => {
    const dynamic: FeaturePricing = { ...base, pricing: 'DYNAMIC', unitCredits: null, maxCreditsPerEvent: 50 };
    expect(computeUsageCost(dynamic, { quantity: 1, credits: 42 })).toBe(42);
    expect(() => computeUsageCost(dynamic, { quantity: 1, credits: 51 })).toThrow(/budget/);
    expect(() => computeUsageCost(dynamic, { quantity: 1 })).toThrow(/required/);
  });

  it('refuses quantities and costs out of range', () => {
    expect(() => computeUsageCost(base, { quantity: 0 })).toThrow(/quantity/);
    expect(() => computeUsageCost(base, { quantity: 2.5 })).toThrow(/quantity/);
    expect(() => computeUsageCost({ ...base, unitCredits: Number.MAX_SAFE_INTEGER }, { quantity: 2 })).toThrow(/exceeds/);
  });
});
