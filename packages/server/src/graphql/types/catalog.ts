import { audited } from '../../audit/auditLog.ts';
import { listCreditPacks, upsertCreditPack, type CreditPackRecord } from '../../catalog/creditPacks.ts';
import { listFeatures, upsertFeature, type FeatureRecord } from '../../catalog/features.ts';
import { findPlanByCode, listPlans, upsertPlan, type AllocationRecord, type PlanRecord } from '../../catalog/plans.ts';
import { inTransaction } from '../../db/transaction.ts';
import type { PriceTier } from '../../ledger/pricing.ts';
import { builder } from '../builder.ts';
import { requireActor } from '../context.ts';

export const BillingIntervalEnum = builder.enumType('BillingInterval', {
  description: 'How often a plan renews.',
  values: {
    MONTH: { description: 'Every month, on the subscription anniversary.' },
    YEAR: { description: 'Every year, on the subscription anniversary.' },
  } as const,
});

export const RolloverKindEnum = builder.enumType('RolloverKind', {
  description: 'What happens to unused included credits at renewal.',
  values: {
    NONE: { description: 'They expire (HubSpot, B2B Rocket, Hex seats).' },
    CAP_MULTIPLE: { description: 'They roll over, the plan-sourced balance capped at rolloverValue x the allocation (Clay monthly).' },
    PERCENT: { description: 'rolloverValue percent of the unused amount carries over (Clay annual).' },
  } as const,
});

export const PricingModelEnum = builder.enumType('PricingModel', {
  description: 'How a feature is priced.',
  values: {
    PER_UNIT: { description: 'unitCredits x quantity; a unit price of 0 makes a free, logged feature.' },
    TIERED: { description: 'The quantity band the event falls in gives the cost of the whole event.' },
    DYNAMIC: { description: 'The caller supplies the cost (for example tokens x model rate).' },
  } as const,
});

export const OveragePolicyEnum = builder.enumType('OveragePolicy', {
  description: 'What happens when a pool runs out.',
  values: {
    HARD_STOP: { description: 'Usage is refused (the default).' },
    PAY_AS_YOU_GO: { description: 'Usage goes on, up to maxOverageCredits a period, reported as overage for invoicing.' },
  } as const,
});

export const MoneyRef = builder.objectRef<{ amount: number; currency: string }>('Money').implement({
  description: 'An amount of money in integer minor units.',
  fields: (t) => ({
    amount: t.exposeInt('amount', { description: 'Integer minor units (cents).' }),
    currency: t.exposeString('currency', { description: 'ISO 4217 currency code, upper case.' }),
  }),
});

export const MoneyInput = builder.inputType('MoneyInput', {
  description: 'An amount of money in integer minor units.',
  fields: (t) => ({
    amount: t.int({ required: true, description: 'Integer minor units (cents), 0 or more.' }),
    currency: t.string({ required: true, description: 'ISO 4217 currency code.' }),
  }),
});

const OveragePriceRef = builder.objectRef<{ amount: number; credits: number; currency: string }>('OveragePrice').implement({
  description: 'What overage costs: `amount` per `perCredits` overage credits, invoiced through Stripe at each period close.',
  fields: (t) => ({
    amount: t.field({ type: MoneyRef, description: 'The price of one block of perCredits credits, in the plan’s currency.', resolve: (price) => ({ amount: price.amount, currency: price.currency }) }),
    perCredits: t.expose('credits', { type: 'Credits', description: 'The block of overage credits the amount is for (1,000: a price per thousand).' }),
  }),
});

