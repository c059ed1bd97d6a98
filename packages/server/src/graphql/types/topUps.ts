import { audited } from '../../audit/auditLog.ts';
import { findAccountState } from '../../accounts/lockAccount.ts';
import { canReadAccount, requireAccountAccess, seatScopeOf } from '../../auth/access.ts';
import { toCreditPackRecord } from '../../catalog/creditPacks.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import { configureAutoTopUp, listAutoTopUps, type AutoTopUpRecord } from '../../stripe/autoTopUp.ts';
import { findPurchase, toPurchaseRecord, type TopUpPurchaseRecord } from '../../stripe/purchases.ts';
import { snapshotThenLive } from '../../realtime/snapshotFeed.ts';
import { filter, pipe } from 'graphql-yoga';
import { Prisma } from '../../generated/prisma/client.ts';
import { builder } from '../builder.ts';
import { requireActor, type GraphQLContext } from '../context.ts';
import { decodeCursor, defineConnection, pageSize, toConnection } from '../pagination.ts';
import { AccountRef, GrantRef, GrantSourceEnum } from './account.ts';
import { CreditPackRef, MoneyRef } from './catalog.ts';

const TopUpStatusEnum = builder.enumType('TopUpStatus', {
  description: 'Where a credit purchase stands.',
  values: {
    PENDING: { description: 'Waiting for payment (Checkout open, or an off-session payment under way).' },
    COMPLETED: { description: 'Paid; the credits were granted.' },
    FAILED: { description: 'The payment failed or the Checkout Session expired; nothing was granted.' },
    REFUNDED: { description: 'The payment was refunded; what was left of the credits was taken back.' },
    REQUIRES_ACTION: {
      description:
        'The bank asks the customer to authenticate an off-session payment (strong customer authentication): nothing was charged, and nothing retries it until the customer pays at actionUrl (then COMPLETED) or that page expires (then FAILED).',
    },
  } as const,
});

async function loadPack(context: GraphQLContext, code: string) {
  const pack = await context.prisma.creditPack.findUniqueOrThrow({ where: { code } });
  return toCreditPackRecord(pack);
}

const TopUpPurchaseRef = builder.objectRef<TopUpPurchaseRecord>('TopUpPurchase').implement({
  description: 'A purchase of credit packs through Stripe.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier (also in the Stripe objects’ metadata as purchase_id).' }),
    pack: t.field({ type: CreditPackRef, description: 'The pack bought.', resolve: (purchase, _args, context) => loadPack(context, purchase.packCode) }),
    quantity: t.exposeInt('quantity', { description: 'Packs bought.' }),
    credits: t.expose('credits', { type: 'Credits', description: 'Credits bought in all.' }),
    amount: t.field({ type: MoneyRef, description: 'The price paid (or to pay).', resolve: (purchase) => purchase.amount }),
    status: t.expose('status', { type: TopUpStatusEnum, description: 'Where it stands.' }),
    source: t.field({ type: GrantSourceEnum, description: 'PURCHASE, or AUTO_TOP_UP when bought automatically.', resolve: (purchase) => purchase.source }),
    checkoutUrl: t.string({
      nullable: true,
      description: 'Where to send the customer to pay (Checkout purchases); null for SEAT keys and seat session tokens that may not buy.',
      resolve: (purchase, _args, context) => (seatScopeOf(context.actor) && !context.actor?.session?.canBuy ? null : purchase.checkoutUrl),
    }),
    actionUrl: t.string({
      nullable: true,
      description:
        'REQUIRES_ACTION: the Stripe Checkout page where the customer authenticates and completes the payment (the card they use there is saved as their default); null otherwise, and for SEAT keys and seat session tokens that may not buy.',
      resolve: (purchase, _args, context) =>
        purchase.status !== 'REQUIRES_ACTION' || (seatScopeOf(context.actor) && !context.actor?.session?.canBuy) ? null : purchase.checkoutUrl,
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was started.' }),
    completedAt: t.expose('completedAt', { type: 'DateTime', nullable: true, description: 'When it was paid and granted.' }),
    grant: t.field({
      type: GrantRef,
      nullable: true,
      description: 'The grant of the credits bought.',
      resolve: (purchase, _args, context) => (purchase.grantId ? context.loaders.grant.load(purchase.grantId) : null),
    }),
    failureCode: t.exposeString('failureCode', {
      nullable: true,
      description:
        "Stripe's code of why it failed (a decline code such as insufficient_funds, or amount_too_small, resource_missing, payment_method_required, checkout_expired), or why it waits (authentication_required, requires_action).",
    }),
    failureMessage: t.exposeString('failureMessage', { nullable: true, description: 'Why it failed, for people.' }),
    clawedBackCredits: t.expose('clawedBackCredits', { type: 'Credits', description: 'Credits taken back after a refund.' }),
    uncollectedCredits: t.expose('uncollectedCredits', {
      type: 'Credits',
      description: 'Refunded credits that had already been spent (or held) and could not be taken back; credits coming back to the grant later are taken back and leave this count.',
    }),
  }),
});

