import type { Tx } from '../db/transaction.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import type { Plan, PlanAllocation } from '../generated/prisma/client.ts';
import type { BillingInterval } from '../domain/billingPeriod.ts';
import { assertCode, assertMoney, assertName } from './validation.ts';

export type RolloverKind = 'NONE' | 'CAP_MULTIPLE' | 'PERCENT';
export type OveragePolicy = 'HARD_STOP' | 'PAY_AS_YOU_GO';

export interface AllocationRecord {
  creditType: string;
  amount: number;
  perSeat: boolean;
  rollover: RolloverKind;
  rolloverValue: number | null;
  /** Money (minor units of the plan's currency) per `credits` overage credits, invoiced at each period's close. */
  overagePrice: OveragePrice | null;
  /** Minor units one credit of it costs (grants' cost basis); null: the plan price shared over all its credits. */
  unitCost: number | null;
}

export interface OveragePrice {
  amount: number;
  credits: number;
}

/** The largest overage price per block: Stripe's own ceiling for one amount in most currencies (99,999,999 minor units). */
const MAX_OVERAGE_PRICE_AMOUNT = 99_999_999;

export interface PlanRecord {
  id: string;
  code: string;
  name: string;
  interval: BillingInterval;
  price: { amount: number; currency: string };
  allocations: AllocationRecord[];
  featureKeys: string[];
  overagePolicy: OveragePolicy;
  maxOverageCredits: number | null;
  /** ACCOUNT keys may change their account to this plan themselves. */
  selfServe: boolean;
  /** The recurring Stripe Price it is sold at (subscriptions/), or null. */
  stripePriceId: string | null;
}

export interface PlanInput {
  code: string;
  name: string;
  interval: BillingInterval;
  price: { amount: number; currency: string };
  allocations: Array<{
    creditType: string;
    amount: number;
    perSeat?: boolean | null;
    rollover?: RolloverKind | null;
    rolloverValue?: number | null;
    overagePrice?: { amount: number; perCredits: number } | null;
    unitCost?: number | null;
  }>;
  featureKeys: string[];
  overagePolicy?: OveragePolicy | null;
  maxOverageCredits?: number | null;
  selfServe?: boolean | null;
}

export function toPlanRecord(row: Plan & { allocations: PlanAllocation[] }): PlanRecord {
  return {
    id: row.id,
    code: row.code,
    name: row.name,
    interval: row.interval,
    price: { amount: row.priceAmount, currency: row.priceCurrency },
    allocations: [...row.allocations]
      .sort((a, b) => a.position - b.position)
      .map((allocation) => ({
        creditType: allocation.creditType,
        amount: toCredits(allocation.amount),
        perSeat: allocation.perSeat,
        rollover: allocation.rollover,
        rolloverValue: allocation.rolloverValue,
        overagePrice:
          allocation.overagePriceAmount === null || allocation.overagePriceCredits === null
            ? null
            : { amount: allocation.overagePriceAmount, credits: toCredits(allocation.overagePriceCredits) },
        unitCost: allocation.unitCost === null ? null : Number(allocation.unitCost),
      })),
    featureKeys: row.featureKeys,
    overagePolicy: row.overagePolicy,
    maxOverageCredits: row.maxOverageCredits === null ? null : toCredits(row.maxOverageCredits),
    selfServe: row.selfServe,
    stripePriceId: row.stripePriceId,
  };
}

function validateOveragePrice(
  price: { amount: number; perCredits: number } | null | undefined,
  perSeat: boolean,
  overagePolicy: OveragePolicy,
  field: string,
): OveragePrice | null {
  if (price === undefined || price === null) return null;
  // Overage is counted for the shared pool only, and only a PAY_AS_YOU_GO plan has any.
  if (perSeat) throw invalidInput(`${field}.overagePrice: overage is counted for the shared pool, not per seat`, `${field}.overagePrice`);
  if (overagePolicy !== 'PAY_AS_YOU_GO') {
    throw invalidInput(`${field}.overagePrice needs overagePolicy PAY_AS_YOU_GO (a HARD_STOP plan has no overage)`, `${field}.overagePrice`);
  }
  if (!Number.isSafeInteger(price.amount) || price.amount < 1 || price.amount > MAX_OVERAGE_PRICE_AMOUNT) {
    throw invalidInput(`${field}.overagePrice.amount must be whole minor units from 1 to ${MAX_OVERAGE_PRICE_AMOUNT}`, `${field}.overagePrice.amount`);
  }
  return { amount: price.amount, credits: assertCredits(price.perCredits, `${field}.overagePrice.perCredits`) };
}