const PlanAllocationRef = builder.objectRef<AllocationRecord & { currency: string }>('PlanAllocation').implement({
  description: 'The credits a plan includes each period for one credit type.',
  fields: (t) => ({
    creditType: t.exposeString('creditType', { description: 'The pool the credits go to.' }),
    amount: t.expose('amount', { type: 'Credits', description: 'Credits per period (per seat when perSeat).' }),
    perSeat: t.exposeBoolean('perSeat', { description: 'True: every seat gets its own grant of `amount`, not shared, never rolled over.' }),
    rollover: t.expose('rollover', { type: RolloverKindEnum, description: 'What happens to unused credits at renewal.' }),
    rolloverValue: t.exposeFloat('rolloverValue', {
      nullable: true,
      description: 'CAP_MULTIPLE: the multiple of the allocation (2 = 2x); PERCENT: the percentage carried (15).',
    }),
    overagePrice: t.field({
      type: OveragePriceRef,
      nullable: true,
      description:
        'PAY_AS_YOU_GO: the price of this credit type’s overage; each period’s overage is invoiced once at the period’s close (rounded half up to a whole minor unit). Null: overage is counted, not invoiced.',
      resolve: (allocation) => (allocation.overagePrice ? { ...allocation.overagePrice, currency: allocation.currency } : null),
    }),
    unitCost: t.exposeFloat('unitCost', {
      nullable: true,
      description: "Minor units of the plan's currency one credit of this allocation costs (its grants' cost basis); null: the plan price shared evenly over every credit the plan allocates per period.",
    }),
  }),
});

export const PlanRef = builder.objectRef<PlanRecord>('Plan').implement({
  description: 'A subscription plan: its price, the credits it includes each period and the features it enables.',
  fields: (t) => ({
    code: t.exposeString('code', { description: 'Stable identifier chosen by the operator.' }),
    name: t.exposeString('name', { description: 'Display name.' }),
    interval: t.expose('interval', { type: BillingIntervalEnum, description: 'Billing period length.' }),
    price: t.field({ type: MoneyRef, description: 'Price per period.', resolve: (plan) => plan.price }),
    allocations: t.field({
      type: [PlanAllocationRef],
      description: 'Included credits per credit type.',
      resolve: (plan) => plan.allocations.map((allocation) => ({ ...allocation, currency: plan.price.currency })),
    }),
    featureKeys: t.exposeStringList('featureKeys', { description: 'Features usable on this plan; others are FeatureNotAvailable.' }),
    overagePolicy: t.expose('overagePolicy', { type: OveragePolicyEnum, description: 'What happens when a pool runs out.' }),
    maxOverageCredits: t.expose('maxOverageCredits', {
      type: 'Credits',
      nullable: true,
      description: 'PAY_AS_YOU_GO: the most overage credits a period (null: no overage allowed).',
    }),
    selfServe: t.exposeBoolean('selfServe', {
      description:
        'True: an ACCOUNT key may move its own account to this plan with changePlan. False (the default): only the operator (an ADMIN key) may, since a plan change grants credits.',
    }),
  }),
});

const PriceTierRef = builder.objectRef<PriceTier>('PriceTier').implement({
  description: 'A quantity band of a TIERED feature: an event whose quantity falls in the band costs its credits.',
  fields: (t) => ({
    upTo: t.exposeInt('upTo', { nullable: true, description: 'Upper bound of the band in units, inclusive; null for the last band.' }),
    credits: t.expose('credits', { type: 'Credits', description: 'The cost of the whole event.' }),
  }),
});

export const FeatureRef = builder.objectRef<FeatureRecord>('Feature').implement({
  description: 'A metered action that draws from one credit type at a price.',
  fields: (t) => ({
    key: t.exposeString('key', { description: 'Stable identifier, as passed to recordUsage.' }),
    name: t.exposeString('name', { description: 'Display name.' }),
    creditType: t.exposeString('creditType', { description: 'The pool it draws from.' }),
    pricing: t.expose('pricing', { type: PricingModelEnum, description: 'How the cost of an event is computed.' }),
    unitCredits: t.expose('unitCredits', { type: 'Credits', nullable: true, description: 'PER_UNIT: credits per unit (0: free).' }),
    tiers: t.field({ type: [PriceTierRef], nullable: true, description: 'TIERED: the bands, ascending.', resolve: (feature) => feature.tiers }),
    requiresPositiveBalance: t.exposeBoolean('requiresPositiveBalance', {
      description: 'True: usage is refused unless the pool has credits left, even when the event itself is free.',
    }),
    maxCreditsPerEvent: t.expose('maxCreditsPerEvent', {
      type: 'Credits',
      nullable: true,
      description: 'DYNAMIC: the most one event may cost (a per-run budget); null for none.',
    }),
  }),
});

