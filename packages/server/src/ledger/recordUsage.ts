import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { findFeature, type FeatureRecord } from '../catalog/features.ts';
import { getPlanById } from '../catalog/plans.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { BillingError, ErrorCode } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import { renewIfPeriodEnded } from '../periods/dueWork.ts';
import { queueAutoTopUp } from '../stripe/autoTopUp.ts';
import { evaluateBalanceAlerts, raiseSpendLimitReached } from '../alerts/alerts.ts';
import { notifyBalanceChanged } from '../realtime/events.ts';
import { authorizeSpend, decideBalance, getActiveSeat, type SpendRefusal } from './authorizeSpend.ts';
import { computePercentUsed, loadBalance, type BalanceRecord, type BalanceScope } from './balances.ts';
import { loadDebitSnapshot } from './debitSnapshot.ts';
import type { Draw } from './consumptionOrder.ts';
import { computeUsageCost } from './pricing.ts';
import { assertIdempotencyKey, assertMetadata, normalizeTags } from './usageInput.ts';
import { findUsageEvent, findUsageEventByKey, type UsageEventRecord } from './usageEvents.ts';

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
  | {
      kind: 'recorded';
      usageEvent: UsageEventRecord;
      balance: BalanceRecord;
      replayed: boolean;
      /** An auto top-up this debit queued: the caller pays it after commit. */
      autoTopUpPurchaseId: string | null;
    }
  | SpendRefusal;

