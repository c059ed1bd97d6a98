import { recordAuditEvent } from '../../audit/auditLog.ts';
import { inTransaction } from '../../db/transaction.ts';
import { invalidInput } from '../../domain/errors.ts';
import {
  adjustCredits,
  changeGrantExpiry,
  voidGrant,
  type AdjustmentRefused,
  type Corrected,
  type CorrectionRecord,
} from '../../ledger/corrections.ts';
import { builder } from '../builder.ts';
import { requireActor } from '../context.ts';
import { BalanceRef, GrantCostBasisInput, GrantRef } from './account.ts';
import { InsufficientCreditsRef, insufficientCredits } from './errors.ts';
import { LedgerEntryRef } from './usage.ts';

/**
 * The operator's corrections (ledger/corrections.ts holds the rules and answers the three questions:
 * ADMIN only through the `corrector` scope, value created without money, bounded input). Resolvers
 * validate nothing of their own: they call the ledger and audit what it did, in its transaction.
 */

const CorrectionKindEnum = builder.enumType('CorrectionKind', {
  description: 'What an operator correction did.',
  values: {
    VOID: { description: 'voidGrant: what was left of a grant was removed.' },
    ADJUST: { description: 'adjustCredits: credits added (a new ADJUSTMENT grant) or taken back in consumption order.' },
    EXPIRY: { description: "changeGrantExpiry: a grant's expiry was moved or removed." },
  } as const,
});

const CorrectionRef = builder.objectRef<CorrectionRecord>('Correction').implement({
  description: 'An operator correction of an account’s credits, with its reason; its credits moved in ADJUST ledger entries.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    kind: t.expose('kind', { type: CorrectionKindEnum, description: 'What it did.' }),
    creditType: t.exposeString('creditType', { description: 'The pool corrected.' }),
    credits: t.expose('credits', { type: 'Credits', description: 'The change of the pool’s credits, signed (0 for a change of expiry).' }),
    reason: t.exposeString('reason', { description: 'Why, as the operator gave it.' }),
    grant: t.field({
      type: GrantRef,
      nullable: true,
      description: 'The grant voided, re-dated or created (as it is now); null for a negative adjustment (see grants).',
      resolve: (correction, _args, context) => (correction.grantId ? context.loaders.grant.load(correction.grantId) : null),
    }),
    grants: t.field({
      type: [GrantRef],
      description: 'Every grant whose credits or expiry it moved, in the order of its entries.',
      resolve: async (correction, _args, context) =>
        (await Promise.all(correction.grantIds.map((id) => context.loaders.grant.load(id)))).filter((grant) => grant !== null),
    }),
    entries: t.field({
      type: [LedgerEntryRef],
      description: 'The ADJUST ledger entries it wrote (none for the void of a grant with nothing left).',
      resolve: (correction, _args, context) => context.loaders.correctionEntries.load(correction),
    }),
    previousExpiresAt: t.expose('previousExpiresAt', {
      type: 'DateTime',
      nullable: true,
      description: 'For a change of expiry: the expiry before it (null: never, or not a change of expiry).',
    }),
    expiresAt: t.expose('expiresAt', {
      type: 'DateTime',
      nullable: true,
      description: 'For a change of expiry: the new expiry (null: never); for a positive adjustment: the new grant’s.',
    }),
    idempotencyKey: t.exposeString('idempotencyKey', { description: 'The key it was made under.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was made (the account clock).' }),
  }),
});

builder.objectFields(LedgerEntryRef, (t) => ({
  correction: t.field({
    type: CorrectionRef,
    nullable: true,
    description: 'The operator’s correction an ADJUST entry belongs to (its kind and reason), if any.',
    resolve: (entry, _args, context) => (entry.correctionId ? context.loaders.correction.load(entry.correctionId) : null),
  }),
}));

const CreditsCorrectedRef = builder.objectRef<Corrected>('CreditsCorrected').implement({
  description: 'The correction was made (or had been, under the same idempotency key).',
  isTypeOf: (value) => (value as { kind?: string }).kind === 'corrected',
  fields: (t) => ({
    correction: t.field({ type: CorrectionRef, description: 'The correction.', resolve: (result) => result.correction }),
    balance: t.field({ type: BalanceRef, description: 'The balance of the corrected pool now.', resolve: (result) => result.balance }),
    replayed: t.exposeBoolean('replayed', { description: 'True when the key had already made it: this is its first answer.' }),
  }),
});

const AdjustCreditsResultUnion = builder.unionType('AdjustCreditsResult', {
  description: 'The outcome of adjustCredits: made, or (taking back more than the pool holds) refused with nothing written.',
  types: [CreditsCorrectedRef, InsufficientCreditsRef],
});

const VoidGrantInput = builder.inputType('VoidGrantInput', {
  description: 'A grant to void.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account owning the grant.' }),
    grantId: t.id({ required: true, description: 'The grant.' }),
    reason: t.string({ required: true, description: 'Why (1 to 500 characters), kept with the correction.' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key and input voids once and answers the same.' }),
  }),
});

