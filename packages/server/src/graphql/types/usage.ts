import { requireAccountAccess, seatScopeOf } from '../../auth/access.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode, invalidInput } from '../../domain/errors.ts';
import { listLedgerEntries, listUsageEvents, type LedgerEntryRecord } from '../../ledger/queries.ts';
import { recordUsage } from '../../ledger/recordUsage.ts';
import { refundUsage } from '../../ledger/refundUsage.ts';
import type { BalanceRecord } from '../../ledger/balances.ts';
import type { UsageDrawRecord, UsageEventRecord } from '../../ledger/usageEvents.ts';
import { builder } from '../builder.ts';
import { requireActor } from '../context.ts';
import { decodeCursor, defineConnection, pageSize, toConnection } from '../pagination.ts';
import { AccountRef, BalanceRef, GrantRef, SeatRef } from './account.ts';
import { ErrorInterface, FeatureNotAvailableRef, InsufficientCreditsRef, SpendLimitExceededRef, toRefusalShape } from './errors.ts';
import { MAX_BATCH_EVENTS, recordUsageBatch } from '../../ledger/recordUsageBatch.ts';

const GrantDrawRef = builder.objectRef<UsageDrawRecord>('GrantDraw').implement({
  description: 'Which grant paid for (part of) a usage event.',
  fields: (t) => ({
    grant: t.field({
      type: GrantRef,
      description: 'The grant drawn from.',
      resolve: async (draw, _args, context) => {
        const grant = await context.loaders.grant.load(draw.grantId);
        if (!grant) throw new Error(`grant ${draw.grantId} of a draw is missing`);
        return grant;
      },
    }),
    credits: t.expose('credits', { type: 'Credits', description: 'Credits taken from it.' }),
  }),
});

export const UsageEventRef = builder.objectRef<UsageEventRecord>('UsageEvent').implement({
  description: 'One metered action, what it cost and which grants paid.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    featureKey: t.exposeString('featureKey', { description: 'The feature used.' }),
    creditType: t.exposeString('creditType', { description: 'The pool charged.' }),
    quantity: t.exposeInt('quantity', { description: 'Units used.' }),
    credits: t.expose('credits', { type: 'Credits', description: 'Credits charged.' }),
    refundedCredits: t.expose('refundedCredits', { type: 'Credits', description: 'Credits refunded since.' }),
    overageCredits: t.expose('overageCredits', { type: 'Credits', description: 'Part of credits charged as overage (drawn from no grant).' }),
    seat: t.field({
      type: SeatRef,
      nullable: true,
      description: 'The seat that used it.',
      resolve: (event, _args, context) => (event.seatId ? context.loaders.seat.load(event.seatId) : null),
    }),
    tags: t.exposeStringList('tags', { description: 'Tags given, sorted (for example workbook:42).' }),
    idempotencyKey: t.exposeString('idempotencyKey', { description: 'The key it was recorded under.' }),
    occurredAt: t.expose('occurredAt', { type: 'DateTime', description: 'When it happened.' }),
    recordedAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was charged.' }),
    draws: t.field({
      type: [GrantDrawRef],
      description: 'The grants that paid, in consumption order.',
      resolve: (event, _args, context) => context.loaders.draws.load(event.id),
    }),
    metadata: t.expose('metadata', { type: 'JSON', nullable: true, description: 'The caller’s metadata.' }),
  }),
});

const UsageEventConnectionRef = defineConnection('UsageEvent', UsageEventRef, 'usage event');

export const LedgerEntryTypeEnum = builder.enumType('LedgerEntryType', {
  description: 'The kind of movement of credits against a grant.',
  values: {
    GRANT: { description: 'Credits granted.' },
    DEBIT: { description: 'Credits spent by usage.' },
    EXPIRE: { description: 'Credits lost at expiry.' },
    REFUND: { description: 'Credits given back by a refund.' },
    RESERVE: { description: 'Credits held by a reservation.' },
    RELEASE: { description: 'Held credits given back.' },
    CLAWBACK: { description: 'Credits taken back (a refunded purchase).' },
    ADJUST: { description: 'An operator correction.' },
  } as const,
});

