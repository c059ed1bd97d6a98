import { recordAuditEvent } from '../../audit/auditLog.ts';
import { requireAccountAccess, seatScopeOf, type Actor } from '../../auth/access.ts';
import { readPaymentMethod, type PaymentMethodRecord } from '../../stripe/cardsOnFile.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import { builder } from '../builder.ts';
import { requireActor, type GraphQLContext } from '../context.ts';
import { AccountRef, findVisibleAccount, readVisibleAccount } from './account.ts';

const PaymentMethodRef = builder.objectRef<PaymentMethodRecord>('PaymentMethod').implement({
  description: "The account's card on file for off-session payments, as Stripe reports it: brand, last four digits and expiry, never more.",
  fields: (t) => ({
    brand: t.exposeString('brand', { description: "The card's brand as Stripe names it (visa, mastercard, amex…)." }),
    last4: t.exposeString('last4', { description: 'The last four digits.' }),
    expMonth: t.exposeInt('expMonth', { description: 'Expiry month, 1 to 12.' }),
    expYear: t.exposeInt('expYear', { description: 'Expiry year (four digits).' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime', description: 'When Stripe last told us about it.' }),
  }),
});

const HostedPageRef = (name: string, description: string) =>
  builder.objectRef<{ url: string }>(name).implement({
    description,
    fields: (t) => ({ url: t.exposeString('url', { description: 'Send the customer here (a Stripe-hosted page).' }) }),
  });

const PaymentMethodSetupRef = HostedPageRef(
  'PaymentMethodSetup',
  'A Stripe Checkout page in setup mode: the customer enters a card, nothing is charged; once Stripe confirms it, it is the account’s card for off-session payments.',
);
const BillingPortalSessionRef = HostedPageRef('BillingPortalSession', "A Stripe Customer Portal session where the customer manages their cards.");

const CreatePaymentMethodSetupInput = builder.inputType('CreatePaymentMethodSetupInput', {
  description: 'A card to save.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    successUrl: t.string({ required: true, description: 'Where Checkout returns once the card is saved (absolute http(s), at most 2,048 characters).' }),
    cancelUrl: t.string({ required: true, description: 'Where Checkout returns when abandoned.' }),
  }),
});

const RemovePaymentMethodInput = builder.inputType('RemovePaymentMethodInput', {
  description: 'The card to remove.',
  fields: (t) => ({ accountId: t.id({ required: true, description: 'The account whose card on file is detached.' }) }),
});

const CreateBillingPortalSessionInput = builder.inputType('CreateBillingPortalSessionInput', {
  description: 'A Customer Portal session.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    returnUrl: t.string({ required: true, description: 'Where the portal’s back link leads (absolute http(s), at most 2,048 characters).' }),
  }),
});

/**
 * An ACCOUNT key or the operator for the account, or an account-wide session token issued with
 * canBuy (the `cardManager` scope); the account must exist before Stripe is called.
 */
async function requireCardAccess(context: GraphQLContext, accountId: string): Promise<Actor> {
  const actor = requireActor(context);
  requireAccountAccess(actor, accountId, actor.session ? 'read' : 'write');
  if (!(await findVisibleAccount(context, actor, accountId))) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${accountId} not found`);
  return actor;
}

builder.objectFields(AccountRef, (t) => ({
  paymentMethod: t.field({
    type: PaymentMethodRef,
    nullable: true,
    description:
      "The card off-session purchases and auto top-ups charge (the Stripe customer's default), or null when none is saved; null also for SEAT keys and seat session tokens that may not buy.",
    resolve: (account, _args, context) => (seatScopeOf(context.actor) && !context.actor?.session?.canBuy ? null : readPaymentMethod(context.prisma, account.id)),
  }),
}));

builder.mutationFields((t) => ({
  createPaymentMethodSetup: t.field({
    authScopes: { cardManager: true },
    type: PaymentMethodSetupRef,
    description:
      "Starts saving a card: a Stripe Checkout URL in setup mode. When Stripe confirms (webhook), the card becomes the account's default for off-session purchases and auto top-ups, replacing the previous one. Costs one or two Stripe calls.",
    args: { input: t.arg({ type: CreatePaymentMethodSetupInput, required: true, description: 'The account and return URLs.' }) },
    resolve: async (_root, { input }, context) => {
      await requireCardAccess(context, input.accountId);
      return context.purchases.cards.createSetup(input);
    },
  }),
  removePaymentMethod: t.field({
    authScopes: { cardManager: true },
    type: AccountRef,
    description:
      "Detaches the account's card on file in Stripe: off-session purchases and auto top-ups then fail with payment_method_required until another is saved. Without a card it changes nothing.",
    args: { input: t.arg({ type: RemovePaymentMethodInput, required: true, description: 'The account.' }) },
    resolve: async (_root, { input }, context, info) => {
      const actor = await requireCardAccess(context, input.accountId);
      await context.purchases.cards.remove(input.accountId);
      await recordAuditEvent(context.prisma, context.clock, actor, { action: 'removePaymentMethod', accountId: input.accountId, subjectId: input.accountId });
      const account = await readVisibleAccount(context, actor, input.accountId, info);
      if (!account) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${input.accountId} not found`);
      return account;
    },
  }),
  createBillingPortalSession: t.field({
    authScopes: { cardManager: true },
    type: BillingPortalSessionRef,
    description:
      "A Stripe Customer Portal URL where the customer adds, replaces or removes cards themselves; what they change comes back by webhook (Account.paymentMethod follows). Needs the portal configured in Stripe's dashboard.",
    args: { input: t.arg({ type: CreateBillingPortalSessionInput, required: true, description: 'The account and the return URL.' }) },
    resolve: async (_root, { input }, context) => {
      await requireCardAccess(context, input.accountId);
      return context.purchases.cards.createPortalSession(input);
    },
  }),
}));