const AdjustCreditsInput = builder.inputType('AdjustCreditsInput', {
  description: 'Credits to add to or take back from an account’s pool.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    creditType: t.string({ required: true, description: 'The pool.' }),
    amount: t.field({
      type: 'Credits',
      required: true,
      description: 'Signed, not 0: positive adds an ADJUSTMENT grant; negative takes back from the spendable grants in consumption order (refused whole if they hold less).',
    }),
    reason: t.string({ required: true, description: 'Why (1 to 500 characters), kept with the correction and the new grant.' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key and input adjusts once and answers the same.' }),
    seatId: t.id({ description: 'Positive: give the credits to this seat; negative: take them from its own grants. Default: the shared pool.' }),
    expiresAt: t.field({ type: 'DateTime', description: 'Positive only: when the new grant expires; omit for never.' }),
    priority: t.int({ description: 'Positive only: the new grant’s order among grants with the same expiry; default 40.' }),
    costBasis: t.field({ type: GrantCostBasisInput, description: 'Positive only: what one credit cost; default zero and PROMOTIONAL.' }),
    featureKeys: t.stringList({ description: 'Positive only: the features the new grant pays for; omit for every feature.' }),
    metadata: t.field({ type: 'JSON', description: 'Positive only: up to 16 KiB of JSON kept on the new grant.' }),
  }),
});

const ChangeGrantExpiryInput = builder.inputType('ChangeGrantExpiryInput', {
  description: 'A grant’s new expiry.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account owning the grant.' }),
    grantId: t.id({ required: true, description: 'The grant.' }),
    expiresAt: t.field({ type: 'DateTime', description: 'The new expiry, after the account’s now and the grant’s effectiveAt; omit with removeExpiry.' }),
    removeExpiry: t.boolean({ description: 'True: the grant never expires (expiresAt must then be omitted).' }),
    reason: t.string({ required: true, description: 'Why (1 to 500 characters), kept with the correction.' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key and input changes it once and answers the same.' }),
  }),
});

function correctionDetails(result: Corrected, extra: Record<string, unknown>): Record<string, unknown> {
  const { correction } = result;
  return { correctionId: correction.id, reason: correction.reason, creditType: correction.creditType, credits: correction.credits, grantIds: correction.grantIds, ...extra };
}

builder.mutationFields((t) => ({
  voidGrant: t.field({
    authScopes: { corrector: true },
    type: CreditsCorrectedRef,
    description:
      'Voids a grant (operator only): what is left of it leaves in an ADJUST entry, what was spent stays spent, credits held by open reservations stay held and are voided if they come back. Idempotent on the key; a void grant again is GRANT_VOIDED.',
    args: { input: t.arg({ type: VoidGrantInput, required: true, description: 'The void.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, async (tx) => {
        const result = await voidGrant(tx, context.clock, { ...input, actorKeyId: actor.keyId });
        if (!result.replayed) {
          await recordAuditEvent(tx, context.clock, actor, { action: 'voidGrant', accountId: input.accountId, subjectId: input.grantId, details: correctionDetails(result, {}) });
        }
        return result;
      });
    },
  }),
  adjustCredits: t.field({
    authScopes: { corrector: true },
    type: AdjustCreditsResultUnion,
    description:
      'Adds credits (a new ADJUSTMENT grant) or takes them back in consumption order, never below zero (operator only). Taking more than the spendable grants hold is InsufficientCredits, nothing written. Idempotent on the key.',
    args: { input: t.arg({ type: AdjustCreditsInput, required: true, description: 'The adjustment.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      return inTransaction(context.prisma, async (tx): Promise<Corrected | ReturnType<typeof insufficientCredits>> => {
        const result: Corrected | AdjustmentRefused = await adjustCredits(tx, context.clock, { ...input, actorKeyId: actor.keyId });
        if (result.kind === 'insufficientCredits') return insufficientCredits(result.creditType, result.required, result.available);
        if (!result.replayed) {
          await recordAuditEvent(tx, context.clock, actor, {
            action: 'adjustCredits',
            accountId: input.accountId,
            subjectId: result.correction.id,
            details: correctionDetails(result, { amount: input.amount, seatId: input.seatId ?? null }),
          });
        }
        return result;
      });
    },
  }),
  changeGrantExpiry: t.field({
    authScopes: { corrector: true },
    type: CreditsCorrectedRef,
    description:
      "Moves a grant's expiry earlier or later, or removes it (operator only); the new expiry must be after the account's now. A zero-credit ADJUST entry marks it in the ledger. Idempotent on the key.",
    args: { input: t.arg({ type: ChangeGrantExpiryInput, required: true, description: 'The change.' }) },
    resolve: (_root, { input }, context) => {
      const actor = requireActor(context);
      const expiresAt = input.expiresAt ?? null;
      if ((expiresAt === null) !== (input.removeExpiry === true)) {
        throw invalidInput('give either expiresAt or removeExpiry: true', 'expiresAt');
      }
      return inTransaction(context.prisma, async (tx) => {
        const result = await changeGrantExpiry(tx, context.clock, { ...input, expiresAt, actorKeyId: actor.keyId });
        if (!result.replayed) {
          await recordAuditEvent(tx, context.clock, actor, {
            action: 'changeGrantExpiry',
            accountId: input.accountId,
            subjectId: input.grantId,
            details: correctionDetails(result, { previousExpiresAt: result.correction.previousExpiresAt, expiresAt: result.correction.expiresAt }),
          });
        }
        return result;
      });
    },
  }),
}));