export interface NormalizedUsage {
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

export function normalizeUsage(command: RecordUsageCommand): NormalizedUsage {
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

export function getFeature(feature: FeatureRecord | null, featureKey: string): FeatureRecord {
  if (!feature) throw new BillingError(ErrorCode.UNKNOWN_FEATURE, `unknown feature ${featureKey}`, { featureKey });
  return feature;
}

export interface NewDebit {
  featureKey: string;
  creditType: string;
  seatId: string | null;
  quantity: number;
  credits: number;
  overageCredits: number;
  tags: readonly string[];
  idempotencyKey: string;
  requestHash: string;
  occurredAt: Date;
  metadata: unknown;
  draws: Draw[];
}

function toDebit(
  usage: NormalizedUsage,
  feature: FeatureRecord,
  seat: { id: string } | null,
  cost: number,
  decision: { overage: number; draws: Draw[] },
  occurredAt: Date,
): NewDebit {
  return {
    featureKey: feature.key,
    creditType: feature.creditType,
    seatId: seat?.id ?? null,
    quantity: usage.quantity,
    credits: cost,
    overageCredits: decision.overage,
    tags: usage.tags,
    idempotencyKey: usage.idempotencyKey,
    requestHash: usage.requestHash,
    occurredAt,
    metadata: usage.metadata,
    draws: decision.draws,
  };
}

/**
 * Writes a debit: the event, one draw and one DEBIT ledger entry per grant drawn, and the grants' new
 * remaining amounts, in one statement. The grants' CHECK (remaining >= 0) is the last line of
 * defence: a draw computed from a stale read would abort the transaction rather than overspend.
 */
export async function insertDebit(tx: Tx, account: Pick<LockedAccount, 'id' | 'now' | 'currentPeriodStart'>, debit: NewDebit): Promise<string> {
  const eventId = newId();
  const metadata = debit.metadata === null || debit.metadata === undefined ? null : JSON.stringify(debit.metadata);
  await tx.$executeRaw`
    WITH event AS (
      INSERT INTO usage_events (id, account_id, seat_id, feature_key, credit_type, quantity, credits, overage_credits, tags,
                                idempotency_key, request_hash, occurred_at, period_start, metadata, created_at)
      VALUES (${eventId}, ${account.id}, ${debit.seatId}, ${debit.featureKey}, ${debit.creditType}, ${debit.quantity},
              ${BigInt(debit.credits)}, ${BigInt(debit.overageCredits)}, ${[...debit.tags]}::text[], ${debit.idempotencyKey},
              ${debit.requestHash}, ${debit.occurredAt}, ${account.currentPeriodStart}, ${metadata}::jsonb, ${account.now})
      RETURNING id
    ),
    drawn AS (
      SELECT grant_id, credits, position::int AS position
      FROM unnest(${debit.draws.map((draw) => draw.grantId)}::text[], ${debit.draws.map((draw) => BigInt(draw.credits))}::bigint[])
        WITH ORDINALITY AS d(grant_id, credits, position)
    ),
    debited AS (
      UPDATE grants SET remaining = grants.remaining - drawn.credits FROM drawn WHERE grants.id = drawn.grant_id
      RETURNING grants.id
    ),
    recorded_draws AS (
      INSERT INTO usage_draws (id, usage_event_id, grant_id, credits, position)
      SELECT gen_random_uuid()::text, event.id, drawn.grant_id, drawn.credits, drawn.position FROM drawn, event
    ),
    totals AS (
      INSERT INTO period_usage_totals (account_id, credit_type, period_start, used, overage)
      VALUES (${account.id}, ${debit.creditType}, ${account.currentPeriodStart}, ${BigInt(debit.credits)}, ${BigInt(debit.overageCredits)})
      ON CONFLICT (account_id, credit_type, period_start)
      DO UPDATE SET used = period_usage_totals.used + EXCLUDED.used, overage = period_usage_totals.overage + EXCLUDED.overage
    )
    INSERT INTO ledger_entries (account_id, grant_id, usage_event_id, type, credits, created_at)
    SELECT ${account.id}, drawn.grant_id, event.id, 'DEBIT'::"LedgerEntryType", -drawn.credits, ${account.now}
    FROM drawn, event ORDER BY drawn.position`;
  notifyBalanceChanged(tx, account.id, debit.creditType);
  return eventId;
}

/**
 * Prices a usage, checks entitlement, balance and spend limits, and debits it across grants in the
 * documented order, atomically. The same idempotency key with the same input returns the first event
 * (charged once, forever); with other input it is IDEMPOTENCY_CONFLICT. Refusals write nothing and
 * are not remembered, so the same key may be retried once credits exist.
 *
 * The hot path reads everything it needs in one statement that takes the account lock, decides in
 * memory and writes in one statement; accounts with a period to renew, spend limits or auto top-up
 * take the complete path, which reads step by step. Both make the same decision (a test holds them
 * to it).
 */
export async function recordUsage(tx: Tx, clock: Clock, command: RecordUsageCommand): Promise<RecordUsageOutcome> {
  const usage = normalizeUsage(command);
  const snapshot = await loadDebitSnapshot(tx, clock, {
    accountId: command.accountId,
    featureKey: usage.featureKey,
    seatId: usage.seatId,
    idempotencyKey: usage.idempotencyKey,
  });
  if (!snapshot) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${command.accountId} not found`);
  if (snapshot.needsCompletePath) return recordUsageComplete(tx, clock, usage, command.accountId);
  const account = { id: snapshot.accountId, now: snapshot.now, currentPeriodStart: snapshot.currentPeriodStart };
  const balanceScope = { ...snapshot, accountId: snapshot.accountId };

  if (snapshot.previous) return replay(tx, balanceScope, usage, snapshot.previous);
  const feature = getFeature(snapshot.feature, usage.featureKey);
  const cost = computeUsageCost(feature, { quantity: usage.quantity, credits: usage.credits });
  if (usage.seatId && !snapshot.seat) throw new BillingError(ErrorCode.SEAT_NOT_FOUND, `seat ${usage.seatId} not found in this account`);
  const seat = snapshot.seat;
  const spendable = snapshot.grants.filter(
    (grant) => (grant.seatId === null && (seat === null || seat.canUseSharedPool)) || (seat !== null && grant.seatId === seat.id),
  );
  const decision = await decideBalance(
    { plan: snapshot, grants: spendable, overageUsed: async () => snapshot.overageUsed },
    { feature, seat, cost, tags: usage.tags, allowOverage: true },
  );
  if (decision.kind !== 'authorized') return decision;

  const occurredAt = usage.occurredAt ?? snapshot.now;
  const eventId = await insertDebit(tx, account, toDebit(usage, feature, seat, cost, decision, occurredAt));
  const pool = {
    creditType: feature.creditType,
    periodEnd: snapshot.currentPeriodEnd,
    reserved: snapshot.reserved,
    periodAllocation: snapshot.periodAllocation,
  };
  const before = computeBalance({ ...pool, grants: snapshot.grants, periodUsed: snapshot.periodUsed, overageUsed: snapshot.overageUsed });
  const drawn = new Map(decision.draws.map((draw) => [draw.grantId, draw.credits]));
  const balance = computeBalance({
    ...pool,
    grants: snapshot.grants.map((grant) => ({ ...grant, remaining: grant.remaining - (drawn.get(grant.id) ?? 0) })),
    periodUsed: snapshot.periodUsed + cost,
    overageUsed: snapshot.overageUsed + decision.overage,
  });
  await evaluateBalanceAlerts(tx, account, balance, snapshot.now, { settings: snapshot.alertSettings, before });
  const usageEvent: UsageEventRecord = {
    id: eventId,
    accountId: snapshot.accountId,
    seatId: seat?.id ?? null,
    featureKey: feature.key,
    creditType: feature.creditType,
    quantity: usage.quantity,
    credits: cost,
    refundedCredits: 0,
    overageCredits: decision.overage,
    overageRefunded: 0,
    tags: usage.tags,
    idempotencyKey: usage.idempotencyKey,
    requestHash: usage.requestHash,
    occurredAt,
    metadata: usage.metadata,
    createdAt: snapshot.now,
  };
  return { kind: 'recorded', usageEvent, balance, replayed: false, autoTopUpPurchaseId: null };
}

/** The balance of a pool from its unexpired grants (remaining > 0 or not) and its period figures. */
export function computeBalance(pool: {
  creditType: string;
  grants: ReadonlyArray<{ remaining: number; expiresAt: Date | null }>;
  periodEnd: Date;
  reserved: number;
  periodAllocation: number;
  periodUsed: number;
  overageUsed: number;
}): BalanceRecord {
  let available = 0;
  let expiringAtPeriodEnd = 0;
  let nextExpiry: Date | null = null;
  for (const grant of pool.grants) {
    available += grant.remaining;
    if (grant.remaining <= 0 || !grant.expiresAt) continue;
    if (grant.expiresAt.getTime() <= pool.periodEnd.getTime()) expiringAtPeriodEnd += grant.remaining;
    if (!nextExpiry || grant.expiresAt.getTime() < nextExpiry.getTime()) nextExpiry = grant.expiresAt;
  }
  return {
    creditType: pool.creditType,
    available,
    reserved: pool.reserved,
    periodAllocation: pool.periodAllocation,
    periodUsed: pool.periodUsed,
    percentUsed: computePercentUsed(pool.periodUsed, pool.periodAllocation),
    expiringAtPeriodEnd,
    overageUsed: pool.overageUsed,
    nextExpiry,
  };
}

async function replay(
  tx: Tx,
  balanceScope: BalanceScope,
  usage: NormalizedUsage,
  previous: { id: string; requestHash: string },
): Promise<RecordUsageOutcome> {
  if (previous.requestHash !== usage.requestHash) {
    throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${usage.idempotencyKey} was already used with a different request`, {
      usageEventId: previous.id,
    });
  }
  const usageEvent = await findUsageEvent(tx, previous.id);
  if (!usageEvent) throw new Error('a usage event vanished under its account lock');
  return { kind: 'recorded', usageEvent, balance: await loadBalance(tx, balanceScope, usageEvent.creditType), replayed: true, autoTopUpPurchaseId: null };
}

