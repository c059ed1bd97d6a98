import { recordAuditEvent } from '../../audit/auditLog.ts';
import type { LockedAccount } from '../../accounts/lockAccount.ts';
import { requireAccountAccess } from '../../auth/access.ts';
import { getPlanById } from '../../catalog/plans.ts';
import { readSubscription, type AccountSubscription } from '../../subscriptions/subscriptions.ts';
import type { SubscriptionCheckoutRecord } from '../../subscriptions/subscriptionService.ts';
import { builder } from '../builder.ts';
import { requireActor, type GraphQLContext } from '../context.ts';
import { PlanSubscriptionRef } from './account.ts';
import { MoneyRef, PlanRef } from './catalog.ts';

export const SubscriptionStatusEnum = builder.enumType('SubscriptionStatus', {
  description: "Where the account's Stripe subscription stands.",
  values: {
    INCOMPLETE: { description: 'Started but not paid yet.' },
    ACTIVE: { description: 'Paid and renewing.' },
    PAST_DUE: { description: 'A renewal payment failed: usage goes on until the grace period ends (usageRefusedFrom), then is refused until the invoice is paid.' },
    UNPAID: { description: 'Stripe stopped retrying the unpaid invoice: usage is refused until it is paid.' },
    CANCELED: { description: 'Ended: the account moved to the free plan, or new usage is refused (SUBSCRIPTION_ENDED).' },
  } as const,
});

const UsageRefusalReasonEnum = builder.enumType('UsageRefusalReason', {
  description: 'Why new usage is (or will be) refused.',
  values: {
    PAYMENT_OVERDUE: { description: 'The renewal is unpaid past the grace period; usage resumes once the invoice is paid.' },
    SUBSCRIPTION_ENDED: { description: 'The subscription ended without a free plan to move to.' },
  } as const,
});

const SubscriptionCheckoutStatusEnum = builder.enumType('SubscriptionCheckoutStatus', {
  description: 'Where a subscription Checkout stands.',
  values: {
    PENDING: { description: 'Waiting for the customer to pay on Checkout.' },
    COMPLETED: { description: 'Paid: the account is on the plan.' },
    EXPIRED: { description: 'The Checkout Session expired unpaid.' },
  } as const,
});

interface PendingUpgrade {
  planId: string;
  invoiceUrl: string | null;
  amountDue: { amount: number; currency: string } | null;
}

const PendingUpgradeRef = builder.objectRef<PendingUpgrade>('PendingPaidUpgrade').implement({
  description: 'An upgrade through Stripe whose proration invoice is not paid yet: the plan and its credits apply once it is.',
  fields: (t) => ({
    plan: t.field({ type: PlanRef, description: 'The plan it moves to.', resolve: (upgrade, _args, context) => getPlanById(context.prisma, upgrade.planId) }),
    invoiceUrl: t.exposeString('invoiceUrl', { nullable: true, description: "Stripe's hosted page where the invoice can be paid." }),
    amountDue: t.field({ type: MoneyRef, nullable: true, description: 'What the proration invoice asks.', resolve: (upgrade) => upgrade.amountDue }),
  }),
});

const SubscriptionCheckoutRef = builder.objectRef<SubscriptionCheckoutRecord>('SubscriptionCheckout').implement({
  description: 'A Stripe Checkout (subscription mode) that puts the account on a plan once paid.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier (also in the Stripe objects’ metadata as subscription_checkout_id).' }),
    status: t.field({ type: SubscriptionCheckoutStatusEnum, description: 'Where it stands.', resolve: (checkout) => checkout.status }),
    checkoutUrl: t.exposeString('checkoutUrl', { nullable: true, description: 'Where to send the customer to subscribe.' }),
    plan: t.field({ type: PlanRef, description: 'The plan subscribed to.', resolve: (checkout, _args, context) => getPlanById(context.prisma, checkout.planId) }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was started.' }),
    completedAt: t.expose('completedAt', { type: 'DateTime', nullable: true, description: 'When Stripe confirmed it.' }),
  }),
});

/** One read of the subscription per account and request, whichever of its fields are selected. */
const subscriptionReads = new WeakMap<GraphQLContext, Map<string, Promise<AccountSubscription | null>>>();
function subscriptionOf(context: GraphQLContext, accountId: string): Promise<AccountSubscription | null> {
  let reads = subscriptionReads.get(context);
  if (!reads) subscriptionReads.set(context, (reads = new Map()));
  let read = reads.get(accountId);
  if (!read) reads.set(accountId, (read = readSubscription(context.prisma, accountId)));
  return read;
}

builder.objectFields(PlanRef, (t) => ({
  stripePriceId: t.exposeString('stripePriceId', {
    nullable: true,
    description: 'The recurring Stripe Price the plan is sold at (linkPlanToStripePrice); null: not sold through Stripe.',
  }),
}));

