import { listAuditEvents, type AuditEventRecord } from '../../audit/auditLog.ts';
import { builder } from '../builder.ts';
import { decodeCursor, defineConnection, pageSize, toConnection } from '../pagination.ts';
import { ApiKeyRoleEnum } from './access.ts';

const AuditEventRef = builder.objectRef<AuditEventRecord>('AuditEvent').implement({
  description: 'One operator action (granting credits, changing a plan, issuing keys, editing the catalogue…), recorded in the same transaction as the action.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier; later events have larger ids.' }),
    actorKeyId: t.exposeID('actorKeyId', { description: 'The API key that acted.' }),
    actorRole: t.expose('actorRole', { type: ApiKeyRoleEnum, description: 'The role of that key when it acted.' }),
    action: t.exposeString('action', { description: 'The operation, named after its mutation (e.g. grantCredits, rotateApiKey).' }),
    accountId: t.exposeID('accountId', { nullable: true, description: 'The account acted on; null for the catalogue and test clocks.' }),
    subjectId: t.exposeString('subjectId', { nullable: true, description: 'What was acted on: a grant, key, spend limit or clock id, a plan or pack code, a feature key.' }),
    details: t.expose('details', { type: 'JSON', nullable: true, description: 'The parameters of the action; never a secret.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it happened (real time, not a test clock).' }),
  }),
});

const AuditEventConnectionRef = defineConnection('AuditEvent', AuditEventRef, 'audit event');

builder.queryFields((t) => ({
  auditEvents: t.field({
    authScopes: { admin: true },
    type: AuditEventConnectionRef,
    description: 'The audit log of operator actions, newest first (operator only).',
    args: {
      accountId: t.arg.id({ description: 'Only actions on this account.' }),
      action: t.arg.string({ description: 'Only this action (e.g. grantCredits).' }),
      first: t.arg.int({ description: 'Page size (default 50, at most 500).' }),
      after: t.arg.string({ description: 'The endCursor of the previous page.' }),
    },
    resolve: async (_root, args, context) => {
      const size = pageSize(args.first);
      const cursor = decodeCursor(args.after, ['integer']);
      const beforeId = cursor ? BigInt(cursor[0]!) : null;
      const rows = await listAuditEvents(context.prisma, { accountId: args.accountId, action: args.action, beforeId, take: size + 1 });
      return toConnection(rows, size, (row) => [row.id]);
    },
  }),
}));
