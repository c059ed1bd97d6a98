import type { Tx } from '../db/transaction.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { invalidInput } from '../domain/errors.ts';
import { type Feature, Prisma } from '../generated/prisma/client.ts';
import { assertValidTiers, type FeaturePricing, type PriceTier, type PricingModel } from '../ledger/pricing.ts';
import { assertCode, assertName } from './validation.ts';

export interface FeatureRecord extends FeaturePricing {
  name: string;
  creditType: string;
  requiresPositiveBalance: boolean;
}

export interface FeatureInput {
  key: string;
  name: string;
  creditType: string;
  pricing: PricingModel;
  unitCredits?: number | null;
  tiers?: PriceTier[] | null;
  requiresPositiveBalance?: boolean | null;
  maxCreditsPerEvent?: number | null;
}

export function toFeatureRecord(row: Feature): FeatureRecord {
  return {
    key: row.key,
    name: row.name,
    creditType: row.creditType,
    pricing: row.pricing,
    unitCredits: row.unitCredits === null ? null : toCredits(row.unitCredits),
    tiers: (row.tiers as PriceTier[] | null) ?? null,
    requiresPositiveBalance: row.requiresPositiveBalance,
    maxCreditsPerEvent: row.maxCreditsPerEvent === null ? null : toCredits(row.maxCreditsPerEvent),
  };
}

/** Defines or redefines a metered action and its price; events already recorded keep their price. */
export async function upsertFeature(tx: Tx, input: FeatureInput): Promise<FeatureRecord> {
  const key = assertCode(input.key, 'key');
  const creditType = assertCode(input.creditType, 'creditType');
  let unitCredits: number | null = null;
  let tiers: PriceTier[] | null = null;
  switch (input.pricing) {
    case 'PER_UNIT':
      if (input.unitCredits === undefined || input.unitCredits === null) {
        throw invalidInput('a PER_UNIT feature needs unitCredits (0 for a free feature)', 'unitCredits');
      }
      unitCredits = assertCredits(input.unitCredits, 'unitCredits', { allowZero: true });
      if (input.tiers) throw invalidInput('tiers are only for TIERED features', 'tiers');
      break;
    case 'TIERED':
      tiers = assertValidTiers(input.tiers ?? []);
      if (input.unitCredits !== undefined && input.unitCredits !== null) {
        throw invalidInput('unitCredits is only for PER_UNIT features', 'unitCredits');
      }
      break;
    case 'DYNAMIC':
      if (input.tiers) throw invalidInput('tiers are only for TIERED features', 'tiers');
      if (input.unitCredits !== undefined && input.unitCredits !== null) {
        throw invalidInput('unitCredits is only for PER_UNIT features', 'unitCredits');
      }
      break;
  }
  const maxCreditsPerEvent =
    input.maxCreditsPerEvent === undefined || input.maxCreditsPerEvent === null
      ? null
      : assertCredits(input.maxCreditsPerEvent, 'maxCreditsPerEvent');
  const data = {
    name: assertName(input.name),
    creditType,
    pricing: input.pricing,
    unitCredits: unitCredits === null ? null : BigInt(unitCredits),
    tiers: tiers ? tiers.map((tier) => ({ upTo: tier.upTo, credits: tier.credits })) : Prisma.DbNull,
    requiresPositiveBalance: input.requiresPositiveBalance ?? false,
    maxCreditsPerEvent: maxCreditsPerEvent === null ? null : BigInt(maxCreditsPerEvent),
  };
  const row = await tx.feature.upsert({
    where: { key },
    create: { key, ...data },
    update: data,
  });
  return toFeatureRecord(row);
}

export async function findFeature(tx: Tx, key: string): Promise<FeatureRecord | null> {
  const row = await tx.feature.findUnique({ where: { key } });
  return row ? toFeatureRecord(row) : null;
}

export async function listFeatures(tx: Tx): Promise<FeatureRecord[]> {
  return (await tx.feature.findMany({ orderBy: { key: 'asc' } })).map(toFeatureRecord);
}