/**
 * The complete path: renews an ended period first (so credits are spendable the instant a period
 * starts, job runner or not), then reads step by step, checks spend limits and queues auto top-ups.
 */
export async function recordUsageComplete(tx: Tx, clock: Clock, usage: NormalizedUsage, accountId: string): Promise<RecordUsageOutcome> {
  const account = await renewIfPeriodEnded(tx, await lockAccount(tx, clock, accountId));
  const balanceScope = { ...account, accountId: account.id };

  const previous = await findUsageEventByKey(tx, account.id, usage.idempotencyKey);
  if (previous) return replay(tx, balanceScope, usage, previous);

  const feature = getFeature(await findFeature(tx, usage.featureKey), usage.featureKey);
  const cost = computeUsageCost(feature, { quantity: usage.quantity, credits: usage.credits });
  const plan = await getPlanById(tx, account.planId);
  const seat = usage.seatId ? await getActiveSeat(tx, account.id, usage.seatId) : null;
  const decision = await authorizeSpend(tx, account, plan, { feature, seat, cost, tags: usage.tags, allowOverage: true });
  if (decision.kind === 'spendLimitExceeded') await raiseSpendLimitReached(tx, account, decision.spendLimit);
  if (decision.kind !== 'authorized') return decision;

  const eventId = await insertDebit(tx, account, toDebit(usage, feature, seat, cost, decision, usage.occurredAt ?? account.now));
  for (const limit of decision.limitsReached) await raiseSpendLimitReached(tx, account, limit);
  const autoTopUpPurchaseId =
    account.hasAutoTopUp && decision.sharedAfter !== null ? await queueAutoTopUp(tx, account, feature.creditType, decision.sharedAfter) : null;
  const usageEvent = await findUsageEvent(tx, eventId);
  if (!usageEvent) throw new Error('usage event vanished inside its own transaction');
  const balance = await loadBalance(tx, balanceScope, feature.creditType);
  await evaluateBalanceAlerts(tx, account, balance, account.now);
  return { kind: 'recorded', usageEvent, balance, replayed: false, autoTopUpPurchaseId };
}