builder.objectFields(PlanSubscriptionRef, (t) => ({
  status: t.field({
    type: SubscriptionStatusEnum,
    nullable: true,
    description: 'The Stripe subscription selling the plan: ACTIVE, PAST_DUE, UNPAID, CANCELED…; null when the account was never subscribed through Stripe.',
    resolve: async (account, _args, context) => (await subscriptionOf(context, account.id))?.status ?? null,
  }),
  cancelAtPeriodEnd: t.boolean({
    description: 'The subscription ends at the period end (cancelSubscription).',
    resolve: async (account, _args, context) => (await subscriptionOf(context, account.id))?.cancelAtPeriodEnd ?? false,
  }),
  pastDueSince: t.field({
    type: 'DateTime',
    nullable: true,
    description: 'When the unpaid renewal made the subscription past due (the account clock).',
    resolve: async (account, _args, context) => (await subscriptionOf(context, account.id))?.pastDueSince ?? null,
  }),
  usageRefusedFrom: t.field({
    type: 'DateTime',
    nullable: true,
    description: 'From this instant new usage and holds are refused (usageRefusalReason says why), until the reason is gone; null: none planned.',
    resolve: async (account, _args, context) => (await subscriptionOf(context, account.id))?.usageRefusedFrom ?? null,
  }),
  usageRefusalReason: t.field({
    type: UsageRefusalReasonEnum,
    nullable: true,
    description: 'Why usage is or will be refused from usageRefusedFrom.',
    resolve: async (account, _args, context) => (await subscriptionOf(context, account.id))?.usageRefusedReason ?? null,
  }),
  pendingPaidUpgrade: t.field({
    type: PendingUpgradeRef,
    nullable: true,
    description: 'An upgrade through Stripe waiting for its invoice to be paid.',
    resolve: async (account, _args, context) => {
      const change = await context.prisma.subscriptionChange.findFirst({ where: { accountId: account.id, kind: 'UPGRADE', status: 'PENDING' }, orderBy: { createdAt: 'desc' } });
      if (!change) return null;
      return {
        planId: change.toPlanId,
        invoiceUrl: change.invoiceUrl,
        amountDue: change.amountDue === null || change.currency === null ? null : { amount: change.amountDue, currency: change.currency },
      };
    },
  }),
}));

const LinkPlanInput = builder.inputType('LinkPlanToStripePriceInput', {
  description: 'Which Stripe Price sells a plan.',
  fields: (t) => ({
    planCode: t.string({ required: true, description: 'The plan.' }),
    stripePriceId: t.string({
      description: "An existing recurring Price (price_…) billing the plan's price, currency and interval; absent: one is created from the plan.",
    }),
  }),
});

const SubscribeToPlanInput = builder.inputType('SubscribeToPlanInput', {
  description: 'A subscription to a plan sold through Stripe, paid on Stripe Checkout.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    planCode: t.string({ required: true, description: 'A plan linked to a Stripe Price.' }),
    successUrl: t.string({ required: true, description: 'Where Checkout returns after paying (at most 2,048 characters).' }),
    cancelUrl: t.string({ required: true, description: 'Where Checkout returns when the customer gives up.' }),
    idempotencyKey: t.string({ required: true, description: 'The same key and input return the same Checkout.' }),
  }),
});

const CancelSubscriptionInput = builder.inputType('CancelSubscriptionInput', {
  description: 'Ending a subscription.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
  }),
});

builder.mutationFields((t) => ({
  linkPlanToStripePrice: t.field({
    authScopes: { admin: true },
    type: PlanRef,
    description: 'Sells a plan through Stripe (operator only): links it to an existing recurring Price, or creates one from the plan.',
    args: { input: t.arg({ type: LinkPlanInput, required: true, description: 'The plan and the price.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      const plan = await context.subscriptions.linkPlanToStripePrice(input.planCode, input.stripePriceId);
      await recordAuditEvent(context.prisma, context.clock, actor, { action: 'linkPlanToStripePrice', subjectId: plan.code, details: { stripePriceId: plan.stripePriceId } });
      return plan;
    },
  }),
  subscribeToPlan: t.field({
    authScopes: { writer: true },
    type: SubscriptionCheckoutRef,
    description:
      'Starts a Stripe Checkout in subscription mode for a plan sold through Stripe. Once Stripe confirms, the account is on the plan and a new period starts at the subscription’s billing cycle anchor.',
    args: { input: t.arg({ type: SubscribeToPlanInput, required: true, description: 'The subscription.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      requireAccountAccess(actor, input.accountId, 'write');
      const checkout = await context.subscriptions.subscribeToPlan(input);
      await recordAuditEvent(context.prisma, context.clock, actor, {
        action: 'subscribeToPlan',
        accountId: input.accountId,
        subjectId: checkout.id,
        details: { planCode: input.planCode },
      });
      return checkout;
    },
  }),
  cancelSubscription: t.field({
    authScopes: { writer: true },
    type: PlanSubscriptionRef,
    description:
      'Ends the Stripe subscription at the period end: the account then moves to the free plan (SUBSCRIPTION_FREE_PLAN_CODE), or without one new usage is refused from then (SUBSCRIPTION_ENDED).',
    args: { input: t.arg({ type: CancelSubscriptionInput, required: true, description: 'The account.' }) },
    resolve: async (_root, { input }, context): Promise<LockedAccount> => {
      const actor = requireActor(context);
      requireAccountAccess(actor, input.accountId, 'write');
      const account = await context.subscriptions.cancelSubscription(input.accountId);
      await recordAuditEvent(context.prisma, context.clock, actor, { action: 'cancelSubscription', accountId: input.accountId, subjectId: input.accountId });
      return account;
    },
  }),
}));