const TopUpPurchaseConnectionRef = defineConnection('TopUpPurchase', TopUpPurchaseRef, 'credit purchase');

const AutoTopUpConfigRef = builder.objectRef<AutoTopUpRecord>('AutoTopUpConfig').implement({
  description:
    'Buying packs automatically, off-session, once each time the shared balance of a credit type falls below a threshold: one pack, or as many as reach a target balance, within monthly caps; paused after failed payments in a row.',
  fields: (t) => ({
    creditType: t.exposeString('creditType', { description: 'The pool watched.' }),
    enabled: t.exposeBoolean('enabled', { description: 'Whether it is on.' }),
    thresholdCredits: t.expose('thresholdCredits', { type: 'Credits', description: 'Buy when the shared balance falls below this.' }),
    pack: t.field({ type: CreditPackRef, description: 'The pack bought.', resolve: (config, _args, context) => loadPack(context, config.packCode) }),
    maxPurchasesPerPeriod: t.exposeInt('maxPurchasesPerPeriod', { description: 'At most this many purchases a billing period.' }),
    purchasesThisPeriod: t.exposeInt('purchasesThisPeriod', { description: 'Purchases made (or under way) this period.' }),
    consecutiveFailures: t.exposeInt('consecutiveFailures', { description: 'Failed payments in a row (reset by a success).' }),
    retryNotBefore: t.expose('retryNotBefore', {
      type: 'DateTime',
      nullable: true,
      description: 'After a failure, no new attempt before this instant (backoff).',
    }),
    targetBalanceCredits: t.expose('targetBalanceCredits', {
      type: 'Credits',
      nullable: true,
      description: 'Buy as many packs as bring the shared balance to this (at most 100 a purchase); null: one pack each time.',
    }),
    maxPurchasesPerMonth: t.exposeInt('maxPurchasesPerMonth', {
      nullable: true,
      description: "At most this many purchases a calendar month (UTC, on the account's clock); null: no monthly count cap.",
    }),
    purchasesThisMonth: t.exposeInt('purchasesThisMonth', { description: 'Purchases made (or under way) this calendar month; failed ones do not count.' }),
    maxAmountPerMonth: t.field({
      type: MoneyRef,
      nullable: true,
      description: "At most this much spent a calendar month (UTC, on the account's clock), in the pack's currency; null: no money cap.",
      resolve: (config) => (config.maxAmountPerMonth === null ? null : { amount: config.maxAmountPerMonth, currency: config.currency }),
    }),
    amountThisMonth: t.field({
      type: MoneyRef,
      description: "Spent (or being spent) this calendar month in the pack's currency; failed purchases do not count.",
      resolve: (config) => ({ amount: config.amountThisMonth, currency: config.currency }),
    }),
    maxConsecutiveFailures: t.exposeInt('maxConsecutiveFailures', { description: 'Failed payments in a row after which it pauses itself.' }),
    pausedAt: t.expose('pausedAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When it paused itself after maxConsecutiveFailures failures in a row; it buys nothing until configured again. Null: not paused.',
    }),
    armed: t.exposeBoolean('armed', {
      description:
        'Whether the next fall below the threshold buys: false from a purchase until the shared balance is seen at or above the threshold again (once per crossing).',
    }),
  }),
});

