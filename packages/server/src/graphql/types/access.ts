import type { Actor } from '../../auth/access.ts';
import { createApiKey, revokeApiKey, rotateApiKey, type ApiKeyRecord } from '../../auth/apiKeys.ts';
import { recordAuditEvent } from '../../audit/auditLog.ts';
import { inTransaction } from '../../db/transaction.ts';
import { builder } from '../builder.ts';
import { announceKeysRevoked, requireActor } from '../context.ts';
import { AccountRef, readVisibleAccount, SeatRef } from './account.ts';

export const ApiKeyRoleEnum = builder.enumType('ApiKeyRole', {
  description: 'What an API key may do.',
  values: {
    ADMIN: { description: 'The operator: everything, on every account.' },
    ACCOUNT: { description: 'A back end or partner acting for one account.' },
    SEAT: { description: "A front end acting for one seat: reads its account's balances and its own usage, follows alerts." },
  } as const,
});

const ViewerRef = builder.objectRef<Actor>('Viewer').implement({
  description: 'Who the API key in use stands for.',
  fields: (t) => ({
    role: t.expose('role', { type: ApiKeyRoleEnum, description: 'The key’s role.' }),
    account: t.field({
      type: AccountRef,
      nullable: true,
      description: 'The key’s account (null for ADMIN).',
      resolve: (actor, _args, context, info) => (actor.role === 'ADMIN' ? null : readVisibleAccount(context, actor, actor.accountId, info)),
    }),
    seat: t.field({
      type: SeatRef,
      nullable: true,
      description: 'The key’s seat (SEAT keys only).',
      resolve: (actor, _args, context) => (actor.role === 'SEAT' ? context.loaders.seat.load(actor.seatId) : null),
    }),
    sessionExpiresAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the session token in use expires (null for API keys).',
      resolve: (actor) => actor.session?.expiresAt ?? null,
    }),
  }),
});

const ApiKeyRef = builder.objectRef<ApiKeyRecord>('ApiKey').implement({
  description: 'An API key; its secret is shown once, at creation, and only its hash is stored.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    name: t.exposeString('name', { nullable: true, description: 'A label.' }),
    role: t.expose('role', { type: ApiKeyRoleEnum, description: 'What it may do.' }),
    accountId: t.exposeID('accountId', { nullable: true, description: 'The account it acts for (ACCOUNT and SEAT keys).' }),
    seatId: t.exposeID('seatId', { nullable: true, description: 'The seat it acts for (SEAT keys).' }),
    prefix: t.exposeString('prefix', { description: 'The first characters of the secret, to recognise it.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was created.' }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true, description: 'When it was revoked; it no longer works.' }),
  }),
});

const CreatedApiKeyRef = builder.objectRef<{ apiKey: ApiKeyRecord; secret: string }>('CreatedApiKey').implement({
  description: 'A new key and its secret.',
  fields: (t) => ({
    apiKey: t.field({ type: ApiKeyRef, description: 'The key.', resolve: (created) => created.apiKey }),
    secret: t.exposeString('secret', { description: 'Shown once; only its hash is stored.' }),
  }),
});

const CreateApiKeyInput = builder.inputType('CreateApiKeyInput', {
  description: 'A key to issue.',
  fields: (t) => ({
    role: t.field({ type: ApiKeyRoleEnum, required: true, description: 'What it may do.' }),
    accountId: t.id({ description: 'Required for ACCOUNT and SEAT keys.' }),
    seatId: t.id({ description: 'Required for SEAT keys.' }),
    name: t.string({ description: 'A label.' }),
  }),
});

builder.queryFields((t) => ({
  viewer: t.field({
    authScopes: { signedIn: true },
    type: ViewerRef,
    description: 'Who the API key in use stands for.',
    resolve: (_root, _args, context) => requireActor(context),
  }),
}));

builder.mutationFields((t) => ({
  createApiKey: t.field({
    authScopes: { credentialManager: true },
    type: CreatedApiKeyRef,
    description: 'Issues a key. The operator issues any; an ACCOUNT key issues ACCOUNT and SEAT keys of its account.',
    args: { input: t.arg({ type: CreateApiKeyInput, required: true, description: 'The key.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, async (tx) => {
        const created = await createApiKey(tx, context.clock, actor, input);
        const { apiKey } = created;
        await recordAuditEvent(tx, context.clock, actor, {
          action: 'createApiKey',
          accountId: apiKey.accountId,
          subjectId: apiKey.id,
          details: { role: apiKey.role, seatId: apiKey.seatId, name: apiKey.name, prefix: apiKey.prefix },
        });
        return created;
      });
    },
  }),
  revokeApiKey: t.field({
    authScopes: { credentialManager: true },
    type: ApiKeyRef,
    description: 'Revokes a key at once.',
    args: { id: t.arg.id({ required: true, description: 'The key id.' }) },
    resolve: async (_root, args, context) => {
      const actor = requireActor(context);
      const revoked = await inTransaction(context.prisma, async (tx) => {
        const apiKey = await revokeApiKey(tx, context.clock, actor, args.id);
        await recordAuditEvent(tx, context.clock, actor, { action: 'revokeApiKey', accountId: apiKey.accountId, subjectId: apiKey.id, details: { role: apiKey.role, prefix: apiKey.prefix } });
        return apiKey;
      });
      announceKeysRevoked(context);
      return revoked;
    },
  }),
  rotateApiKey: t.field({
    authScopes: { credentialManager: true },
    type: CreatedApiKeyRef,
    description:
      'Issues a new key with the same role, account, seat and name and revokes this one at once (the operator, or an ACCOUNT key for its own account’s keys).',
    args: { id: t.arg.id({ required: true, description: 'The key to replace.' }) },
    resolve: async (_root, args, context) => {
      const actor = requireActor(context);
      const rotated = await inTransaction(context.prisma, async (tx) => {
        const { apiKey, secret, replaced } = await rotateApiKey(tx, context.clock, actor, args.id);
        await recordAuditEvent(tx, context.clock, actor, {
          action: 'rotateApiKey',
          accountId: apiKey.accountId,
          subjectId: apiKey.id,
          details: { replacedKeyId: replaced.id, replacedPrefix: replaced.prefix, prefix: apiKey.prefix, role: apiKey.role },
        });
        return { apiKey, secret };
      });
      announceKeysRevoked(context);
      return rotated;
    },
  }),
}));
