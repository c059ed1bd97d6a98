import { requireAccountAccess, seatScopeOf } from '../../auth/access.ts';
import { inTransaction } from '../../db/transaction.ts';
import { BillingError, ErrorCode } from '../../domain/errors.ts';
import {
  findReservation,
  listReservations,
  releaseReservation,
  reserveCredits,
  settleReservation,
  type ReservationRecord,
} from '../../ledger/reservations.ts';
import { builder } from '../builder.ts';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, pageSize } from '../pagination.ts';
import { requireActor, type GraphQLContext } from '../context.ts';
import { AccountRef, SeatRef } from './account.ts';
import { FeatureNotAvailableRef, InsufficientCreditsRef, SpendLimitExceededRef, toRefusalShape } from './errors.ts';
import { UsageEventRef } from './usage.ts';

const ReservationStatusEnum = builder.enumType('ReservationStatus', {
  description: 'Where a hold stands.',
  values: {
    HELD: { description: 'Credits are held until settled, released or expired.' },
    SETTLED: { description: 'The actual cost was charged; the rest went back.' },
    RELEASED: { description: 'Freed without charge.' },
    EXPIRED: { description: 'Not settled within its TTL; freed without charge.' },
  } as const,
});

const ReservationRef = builder.objectRef<ReservationRecord>('Reservation').implement({
  description: 'A hold on credits for an action whose cost is known only afterwards.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'Identifier.' }),
    featureKey: t.exposeString('featureKey', { description: 'The feature it is for.' }),
    creditType: t.exposeString('creditType', { description: 'The pool held from.' }),
    held: t.expose('held', { type: 'Credits', description: 'Credits held (the most the settlement may charge).' }),
    status: t.expose('status', { type: ReservationStatusEnum, description: 'Where it stands.' }),
    seat: t.field({
      type: SeatRef,
      nullable: true,
      description: 'The seat it is for.',
      resolve: (reservation, _args, context) => (reservation.seatId ? context.loaders.seat.load(reservation.seatId) : null),
    }),
    tags: t.exposeStringList('tags', { description: 'Tags, passed on to the settled usage event.' }),
    idempotencyKey: t.exposeString('idempotencyKey', { description: 'The key it was made under.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime', description: 'When an unsettled hold is released.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime', description: 'When it was made.' }),
    usageEvent: t.field({
      type: UsageEventRef,
      nullable: true,
      description: 'The usage event of the settlement.',
      resolve: (reservation, _args, context) => (reservation.usageEventId ? context.loaders.usageEvent.load(reservation.usageEventId) : null),
    }),
  }),
});

const CreditsReservedRef = builder.objectRef<{ kind: 'reserved'; reservation: ReservationRecord }>('CreditsReserved').implement({
  description: 'The credits are held.',
  isTypeOf: (value) => (value as { kind?: string }).kind === 'reserved',
  fields: (t) => ({
    reservation: t.field({ type: ReservationRef, description: 'The hold.', resolve: (result) => result.reservation }),
  }),
});

const ReserveCreditsResultUnion = builder.unionType('ReserveCreditsResult', {
  description: 'The outcome of reserveCredits: held, or refused with nothing held.',
  types: [CreditsReservedRef, InsufficientCreditsRef, SpendLimitExceededRef, FeatureNotAvailableRef],
});

const ReserveCreditsInput = builder.inputType('ReserveCreditsInput', {
  description: 'A hold to place.',
  fields: (t) => ({
    accountId: t.id({ required: true, description: 'The account.' }),
    featureKey: t.string({ required: true, description: 'The feature it is for.' }),
    credits: t.field({ type: 'Credits', required: true, description: 'The most the action may cost.' }),
    seatId: t.id({ description: 'The seat it is for: its own grants are held first.' }),
    tags: t.stringList({ description: 'Tags for the settled usage event (and spend limits).' }),
    idempotencyKey: t.string({ required: true, description: 'A retry with the same key holds once.' }),
    ttlSeconds: t.int({ description: 'Seconds until an unsettled hold is released: default 900, at most 86400.' }),
  }),
});

const SettleReservationInput = builder.inputType('SettleReservationInput', {
  description: 'The actual cost of a held action.',
  fields: (t) => ({
    reservationId: t.id({ required: true, description: 'The hold.' }),
    credits: t.field({ type: 'Credits', required: true, description: 'The actual cost, at most the hold.' }),
  }),
});

/** The reservation a request may act on; another tenant's answers as if it did not exist. */
async function getOwnReservation(context: GraphQLContext, reservationId: string): Promise<ReservationRecord> {
  const actor = requireActor(context);
  const reservation = await findReservation(context.prisma, reservationId);
  if (!reservation || (actor.role !== 'ADMIN' && actor.accountId !== reservation.accountId)) {
    throw new BillingError(ErrorCode.RESERVATION_NOT_FOUND, `reservation ${reservationId} not found`);
  }
  requireAccountAccess(actor, reservation.accountId, 'write');
  return reservation;
}

builder.objectFields(AccountRef, (t) => ({
  reservations: t.field({
    type: [ReservationRef],
    description: "Holds, newest first, a page at a time. A SEAT key sees its own seat's only.",
    args: {
      status: t.arg({ type: ReservationStatusEnum, description: 'Only holds in this state.' }),
      first: t.arg.int({ description: `How many (default ${DEFAULT_PAGE_SIZE}, at most ${MAX_PAGE_SIZE}).` }),
      after: t.arg.id({ description: 'The id of the last hold of the previous page.' }),
    },
    resolve: (account, args, context) =>
      listReservations(context.prisma, account.id, args.status, seatScopeOf(context.actor), { size: pageSize(args.first), after: args.after ?? null }),
  }),
}));

builder.mutationFields((t) => ({
  reserveCredits: t.field({
    authScopes: { writer: true },
    type: ReserveCreditsResultUnion,
    description: 'Holds credits for an action whose cost is known afterwards; settle or release it.',
    args: { input: t.arg({ type: ReserveCreditsInput, required: true, description: 'The hold.' }) },
    resolve: async (_root, { input }, context) => {
      requireAccountAccess(requireActor(context), input.accountId, 'write');
      const outcome = await inTransaction(context.prisma, (tx) => reserveCredits(tx, context.clock, input));
      return outcome.kind === 'reserved' ? outcome : toRefusalShape(outcome);
    },
  }),
  settleReservation: t.field({
    authScopes: { writer: true },
    type: UsageEventRef,
    description: 'Charges the actual cost (at most the hold) and releases the rest.',
    args: { input: t.arg({ type: SettleReservationInput, required: true, description: 'The settlement.' }) },
    resolve: async (_root, { input }, context) => {
      await getOwnReservation(context, input.reservationId);
      return inTransaction(context.prisma, (tx) => settleReservation(tx, context.clock, input.reservationId, input.credits));
    },
  }),
  releaseReservation: t.field({
    authScopes: { writer: true },
    type: ReservationRef,
    description: 'Frees a hold without charge.',
    args: { reservationId: t.arg.id({ required: true, description: 'The hold.' }) },
    resolve: async (_root, args, context) => {
      await getOwnReservation(context, args.reservationId);
      return inTransaction(context.prisma, (tx) => releaseReservation(tx, context.clock, args.reservationId));
    },
  }),
}));