const PurchaseCreditPackInput = builder.inputType('PurchaseCreditPackInput', {
  description: 'A credit pack purchase.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    packCode: t.string({ required: true, description: 'The pack.' }),
    quantity: t.int({ description: 'Packs, 1 to 100; default 1.' }),
    successUrl: t.string({ description: 'Where Checkout returns after payment (Checkout purchases).' }),
    cancelUrl: t.string({ description: 'Where Checkout returns when abandoned (Checkout purchases).' }),
    offSession: t.boolean({ description: "Buy off-session with the account's saved payment method instead of a Checkout page." }),
    savePaymentMethod: t.boolean({
      description:
        'Checkout purchases: also save the card for later off-session payments (setup_future_usage=off_session); once paid it becomes the default card. Default false.',
    }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key resumes the same purchase: one charge.' }),
  }),
});

const ConfigureAutoTopUpInput = builder.inputType('ConfigureAutoTopUpInput', {
  description: 'An auto top-up to set.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    creditType: t.string({ required: true, description: 'The pool to watch.' }),
    enabled: t.boolean({ required: true, description: 'On or off.' }),
    thresholdCredits: t.field({ type: 'Credits', required: true, description: 'Buy when the shared balance falls below this.' }),
    packCode: t.string({ required: true, description: 'The pack to buy (of the same credit type).' }),
    maxPurchasesPerPeriod: t.int({ required: true, description: 'At most this many purchases a billing period (0 to 100).' }),
    targetBalanceCredits: t.field({
      type: 'Credits',
      description: 'Top up to this shared balance (as many packs as reach it, at most 100), above thresholdCredits; omit to buy one pack.',
    }),
    maxPurchasesPerMonth: t.int({ description: "At most this many purchases a calendar month of the account's clock (0 to 1,000); omit for none." }),
    maxAmountPerMonth: t.int({
      description: "At most this much a calendar month of the account's clock, in minor units of the pack's currency (0 to 99,999,999); omit for none.",
    }),
    maxConsecutiveFailures: t.int({ description: 'Pause after this many failed payments in a row (1 to 10); default 3.' }),
  }),
});

builder.objectFields(AccountRef, (t) => ({
  topUps: t.field({
    type: TopUpPurchaseConnectionRef,
    description: 'Credit purchases, newest first.',
    args: {
      first: t.arg.int({ description: 'Page size, 1 to 500; default 50.' }),
      after: t.arg.string({ description: 'A cursor from a previous page.' }),
    },
    resolve: async (account, args, context) => {
      const limit = pageSize(args.first);
      const after = decodeCursor(args.after, ['instant', 'id']);
      const rows = await context.prisma.$queryRaw<Array<{ id: string }>>`
        SELECT id FROM top_up_purchases WHERE account_id = ${account.id}
        ${after ? Prisma.sql`AND (created_at, id) < (${new Date(String(after[0]))}, ${String(after[1])})` : Prisma.empty}
        ORDER BY created_at DESC, id DESC LIMIT ${limit + 1}`;
      const purchases = await context.prisma.topUpPurchase.findMany({ where: { id: { in: rows.map((row) => row.id) } } });
      const byId = new Map(purchases.map((purchase) => [purchase.id, toPurchaseRecord(purchase)]));
      const ordered = rows.map((row) => byId.get(row.id)).filter((purchase): purchase is TopUpPurchaseRecord => purchase !== undefined);
      return toConnection(ordered, limit, (purchase) => [purchase.createdAt.toISOString(), purchase.id]);
    },
  }),
  autoTopUps: t.field({
    type: [AutoTopUpConfigRef],
    description: 'Auto top-ups, by credit type.',
    resolve: (account, _args, context) => listAutoTopUps(context.prisma, account),
  }),
}));