function validateAllocations(input: PlanInput['allocations'], overagePolicy: OveragePolicy): AllocationRecord[] {
  const seen = new Set<string>();
  return input.map((allocation, index) => {
    const field = `allocations[${index}]`;
    const creditType = assertCode(allocation.creditType, `${field}.creditType`);
    const perSeat = allocation.perSeat ?? false;
    const identity = `${creditType}/${perSeat}`;
    if (seen.has(identity)) throw invalidInput(`${field}: ${creditType} is allocated twice`, field);
    seen.add(identity);
    const rollover = allocation.rollover ?? 'NONE';
    const rolloverValue = allocation.rolloverValue ?? null;
    if (rollover === 'NONE' && rolloverValue !== null) {
      throw invalidInput(`${field}.rolloverValue is only for CAP_MULTIPLE or PERCENT`, `${field}.rolloverValue`);
    }
    if (rollover === 'CAP_MULTIPLE' && (rolloverValue === null || !(rolloverValue >= 1) || rolloverValue > 100)) {
      throw invalidInput(`${field}.rolloverValue must be the cap multiple, from 1 to 100 (2 = 2x)`, `${field}.rolloverValue`);
    }
    if (rollover === 'PERCENT' && (rolloverValue === null || !(rolloverValue > 0) || rolloverValue > 100)) {
      throw invalidInput(`${field}.rolloverValue must be the percentage carried, above 0 and at most 100`, `${field}.rolloverValue`);
    }
    const unitCost = allocation.unitCost ?? null;
    if (unitCost !== null && !(Number.isFinite(unitCost) && unitCost >= 0 && unitCost <= 1e12)) {
      throw invalidInput(`${field}.unitCost must be minor units per credit, from 0 to 10^12`, `${field}.unitCost`);
    }
    return {
      creditType,
      amount: assertCredits(allocation.amount, `${field}.amount`, { allowZero: true }),
      perSeat,
      rollover,
      rolloverValue,
      overagePrice: validateOveragePrice(allocation.overagePrice, perSeat, overagePolicy, field),
      unitCost,
    };
  });
}

/**
 * Defines or redefines a plan. Subscribed accounts see a changed allocation from their next period
 * on; what was granted for the current period stays as granted.
 */
export async function upsertPlan(tx: Tx, input: PlanInput): Promise<PlanRecord> {
  const code = assertCode(input.code, 'code');
  const name = assertName(input.name);
  const price = assertMoney(input.price.amount, input.price.currency);
  const allocations = validateAllocations(input.allocations, input.overagePolicy ?? 'HARD_STOP');
  const featureKeys = [...new Set(input.featureKeys.map((key) => assertCode(key, 'featureKeys')))];
  const known = await tx.feature.findMany({ where: { key: { in: featureKeys } }, select: { key: true } });
  const missing = featureKeys.filter((key) => !known.some((feature) => feature.key === key));
  if (missing.length > 0) {
    throw new BillingError(ErrorCode.UNKNOWN_FEATURE, `unknown feature(s): ${missing.join(', ')}`, { featureKeys: missing });
  }
  const maxOverageCredits =
    input.maxOverageCredits === undefined || input.maxOverageCredits === null
      ? null
      : assertCredits(input.maxOverageCredits, 'maxOverageCredits', { allowZero: true });
  const data = {
    name,
    interval: input.interval,
    priceAmount: price.amount,
    priceCurrency: price.currency,
    featureKeys,
    overagePolicy: input.overagePolicy ?? 'HARD_STOP',
    maxOverageCredits: maxOverageCredits === null ? null : BigInt(maxOverageCredits),
    selfServe: input.selfServe ?? false,
  };
  // A Stripe Price is immutable: a plan whose price or interval changes is no longer sold at its old one.
  const existing = await tx.plan.findUnique({ where: { code }, select: { priceAmount: true, priceCurrency: true, interval: true } });
  const repriced = existing !== null && (existing.priceAmount !== data.priceAmount || existing.priceCurrency !== data.priceCurrency || existing.interval !== data.interval);
  const plan = await tx.plan.upsert({ where: { code }, create: { code, ...data }, update: { ...data, ...(repriced ? { stripePriceId: null } : {}) } });
  await tx.planAllocation.deleteMany({ where: { planId: plan.id } });
  await tx.planAllocation.createMany({
    data: allocations.map((allocation, position) => ({
      planId: plan.id,
      creditType: allocation.creditType,
      amount: BigInt(allocation.amount),
      perSeat: allocation.perSeat,
      rollover: allocation.rollover,
      rolloverValue: allocation.rolloverValue,
      overagePriceAmount: allocation.overagePrice?.amount ?? null,
      overagePriceCredits: allocation.overagePrice ? BigInt(allocation.overagePrice.credits) : null,
      unitCost: allocation.unitCost === null ? null : String(allocation.unitCost),
      position,
    })),
  });
  return getPlanById(tx, plan.id);
}

export async function findPlanByCode(tx: Tx, code: string): Promise<PlanRecord | null> {
  const row = await tx.plan.findUnique({ where: { code }, include: { allocations: true } });
  return row ? toPlanRecord(row) : null;
}

export async function getPlanById(tx: Tx, id: string): Promise<PlanRecord> {
  const row = await tx.plan.findUnique({ where: { id }, include: { allocations: true } });
  if (!row) throw new BillingError(ErrorCode.PLAN_NOT_FOUND, `plan ${id} not found`);
  return toPlanRecord(row);
}

export async function listPlans(tx: Tx): Promise<PlanRecord[]> {
  return (await tx.plan.findMany({ include: { allocations: true }, orderBy: { code: 'asc' } })).map(toPlanRecord);
}
