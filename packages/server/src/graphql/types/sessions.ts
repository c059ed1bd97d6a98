import { recordAuditEvent } from '../../audit/auditLog.ts';
import { createSessionToken, revokeSessionToken, SESSION_TTL_MINUTES, type SessionTokenRecord } from '../../auth/sessionTokens.ts';
import { inTransaction } from '../../db/transaction.ts';
import { builder } from '../builder.ts';
import { announceKeysRevoked, requireActor } from '../context.ts';

const SessionTokenRef = builder.objectRef<SessionTokenRecord>('SessionToken').implement({
  description: 'A short-lived token for a browser: reads and follows one account (or one seat), and buys credits if allowed.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier (to revoke it).' }),
    accountId: t.exposeID('accountId', { description: 'The account it reads.' }),
    seatId: t.exposeID('seatId', { nullable: true, description: 'The seat it acts for; null: the whole account.' }),
    canBuy: t.exposeBoolean('canBuy', { description: 'Whether it may buy credit packs (through Stripe Checkout).' }),
    prefix: t.exposeString('prefix', { description: 'The first characters of the token, to recognise it.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was issued.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', description: 'When it stops working.' }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true, description: 'When it was revoked; it no longer works.' }),
  }),
});

const CreatedSessionTokenRef = builder.objectRef<{ session: SessionTokenRecord; token: string }>('CreatedSessionToken').implement({
  description: 'A new session token and its secret.',
  fields: (t) => ({
    session: t.field({ type: SessionTokenRef, description: 'The token.', resolve: (created) => created.session }),
    token: t.exposeString('token', { description: 'The bearer secret (`cbs_…`), shown once; only its hash is stored. Hand it to the browser outside the URL.' }),
  }),
});

const CreateSessionTokenInput = builder.inputType('CreateSessionTokenInput', {
  description: 'A session token to issue.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account it reads.' }),
    seatId: t.id({ description: 'Only what this seat sees (as a SEAT key); default the whole account, read only.' }),
    ttlMinutes: t.int({ description: `Minutes it lives, ${SESSION_TTL_MINUTES.min} to ${SESSION_TTL_MINUTES.max}; default ${SESSION_TTL_MINUTES.default}.` }),
    canBuy: t.boolean({ description: 'May buy credit packs through Stripe Checkout (never off session); default false.' }),
  }),
});

builder.mutationFields((t) => ({
  createSessionToken: t.field({
    authScopes: { credentialManager: true },
    type: CreatedSessionTokenRef,
    description:
      'Issues a short-lived token for a browser (the operator for any account, an ACCOUNT key for its own): it reads and follows live events of the account or one seat, and buys credits if `canBuy`; it changes nothing else and issues nothing. Usable over HTTP and WebSocket like a key.',
    args: { input: t.arg({ type: CreateSessionTokenInput, required: true, description: 'The token.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, async (tx) => {
        const created = await createSessionToken(tx, new Date(), actor, input);
        const { session } = created;
        await recordAuditEvent(tx, context.clock, actor, {
          action: 'createSessionToken',
          accountId: session.accountId,
          subjectId: session.id,
          details: { seatId: session.seatId, canBuy: session.canBuy, expiresAt: session.expiresAt.toISOString(), prefix: session.prefix },
        });
        return created;
      });
    },
  }),
  revokeSessionToken: t.field({
    authScopes: { credentialManager: true },
    type: SessionTokenRef,
    description: 'Ends a session token at once, on every instance.',
    args: { id: t.arg.id({ required: true, description: 'The session token id.' }) },
    resolve: async (_root, args, context) => {
      const actor = requireActor(context);
      const revoked = await inTransaction(context.prisma, async (tx) => {
        const session = await revokeSessionToken(tx, new Date(), actor, args.id);
        await recordAuditEvent(tx, context.clock, actor, { action: 'revokeSessionToken', accountId: session.accountId, subjectId: session.id, details: { prefix: session.prefix } });
        return session;
      });
      announceKeysRevoked(context);
      return revoked;
    },
  }),
}));