export const LedgerEntryRef = builder.objectRef<LedgerEntryRecord>('LedgerEntry').implement({
  description: 'One immutable movement of credits against a grant; balances always agree with the sum.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier, increasing with time.' }),
    type: t.expose('type', { type: LedgerEntryTypeEnum, description: 'The kind of movement.' }),
    credits: t.expose('credits', { type: 'Credits', description: "Signed: positive adds to the grant's remaining credits, negative takes from it." }),
    grant: t.field({
      type: GrantRef,
      description: 'The grant moved.',
      resolve: async (entry, _args, context) => {
        const grant = await context.loaders.grant.load(entry.grantId);
        if (!grant) throw new Error(`grant ${entry.grantId} of a ledger entry is missing`);
        return grant;
      },
    }),
    usageEvent: t.field({
      type: UsageEventRef,
      nullable: true,
      description: 'The usage event that caused it, if any.',
      resolve: (entry, _args, context) => (entry.usageEventId ? context.loaders.usageEvent.load(entry.usageEventId) : null),
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was written (the account clock).' }),
  }),
});

const LedgerEntryConnectionRef = defineConnection('LedgerEntry', LedgerEntryRef, 'ledger entry');

const UsageFilterInput = builder.inputType('UsageFilter', {
  description: 'Narrows the usage log.',
  fields: (t) => ({
    featureKey: t.string({ description: 'Only this feature.' }),
    seatId: t.id({ description: 'Only this seat.' }),
    tag: t.string({ description: 'Only events carrying this tag.' }),
    from: t.field({ type: 'DateTime', description: 'Occurred at or after.' }),
    to: t.field({ type: 'DateTime', description: 'Occurred before.' }),
  }),
});

builder.objectFields(AccountRef, (t) => ({
  usageEvents: t.field({
    type: UsageEventConnectionRef,
    description: 'The usage log, newest first. A SEAT key sees its own seat’s events only.',
    args: {
      filter: t.arg({ type: UsageFilterInput, description: 'Filters.' }),
      first: t.arg.int({ description: 'Page size, 1 to 500; default 50.' }),
      after: t.arg.string({ description: 'A cursor from a previous page.' }),
    },
    resolve: async (account, args, context) => {
      const limit = pageSize(args.first);
      const filter = { ...args.filter, seatId: seatScopeOf(context.actor) ?? args.filter?.seatId };
      const rows = await listUsageEvents(context.prisma, account.id, filter, { limit: limit + 1, after: decodeCursor(args.after, ['instant', 'id']) });
      return toConnection(rows, limit, (event) => [event.occurredAt.toISOString(), event.id]);
    },
  }),
  ledger: t.field({
    type: LedgerEntryConnectionRef,
    description: 'The ledger, newest first (ADMIN and ACCOUNT keys).',
    authScopes: { writer: true },
    args: {
      first: t.arg.int({ description: 'Page size, 1 to 500; default 50.' }),
      after: t.arg.string({ description: 'A cursor from a previous page.' }),
    },
    resolve: async (account, args, context) => {
      const limit = pageSize(args.first);
      const rows = await listLedgerEntries(context.prisma, account.id, { limit: limit + 1, after: decodeCursor(args.after, ['integer']) });
      return toConnection(rows, limit, (entry) => [entry.id]);
    },
  }),
}));

interface UsageRecordedShape {
  kind: 'recorded';
  usageEvent: UsageEventRecord;
  balance: BalanceRecord;
}

const UsageRecordedRef = builder.objectRef<UsageRecordedShape>('UsageRecorded').implement({
  description: 'The usage was charged (or had been, under the same idempotency key).',
  isTypeOf: (value) => (value as { kind?: string }).kind === 'recorded',
  fields: (t) => ({
    usageEvent: t.field({ type: UsageEventRef, description: 'The event.', resolve: (result) => result.usageEvent }),
    balance: t.field({ type: BalanceRef, description: 'The balance of the charged pool now.', resolve: (result) => result.balance }),
  }),
});

const RecordUsageResultUnion = builder.unionType('RecordUsageResult', {
  description: 'The outcome of recordUsage: charged, or refused with nothing debited.',
  types: [UsageRecordedRef, InsufficientCreditsRef, SpendLimitExceededRef, FeatureNotAvailableRef],
});

