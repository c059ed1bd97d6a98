import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { findFeature, type FeatureRecord } from '../catalog/features.ts';
import { getPlanById } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import { loadBalance, type BalanceRecord } from './balances.ts';
import { computeDraws, type Draw, type SpendableGrant } from './consumptionOrder.ts';
import { computeUsageCost } from './pricing.ts';
import { assertIdempotencyKey, assertMetadata, normalizeTags } from './usageInput.ts';
import { findUsageEventByKey, type UsageEventRecord } from './usageEvents.ts';

export interface RecordUsageCommand {
  accountId: string;
  featureKey: string;
  quantity?: number | null;
  credits?: number | null;
  seatId?: string | null;
  tags?: readonly string[] | null;
  idempotencyKey: string;
  occurredAt?: Date | null;
  metadata?: unknown;
}

export type RecordUsageOutcome =
  | { kind: 'recorded'; usageEvent: UsageEventRecord; balance: BalanceRecord; replayed: boolean }
  | { kind: 'insufficientCredits'; creditType: string; required: number; available: number }
  | { kind: 'featureNotAvailable'; featureKey: string };

interface NormalizedUsage {
  featureKey: string;
  quantity: number;
  credits: number | null;
  seatId: string | null;
  tags: string[];
  idempotencyKey: string;
  occurredAt: Date | null;
  metadata: unknown;
  requestHash: string;
}

function normalizeUsage(command: RecordUsageCommand): NormalizedUsage {
  const normalized = {
    featureKey: command.featureKey,
    quantity: command.quantity ?? 1,
    credits: command.credits ?? null,
    seatId: command.seatId ?? null,
    tags: normalizeTags(command.tags),
    idempotencyKey: assertIdempotencyKey(command.idempotencyKey),
    occurredAt: command.occurredAt ?? null,
    metadata: assertMetadata(command.metadata),
  };
  // The key is not part of the fingerprint: it is what the fingerprint is stored against.
  const requestHash = hashRequest({ ...normalized, idempotencyKey: undefined, occurredAt: normalized.occurredAt?.toISOString() });
  return { ...normalized, requestHash };
}

interface SpendableGrantRow {
  id: string;
  seat_id: string | null;
  remaining: bigint;
  expires_at: Date | null;
  priority: number;
  created_at: Date;
}

/**
 * The grants a debit may draw from, as of `now`: the seat's own, then (unless the seat is barred
 * from it) the shared pool. Expired and not-yet-effective grants are never spendable, whether or not
 * the expiry job has run.
 */
export async function loadSpendableGrants(
  tx: Tx,
  account: LockedAccount,
  creditType: string,
  seat: { id: string; canUseSharedPool: boolean } | null,
): Promise<SpendableGrant[]> {
  const includeShared = seat === null || seat.canUseSharedPool;
  const rows = await tx.$queryRaw<SpendableGrantRow[]>`
    SELECT id, seat_id, remaining, expires_at, priority, created_at FROM grants
    WHERE account_id = ${account.id} AND credit_type = ${creditType} AND remaining > 0
      AND effective_at <= ${account.now} AND (expires_at IS NULL OR expires_at > ${account.now})
      AND ((seat_id IS NULL AND ${includeShared}) OR seat_id = ${seat?.id ?? null})`;
  return rows.map((row) => ({
    id: row.id,
    seatId: row.seat_id,
    remaining: toCredits(row.remaining),
    expiresAt: row.expires_at,
    priority: row.priority,
    createdAt: row.created_at,
  }));
}

