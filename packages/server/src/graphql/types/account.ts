import type { GraphQLResolveInfo } from 'graphql';
import { audited } from '../../audit/auditLog.ts';
import { addSeat, createAccount, listSeats, removeSeat, updateSeat, type SeatRecord } from '../../accounts/accounts.ts';
import { mayChangePlanTo } from '../../accounts/changePlan.ts';
import { findAccountState, type LockedAccount } from '../../accounts/lockAccount.ts';
import { canReadAccount, requireAccountAccess, seatScopeOf, type Actor } from '../../auth/access.ts';
import { getPlanById, listPlans, type PlanRecord } from '../../catalog/plans.ts';
import { isLive, readSubscription } from '../../subscriptions/subscriptions.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import { loadBalance, loadBalances, readAccountWithBalances, type BalanceRecord } from '../../ledger/balances.ts';
import { grantCredits } from '../../ledger/grantCredits.ts';
import type { GrantRecord } from '../../ledger/grants.ts';
import { listGrants } from '../../ledger/queries.ts';
import { builder } from '../builder.ts';
import { announceKeysRevoked, requireActor, type GraphQLContext } from '../context.ts';
import { selectedSubfields, stringArgument } from '../lookahead.ts';
import { decodeCursor, DEFAULT_PAGE_SIZE, defineConnection, MAX_PAGE_SIZE, pageSize, toConnection } from '../pagination.ts';
import { PlanRef } from './catalog.ts';

export const GrantSourceEnum = builder.enumType('GrantSource', {
  description: 'Where a grant of credits came from.',
  values: {
    PLAN: { description: "The plan's shared allocation for a period." },
    SEAT: { description: "A seat's own per-seat allocation for a period." },
    ROLLOVER: { description: 'Unused credits carried into a new period by the rollover rule.' },
    PURCHASE: { description: 'A credit pack bought by the customer.' },
    AUTO_TOP_UP: { description: 'A credit pack bought automatically below a threshold.' },
    BONUS: { description: 'Credits given by the operator.' },
    TRIAL: { description: 'Trial credits.' },
    ADJUSTMENT: { description: 'A correction by the operator.' },
  } as const,
});

export const GrantFundingEnum = builder.enumType('GrantFunding', {
  description: 'Whether credits were paid for (revenue deferred until they are spent) or given.',
  values: {
    PAID: { description: 'Bought with money: a purchase, an auto top-up, a paid plan, or what the operator recorded as paid.' },
    PROMOTIONAL: { description: 'Given: bonus, trial, a free plan, a correction; no revenue.' },
  } as const,
});

export const SeatRef = builder.objectRef<SeatRecord>('Seat').implement({
  description: 'A member of an account; may own per-seat grants.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    name: t.exposeString('name', { description: 'Display name.' }),
    canUseSharedPool: t.exposeBoolean('canUseSharedPool', {
      description: "False: the seat is barred from the account's shared pool and may spend only its own grants.",
    }),
  }),
});

const BillingPeriodRef = builder.objectRef<{ start: Date; end: Date }>('BillingPeriod').implement({
  description: 'A billing period: credits of the period are spendable from start until (not including) end.',
  fields: (t) => ({
    start: t.expose('start', { type: 'DateTime', description: 'When the period begins (inclusive).' }),
    end: t.expose('end', { type: 'DateTime', description: 'When the period ends and the next begins.' }),
  }),
});

