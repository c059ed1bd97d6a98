import { MAX_CREDITS, MAX_QUANTITY } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';

export type PricingModel = 'PER_UNIT' | 'TIERED' | 'DYNAMIC';

/** A quantity band: an event whose quantity is at most `upTo` (null: any) costs `credits` in all. */
export interface PriceTier {
  upTo: number | null;
  credits: number;
}

export interface FeaturePricing {
  key: string;
  pricing: PricingModel;
  unitCredits: number | null;
  tiers: PriceTier[] | null;
  maxCreditsPerEvent: number | null;
}

export interface UsageQuantity {
  quantity: number;
  /** The caller's cost, for DYNAMIC features only. */
  credits?: number | null;
}

export function assertQuantity(quantity: number): number {
  if (!Number.isSafeInteger(quantity) || quantity < 1 || quantity > MAX_QUANTITY) {
    throw new BillingError(ErrorCode.INVALID_QUANTITY, `quantity must be a whole number from 1 to ${MAX_QUANTITY}`, {
      field: 'quantity',
    });
  }
  return quantity;
}

/**
 * The credits one usage event costs. PER_UNIT multiplies; TIERED takes the band the quantity falls
 * in as the cost of the whole event (Data Studio: up to 1,000 rows 25, up to 100,000 rows 100, more
 * 200); DYNAMIC takes the caller's cost (tokens x model rate) within the feature's per-event budget.
 * A PER_UNIT price of 0 is a free feature: logged, never charged.
 */
export function computeUsageCost(feature: FeaturePricing, usage: UsageQuantity): number {
  const quantity = assertQuantity(usage.quantity);
  if (feature.pricing !== 'DYNAMIC' && usage.credits !== undefined && usage.credits !== null) {
    throw invalidInput(`credits may only be given for DYNAMIC features; ${feature.key} is ${feature.pricing}`, 'credits');
  }
  switch (feature.pricing) {
    case 'PER_UNIT': {
      const cost = (feature.unitCredits ?? 0) * quantity;
      if (!Number.isSafeInteger(cost) || cost > MAX_CREDITS) {
        throw new BillingError(ErrorCode.INVALID_QUANTITY, 'quantity x unit price exceeds the largest credit amount', {
          field: 'quantity',
        });
      }
      return cost;
    }
    case 'TIERED': {
      const tier = sortTiers(feature.tiers ?? []).find((band) => band.upTo === null || quantity <= band.upTo);
      if (!tier) {
        throw new BillingError(ErrorCode.INVALID_QUANTITY, `quantity ${quantity} is above the last tier of ${feature.key}`, {
          field: 'quantity',
        });
      }
      return tier.credits;
    }
    case 'DYNAMIC': {
      if (usage.credits === undefined || usage.credits === null) {
        throw new BillingError(ErrorCode.INVALID_CREDITS, `${feature.key} is DYNAMIC: credits (the cost) is required`, {
          field: 'credits',
        });
      }
      if (!Number.isSafeInteger(usage.credits) || usage.credits < 0) {
        throw new BillingError(ErrorCode.INVALID_CREDITS, `credits must be a whole number from 0 to ${MAX_CREDITS}`, {
          field: 'credits',
        });
      }
      if (feature.maxCreditsPerEvent !== null && usage.credits > feature.maxCreditsPerEvent) {
        throw new BillingError(
          ErrorCode.INVALID_CREDITS,
          `credits ${usage.credits} exceed the per-event budget of ${feature.key} (${feature.maxCreditsPerEvent})`,
          { field: 'credits' },
        );
      }
      return usage.credits;
    }
  }
}

/** Bands ascending by upper bound, the open-ended one last. */
export function sortTiers(tiers: PriceTier[]): PriceTier[] {
  return [...tiers].sort((a, b) => (a.upTo ?? Number.POSITIVE_INFINITY) - (b.upTo ?? Number.POSITIVE_INFINITY));
}

/** Refuses a tier list that cannot price every quantity exactly once. */
export function assertValidTiers(tiers: PriceTier[]): PriceTier[] {
  if (tiers.length === 0) throw invalidInput('a TIERED feature needs at least one tier', 'tiers');
  const sorted = sortTiers(tiers);
  const bounds = new Set<number | null>();
  sorted.forEach((tier, index) => {
    if (tier.upTo !== null && (!Number.isSafeInteger(tier.upTo) || tier.upTo < 1)) {
      throw invalidInput('a tier upper bound must be a whole number from 1', 'tiers');
    }
    if (tier.upTo === null && index !== sorted.length - 1) throw invalidInput('only one tier may be open-ended', 'tiers');
    if (bounds.has(tier.upTo)) throw invalidInput('tier upper bounds must differ', 'tiers');
    bounds.add(tier.upTo);
    if (!Number.isSafeInteger(tier.credits) || tier.credits < 0) {
      throw invalidInput('tier credits must be a whole number from 0', 'tiers');
    }
  });
  return sorted;
}
