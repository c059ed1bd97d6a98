import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertUsageAllowed } from '../accounts/usageRefusal.ts';
import { findFeature } from '../catalog/features.ts';
import { getPlanById } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import { authorizeSpend, getActiveSeat, type SpendRefusal } from './authorizeSpend.ts';
import { returnCreditsToGrants } from './creditMovements.ts';
import { getFeature } from './recordUsage.ts';
import { rememberRefusal, storedRefusal } from './refusals.ts';
import { assertIdempotencyKey, normalizeTags } from './usageInput.ts';
import { ledgerPolicies } from './ledgerPolicies.ts';
import { notifyBalanceChanged } from '../realtime/events.ts';
import { loadBalance } from './balances.ts';
import { findUsageEvent, type UsageEventRecord } from './usageEvents.ts';

export const DEFAULT_RESERVATION_TTL_SECONDS = 15 * 60;
export const MAX_RESERVATION_TTL_SECONDS = 24 * 60 * 60;

export type ReservationStatus = 'HELD' | 'SETTLED' | 'RELEASED' | 'EXPIRED';

export interface ReservationRecord {
  id: string;
  accountId: string;
  seatId: string | null;
  featureKey: string;
  creditType: string;
  held: number;
  status: ReservationStatus;
  tags: string[];
  idempotencyKey: string;
  requestHash: string;
  expiresAt: Date;
  usageEventId: string | null;
  createdAt: Date;
}

interface ReservationRow {
  id: string;
  account_id: string;
  seat_id: string | null;
  feature_key: string;
  credit_type: string;
  held: bigint;
  status: ReservationStatus;
  tags: string[];
  idempotency_key: string;
  request_hash: string;
  expires_at: Date;
  usage_event_id: string | null;
  created_at: Date;
}

function toReservationRecord(row: ReservationRow): ReservationRecord {
  return {
    id: row.id,
    accountId: row.account_id,
    seatId: row.seat_id,
    featureKey: row.feature_key,
    creditType: row.credit_type,
    held: toCredits(row.held),
    status: row.status,
    tags: row.tags,
    idempotencyKey: row.idempotency_key,
    requestHash: row.request_hash,
    expiresAt: row.expires_at,
    usageEventId: row.usage_event_id,
    createdAt: row.created_at,
  };
}

/** A page: at most `size` rows, after the reservation `after` (its id) in the listing's order. */
export interface ReservationPage {
  size: number;
  after: string | null;
}

async function queryReservations(tx: Tx, where: ReturnType<typeof whereId>, page: ReservationPage | null = null): Promise<ReservationRecord[]> {
  const after = page?.after ?? null;
  const rows = await tx.$queryRaw<ReservationRow[]>`
    SELECT id, account_id, seat_id, feature_key, credit_type, held, status::text AS status, tags, idempotency_key,
           request_hash, expires_at, usage_event_id, created_at
    FROM reservations WHERE (${where.id}::text IS NULL OR id = ${where.id})
      AND (${where.accountId}::text IS NULL OR account_id = ${where.accountId})
      AND (${where.idempotencyKey}::text IS NULL OR idempotency_key = ${where.idempotencyKey})
      AND (${where.status}::text IS NULL OR status::text = ${where.status})
      AND (${where.seatId}::text IS NULL OR seat_id = ${where.seatId})
      AND (${after}::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM reservations WHERE id = ${after}))
    ORDER BY created_at DESC, id DESC
    LIMIT ${page?.size ?? null}::int`;
  return rows.map(toReservationRecord);
}

function whereId(filter: { id?: string; accountId?: string; idempotencyKey?: string; status?: ReservationStatus | null; seatId?: string | null }) {
  return {
    id: filter.id ?? null,
    accountId: filter.accountId ?? null,
    idempotencyKey: filter.idempotencyKey ?? null,
    status: filter.status ?? null,
    seatId: filter.seatId ?? null,
  };
}

export async function findReservation(tx: Tx, id: string): Promise<ReservationRecord | null> {
  return (await queryReservations(tx, whereId({ id })))[0] ?? null;
}

/** An account's reservations, newest first; with `seatId`, only that seat's; with `page`, one page. */
export async function listReservations(
  tx: Tx,
  accountId: string,
  status?: ReservationStatus | null,
  seatId?: string | null,
  page: ReservationPage | null = null,
): Promise<ReservationRecord[]> {
  return queryReservations(tx, whereId({ accountId, status, seatId }), page);
}