export const PlanSubscriptionRef = builder.objectRef<LockedAccount>('PlanSubscription').implement({
  description: "An account's subscription to a plan.",
  fields: (t) => ({
    plan: t.field({ type: PlanRef, description: 'The plan in force.', resolve: (account, _args, context) => getPlanById(context.prisma, account.planId) }),
    currentPeriod: t.field({
      type: BillingPeriodRef,
      description: 'The billing period in progress.',
      resolve: (account) => ({ start: account.currentPeriodStart, end: account.currentPeriodEnd }),
    }),
    pendingPlan: t.field({
      type: PlanRef,
      nullable: true,
      description: 'A downgrade waiting for the period end.',
      resolve: (account, _args, context) => (account.pendingPlanId ? getPlanById(context.prisma, account.pendingPlanId) : null),
    }),
    availablePlans: t.field({
      type: [PlanRef],
      description:
        'The plans the calling key may move this account to with changePlan, by code: every other plan for an ADMIN key; for an ACCOUNT key the selfServe ones, and with a Stripe subscription the plans sold through Stripe at the same interval (paid through it); none for a SEAT key.',
      resolve: async (account, _args, context) => {
        const actor = requireActor(context);
        const plans = await listPlans(context.prisma);
        const current = plans.find((plan) => plan.id === account.planId);
        const subscribed = isLive(await readSubscription(context.prisma, account.id));
        const paidThroughStripe = (plan: PlanRecord) =>
          actor.role !== 'SEAT' && subscribed && plan.stripePriceId !== null && plan.interval === current?.interval;
        return plans.filter((plan) => plan.id !== account.planId && (mayChangePlanTo(actor.role, plan) || paidThroughStripe(plan)));
      },
    }),
  }),
});

export const BalanceRef = builder.objectRef<BalanceRecord>('Balance').implement({
  description: 'The state of one credit pool of an account, derived from its ledger.',
  fields: (t) => ({
    creditType: t.exposeString('creditType', { description: 'The pool.' }),
    available: t.expose('available', { type: 'Credits', description: 'Spendable now: unexpired grants, holds already taken out.' }),
    reserved: t.expose('reserved', { type: 'Credits', description: 'Held by open reservations.' }),
    periodAllocation: t.expose('periodAllocation', { type: 'Credits', description: 'Included credits granted for the current period.' }),
    periodUsed: t.expose('periodUsed', { type: 'Credits', description: 'Credits charged this period, net of refunds.' }),
    percentUsed: t.exposeFloat('percentUsed', { description: 'periodUsed as a percentage of periodAllocation (two decimals).' }),
    expiringAtPeriodEnd: t.expose('expiringAtPeriodEnd', { type: 'Credits', description: 'Available credits lost at the period end unless spent.' }),
    overageUsed: t.expose('overageUsed', { type: 'Credits', description: 'Credits charged beyond the balance this period (PAY_AS_YOU_GO).' }),
    nextExpiry: t.expose('nextExpiry', { type: 'DateTime', nullable: true, description: 'When the next available credits expire.' }),
  }),
});

export const GrantRef = builder.objectRef<GrantRecord>('Grant').implement({
  description: 'A lot of credits: spent in the documented consumption order, expiring at expiresAt.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    creditType: t.exposeString('creditType', { description: 'The pool.' }),
    source: t.expose('source', { type: GrantSourceEnum, description: 'Where the credits came from.' }),
    amount: t.expose('amount', { type: 'Credits', description: 'Credits granted.' }),
    remaining: t.expose('remaining', { type: 'Credits', description: 'Credits not yet spent, held or expired.' }),
    priority: t.exposeInt('priority', { description: 'Among grants with the same expiry, lower is spent first.' }),
    effectiveAt: t.expose('effectiveAt', { type: 'DateTime', description: 'When the credits become spendable.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', nullable: true, description: 'When the credits stop being spendable; null: never.' }),
    unitCost: t.float({
      description: 'Cost basis: minor units of costCurrency one credit cost the customer (purchase price ÷ credits, the plan price’s share, zero for bonus and trial).',
      resolve: (grant) => Number(grant.unitCost),
    }),
    costCurrency: t.exposeString('costCurrency', { nullable: true, description: 'The currency of unitCost (ISO 4217); null when the credits cost nothing.' }),
    funding: t.expose('funding', { type: GrantFundingEnum, description: 'PAID or PROMOTIONAL: only PAID credits count in the finance reports.' }),
    featureKeys: t.exposeStringList('featureKeys', {
      description: 'The features this grant pays for (a promotion for one product); empty: every feature of its credit type. Usage of other features skips it.',
    }),
    reason: t.exposeString('reason', {
      nullable: true,
      description: 'Why the operator granted it (grantCredits, adjustCredits), as every key that reads the grant sees it; null when none was given.',
    }),
    metadata: t.field({
      type: 'JSON',
      nullable: true,
      description: 'The operator’s JSON kept with the grant (at most 16 KiB): answered to ADMIN keys only, null for the account’s own keys and sessions.',
      // The operator's own data (ticket ids, internal notes), which a seat's browser need not see.
      resolve: (grant, _args, context) => (context.actor?.role === 'ADMIN' ? grant.metadata : null),
    }),
    voidedAt: t.expose('voidedAt', {
      type: 'DateTime',
      nullable: true,
      description: 'When voidGrant removed what was left of it (credits coming back to it later leave again); null: not voided.',
    }),
    seat: t.field({
      type: SeatRef,
      nullable: true,
      description: "The seat owning it (per-seat grants), or null for the account's shared pool.",
      resolve: (grant, _args, context) => (grant.seatId ? context.loaders.seat.load(grant.seatId) : null),
    }),
  }),
});

