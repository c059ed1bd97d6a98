import { audited } from '../../audit/auditLog.ts';
import { requireAccountAccess } from '../../auth/access.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import { cancelScheduledGrant, MAX_OCCURRENCES, scheduleGrant, toScheduledGrantRecord, type ScheduledGrantRecord } from '../../ledger/scheduledGrants.ts';
import { builder } from '../builder.ts';
import { requireActor } from '../context.ts';
import { decodeCursor, defineConnection, pageSize, toConnection } from '../pagination.ts';
import { AccountRef, GrantCostBasisInput, GrantSourceEnum } from './account.ts';

const ScheduleIntervalEnum = builder.enumType('ScheduleInterval', {
  description: 'How often a scheduled grant is issued.',
  values: {
    ONCE: { description: 'Once, at startsAt.' },
    MONTH: { description: 'Every month from startsAt (the day clamped to shorter months) until endsAt.' },
    YEAR: { description: 'Every year from startsAt until endsAt.' },
  } as const,
});

const ScheduledGrantRef = builder.objectRef<ScheduledGrantRecord>('ScheduledGrant').implement({
  description: 'Credits granted in the future, once or every month or year until an end; each occurrence is issued once, by the job runner (or an advanced test clock).',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    accountId: t.exposeID('accountId', { description: 'The account.' }),
    creditType: t.exposeString('creditType', { description: 'The pool.' }),
    source: t.expose('source', { type: GrantSourceEnum, description: 'The source of each grant issued.' }),
    amount: t.expose('amount', { type: 'Credits', description: 'Credits per occurrence.' }),
    interval: t.expose('interval', { type: ScheduleIntervalEnum, description: 'Once, monthly or yearly.' }),
    startsAt: t.expose('startsAt', { type: 'DateTime', description: 'The first occurrence.' }),
    endsAt: t.expose('endsAt', { type: 'DateTime', nullable: true, description: 'Recurring: occurrences are before this instant (exclusive).' }),
    expiresAfterDays: t.exposeInt('expiresAfterDays', { nullable: true, description: 'Each grant expires this many days after its occurrence; null: never.' }),
    featureKeys: t.exposeStringList('featureKeys', { description: 'The features each grant applies to; empty: any feature of its credit type.' }),
    issued: t.exposeInt('issued', { description: 'Occurrences issued so far.' }),
    nextAt: t.expose('nextAt', { type: 'DateTime', nullable: true, description: 'The next occurrence; null when none is left or the schedule was canceled.' }),
    canceledAt: t.expose('canceledAt', { type: 'DateTime', nullable: true, description: 'When it was canceled.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was scheduled (account time).' }),
  }),
});

const ScheduledGrantConnectionRef = defineConnection('ScheduledGrant', ScheduledGrantRef, 'scheduled grant');

const ScheduleGrantInput = builder.inputType('ScheduleGrantInput', {
  description: `A grant in the future, or recurring (at most ${MAX_OCCURRENCES} occurrences).`,
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    creditType: t.string({ required: true, description: 'The pool.' }),
    amount: t.field({ type: 'Credits', required: true, description: 'Credits per occurrence, at least 1.' }),
    source: t.field({ type: GrantSourceEnum, required: true, description: 'The source of each grant (not PURCHASE or AUTO_TOP_UP).' }),
    interval: t.field({ type: ScheduleIntervalEnum, required: true, description: 'ONCE, MONTH or YEAR.' }),
    startsAt: t.field({ type: 'DateTime', required: true, description: 'The first occurrence, from 1970 on (an instant already past is issued at once, dated at itself).' }),
    endsAt: t.field({ type: 'DateTime', description: 'Required for MONTH and YEAR: occurrences fall before it (exclusive).' }),
    expiresAfterDays: t.int({ description: 'Each grant expires this many days after its occurrence (1 to 36500); omit for never.' }),
    seatId: t.id({ description: 'Grant to one seat instead of the shared pool (occurrences after its removal are skipped).' }),
    priority: t.int({ description: 'Order among grants with the same expiry; default by source.' }),
    costBasis: t.field({ type: GrantCostBasisInput, description: 'What one credit cost; default as grantCredits.' }),
    featureKeys: t.stringList({ description: 'Scope each grant to these features of its credit type (as grantCredits); omit for any.' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key schedules once.' }),
  }),
});

builder.objectFields(AccountRef, (t) => ({
  scheduledGrants: t.field({
    type: ScheduledGrantConnectionRef,
    authScopes: { writer: true },
    description: 'Scheduled and recurring grants, oldest first (ADMIN and ACCOUNT keys).',
    args: {
      first: t.arg.int({ description: 'Page size, 1 to 500; default 50.' }),
      after: t.arg.string({ description: 'A cursor from a previous page.' }),
    },
    resolve: async (account, args, context) => {
      const limit = pageSize(args.first);
      const after = decodeCursor(args.after, ['instant', 'id']);
      const rows = await context.prisma.scheduledGrant.findMany({
        where: {
          accountId: account.id,
          ...(after ? { OR: [{ createdAt: { gt: new Date(String(after[0])) } }, { createdAt: new Date(String(after[0])), id: { gt: String(after[1]) } }] } : {}),
        },
        orderBy: [{ createdAt: 'asc' }, { id: 'asc' }],
        take: limit + 1,
      });
      return toConnection(rows.map(toScheduledGrantRecord), limit, (row) => [row.createdAt.toISOString(), row.id]);
    },
  }),
}));

builder.mutationFields((t) => ({
  scheduleGrant: t.field({
    authScopes: { admin: true },
    type: ScheduledGrantRef,
    description: 'Schedules credits for later, once or every month or year until an end (operator only); idempotent on the key.',
    args: { input: t.arg({ type: ScheduleGrantInput, required: true, description: 'The schedule.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, scheduleGrant(tx, context.clock, input), (schedule) => ({
          action: 'scheduleGrant',
          accountId: schedule.accountId,
          subjectId: schedule.id,
          details: { ...input },
        })),
      );
    },
  }),
  cancelScheduledGrant: t.field({
    authScopes: { admin: true },
    type: ScheduledGrantRef,
    description: 'Stops a schedule: grants already issued stay, no more follow (operator only).',
    args: { id: t.arg.id({ required: true, description: 'The scheduled grant.' }) },
    resolve: async (_root, args, context) => {
      const actor = requireActor(context);
      const found = await context.prisma.scheduledGrant.findUnique({ where: { id: args.id }, select: { accountId: true } });
      if (!found) throw new BillingError(ErrorCode.SCHEDULED_GRANT_NOT_FOUND, `scheduled grant ${args.id} not found`);
      requireAccountAccess(actor, found.accountId, 'write');
      return inTransaction(context.prisma, (tx) =>
        audited(tx, context.clock, actor, cancelScheduledGrant(tx, context.clock, args.id, found.accountId), (schedule) => ({
          action: 'cancelScheduledGrant',
          accountId: schedule.accountId,
          subjectId: schedule.id,
        })),
      );
    },
  }),
}));
