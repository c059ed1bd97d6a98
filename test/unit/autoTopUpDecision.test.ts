import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { calendarMonthOf, decideAutoTopUp, type AutoTopUpDecision } from '../../packages/server/src/stripe/autoTopUp.ts';

const NOW = new Date('2027-01-15T12:00:00.000Z');

const base = {
  enabled: true,
  thresholdCredits: 500,
  targetBalanceCredits: null as number | null,
  armed: true,
  pausedAt: null as Date | null,
  retryNotBefore: null as Date | null,
  unsettled: false,
  maxPurchasesPerPeriod: 100,
  purchasesThisPeriod: 0,
  maxPurchasesPerMonth: null as number | null,
  purchasesThisMonth: 0,
  maxAmountPerMonth: null as number | null,
  amountThisMonth: 0,
};
const pack = { credits: 300, priceAmount: 1_000 };

describe('decideAutoTopUp', () => {
  it('buys when a spend leaves the balance below the threshold, once: disarmed, the same crossing waits', () => {
    expect(decideAutoTopUp(base, pack, { before: 600, after: 400 }, NOW)).toEqual({ kind: 'buy', packs: 1 });
    expect(decideAutoTopUp({ ...base, armed: false }, pack, { before: 450, after: 440 }, NOW)).toEqual({ kind: 'wait', armed: false, reason: 'bought for this crossing' });
  });

  it('re-arms when the balance is seen at or above the threshold, before the spend or after it', () => {
    expect(decideAutoTopUp({ ...base, armed: false }, pack, { before: 500, after: 499 }, NOW)).toEqual({ kind: 'buy', packs: 1 });
    expect(decideAutoTopUp({ ...base, armed: false }, pack, { before: 700, after: 500 }, NOW)).toEqual({ kind: 'wait', armed: true, reason: 'above threshold' });
  });

  it('tops up to the target with as many packs as reach it, at most 100', () => {
    expect(decideAutoTopUp({ ...base, targetBalanceCredits: 2_000 }, pack, { before: 600, after: 400 }, NOW)).toEqual({ kind: 'buy', packs: 6 });
    expect(decideAutoTopUp({ ...base, targetBalanceCredits: 2_000 }, pack, { before: 600, after: 500 - 1 }, NOW)).toEqual({ kind: 'buy', packs: 6 });
    expect(decideAutoTopUp({ ...base, targetBalanceCredits: 1_000_000 }, pack, { before: 600, after: 0 }, NOW)).toEqual({ kind: 'buy', packs: 100 });
  });

  it('keeps the crossing armed while something holds it: paused, backoff, a purchase under way, a cap', () => {
    const change = { before: 600, after: 400 };
    const waits: Array<[Partial<typeof base>, string]> = [
      [{ pausedAt: NOW }, 'paused'],
      [{ retryNotBefore: new Date(NOW.getTime() + 1) }, 'backoff'],
      [{ unsettled: true }, 'under way'],
      [{ purchasesThisPeriod: 100 }, 'cap'],
      [{ maxPurchasesPerMonth: 2, purchasesThisMonth: 2 }, 'cap'],
      [{ maxAmountPerMonth: 2_999, amountThisMonth: 2_000 }, 'cap'],
    ];
    for (const [override, reason] of waits) {
      expect(decideAutoTopUp({ ...base, armed: false, ...override }, pack, change, NOW)).toEqual({ kind: 'wait', armed: true, reason });
    }
    expect(decideAutoTopUp({ ...base, retryNotBefore: NOW }, pack, change, NOW)).toEqual({ kind: 'buy', packs: 1 });
    expect(decideAutoTopUp({ ...base, enabled: false }, pack, change, NOW)).toMatchObject({ kind: 'wait', reason: 'disabled' });
  });

  it('the money cap buys fewer packs when fewer fit', () => {
    const config = { ...base, targetBalanceCredits: 2_000, maxAmountPerMonth: 5_500, amountThisMonth: 2_000 };
    expect(decideAutoTopUp(config, pack, { before: 600, after: 400 }, NOW)).toEqual({ kind: 'buy', packs: 3 });
  });

  it('the calendar month is UTC on the given clock', () => {
    expect(calendarMonthOf(new Date('2027-12-31T23:59:59.999Z'))).toEqual({ start: new Date('2027-12-01T00:00:00.000Z'), end: new Date('2028-01-01T00:00:00.000Z') });
    expect(calendarMonthOf(new Date('2028-02-01T00:00:00.000Z')).end).toEqual(new Date('2028-03-01T00:00:00.000Z'));
  });

  it('over any sequence of spends, credits and payment outcomes: a second purchase needs the balance back at or above the threshold (or a failure) in between, and every crossing from above buys', () => {
    type Step = { kind: 'spend'; credits: number } | { kind: 'credit'; credits: number };
    const step = fc.oneof(
      fc.record({ kind: fc.constant('spend' as const), credits: fc.integer({ min: 1, max: 400 }) }),
      fc.record({ kind: fc.constant('credit' as const), credits: fc.integer({ min: 1, max: 400 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), fc.array(fc.boolean(), { minLength: 60, maxLength: 60 }), fc.integer({ min: 0, max: 1_000 }), (steps: Step[], paid, start) => {
        let balance = start;
        let armed = true;
        let outcomes = 0;
        // Since the last purchase (bought and paid): was the balance seen at or above the threshold?
        let seenAbove = true;
        for (const current of steps) {
          if (current.kind === 'credit') {
            balance += current.credits;
            if (balance >= base.thresholdCredits) seenAbove = true;
            continue;
          }
          const before = balance;
          balance = Math.max(0, balance - current.credits);
          const decision: AutoTopUpDecision = decideAutoTopUp({ ...base, armed }, pack, { before, after: balance }, NOW);
          if (before >= base.thresholdCredits && balance < base.thresholdCredits) expect(decision.kind).toBe('buy');
          if (decision.kind === 'wait') {
            armed = decision.armed;
            if (balance >= base.thresholdCredits) seenAbove = true;
            continue;
          }
          expect(seenAbove).toBe(true);
          armed = false;
          if (paid[outcomes++ % paid.length]) {
            balance += decision.packs * pack.credits;
            seenAbove = balance >= base.thresholdCredits;
          } else {
            // A failed payment re-arms (failPurchase): the crossing is tried again.
            armed = true;
            seenAbove = true;
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