const GrantConnectionRef = defineConnection('Grant', GrantRef, 'grant');

/** An account as a read resolved it, with the balances its selection asked for read alongside. */
export type AccountView = LockedAccount & { prefetched?: { balances: ReadonlyMap<string, BalanceRecord>; all: BalanceRecord[] | null } };

export const AccountRef = builder.objectRef<AccountView>('Account');

/** The account a request may see, or null when it does not exist or belongs to another tenant. */
export async function findVisibleAccount(context: GraphQLContext, actor: Actor, accountId: string): Promise<LockedAccount | null> {
  if (!canReadAccount(actor, accountId)) return null;
  return findAccountState(context.prisma, context.clock, accountId);
}

/**
 * The same for a query field returning an Account: one statement reads the account and the balances
 * its selection asks for (`balances`, `balance(creditType)`), which those fields then answer without
 * a round trip of their own. Several `balance` fields of different types read them all; a type the
 * account lacks is then left to the field itself.
 */
export async function readVisibleAccount(context: GraphQLContext, actor: Actor, accountId: string, info: GraphQLResolveInfo): Promise<AccountView | null> {
  if (!canReadAccount(actor, accountId)) return null;
  const creditTypes = new Set<string>();
  let allTypes = false;
  for (const field of selectedSubfields(info)) {
    if (field.name.value === 'balances') allTypes = true;
    const creditType = field.name.value === 'balance' ? stringArgument(info, field, 'creditType') : undefined;
    if (creditType !== undefined) creditTypes.add(creditType);
  }
  const [creditType = null] = creditTypes;
  const read =
    allTypes || creditTypes.size > 1
      ? await readAccountWithBalances(context.database, context.clock, accountId, creditType, true)
      : await context.accountReads.submit({ accountId, creditType });
  return read && { ...read.account, prefetched: { balances: read.balances, all: read.all } };
}

function balanceScope(account: LockedAccount) {
  return { ...account, accountId: account.id };
}

AccountRef.implement({
  description: 'A customer workspace: the tenant boundary.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    name: t.exposeString('name', { description: 'Display name.' }),
    subscription: t.field({ type: PlanSubscriptionRef, nullable: true, description: 'The plan subscription.', resolve: (account) => account }),
    seats: t.field({
      type: [SeatRef],
      description: 'Current seats, oldest first, a page at a time. A SEAT key sees its own only.',
      args: {
        first: t.arg.int({ description: `How many (default ${DEFAULT_PAGE_SIZE}, at most ${MAX_PAGE_SIZE}).` }),
        after: t.arg.id({ description: 'The id of the last seat of the previous page.' }),
      },
      resolve: async (account, args, context) => {
        const page = { size: pageSize(args.first), after: args.after ?? null };
        return listSeats(context.prisma, account.id, page, seatScopeOf(context.actor));
      },
    }),
    balances: t.field({
      type: [BalanceRef],
      description: 'One balance per credit type the account has.',
      resolve: (account, _args, context) => account.prefetched?.all ?? loadBalances(context.prisma, balanceScope(account)),
    }),
    balance: t.field({
      type: BalanceRef,
      nullable: true,
      description: 'The balance of one credit type.',
      args: { creditType: t.arg.string({ required: true, description: 'The pool.' }) },
      resolve: (account, args, context) =>
        account.prefetched?.balances.get(args.creditType) ?? loadBalance(context.prisma, balanceScope(account), args.creditType),
    }),
    grants: t.field({
      type: GrantConnectionRef,
      description: 'Grants oldest first; unexpired only unless includeExpired. A SEAT key sees the shared pool and its own.',
      args: {
        creditType: t.arg.string({ description: 'Only this pool.' }),
        includeExpired: t.arg.boolean({ description: 'Include grants past their expiry. Default false.' }),
        first: t.arg.int({ description: 'Page size, 1 to 500; default 50.' }),
        after: t.arg.string({ description: 'A cursor from a previous page.' }),
      },
      resolve: async (account, args, context) => {
        const limit = pageSize(args.first);
        const rows = await listGrants(
          context.prisma,
          account.id,
          {
            creditType: args.creditType,
            includeExpired: args.includeExpired ?? false,
            visibleToSeatId: seatScopeOf(context.actor),
            now: account.now,
          },
          { limit: limit + 1, after: decodeCursor(args.after, ['instant', 'id']) },
        );
        return toConnection(rows, limit, (grant) => [grant.createdAt.toISOString(), grant.id]);
      },
    }),
  }),
});

