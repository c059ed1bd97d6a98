import { describe, expect, it } from 'vitest';
import type { FeatureRecord } from '../../packages/server/src/catalog/features.ts';
import { decideBalance, type SpendContext, type SpendRequest } from '../../packages/server/src/ledger/balanceDecision.ts';
import { modelDraws, type ModelGrant } from '../support/consumptionModel.ts';
import { decideSpendLimits, limitApplies, type LimitStanding, type SpendScope } from '../../packages/server/src/ledger/spendLimitDecision.ts';

const feature: FeatureRecord = {
  key: 'chat',
  name: 'Chat',
  creditType: 'ai',
  pricing: 'PER_UNIT',
  unitCredits: 1,
  tiers: null,
  maxCreditsPerEvent: null,
  requiresPositiveBalance: false,
};

function grant(id: string, remaining: number, seatId: string | null = null, second = 0): ModelGrant {
  return { id, seatId, remaining, expiresAt: null, priority: 0, createdAt: new Date(Date.UTC(2027, 0, 1, 0, 0, second)) };
}

type Plan = SpendContext['plan'];
const hardStop: Plan = { featureKeys: ['chat'], overagePolicy: 'HARD_STOP', maxOverageCredits: null };
const payg: Plan = { featureKeys: ['chat'], overagePolicy: 'PAY_AS_YOU_GO', maxOverageCredits: 100 };

/**
 * The pool as the database answers it (spendable_draws, debit_coverage: test/consumptionOrder.test.ts
 * holds those to the model): the grants in consumption order with each one's draw, and the coverage.
 */
function poolOf(grants: ModelGrant[], request: SpendRequest): Pick<SpendContext, 'grants' | 'coverage'> {
  const { draws, shortfall } = modelDraws(grants, request.cost);
  const ordered = [...grants].sort((a, b) => {
    const at = (grant: ModelGrant) => draws.findIndex((draw) => draw.grantId === grant.id);
    return (at(a) === -1 ? Infinity : at(a)) - (at(b) === -1 ? Infinity : at(b));
  });
  const total = grants.reduce((sum, each) => sum + each.remaining, 0);
  return {
    grants: ordered.map((each) => ({ id: each.id, seatId: each.seatId, remaining: each.remaining, draw: draws.find((draw) => draw.grantId === each.id)?.credits ?? 0 })),
    coverage: request.feature.requiresPositiveBalance && total <= 0 ? 'empty' : shortfall > 0 ? 'short' : 'covered',
  };
}

async function decide(plan: Plan, grants: ModelGrant[], request: Partial<SpendRequest>, overageUsed = 0) {
  let asked = 0;
  const spend: SpendRequest = { feature, seat: null, cost: 10, tags: [], allowOverage: true, ...request };
  const decision = await decideBalance(
    {
      plan,
      ...poolOf(grants, spend),
      overageUsed: async () => {
        asked += 1;
        return overageUsed;
      },
    },
    spend,
  );
  return { decision, asked };
}

describe('decideBalance', () => {
  it('refuses a feature the plan does not enable, before looking at credits', async () => {
    const { decision, asked } = await decide({ ...payg, featureKeys: ['other'] }, [], { cost: 0 });
    expect(decision).toEqual({ kind: 'featureNotAvailable', featureKey: 'chat' });
    expect(asked).toBe(0);
  });

  it('draws in consumption order and reports the shared pool after the spend', async () => {
    const { decision, asked } = await decide(hardStop, [grant('b', 8, null, 2), grant('a', 5, null, 1)], { cost: 10 });
    expect(decision).toEqual({
      kind: 'authorized',
      draws: [
        { grantId: 'a', credits: 5 },
        { grantId: 'b', credits: 5 },
      ],
      overage: 0,
      sharedAfter: 3,
      sharedBefore: 13,
    });
    expect(asked).toBe(0);
  });

  it("leaves sharedAfter null when only a seat's own grants pay, and counts only shared grants in it", async () => {
    const seat = { id: 's1', canUseSharedPool: true };
    const own = await decide(hardStop, [grant('own', 10, 's1'), grant('shared', 7)], { seat, cost: 4 });
    expect(own.decision).toMatchObject({ kind: 'authorized', draws: [{ grantId: 'own', credits: 4 }], sharedAfter: null });
    const both = await decide(hardStop, [grant('own', 3, 's1'), grant('shared', 7)], { seat, cost: 4 });
    expect(both.decision).toMatchObject({ kind: 'authorized', overage: 0, sharedAfter: 6, sharedBefore: 7 });
    const free = await decide(hardStop, [grant('shared', 7)], { cost: 0 });
    expect(free.decision).toEqual({ kind: 'authorized', draws: [], overage: 0, sharedAfter: null, sharedBefore: 7 });
  });

  it('refuses a shortfall under HARD_STOP with what is available, without asking for overage', async () => {
    const { decision, asked } = await decide(hardStop, [grant('a', 6)], { cost: 10 });
    expect(decision).toEqual({ kind: 'insufficientCredits', creditType: 'ai', required: 10, available: 6 });
    expect(asked).toBe(0);
  });

  it('puts a shortfall into PAY_AS_YOU_GO overage up to the cap inclusive, then refuses with the headroom', async () => {
    const fits = await decide(payg, [grant('a', 6)], { cost: 10 }, 96);
    expect(fits.decision).toEqual({ kind: 'authorized', draws: [{ grantId: 'a', credits: 6 }], overage: 4, sharedAfter: 0, sharedBefore: 6 });
    expect(fits.asked).toBe(1);
    const onlyOverage = await decide(payg, [], { cost: 10 }, 0);
    expect(onlyOverage.decision).toEqual({ kind: 'authorized', draws: [], overage: 10, sharedAfter: 0, sharedBefore: 0 });
    const over = await decide(payg, [grant('a', 6)], { cost: 10 }, 97);
    expect(over.decision).toEqual({ kind: 'insufficientCredits', creditType: 'ai', required: 10, available: 9 });
    const beyondCap = await decide(payg, [grant('a', 6)], { cost: 10 }, 150);
    expect(beyondCap.decision).toEqual({ kind: 'insufficientCredits', creditType: 'ai', required: 10, available: 6 });
  });

  it('allows no overage for holds, under HARD_STOP even with a cap, without a cap, or for seats barred from the shared pool', async () => {
    for (const [plan, request] of [
      [{ ...hardStop, maxOverageCredits: 100 }, {}],
      [payg, { allowOverage: false }],
      [{ ...payg, maxOverageCredits: null }, {}],
      [payg, { seat: { id: 's1', canUseSharedPool: false } }],
    ] as Array<[Plan, Partial<SpendRequest>]>) {
      const { decision, asked } = await decide(plan, [grant('a', 6)], { cost: 10, ...request });
      expect(decision).toEqual({ kind: 'insufficientCredits', creditType: 'ai', required: 10, available: 6 });
      expect(asked).toBe(0);
    }
    const seatAllowed = await decide(payg, [grant('a', 6)], { cost: 10, seat: { id: 's1', canUseSharedPool: true } });
    expect(seatAllowed.decision).toMatchObject({ kind: 'authorized', overage: 4 });
  });

  it('refuses a feature requiring a positive balance when nothing is left, even for a free event', async () => {
    const strict = { ...feature, requiresPositiveBalance: true };
    expect((await decide(payg, [], { feature: strict, cost: 0 })).decision).toEqual({ kind: 'insufficientCredits', creditType: 'ai', required: 1, available: 0 });
    expect((await decide(payg, [], { feature: strict, cost: 5 })).decision).toEqual({ kind: 'insufficientCredits', creditType: 'ai', required: 5, available: 0 });
    expect((await decide(payg, [grant('a', 1)], { feature: strict, cost: 5 })).decision).toMatchObject({ kind: 'authorized', overage: 4 });
  });
});

