import { listAccounts, updateAccount } from '../../accounts/accountDirectory.ts';
import { findAccountState } from '../../accounts/lockAccount.ts';
import { audited } from '../../audit/auditLog.ts';
import { balanceAt } from '../../ledger/ledgerHistory.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import { builder } from '../builder.ts';
import { COSTLY_OPERATION_THRESHOLD } from '../queryCost.ts';
import { requireActor } from '../context.ts';
import { decodeCursor, DEFAULT_PAGE_SIZE, defineConnection, MAX_PAGE_SIZE, pageSize, toConnection } from '../pagination.ts';
import { AccountRef } from './account.ts';
import { SubscriptionStatusEnum } from './subscriptions.ts';

builder.objectFields(AccountRef, (t) => ({
  externalId: t.string({
    nullable: true,
    description: "The operator's own id of this customer, accepted wherever an account id is; null until set.",
    resolve: async (account, _args, context) => (await context.loaders.accountProfile.load(account.id))?.externalId ?? null,
  }),
  balanceAt: t.field({
    type: 'Credits',
    description: 'The available balance of one pool as it stood at a past instant (grants effective and unexpired then, ledger entries up to then, holds out). It reads the pool\'s ledger entries, so it counts as 5,000 in the query cost: a request asks it of a few accounts, not of a page.',
    args: {
      creditType: t.arg.string({ required: true, description: 'The pool.' }),
      at: t.arg({ type: 'DateTime', required: true, description: "The instant, not after the account's now (a test clock's for accounts on one)." }),
    },
    // Its statement reads every entry of the pool's grants up to the instant (millions, for a grant
    // that never expires under heavy usage), where `balance` reads the grants alone: each call costs
    // a costly operation's share, so that it waits for the process's cost budget (75,000 by default:
    // 15 of them at once) and a page of accounts cannot ask it of each.
    complexity: COSTLY_OPERATION_THRESHOLD,
    resolve: (account, args, context) => balanceAt(context.prisma, account, args.creditType, args.at),
  }),
  metadata: t.field({
    type: 'JSON',
    nullable: true,
    description: "The operator's key-value pairs (a JSON object), or null: answered to ADMIN keys only, null for the account's own keys and sessions.",
    // The operator's own data (CRM ids, internal notes), as Grant.metadata: not for a seat's browser or a partner.
    resolve: async (account, _args, context) => (context.actor?.role === 'ADMIN' ? ((await context.loaders.accountProfile.load(account.id))?.metadata ?? null) : null),
  }),
}));

const AccountConnectionRef = defineConnection('Account', AccountRef, 'account');

const AccountFilterInput = builder.inputType('AccountFilter', {
  description: 'Which accounts to list; every filter given must match.',
  fields: (t) => ({
    nameContains: t.string({ description: 'A part of the name, any case (1-200 characters).' }),
    externalId: t.string({ description: 'The external id, exactly.' }),
    planCode: t.string({ description: 'The code of the plan in force.' }),
    subscriptionStatus: t.field({ type: SubscriptionStatusEnum, description: 'The state of the Stripe subscription selling the plan (accounts without one never match).' }),
  }),
});

const UpdateAccountInput = builder.inputType('UpdateAccountInput', {
  description: 'Changes to an account; fields left out stay as they are.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account (its id or external id).' }),
    name: t.string({ description: 'A new display name.' }),
    externalId: t.string({
      description: "The operator's own id of this customer: set once (EXTERNAL_ID_TAKEN when the account already has another, or another account holds it).",
    }),
    metadata: t.field({ type: 'JSON', description: 'Replaces the metadata as a whole (a JSON object, at most 16 KiB); null clears it.' }),
  }),
});

builder.queryFields((t) => ({
  accounts: t.field({
    authScopes: { admin: true },
    type: AccountConnectionRef,
    description: 'Accounts oldest first, filtered by name, external id or plan (operator only).',
    args: {
      filter: t.arg({ type: AccountFilterInput, description: 'Which accounts; all when absent.' }),
      first: t.arg.int({ description: `Page size (default ${DEFAULT_PAGE_SIZE}, at most ${MAX_PAGE_SIZE}).` }),
      after: t.arg.string({ description: 'The endCursor of the previous page.' }),
    },
    resolve: async (_root, args, context) => {
      const size = pageSize(args.first);
      const rows = await listAccounts(context.prisma, context.clock, args.filter ?? {}, {
        limit: size + 1,
        after: decodeCursor(args.after, ['instant', 'id']),
      });
      return toConnection(rows, size, (row) => [row.createdAt.toISOString(), row.id]);
    },
  }),
}));

builder.mutationFields((t) => ({
  updateAccount: t.field({
    authScopes: { admin: true },
    type: AccountRef,
    description: 'Renames an account, sets its external id (once) or replaces its metadata (operator only).',
    args: { input: t.arg({ type: UpdateAccountInput, required: true, description: 'The change.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      await inTransaction(context.prisma, (tx) =>
        audited(
          tx,
          context.clock,
          actor,
          updateAccount(tx, { accountId: input.accountId, name: input.name, externalId: input.externalId, metadata: input.metadata ?? undefined, clearMetadata: input.metadata === null }),
          (result) => ({ action: 'updateAccount', accountId: result.id, subjectId: result.id, details: { changed: result.changed, name: input.name, externalId: input.externalId } }),
        ),
      );
      const account = await findAccountState(context.prisma, context.clock, input.accountId);
      if (!account) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${input.accountId} not found`);
      return account;
    },
  }),
}));