const CreateAccountInput = builder.inputType('CreateAccountInput', {
  description: 'A new customer account.',
  fields: (t) => ({
    name: t.string({ required: true, description: 'Display name.' }),
    planCode: t.string({ required: true, description: 'The plan to subscribe to, from now.' }),
    testClockId: t.id({ description: 'Attach the account to a test clock: its time is the clock’s.' }),
    externalId: t.string({ description: "The operator's own id of this customer (1-255 printable ASCII characters, unique): accepted wherever an account id is." }),
    metadata: t.field({ type: 'JSON', description: 'Key-value pairs for the operator (a JSON object, at most 16 KiB).' }),
  }),
});

const AddSeatInput = builder.inputType('AddSeatInput', {
  description: 'A new seat.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    name: t.string({ required: true, description: 'Display name.' }),
    canUseSharedPool: t.boolean({ description: 'False bars the seat from the shared pool. Default true.' }),
  }),
});

const UpdateSeatInput = builder.inputType('UpdateSeatInput', {
  description: 'Changes to a seat.',
  fields: (t) => ({
    seatId: t.id({ required: true, description: 'The seat.' }),
    name: t.string({ description: 'A new display name.' }),
    canUseSharedPool: t.boolean({ description: "False bars the seat from the account's shared pool; true lets it back." }),
  }),
});

/** The seat's account, if the caller may change it; another tenant's seat answers as missing. */
async function getWritableSeatAccount(context: GraphQLContext, seatId: string): Promise<string> {
  const actor = requireActor(context);
  const seat = await context.loaders.seat.load(seatId);
  if (!seat || (actor.role !== 'ADMIN' && actor.accountId !== seat.accountId)) {
    throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${seatId} not found`);
  }
  requireAccountAccess(actor, seat.accountId, 'write');
  return seat.accountId;
}

export const GrantCostBasisInput = builder.inputType('GrantCostBasisInput', {
  description: 'The cost basis of credits the operator grants (for example credits paid for outside Stripe).',
  fields: (t) => ({
    unitCost: t.float({ required: true, description: 'Minor units one credit cost, 0 or more (above 0 for PAID).' }),
    currency: t.string({ description: 'ISO 4217 code; required with a unit cost above 0.' }),
    funding: t.field({ type: GrantFundingEnum, required: true, description: 'PAID credits count in the finance reports; PROMOTIONAL ones do not.' }),
  }),
});

const GrantCreditsInput = builder.inputType('GrantCreditsInput', {
  description: 'Credits granted by the operator.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    creditType: t.string({ required: true, description: 'The pool.' }),
    amount: t.field({ type: 'Credits', required: true, description: 'Credits, at least 1.' }),
    source: t.field({ type: GrantSourceEnum, required: true, description: 'Where the credits come from.' }),
    expiresAt: t.field({ type: 'DateTime', description: 'When they expire; omit for never.' }),
    effectiveAt: t.field({ type: 'DateTime', description: 'When they become spendable; default now.' }),
    seatId: t.id({ description: "Give them to one seat instead of the shared pool." }),
    priority: t.int({ description: 'Order among grants with the same expiry (lower first); default by source.' }),
    costBasis: t.field({ type: GrantCostBasisInput, description: 'What one credit cost; default: zero and PROMOTIONAL (the plan share for PLAN and SEAT grants).' }),
    featureKeys: t.stringList({
      description: 'Only these features (at most 50, each of this credit type) may spend the credits; omit for every feature.',
    }),
    reason: t.string({ description: 'Why (kept on the grant, 1 to 500 characters).' }),
    metadata: t.field({ type: 'JSON', description: 'Up to 16 KiB of JSON kept on the grant.' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key grants once.' }),
  }),
});

builder.queryFields((t) => ({
  account: t.field({
    authScopes: { signedIn: true },
    type: AccountRef,
    nullable: true,
    description: "One account, or null when it does not exist or is not the key's.",
    args: { id: t.arg.id({ required: true, description: 'The account id.' }) },
    resolve: (_root, args, context, info) => readVisibleAccount(context, requireActor(context), args.id, info),
  }),
}));

async function getVisibleAccount(context: GraphQLContext, accountId: string): Promise<LockedAccount> {
  const account = await findVisibleAccount(context, requireActor(context), accountId);
  if (!account) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${accountId} not found`);
  return account;
}