export async function getActiveSeat(tx: Tx, accountId: string, seatId: string): Promise<{ id: string; canUseSharedPool: boolean }> {
  const seat = await tx.seat.findFirst({ where: { id: seatId, accountId, removedAt: null } });
  if (!seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${seatId} not found in this account`);
  return { id: seat.id, canUseSharedPool: seat.canUseSharedPool };
}

export function assertFeatureExists(feature: FeatureRecord | null, featureKey: string): FeatureRecord {
  if (!feature) throw new BillingError(ErrorCode.UNKNOWN_FEATURE, `unknown feature ${featureKey}`, { featureKey });
  return feature;
}

/**
 * Writes a debit: the event, one draw and one DEBIT ledger entry per grant drawn, and the grants'
 * new remaining amounts, in one statement. The grants' CHECK (remaining >= 0) is the last line of
 * defence: a draw computed from a stale read would abort the transaction rather than overspend.
 */
async function insertDebit(
  tx: Tx,
  account: LockedAccount,
  feature: FeatureRecord,
  usage: NormalizedUsage,
  cost: number,
  draws: Draw[],
): Promise<string> {
  const eventId = newId();
  const occurredAt = usage.occurredAt ?? account.now;
  const metadata = usage.metadata === null ? null : JSON.stringify(usage.metadata);
  await tx.$executeRaw`
    WITH event AS (
      INSERT INTO usage_events (id, account_id, seat_id, feature_key, credit_type, quantity, credits, tags,
                                idempotency_key, request_hash, occurred_at, period_start, metadata, created_at)
      VALUES (${eventId}, ${account.id}, ${usage.seatId}, ${feature.key}, ${feature.creditType}, ${usage.quantity},
              ${BigInt(cost)}, ${usage.tags}::text[], ${usage.idempotencyKey}, ${usage.requestHash}, ${occurredAt},
              ${account.currentPeriodStart}, ${metadata}::jsonb, ${account.now})
      RETURNING id
    ),
    drawn AS (
      SELECT grant_id, credits, position::int AS position
      FROM unnest(${draws.map((draw) => draw.grantId)}::text[], ${draws.map((draw) => BigInt(draw.credits))}::bigint[])
        WITH ORDINALITY AS d(grant_id, credits, position)
    ),
    debited AS (
      UPDATE grants SET remaining = grants.remaining - drawn.credits FROM drawn WHERE grants.id = drawn.grant_id
      RETURNING grants.id
    ),
    recorded_draws AS (
      INSERT INTO usage_draws (id, usage_event_id, grant_id, credits, position)
      SELECT gen_random_uuid()::text, event.id, drawn.grant_id, drawn.credits, drawn.position FROM drawn, event
    )
    INSERT INTO ledger_entries (account_id, grant_id, usage_event_id, type, credits, created_at)
    SELECT ${account.id}, drawn.grant_id, event.id, 'DEBIT'::"LedgerEntryType", -drawn.credits, ${account.now}
    FROM drawn, event`;
  return eventId;
}

/**
 * Prices a usage, checks that the plan enables the feature and that the pool can pay, and debits it
 * across grants in the documented order, atomically. The same idempotency key with the same input
 * returns the first event (charged once, forever); with other input it is IDEMPOTENCY_CONFLICT.
 * Refusals write nothing and are not remembered, so the same key may be retried once credits exist.
 */
export async function recordUsage(tx: Tx, clock: Clock, command: RecordUsageCommand): Promise<RecordUsageOutcome> {
  const usage = normalizeUsage(command);
  const account = await lockAccount(tx, clock, command.accountId);
  const balanceScope = { ...account, accountId: account.id };

  const previous = await findUsageEventByKey(tx, account.id, usage.idempotencyKey);
  if (previous) {
    if (previous.requestHash !== usage.requestHash) {
      throw new BillingError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        `idempotency key ${usage.idempotencyKey} was already used with a different request`,
        { usageEventId: previous.id },
      );
    }
    return { kind: 'recorded', usageEvent: previous, balance: await loadBalance(tx, balanceScope, previous.creditType), replayed: true };
  }

  const feature = assertFeatureExists(await findFeature(tx, usage.featureKey), usage.featureKey);
  const cost = computeUsageCost(feature, { quantity: usage.quantity, credits: usage.credits });
  const plan = await getPlanById(tx, account.planId);
  if (!plan.featureKeys.includes(feature.key)) return { kind: 'featureNotAvailable', featureKey: feature.key };

  const seat = usage.seatId ? await getActiveSeat(tx, account.id, usage.seatId) : null;
  const grants = await loadSpendableGrants(tx, account, feature.creditType, seat);
  const available = grants.reduce((sum, grant) => sum + grant.remaining, 0);
  if (feature.requiresPositiveBalance && available <= 0) {
    return { kind: 'insufficientCredits', creditType: feature.creditType, required: Math.max(cost, 1), available };
  }
  const { draws, shortfall } = computeDraws(grants, cost);
  if (shortfall > 0) return { kind: 'insufficientCredits', creditType: feature.creditType, required: cost, available };

  const eventId = await insertDebit(tx, account, feature, usage, cost, draws);
  const usageEvent = await findUsageEventByKey(tx, account.id, usage.idempotencyKey);
  if (!usageEvent || usageEvent.id !== eventId) throw new Error('usage event vanished inside its own transaction');
  return { kind: 'recorded', usageEvent, balance: await loadBalance(tx, balanceScope, feature.creditType), replayed: false };
}
