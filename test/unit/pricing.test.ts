import { describe, expect, it } from 'vitest';
import { assertQuantity, assertValidTiers, computeUsageCost, sortTiers, type FeaturePricing } from '../../packages/server/src/ledger/pricing.ts';
import { refusal } from './refusal.ts';

const base: FeaturePricing = { key: 'f', pricing: 'PER_UNIT', unitCredits: 10, tiers: null, maxCreditsPerEvent: null };
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
const dynamic: FeaturePricing = { ...base, pricing: 'DYNAMIC', unitCredits: null, maxCreditsPerEvent: 50 };

describe('computeUsageCost', () => {
  it('multiplies PER_UNIT prices; a missing or zero price is a free feature', () => {
    expect(computeUsageCost(base, { quantity: 7 })).toBe(70);
    expect(computeUsageCost(base, { quantity: 1 })).toBe(10);
    expect(computeUsageCost({ ...base, unitCredits: 0 }, { quantity: 1_000 })).toBe(0);
    expect(computeUsageCost({ ...base, unitCredits: null }, { quantity: 3 })).toBe(0);
  });

  it('prices a whole TIERED event by its band, whatever order the tiers were given in', () => {
    expect([1, 999, 1_000, 1_001, 100_000, 100_001].map((quantity) => computeUsageCost(tiered, { quantity }))).toEqual([25, 25, 25, 100, 100, 200]);
  });

  it('refuses a TIERED quantity above a closed last band, and a feature without tiers', () => {
    const closed = { ...tiered, tiers: [{ upTo: 10, credits: 1 }] };
    expect(computeUsageCost(closed, { quantity: 10 })).toBe(1);
    expect(refusal(() => computeUsageCost(closed, { quantity: 11 }))).toEqual({
      code: 'INVALID_QUANTITY',
      message: 'quantity 11 is above the last tier of f',
      details: { field: 'quantity' },
    });
    expect(refusal(() => computeUsageCost({ ...tiered, tiers: null }, { quantity: 1 })).code).toBe('INVALID_QUANTITY');
  });

  it('takes DYNAMIC costs from the caller within the per-event budget (inclusive), or without one', () => {
    expect(computeUsageCost(dynamic, { quantity: 1, credits: 42 })).toBe(42);
    expect(computeUsageCost(dynamic, { quantity: 1, credits: 50 })).toBe(50);
    expect(computeUsageCost(dynamic, { quantity: 1, credits: 0 })).toBe(0);
    expect(computeUsageCost({ ...dynamic, maxCreditsPerEvent: null }, { quantity: 1, credits: 1_000_000 })).toBe(1_000_000);
    expect(refusal(() => computeUsageCost(dynamic, { quantity: 1, credits: 51 }))).toEqual({
      code: 'INVALID_CREDITS',
      message: 'credits 51 exceed the per-event budget of f (50)',
      details: { field: 'credits' },
    });
    for (const credits of [undefined, null]) {
      expect(refusal(() => computeUsageCost(dynamic, { quantity: 1, credits }))).toEqual({
        code: 'INVALID_CREDITS',
        message: 'f is DYNAMIC: credits (the cost) is required',
        details: { field: 'credits' },
      });
    }
    for (const credits of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1]) {
      expect(refusal(() => computeUsageCost({ ...dynamic, maxCreditsPerEvent: null }, { quantity: 1, credits }))).toEqual({
        code: 'INVALID_CREDITS',
        message: `credits must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`,
        details: { field: 'credits' },
      });
    }
  });

  it('refuses a caller cost for features that are not DYNAMIC', () => {
    expect(computeUsageCost(base, { quantity: 2, credits: null })).toBe(20);
    expect(refusal(() => computeUsageCost(base, { quantity: 1, credits: 5 }))).toEqual({
      code: 'INVALID_INPUT',
      message: 'credits may only be given for DYNAMIC features; f is PER_UNIT',
      details: { field: 'credits' },
    });
    expect(refusal(() => computeUsageCost(tiered, { quantity: 1, credits: 0 })).code).toBe('INVALID_INPUT');
  });

  it('refuses quantities out of range and a product beyond the largest credit amount', () => {
    expect(assertQuantity(1)).toBe(1);
    expect(assertQuantity(1_000_000_000)).toBe(1_000_000_000);
    for (const quantity of [0, -1, 2.5, 1_000_000_001, Number.NaN]) {
      expect(refusal(() => computeUsageCost(base, { quantity }))).toEqual({
        code: 'INVALID_QUANTITY',
        message: 'quantity must be a whole number from 1 to 1000000000',
        details: { field: 'quantity' },
      });
    }
    expect(computeUsageCost({ ...base, unitCredits: Number.MAX_SAFE_INTEGER }, { quantity: 1 })).toBe(Number.MAX_SAFE_INTEGER);
    expect(refusal(() => computeUsageCost({ ...base, unitCredits: Number.MAX_SAFE_INTEGER }, { quantity: 2 }))).toEqual({
      code: 'INVALID_QUANTITY',
      message: 'quantity x unit price exceeds the largest credit amount',
      details: { field: 'quantity' },
    });
  });
});

describe('tiers', () => {
  it('sorts bands ascending with the open-ended one last, without changing the input', () => {
    const given = [{ upTo: null, credits: 3 }, { upTo: 20, credits: 2 }, { upTo: 5, credits: 1 }];
    expect(sortTiers(given)).toEqual([{ upTo: 5, credits: 1 }, { upTo: 20, credits: 2 }, { upTo: null, credits: 3 }]);
    expect(given[0]!.upTo).toBeNull();
    expect(assertValidTiers(given)).toEqual(sortTiers(given));
    expect(assertValidTiers([{ upTo: 1, credits: 0 }])).toEqual([{ upTo: 1, credits: 0 }]);
  });

  it('refuses tier lists that cannot price every quantity exactly once', () => {
    const cases: Array<[Array<{ upTo: number | null; credits: number }>, string]> = [
      [[], 'a TIERED feature needs at least one tier'],
      [[{ upTo: 0, credits: 1 }], 'a tier upper bound must be a whole number from 1'],
      [[{ upTo: 1.5, credits: 1 }], 'a tier upper bound must be a whole number from 1'],
      [[{ upTo: null, credits: 1 }, { upTo: null, credits: 2 }], 'only one tier may be open-ended'],
      [[{ upTo: 5, credits: 1 }, { upTo: 5, credits: 2 }], 'tier upper bounds must differ'],
      [[{ upTo: 5, credits: -1 }], 'tier credits must be a whole number from 0'],
      [[{ upTo: 5, credits: 0.5 }], 'tier credits must be a whole number from 0'],
    ];
    for (const [tiers, message] of cases) {
      expect(refusal(() => assertValidTiers(tiers))).toEqual({ code: 'INVALID_INPUT', message, details: { field: 'tiers' } });
    }
  });
});
