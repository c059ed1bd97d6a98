import { audited } from '../../audit/auditLog.ts';
import { findAccountState } from '../../accounts/lockAccount.ts';
import { requireAccountAccess, seatScopeOf } from '../../auth/access.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import { listSpendLimits, MAX_SPEND_LIMITS_PER_ACCOUNT, removeSpendLimit, setSpendLimit, type SpendLimitRecord } from '../../ledger/spendLimits.ts';
import { builder } from '../builder.ts';
import { requireActor } from '../context.ts';
import { AccountRef } from './account.ts';

const SpendLimitScopeEnum = builder.enumType('SpendLimitScope', {
  description: 'What a spend limit applies to.',
  values: {
    ACCOUNT: { description: 'All usage of the account.' },
    SEAT: { description: 'Usage of one seat (scopeValue: the seat id).' },
    FEATURE: { description: 'Usage of one feature (scopeValue: the feature key).' },
    TAG: { description: 'Usage carrying one tag (scopeValue: the tag, e.g. workbook:42).' },
  } as const,
});

const SpendLimitPeriodEnum = builder.enumType('SpendLimitPeriod', {
  description: 'Over which time a spend limit counts.',
  values: {
    BILLING_PERIOD: { description: 'The current billing period; it starts again at renewal.' },
    LIFETIME: { description: 'All time.' },
  } as const,
});

export const SpendLimitRef = builder.objectRef<SpendLimitRecord>('SpendLimit').implement({
  description: 'A budget: usage that would take `used` (plus open holds) beyond `limit` is refused.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    scope: t.expose('scope', { type: SpendLimitScopeEnum, description: 'What it applies to.' }),
    scopeValue: t.exposeString('scopeValue', { nullable: true, description: 'The seat id, feature key or tag the limit applies to; null for ACCOUNT.' }),
    creditType: t.exposeString('creditType', { nullable: true, description: 'Only this pool; null for all.' }),
    limit: t.expose('limit', { type: 'Credits', description: 'The most credits that may be charged.' }),
    period: t.expose('period', { type: SpendLimitPeriodEnum, description: 'Over which time it counts.' }),
    used: t.expose('used', { type: 'Credits', description: 'Credits charged within scope and period, net of refunds.' }),
    held: t.expose('held', { type: 'Credits', description: 'Credits held by open reservations within scope.' }),
  }),
});

const SetSpendLimitInput = builder.inputType('SetSpendLimitInput', {
  description: 'A budget to set (the same scope, value, credit type and period again changes its amount).',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    scope: t.field({ type: SpendLimitScopeEnum, required: true, description: 'What it applies to.' }),
    scopeValue: t.string({ description: 'Seat id, feature key or tag; omit for ACCOUNT.' }),
    creditType: t.string({ description: 'Only this pool; omit for all.' }),
    limit: t.field({ type: 'Credits', required: true, description: 'The most credits that may be charged.' }),
    period: t.field({ type: SpendLimitPeriodEnum, required: true, description: 'Over which time it counts.' }),
  }),
});

builder.objectFields(AccountRef, (t) => ({
  spendLimits: t.field({
    type: [SpendLimitRef],
    // At most this many exist (setSpendLimit refuses more), so the list needs no pages.
    complexity: { field: 1, multiplier: MAX_SPEND_LIMITS_PER_ACCOUNT },
    description: `The account’s budgets with what they have used (at most ${MAX_SPEND_LIMITS_PER_ACCOUNT}). A SEAT key sees the account-wide ones and its own seat's, not other seats'.`,
    resolve: (account, _args, context) => listSpendLimits(context.prisma, account, seatScopeOf(context.actor)),
  }),
}));

builder.mutationFields((t) => ({
  setSpendLimit: t.field({
    authScopes: { writer: true },
    type: SpendLimitRef,
    description: 'Sets a budget on the account, a seat, a feature or a tag.',
    args: { input: t.arg({ type: SetSpendLimitInput, required: true, description: 'The limit.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      requireAccountAccess(actor, input.accountId, 'write');
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, setSpendLimit(tx, context.clock, input), (limit) => ({
          action: 'setSpendLimit',
          accountId: input.accountId,
          subjectId: limit.id,
          details: { ...input },
        })),
      );
    },
  }),
  removeSpendLimit: t.field({
    authScopes: { writer: true },
    type: 'Boolean',
    description: 'Removes a budget; usage is no longer checked against it.',
    args: { id: t.arg.id({ required: true, description: 'The limit id.' }) },
    resolve: async (_root, args, context) => {
      const actor = requireActor(context);
      const limit = await context.prisma.spendLimit.findUnique({ where: { id: args.id }, select: { accountId: true } });
      const account = limit ? await findAccountState(context.prisma, context.clock, limit.accountId) : null;
      if (!limit || !account || (actor.role !== 'ADMIN' && actor.accountId !== limit.accountId)) {
        throw new BillingError(ErrorCode.SPEND_LIMIT_NOT_FOUND, `spend limit ${args.id} not found`);
      }
      requireAccountAccess(actor, limit.accountId, 'write');
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, removeSpendLimit(tx, context.clock, limit.accountId, args.id), () => ({
          action: 'removeSpendLimit',
          accountId: limit.accountId,
          subjectId: args.id,
        })),
      );
    },
  }),
}));