async function loadReservationDraws(tx: Tx, reservationId: string): Promise<Array<{ grantId: string; credits: number }>> {
  const rows = await tx.$queryRaw<Array<{ grant_id: string; credits: bigint }>>`
    SELECT grant_id, credits FROM reservation_draws WHERE reservation_id = ${reservationId} ORDER BY position`;
  return rows.map((row) => ({ grantId: row.grant_id, credits: toCredits(row.credits) }));
}

export interface ReserveCreditsCommand {
  accountId: string;
  featureKey: string;
  credits: number;
  seatId?: string | null;
  tags?: readonly string[] | null;
  idempotencyKey: string;
  ttlSeconds?: number | null;
}

export type ReserveCreditsOutcome = { kind: 'reserved'; reservation: ReservationRecord } | SpendRefusal;

/**
 * Holds up to `credits` for an action whose cost is known only afterwards (Hex's effort-based
 * tasks). The hold draws from grants now, in consumption order (a RESERVE entry each), so
 * `available` drops at once and concurrent holds can never promise the same credits twice. Holds
 * never go into overage. Idempotent on the key like usage.
 */
export async function reserveCredits(tx: Tx, clock: Clock, command: ReserveCreditsCommand): Promise<ReserveCreditsOutcome> {
  const credits = assertCredits(command.credits, 'credits');
  const ttlSeconds = command.ttlSeconds ?? DEFAULT_RESERVATION_TTL_SECONDS;
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_RESERVATION_TTL_SECONDS) {
    throw new BillingError(ErrorCode.INVALID_TTL, `ttlSeconds must be from 1 to ${MAX_RESERVATION_TTL_SECONDS}`, { field: 'ttlSeconds' });
  }
  const tags = normalizeTags(command.tags);
  const idempotencyKey = assertIdempotencyKey(command.idempotencyKey);
  const requestHash = hashRequest({ featureKey: command.featureKey, credits, seatId: command.seatId ?? null, tags, ttlSeconds });
  const policies = ledgerPolicies();
  const account = await policies.accountLocked(tx, await lockAccount(tx, clock, command.accountId), 'periodEnded');

  const [previous] = await queryReservations(tx, whereId({ accountId: account.id, idempotencyKey }));
  if (previous) {
    if (previous.requestHash !== requestHash) {
      throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${idempotencyKey} was already used with a different reservation`);
    }
    return { kind: 'reserved', reservation: previous };
  }
  const refusalKey = { accountId: account.id, kind: 'reservation' as const, idempotencyKey, requestHash };
  const refused = await storedRefusal(tx, refusalKey);
  if (refused) return refused;
  await assertUsageAllowed(tx, account);

  const feature = getFeature(await findFeature(tx, command.featureKey), command.featureKey);
  const plan = await getPlanById(tx, account.planId);
  const seat = command.seatId ? await getActiveSeat(tx, account.id, command.seatId) : null;
  const decision = await authorizeSpend(tx, account, plan, { feature, seat, cost: credits, tags, allowOverage: false });
  if (decision.kind === 'spendLimitExceeded') await policies.spendLimitReached(tx, account, decision.spendLimit);
  if (decision.kind !== 'authorized') {
    // Final like a usage's refusal (refusals.ts): a late duplicate of the key is not held after a top-up.
    await rememberRefusal(tx, { ...refusalKey, refusal: decision, at: clock.now() });
    return decision;
  }

  const id = newId();
  const expiresAt = new Date(account.now.getTime() + ttlSeconds * 1000);
  await tx.$executeRaw`
    WITH reservation AS (
      INSERT INTO reservations (id, account_id, seat_id, feature_key, credit_type, held, status, tags, idempotency_key,
                                request_hash, expires_at, created_at)
      VALUES (${id}, ${account.id}, ${seat?.id ?? null}, ${feature.key}, ${feature.creditType}, ${BigInt(credits)},
              'HELD'::"ReservationStatus", ${tags}::text[], ${idempotencyKey}, ${requestHash}, ${expiresAt}, ${account.now})
      RETURNING id
    ),
    drawn AS (
      SELECT grant_id, credits, position::int AS position
      FROM unnest(${decision.draws.map((draw) => draw.grantId)}::text[], ${decision.draws.map((draw) => BigInt(draw.credits))}::bigint[])
        WITH ORDINALITY AS d(grant_id, credits, position)
    ),
    held AS (
      UPDATE grants SET remaining = grants.remaining - drawn.credits FROM drawn WHERE grants.id = drawn.grant_id
    ),
    recorded_draws AS (
      INSERT INTO reservation_draws (id, reservation_id, grant_id, credits, position)
      SELECT gen_random_uuid()::text, reservation.id, drawn.grant_id, drawn.credits, drawn.position FROM drawn, reservation
    )
    INSERT INTO ledger_entries (account_id, grant_id, reservation_id, type, credits, created_at)
    SELECT ${account.id}, drawn.grant_id, reservation.id, 'RESERVE'::"LedgerEntryType", -drawn.credits, ${account.now}
    FROM drawn, reservation ORDER BY drawn.position`;
  if (decision.sharedAfter !== null) {
    await policies.sharedPoolDrawn(tx, account, feature.creditType, { before: decision.sharedBefore, after: decision.sharedAfter });
  }
  notifyBalanceChanged(tx, account.id, feature.creditType);
  await policies.balanceChanged(tx, account, await loadBalance(tx, { ...account, accountId: account.id }, feature.creditType));
  const reservation = await findReservation(tx, id);
  if (!reservation) throw new Error('reservation vanished inside its own transaction');
  return { kind: 'reserved', reservation };
}

/** Locks the reservation's account, runs what fell due (a hold past its TTL expires here), and re-reads it. */
async function lockReservation(tx: Tx, clock: Clock, reservationId: string): Promise<{ account: LockedAccount; reservation: ReservationRecord }> {
  const found = await findReservation(tx, reservationId);
  if (!found) throw new BillingError(ErrorCode.RESERVATION_NOT_FOUND, `reservation ${reservationId} not found`);
  const account = await ledgerPolicies().accountLocked(tx, await lockAccount(tx, clock, found.accountId), 'allDue');
  const reservation = await findReservation(tx, reservationId);
  if (!reservation) throw new BillingError(ErrorCode.RESERVATION_NOT_FOUND, `reservation ${reservationId} not found`);
  return { account, reservation };
}

function refuseClosed(reservation: ReservationRecord): never {
  switch (reservation.status) {
    case 'RELEASED':
      throw new BillingError(ErrorCode.RESERVATION_RELEASED, `reservation ${reservation.id} was released`);
    case 'EXPIRED':
      throw new BillingError(ErrorCode.RESERVATION_EXPIRED, `reservation ${reservation.id} expired at ${reservation.expiresAt.toISOString()}`);
    default:
      throw new BillingError(ErrorCode.RESERVATION_ALREADY_SETTLED, `reservation ${reservation.id} was already settled`);
  }
}

/**
 * Charges the actual cost of a held action (at most the hold) and releases the rest. The charged
 * part is taken from the held grants in their order: each gets RELEASE (+) and DEBIT (−) entries that
 * turn the hold into a charge (the DEBIT entries, linked to the event, are its draws), and the unused tail goes back to its grants (expired ones stay
 * expired). Settling again with the same amount returns the same event.
 */
export async function settleReservation(tx: Tx, clock: Clock, reservationId: string, credits: number): Promise<UsageEventRecord> {
  assertCredits(credits, 'credits', { allowZero: true });
  const { account, reservation } = await lockReservation(tx, clock, reservationId);
  if (reservation.status === 'SETTLED' && reservation.usageEventId) {
    const settled = await findUsageEvent(tx, reservation.usageEventId);
    if (settled && settled.credits === credits) return settled;
  }
  if (reservation.status !== 'HELD') refuseClosed(reservation);
  if (credits > reservation.held) {
    throw new BillingError(ErrorCode.SETTLE_EXCEEDS_HOLD, `cannot settle ${credits} credits on a hold of ${reservation.held}`, {
      held: reservation.held,
    });
  }

  const heldDraws = await loadReservationDraws(tx, reservation.id);
  const charged: Array<{ grantId: string; credits: number }> = [];
  const released: Array<{ grantId: string; credits: number }> = [];
  let left = credits;
  for (const draw of heldDraws) {
    const charge = Math.min(left, draw.credits);
    left -= charge;
    if (charge > 0) charged.push({ grantId: draw.grantId, credits: charge });
    if (draw.credits - charge > 0) released.push({ grantId: draw.grantId, credits: draw.credits - charge });
  }

  const eventId = newId();
  await tx.$executeRaw`
    WITH event AS (
      INSERT INTO usage_events (id, account_id, seat_id, feature_key, credit_type, quantity, credits, tags, idempotency_key,
                                request_hash, occurred_at, period_start, created_at)
      VALUES (${eventId}, ${account.id}, ${reservation.seatId}, ${reservation.featureKey}, ${reservation.creditType}, 1,
              ${BigInt(credits)}, ${reservation.tags}::text[], ${`reservation:${reservation.id}`},
              ${hashRequest({ reservationId: reservation.id, credits })}, ${account.now}, ${account.currentPeriodStart}, ${account.now})
      RETURNING id
    ),
    charged AS (
      SELECT grant_id, credits, position::int AS position
      FROM unnest(${charged.map((draw) => draw.grantId)}::text[], ${charged.map((draw) => BigInt(draw.credits))}::bigint[])
        WITH ORDINALITY AS c(grant_id, credits, position)
    ),
    settled AS (
      UPDATE reservations SET status = 'SETTLED'::"ReservationStatus", usage_event_id = ${eventId}, closed_at = ${account.now}
      WHERE id = ${reservation.id}
    ),
    totals AS (
      INSERT INTO period_usage_totals (account_id, credit_type, period_start, used, overage)
      VALUES (${account.id}, ${reservation.creditType}, ${account.currentPeriodStart}, ${BigInt(credits)}, 0)
      ON CONFLICT (account_id, credit_type, period_start) DO UPDATE SET used = period_usage_totals.used + EXCLUDED.used
    )
    INSERT INTO ledger_entries (account_id, grant_id, usage_event_id, reservation_id, type, credits, created_at)
    SELECT ${account.id}, charged.grant_id, CASE WHEN step = 2 THEN event.id END, ${reservation.id}, entry_type, amount, ${account.now}
    FROM charged, event,
      LATERAL (VALUES (1, 'RELEASE'::"LedgerEntryType", charged.credits), (2, 'DEBIT'::"LedgerEntryType", -charged.credits))
        AS entry(step, entry_type, amount)
    ORDER BY charged.position, step`;
  await returnCreditsToGrants(tx, account.id, released, 'RELEASE', account.now, { reservationId: reservation.id });
  notifyBalanceChanged(tx, account.id, reservation.creditType);
  await ledgerPolicies().balanceChanged(tx, account, await loadBalance(tx, { ...account, accountId: account.id }, reservation.creditType));
  const event = await findUsageEvent(tx, eventId);
  if (!event) throw new Error('usage event vanished inside its own transaction');
  return event;
}

/** Frees a hold entirely: nothing is charged (a failed request is not billed). Releasing twice is harmless. */
export async function releaseReservation(tx: Tx, clock: Clock, reservationId: string): Promise<ReservationRecord> {
  const { account, reservation } = await lockReservation(tx, clock, reservationId);
  if (reservation.status === 'RELEASED' || reservation.status === 'EXPIRED') return reservation;
  if (reservation.status === 'SETTLED') refuseClosed(reservation);
  await closeHold(tx, account.id, reservation, 'RELEASED', account.now);
  const closed = await findReservation(tx, reservation.id);
  if (!closed) throw new Error('reservation vanished inside its own transaction');
  return closed;
}

async function closeHold(tx: Tx, accountId: string, reservation: ReservationRecord, status: 'RELEASED' | 'EXPIRED', at: Date): Promise<void> {
  await returnCreditsToGrants(tx, accountId, await loadReservationDraws(tx, reservation.id), 'RELEASE', at, { reservationId: reservation.id });
  await tx.$executeRaw`
    UPDATE reservations SET status = ${status}::"ReservationStatus", closed_at = ${at} WHERE id = ${reservation.id}`;
  notifyBalanceChanged(tx, accountId, reservation.creditType);
}

/** Releases every hold of the account whose TTL has run out by `at`, as of its own expiry. */
export async function expireDueReservations(tx: Tx, accountId: string, at: Date): Promise<void> {
  const due = (await listReservations(tx, accountId, 'HELD'))
    .filter((reservation) => reservation.expiresAt.getTime() <= at.getTime())
    .sort((a, b) => a.expiresAt.getTime() - b.expiresAt.getTime());
  for (const reservation of due) await closeHold(tx, accountId, reservation, 'EXPIRED', reservation.expiresAt);
}
