import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareConsumptionOrder, computeDraws, type SpendableGrant } from '../../packages/server/src/ledger/consumptionOrder.ts';

const grantArbitrary = fc.record({
  id: fc.uuid(),
  seatId: fc.option(fc.constant('seat-1'), { nil: null }),
  remaining: fc.integer({ min: 0, max: 1_000 }),
  expiresAt: fc.option(fc.integer({ min: 0, max: 10 }).map((day) => new Date(Date.UTC(2027, 0, 1 + day))), { nil: null }),
  priority: fc.integer({ min: 0, max: 3 }),
  createdAt: fc.integer({ min: 0, max: 10 }).map((second) => new Date(Date.UTC(2026, 0, 1, 0, 0, second))),
});

/** A shared grant without expiry, ordered by its creation second. */
function grant(id: string, remaining: number, second: number): SpendableGrant {
  return { id, seatId: null, remaining, expiresAt: null, priority: 0, createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, second)) };
}

describe('computeDraws', () => {
  it('draws exactly what a greedy walk down the documented order draws, every draw including the last', () => {
    fc.assert(
      fc.property(fc.array(grantArbitrary, { maxLength: 8 }), fc.integer({ min: 0, max: 5_000 }), (grants: SpendableGrant[], cost) => {
        const total = grants.reduce((sum, grant) => sum + grant.remaining, 0);
        const { draws, shortfall } = computeDraws(grants, cost);
        // The model: walk the grants in the documented order, emptying each before the next, until the cost is paid.
        const expected: Array<{ grantId: string; credits: number }> = [];
        let left = cost;
        for (const grant of [...grants].sort(compareConsumptionOrder)) {
          if (left > 0 && grant.remaining > 0) {
            const credits = Math.min(left, grant.remaining);
            expected.push({ grantId: grant.id, credits });
            left -= credits;
          }
        }
        expect(draws).toEqual(expected);
        expect(shortfall).toBe(Math.max(0, cost - total));
      }),
      { examples: [[[grant('a', 5, 1), grant('b', 5, 2), grant('c', 5, 3)], 7]] },
    );
  });

  it('never skips a grant with credits left for a later one (a, b, c with 5 each, cost 7)', () => {
    expect(computeDraws([grant('c', 5, 3), grant('a', 5, 1), grant('b', 5, 2)], 7)).toEqual({
      draws: [
        { grantId: 'a', credits: 5 },
        { grantId: 'b', credits: 2 },
      ],
      shortfall: 0,
    });
    expect(computeDraws([grant('a', 0, 1), grant('b', 5, 2)], 5).draws).toEqual([{ grantId: 'b', credits: 5 }]);
    expect(computeDraws([grant('a', 3, 1)], 5)).toEqual({ draws: [{ grantId: 'a', credits: 3 }], shortfall: 2 });
    expect(computeDraws([grant('a', 3, 1)], 0)).toEqual({ draws: [], shortfall: 0 });
  });

  it("puts a seat's own grants first, then soonest expiry, then priority, then age", () => {
    const at = (day: number) => new Date(Date.UTC(2027, 0, day));
    const grants: SpendableGrant[] = [
      { id: 'never', seatId: null, remaining: 1, expiresAt: null, priority: 0, createdAt: at(1) },
      { id: 'late', seatId: null, remaining: 1, expiresAt: at(20), priority: 0, createdAt: at(1) },
      { id: 'soon-p2', seatId: null, remaining: 1, expiresAt: at(10), priority: 2, createdAt: at(1) },
      { id: 'soon-p1-new', seatId: null, remaining: 1, expiresAt: at(10), priority: 1, createdAt: at(3) },
      { id: 'soon-p1-old', seatId: null, remaining: 1, expiresAt: at(10), priority: 1, createdAt: at(2) },
      { id: 'own', seatId: 'seat-1', remaining: 1, expiresAt: null, priority: 9, createdAt: at(9) },
    ];
    expect([...grants].sort(compareConsumptionOrder).map((grant) => grant.id)).toEqual(['own', 'soon-p1-old', 'soon-p1-new', 'soon-p2', 'late', 'never']);
  });

  it('compares each pair both ways, and a grant with itself as equal, at every criterion', () => {
    const at = (day: number) => new Date(Date.UTC(2027, 0, day));
    const base: SpendableGrant = { id: 'm', seatId: null, remaining: 1, expiresAt: at(10), priority: 1, createdAt: at(2) };
    const pairs: Array<[string, SpendableGrant, SpendableGrant]> = [
      ['own before shared', { ...base, seatId: 'seat-1', id: 'z' }, base],
      ['sooner expiry first', { ...base, expiresAt: at(9), id: 'z' }, base],
      ['an expiry before none', { ...base, id: 'z' }, { ...base, expiresAt: null }],
      ['lower priority number first', { ...base, priority: 0, id: 'z' }, base],
      ['older first', { ...base, createdAt: at(1), id: 'z' }, base],
      ['smaller id last', { ...base, id: 'a' }, base],
    ];
    for (const [rule, first, second] of pairs) {
      expect(Math.sign(compareConsumptionOrder(first, second)), rule).toBe(-1);
      expect(Math.sign(compareConsumptionOrder(second, first)), rule).toBe(1);
    }
    expect(compareConsumptionOrder(base, { ...base })).toBe(0);
    expect(compareConsumptionOrder({ ...base, expiresAt: null }, { ...base, expiresAt: null })).toBe(0);
  });
});