export const CreditPackRef = builder.objectRef<CreditPackRecord>('CreditPack').implement({
  description: 'A bundle of credits for sale.',
  fields: (t) => ({
    code: t.exposeString('code', { description: 'Stable identifier.' }),
    name: t.exposeString('name', { description: 'Display name.' }),
    creditType: t.exposeString('creditType', { description: 'The pool the credits go to.' }),
    credits: t.expose('credits', { type: 'Credits', description: 'Credits per pack.' }),
    price: t.field({ type: MoneyRef, description: 'Price per pack.', resolve: (pack) => pack.price }),
    expiresAfterDays: t.exposeInt('expiresAfterDays', { nullable: true, description: 'Purchased credits expire this many days after purchase; null: never.' }),
  }),
});

const OveragePriceInput = builder.inputType('OveragePriceInput', {
  description: 'What overage costs, in the plan’s currency.',
  fields: (t) => ({
    amount: t.int({ required: true, description: 'Minor units (cents) per block of perCredits credits, 1 to 99,999,999.' }),
    perCredits: t.field({ type: 'Credits', required: true, description: 'The block of credits the amount is for, 1 or more.' }),
  }),
});

const PlanAllocationInput = builder.inputType('PlanAllocationInput', {
  description: 'The credits a plan includes each period for one credit type.',
  fields: (t) => ({
    creditType: t.string({ required: true, description: 'The pool the credits go to.' }),
    amount: t.field({ type: 'Credits', required: true, description: 'Credits per period (per seat when perSeat).' }),
    perSeat: t.boolean({ description: 'True: every seat gets its own grant. Default false.' }),
    rollover: t.field({ type: RolloverKindEnum, description: 'Default NONE.' }),
    rolloverValue: t.float({ description: 'CAP_MULTIPLE: the multiple (2); PERCENT: the percentage (15).' }),
    overagePrice: t.field({
      type: OveragePriceInput,
      description: 'PAY_AS_YOU_GO plans, shared allocations: the price of overage of this credit type, invoiced at each period close. Omit: not invoiced.',
    }),
    unitCost: t.float({ description: "Minor units one credit costs, for the cost basis of its grants (0 or more); default: the plan price shared evenly over all the plan's credits." }),
  }),
});

const PlanInput = builder.inputType('PlanInput', {
  description: 'A plan to create or replace (by code).',
  fields: (t) => ({
    code: t.string({ required: true, description: 'Stable identifier.' }),
    name: t.string({ required: true, description: 'Display name.' }),
    interval: t.field({ type: BillingIntervalEnum, required: true, description: 'Billing period length.' }),
    price: t.field({ type: MoneyInput, required: true, description: 'Price per period.' }),
    allocations: t.field({ type: [PlanAllocationInput], required: true, description: 'Included credits per credit type.' }),
    featureKeys: t.stringList({ required: true, description: 'Features the plan enables; each must exist.' }),
    overagePolicy: t.field({ type: OveragePolicyEnum, description: 'Default HARD_STOP.' }),
    maxOverageCredits: t.field({ type: 'Credits', description: 'PAY_AS_YOU_GO: the most overage credits a period.' }),
    selfServe: t.boolean({ description: 'Let ACCOUNT keys change their account to this plan themselves. Default false (operator only).' }),
  }),
});

const PriceTierInput = builder.inputType('PriceTierInput', {
  description: 'A quantity band of a TIERED feature.',
  fields: (t) => ({
    upTo: t.int({ description: 'Upper bound in units, inclusive; omit for the last, open-ended band.' }),
    credits: t.field({ type: 'Credits', required: true, description: 'The cost of a whole event in this band.' }),
  }),
});