function standing(scope: LimitStanding['scope'], scopeValue: string | null, limit: number, used = 0, held = 0, creditType: string | null = null): LimitStanding {
  return { scope, scopeValue, creditType, limit, used, held };
}

describe('spend limits', () => {
  const spend: SpendScope = { creditType: 'ai', featureKey: 'chat', seatId: 's1', tags: ['team-a', 'prod'] };

  it('applies a limit by its scope and credit type', () => {
    expect(limitApplies(standing('ACCOUNT', null, 1), spend)).toBe(true);
    expect(limitApplies(standing('ACCOUNT', null, 1, 0, 0, 'ai'), spend)).toBe(true);
    expect(limitApplies(standing('ACCOUNT', null, 1, 0, 0, 'storage'), spend)).toBe(false);
    expect(limitApplies(standing('SEAT', 's1', 1), spend)).toBe(true);
    expect(limitApplies(standing('SEAT', 's2', 1), spend)).toBe(false);
    expect(limitApplies(standing('SEAT', 's1', 1), { ...spend, seatId: null })).toBe(false);
    expect(limitApplies(standing('FEATURE', 'chat', 1), spend)).toBe(true);
    expect(limitApplies(standing('FEATURE', 'image', 1), spend)).toBe(false);
    expect(limitApplies(standing('TAG', 'prod', 1), spend)).toBe(true);
    expect(limitApplies(standing('TAG', 'dev', 1), spend)).toBe(false);
    expect(limitApplies(standing('TAG', null, 1), spend)).toBe(false);
  });

  it('counts used and held credits: exceeded beyond the limit, reached at it exactly', () => {
    const seat = standing('SEAT', 's1', 100, 60, 30);
    expect(decideSpendLimits([seat], spend, 9)).toEqual({ exceeded: null, reached: [] });
    expect(decideSpendLimits([seat], spend, 10)).toEqual({ exceeded: null, reached: [seat] });
    expect(decideSpendLimits([seat], spend, 11)).toEqual({ exceeded: seat, reached: [seat] });
    const heldOnly = standing('ACCOUNT', null, 10, 0, 10);
    expect(decideSpendLimits([heldOnly], spend, 1).exceeded).toBe(heldOnly);
  });

  it('names the first exceeded limit in the given order and ignores limits of other scopes', () => {
    const other = standing('SEAT', 's2', 0);
    const tag = standing('TAG', 'prod', 5);
    const account = standing('ACCOUNT', null, 3);
    const roomy = standing('FEATURE', 'chat', 1_000);
    expect(decideSpendLimits([other, roomy, tag, account], spend, 6)).toEqual({ exceeded: tag, reached: [tag, account] });
  });

  it('lets a free spend through every limit', () => {
    const full = standing('ACCOUNT', null, 0, 5);
    expect(decideSpendLimits([full], spend, 0)).toEqual({ exceeded: null, reached: [] });
    expect(decideSpendLimits([full], spend, 1)).toEqual({ exceeded: full, reached: [full] });
  });
});
