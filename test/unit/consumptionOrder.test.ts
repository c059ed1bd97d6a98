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

describe('computeDraws', () => {
  it('draws exactly the cost when the grants cover it, never more than a grant holds, in the documented order', () => {
    fc.assert(
      fc.property(fc.array(grantArbitrary, { maxLength: 8 }), fc.integer({ min: 0, max: 5_000 }), (grants: SpendableGrant[], cost) => {
        const total = grants.reduce((sum, grant) => sum + grant.remaining, 0);
        const { draws, shortfall } = computeDraws(grants, cost);
        const drawn = draws.reduce((sum, draw) => sum + draw.credits, 0);
        expect(shortfall).toBe(Math.max(0, cost - total));
        expect(drawn).toBe(Math.min(cost, total));
        const byId = new Map(grants.map((grant) => [grant.id, grant]));
        for (const draw of draws) expect(draw.credits).toBeLessThanOrEqual(byId.get(draw.grantId)!.remaining);
        // Every grant before the last one drawn is emptied: no later grant is touched while an earlier one has credits.
        const ordered = [...grants].sort(compareConsumptionOrder).filter((grant) => grant.remaining > 0);
        draws.slice(0, -1).forEach((draw, index) => {
          expect(draw.grantId).toBe(ordered[index]!.id);
          expect(draw.credits).toBe(ordered[index]!.remaining);
        });
      }),
    );
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
});