builder.mutationFields((t) => ({
  createAccount: t.field({
    authScopes: { admin: true },
    type: AccountRef,
    description: 'Creates an account subscribed to a plan, granting the first period (operator only).',
    args: { input: t.arg({ type: CreateAccountInput, required: true, description: 'The account.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      const { id } = await inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, createAccount(tx, context.clock, input), (account) => ({
          action: 'createAccount',
          accountId: account.id,
          subjectId: account.id,
          details: { name: input.name, planCode: input.planCode, testClockId: input.testClockId, externalId: input.externalId },
        })),
      );
      return getVisibleAccount(context, id);
    },
  }),
  addSeat: t.field({
    authScopes: { writer: true },
    type: SeatRef,
    description:
      'Adds a seat; it receives its full per-seat allocation at once, except in place of a seat removed this period: per-seat grants of a period never exceed its peak number of seats times the allocation.',
    args: { input: t.arg({ type: AddSeatInput, required: true, description: 'The seat.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      requireAccountAccess(actor, input.accountId, 'write');
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, addSeat(tx, context.clock, input), (seat) => ({
          action: 'addSeat',
          accountId: seat.accountId,
          subjectId: seat.id,
          details: { name: seat.name, canUseSharedPool: seat.canUseSharedPool },
        })),
      );
    },
  }),
  updateSeat: t.field({
    authScopes: { writer: true },
    type: SeatRef,
    description: 'Renames a seat or bars it from the shared pool.',
    args: { input: t.arg({ type: UpdateSeatInput, required: true, description: 'The change.' }) },
    resolve: async (_root, { input }, context) => {
      const accountId = await getWritableSeatAccount(context, input.seatId);
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, requireActor(context), updateSeat(tx, context.clock, accountId, input), (seat) => ({
          action: 'updateSeat',
          accountId,
          subjectId: seat.id,
          details: { name: input.name, canUseSharedPool: input.canUseSharedPool },
        })),
      );
    },
  }),
  removeSeat: t.field({
    authScopes: { writer: true },
    type: SeatRef,
    description: "Removes a seat: its own grants expire with it and its keys stop working.",
    args: { seatId: t.arg.id({ required: true, description: 'The seat.' }) },
    resolve: async (_root, args, context) => {
      const accountId = await getWritableSeatAccount(context, args.seatId);
      const removed = await inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, requireActor(context), removeSeat(tx, context.clock, accountId, args.seatId), (seat) => ({
          action: 'removeSeat',
          accountId,
          subjectId: seat.id,
        })),
      );
      announceKeysRevoked(context);
      return removed;
    },
  }),
  grantCredits: t.field({
    authScopes: { admin: true },
    type: GrantRef,
    description: 'Grants credits to an account or one of its seats (operator only); idempotent on the key.',
    args: { input: t.arg({ type: GrantCreditsInput, required: true, description: 'The grant.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, grantCredits(tx, context.clock, input), (grant) => ({
          action: 'grantCredits',
          accountId: input.accountId,
          subjectId: grant.id,
          details: { ...input },
        })),
      );
    },
  }),
}));