builder.mutationFields((t) => ({
  purchaseCreditPack: t.field({
    authScopes: { writer: true, buyer: true },
    type: TopUpPurchaseRef,
    description:
      'Buys credit packs: returns a Checkout URL, or (offSession) pays now with the saved payment method. A session token issued with canBuy buys through Checkout only.',
    args: { input: t.arg({ type: PurchaseCreditPackInput, required: true, description: 'The purchase.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      if (actor.session) {
        // A browser's token sends the customer to Checkout, where they confirm; it never charges a saved card by itself.
        requireAccountAccess(actor, input.accountId, 'read');
        if (input.offSession) throw new BillingError(ErrorCode.FORBIDDEN, 'a session token buys through Checkout only, not off session');
      } else {
        requireAccountAccess(actor, input.accountId, 'write');
      }
      return context.purchases.purchaseCreditPack({ ...input, offSession: input.offSession ?? false });
    },
  }),
  configureAutoTopUp: t.field({
    authScopes: { writer: true },
    type: AutoTopUpConfigRef,
    description: 'Sets the auto top-up of a credit type.',
    args: { input: t.arg({ type: ConfigureAutoTopUpInput, required: true, description: 'The configuration.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      requireAccountAccess(actor, input.accountId, 'write');
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, configureAutoTopUp(tx, context.clock, input), (config) => ({
          action: 'configureAutoTopUp',
          accountId: input.accountId,
          subjectId: config.id,
          details: { ...input },
        })),
      );
    },
  }),
}));

builder.queryFields((t) => ({
  topUpPurchase: t.field({
    authScopes: { signedIn: true },
    type: TopUpPurchaseRef,
    nullable: true,
    description: "One credit purchase, or null when it does not exist or is not of the key's account (any key of the account, and the operator).",
    args: { id: t.arg.id({ required: true, description: 'The purchase (purchaseCreditPack answers it; Stripe objects carry it as purchase_id).' }) },
    resolve: async (_root, args, context) => {
      const actor = requireActor(context);
      const purchase = await findPurchase(context.prisma, String(args.id));
      // Another tenant's purchase is answered like a missing one: the key learns nothing.
      return purchase && canReadAccount(actor, purchase.accountId) ? purchase : null;
    },
  }),
}));

builder.subscriptionFields((t) => ({
  topUpUpdated: t.field({
    authScopes: { signedIn: true },
    type: TopUpPurchaseRef,
    description:
      'Credit purchases of the account each time one starts or changes status (Checkout completed, payment failed, refunded), read after the change committed, on whichever instance it happened. With purchaseId, only that purchase, sent first as it stands (so a page that subscribes after the payment still learns of it).',
    args: {
      accountId: t.arg.id({ required: true, description: 'The account.' }),
      purchaseId: t.arg.id({ description: 'Only this purchase of the account.' }),
    },
    subscribe: async (_root, args, context) => {
      const actor = requireActor(context);
      const accountId = String(args.accountId);
      if (!canReadAccount(actor, accountId) || !(await findAccountState(context.prisma, context.clock, accountId))) {
        throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${accountId} not found`);
      }
      const changes = context.pubSub.subscribe('topUpUpdated', accountId);
      if (args.purchaseId === null || args.purchaseId === undefined) return changes;
      const purchaseId = String(args.purchaseId);
      const purchase = await findPurchase(context.prisma, purchaseId);
      if (!purchase || purchase.accountId !== accountId) throw new BillingError(ErrorCode.PURCHASE_NOT_FOUND, `purchase ${purchaseId} not found`);
      return snapshotThenLive(
        pipe(changes, filter((change: { purchaseId: string }) => change.purchaseId === purchaseId)),
        async () => [{ purchaseId }],
      );
    },
    resolve: async (change: { purchaseId: string }, args, context) => {
      const purchase = await findPurchase(context.prisma, change.purchaseId);
      if (!purchase || purchase.accountId !== String(args.accountId)) throw new BillingError(ErrorCode.PURCHASE_NOT_FOUND, `purchase ${change.purchaseId} not found`);
      return purchase;
    },
  }),
}));