const RecordUsageInput = builder.inputType('RecordUsageInput', {
  description: 'One metered action to charge.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    featureKey: t.string({ required: true, description: 'The feature used.' }),
    quantity: t.int({ description: 'Units used, 1 to 1,000,000,000; default 1.' }),
    credits: t.field({ type: 'Credits', description: 'The cost, for DYNAMIC features only.' }),
    seatId: t.id({ description: 'The seat using it: its own grants are spent first.' }),
    tags: t.stringList({ description: 'Up to 32 tags (for example workbook:42).' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key and input is charged once.' }),
    occurredAt: t.field({ type: 'DateTime', description: 'When it happened; default now.' }),
    metadata: t.field({ type: 'JSON', description: 'Up to 16 KiB of JSON kept with the event.' }),
  }),
});

builder.mutationFields((t) => ({
  recordUsage: t.field({
    authScopes: { writer: true },
    type: RecordUsageResultUnion,
    description: 'Prices a usage, checks entitlement and balance, and debits it atomically across grants.',
    args: { input: t.arg({ type: RecordUsageInput, required: true, description: 'The usage.' }) },
    resolve: async (_root, { input }, context) => {
      requireAccountAccess(requireActor(context), input.accountId, 'write');
      const outcome = await recordUsage(context.prisma, context.usageHotPath, context.clock, input);
      if (outcome.kind !== 'recorded') return toRefusalShape(outcome);
      return outcome;
    },
  }),
}));

const RefundUsageInput = builder.inputType('RefundUsageInput', {
  description: 'Credits of a usage event to give back.',
  fields: (t) => ({
    usageEventId: t.id({ required: true, description: 'The event.' }),
    credits: t.field({ type: 'Credits', description: 'All that is left to refund when omitted.' }),
    reason: t.string({ description: 'Why (kept with the refund, up to 500 characters).' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key refunds once.' }),
  }),
});

builder.mutationFields((t) => ({
  refundUsage: t.field({
    authScopes: { writer: true },
    type: UsageEventRef,
    description: 'Gives credits of an event back to the grants they came from, newest draw first; expired grants stay expired.',
    args: { input: t.arg({ type: RefundUsageInput, required: true, description: 'The refund.' }) },
    resolve: async (_root, { input }, context) => {
      const actor = requireActor(context);
      const event = await context.loaders.usageEvent.load(input.usageEventId);
      if (!event || (actor.role !== 'ADMIN' && actor.accountId !== event.accountId)) {
        throw new BillingError(ErrorCode.USAGE_EVENT_NOT_FOUND, `usage event ${input.usageEventId} not found`);
      }
      requireAccountAccess(actor, event.accountId, 'write');
      return inTransaction(context.prisma, (tx) => refundUsage(tx, context.clock, input));
    },
  }),
}));

interface UsageRejectedShape {
  kind: 'rejected';
  code: string;
  message: string;
}

const UsageRejectedRef = builder.objectRef<UsageRejectedShape>('UsageRejected').implement({
  description: 'A batch event refused as invalid (unknown feature, bad quantity, conflicting key, …); nothing was written for it.',
  interfaces: [ErrorInterface],
  isTypeOf: (value) => (value as { kind?: string }).kind === 'rejected',
  fields: () => ({}),
});

const RecordUsageBatchResultUnion = builder.unionType('RecordUsageBatchResult', {
  description: 'The outcome of one event of a batch.',
  types: [UsageRecordedRef, InsufficientCreditsRef, SpendLimitExceededRef, FeatureNotAvailableRef, UsageRejectedRef],
});

builder.mutationFields((t) => ({
  recordUsageBatch: t.field({
    authScopes: { writer: true },
    type: [RecordUsageBatchResultUnion],
    description: `Records up to ${MAX_BATCH_EVENTS} usage events at once, each with its own idempotency key and result, in the order given per account.`,
    args: { inputs: t.arg({ type: [RecordUsageInput], required: true, description: 'The events.' }) },
    resolve: async (_root, { inputs }, context) => {
      const actor = requireActor(context);
      if (inputs.length > MAX_BATCH_EVENTS) throw invalidInput(`at most ${MAX_BATCH_EVENTS} events per batch`, 'inputs');
      for (const accountId of new Set(inputs.map((input) => input.accountId))) requireAccountAccess(actor, accountId, 'write');
      const { outcomes } = await recordUsageBatch(context.prisma, context.usageHotPath, context.clock, inputs);
      return outcomes.map((outcome) => (outcome.kind === 'recorded' || outcome.kind === 'rejected' ? outcome : toRefusalShape(outcome)));
    },
  }),
}));