const FeatureInput = builder.inputType('FeatureInput', {
  description: 'A feature to create or replace (by key).',
  fields: (t) => ({
    key: t.string({ required: true, description: 'Stable identifier.' }),
    name: t.string({ required: true, description: 'Display name.' }),
    creditType: t.string({ required: true, description: 'The pool it draws from.' }),
    pricing: t.field({ type: PricingModelEnum, required: true, description: 'How the cost is computed.' }),
    unitCredits: t.field({ type: 'Credits', description: 'PER_UNIT: credits per unit (0: free).' }),
    tiers: t.field({ type: [PriceTierInput], description: 'TIERED: the bands.' }),
    requiresPositiveBalance: t.boolean({ description: 'Refuse usage unless the pool has credits left. Default false.' }),
    maxCreditsPerEvent: t.field({ type: 'Credits', description: 'DYNAMIC: the most one event may cost.' }),
  }),
});

const CreditPackInput = builder.inputType('CreditPackInput', {
  description: 'A credit pack to create or replace (by code).',
  fields: (t) => ({
    code: t.string({ required: true, description: 'Stable identifier.' }),
    name: t.string({ required: true, description: 'Display name.' }),
    creditType: t.string({ required: true, description: 'The pool the credits go to.' }),
    credits: t.field({ type: 'Credits', required: true, description: 'Credits per pack.' }),
    price: t.field({ type: MoneyInput, required: true, description: 'Price per pack.' }),
    expiresAfterDays: t.int({ description: 'Days until purchased credits expire; omit for never.' }),
  }),
});

builder.queryFields((t) => ({
  plans: t.field({
    authScopes: { signedIn: true },
    type: [PlanRef],
    description: 'Every plan, by code.',
    resolve: (_root, _args, context) => listPlans(context.prisma),
  }),
  plan: t.field({
    authScopes: { signedIn: true },
    type: PlanRef,
    nullable: true,
    description: 'One plan by code, or null.',
    args: { code: t.arg.string({ required: true, description: 'The plan code.' }) },
    resolve: (_root, args, context) => findPlanByCode(context.prisma, args.code),
  }),
  features: t.field({
    authScopes: { signedIn: true },
    type: [FeatureRef],
    description: 'Every feature, by key.',
    resolve: (_root, _args, context) => listFeatures(context.prisma),
  }),
  creditPacks: t.field({
    authScopes: { signedIn: true },
    type: [CreditPackRef],
    description: 'Every credit pack for sale, by code.',
    resolve: (_root, _args, context) => listCreditPacks(context.prisma),
  }),
}));

builder.mutationFields((t) => ({
  upsertPlan: t.field({
    authScopes: { admin: true },
    type: PlanRef,
    description: 'Creates or replaces a plan (operator only). Subscribers get changed allocations from their next period.',
    args: { input: t.arg({ type: PlanInput, required: true, description: 'The plan.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, upsertPlan(tx, input), (plan) => ({ action: 'upsertPlan', subjectId: plan.code, details: { ...input } })),
      );
    },
  }),
  upsertFeature: t.field({
    authScopes: { admin: true },
    type: FeatureRef,
    description: 'Creates or replaces a feature and its price (operator only).',
    args: { input: t.arg({ type: FeatureInput, required: true, description: 'The feature.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      const feature = { ...input, tiers: input.tiers?.map((tier) => ({ upTo: tier.upTo ?? null, credits: tier.credits })) };
      const saved = await inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, upsertFeature(tx, feature), (saved) => ({ action: 'upsertFeature', subjectId: saved.key, details: feature })),
      );
      context.usageHotPath.features.forget(saved.key);
      return saved;
    },
  }),
  upsertCreditPack: t.field({
    authScopes: { admin: true },
    type: CreditPackRef,
    description: 'Creates or replaces a credit pack (operator only).',
    args: { input: t.arg({ type: CreditPackInput, required: true, description: 'The pack.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, upsertCreditPack(tx, input), (pack) => ({ action: 'upsertCreditPack', subjectId: pack.code, details: { ...input } })),
      );
    },
  }),
}));
