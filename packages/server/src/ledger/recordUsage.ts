import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertUsageAllowed } from '../accounts/usageRefusal.ts';
import { findFeature, type FeatureRecord } from '../catalog/features.ts';
import type { FeatureCache } from '../catalog/featureCache.ts';
import { getPlanById } from '../catalog/plans.ts';
import type { Database } from '../db/database.ts';
import { inTransaction, type Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { MAX_CREDITS } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { flushEvents, notifyBalanceChanged } from '../realtime/events.ts';
import { authorizeSpend, getActiveSeat, type SpendRefusal } from './authorizeSpend.ts';
import { computePercentUsed, loadBalance, type BalanceRecord, type BalanceScope } from './balances.ts';
import type { Draw } from './balanceDecision.ts';
import { chargeHotOne, type HotUsageQueue, type PricedHotUsage } from './hotUsageQueue.ts';
import { computeUsageCost } from './pricing.ts';
import { rememberRefusal, storedRefusal } from './refusals.ts';
import { assertIdempotencyKey, assertMetadata, normalizeTags } from './usageInput.ts';
import { findUsageEvent, findUsageEventByKey, type UsageEventRecord } from './usageEvents.ts';
import { ledgerPolicies } from './ledgerPolicies.ts';

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
 * Writes a debit: the event, one DEBIT ledger entry per grant drawn (in consumption order: they are
 * the event's draws), and the grants' new remaining amounts, in one statement. The grants' CHECK (remaining >= 0) is the last line of
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

/** How far before and after the account's now a usage may say it occurred. */
export interface OccurredAtWindow {
  maxPastDays: number;
  maxFutureMinutes: number;
}

export const DEFAULT_OCCURRED_AT_WINDOW: OccurredAtWindow = { maxPastDays: 35, maxFutureMinutes: 5 };

/**
 * Refuses an occurredAt outside the window around the account's now (its test clock's, if any):
 * usage from long ago would land in a closed period's reports, from the future in one not begun.
 */
export function assertOccurredAtWithin(occurredAt: Date | null, now: Date, window: OccurredAtWindow): void {
  if (occurredAt === null) return;
  const earliest = now.getTime() - window.maxPastDays * 86_400_000;
  const latest = now.getTime() + window.maxFutureMinutes * 60_000;
  if (occurredAt.getTime() < earliest || occurredAt.getTime() > latest) {
    throw invalidInput(
      `occurredAt must be from ${window.maxPastDays} days before to ${window.maxFutureMinutes} minutes after now (${now.toISOString()})`,
      'occurredAt',
    );
  }
}

export interface UsageHotPath {
  database: Pick<Database, 'statement'>;
  features: FeatureCache;
  /** The occurredAt window (default DEFAULT_OCCURRED_AT_WINDOW). */
  occurredAtWindow?: OccurredAtWindow;
  /** Group commit under load; without it each usage takes its own statement. */
  queue?: HotUsageQueue;
}

export type HotPathOutcome = Extract<RecordUsageOutcome, { kind: 'recorded' }> | { kind: 'needsCompletePath'; reason: string };

export interface PricedUsage {
  eventId: string;
  accountId: string;
  usage: NormalizedUsage;
  feature: FeatureRecord;
  cost: number;
}

/** The figures the database answers for a usage it charged (without overage: the hot path takes none). */
export interface HotPathFigures {
  creditType: string;
  now: number;
  occurredAt: number;
  available: number;
  reserved: number;
  periodAllocation: number;
  periodUsed: number;
  overageUsed: number;
  expiringAtPeriodEnd: number;
  nextExpiry: number | null;
}

export function toRecordedOutcome(priced: PricedUsage, figures: HotPathFigures): Extract<RecordUsageOutcome, { kind: 'recorded' }> {
  const { usage } = priced;
  const usageEvent: UsageEventRecord = {
    id: priced.eventId,
    accountId: priced.accountId,
    seatId: usage.seatId,
    featureKey: priced.feature.key,
    creditType: figures.creditType,
    quantity: usage.quantity,
    credits: priced.cost,
    refundedCredits: 0,
    overageCredits: 0,
    overageRefunded: 0,
    tags: usage.tags,
    idempotencyKey: usage.idempotencyKey,
    requestHash: usage.requestHash,
    occurredAt: new Date(Number(figures.occurredAt)),
    metadata: usage.metadata,
    createdAt: new Date(Number(figures.now)),
  };
  const periodUsed = Number(figures.periodUsed);
  const periodAllocation = Number(figures.periodAllocation);
  const balance: BalanceRecord = {
    creditType: figures.creditType,
    available: Number(figures.available),
    reserved: Number(figures.reserved),
    periodAllocation,
    periodUsed,
    percentUsed: computePercentUsed(periodUsed, periodAllocation),
    expiringAtPeriodEnd: Number(figures.expiringAtPeriodEnd),
    overageUsed: Number(figures.overageUsed),
    nextExpiry: figures.nextExpiry === null ? null : new Date(Number(figures.nextExpiry)),
  };
  return { kind: 'recorded', usageEvent, balance, replayed: false };
}

/**
 * The usage priced from the cached feature, or null when the complete path must decide: an unknown
 * feature, or a price that refuses the usage (a replay of a key must still answer with its first
 * event even if the price has since changed).
 */
export async function priceUsage(
  features: FeatureCache,
  usage: NormalizedUsage,
  accountId: string,
): Promise<PricedHotUsage | null> {
  // The occurredAt window is judged against the account's clock, which the complete path reads under its lock.
  if (usage.occurredAt !== null) return null;
  const cached = await features.get(usage.featureKey);
  if (!cached) return null;
  try {
    const cost = computeUsageCost(cached.feature, { quantity: usage.quantity, credits: usage.credits });
    return { eventId: newId(), accountId, usage, feature: cached.feature, cost, fingerprint: cached.fingerprint };
  } catch (error) {
    if (error instanceof BillingError) return null;
    throw error;
  }
}

/**
 * The hot path: the usage priced from the cached feature, then one statement in a transaction of
 * its own that locks the account, checks, draws in consumption order and writes (`record_usage_hot`
 * alone, or `record_usage_hot_batch` for the usages queued together under load: see HotUsageQueue).
 * It charges only the plain case; for anything else (see the functions' migration) it writes nothing
 * and says why, and the caller takes the complete path.
 */
export async function recordUsageHot(hot: UsageHotPath, clock: Clock, usage: NormalizedUsage, accountId: string): Promise<HotPathOutcome> {
  const priced = await priceUsage(hot.features, usage, accountId);
  if (!priced) return { kind: 'needsCompletePath', reason: 'price' };
  // A batch never takes a seat's usage (its pools differ per seat): it goes alone.
  let result = hot.queue && usage.seatId === null ? await hot.queue.charge(priced) : await chargeHotOne(hot.database, clock.now(), priced);
  if ('reason' in result && result.reason === 'batch') result = await chargeHotOne(hot.database, clock.now(), priced);
  if ('charged' in result) return toRecordedOutcome(priced, result.charged);
  if (result.reason === 'feature') hot.features.forget(usage.featureKey);
  return { kind: 'needsCompletePath', reason: result.reason };
}

/**
 * Prices a usage, checks entitlement, balance and spend limits, and debits it atomically across
 * grants in the documented order. The same idempotency key with the same input returns the first
 * event (charged once, forever); with other input it is IDEMPOTENCY_CONFLICT. A refusal is final
 * too: it is remembered for IDEMPOTENCY_REFUSAL_TTL_HOURS (refusals.ts) and a late duplicate of its
 * key gets the same refusal even after a top-up; a client that wants to try again sends a new key.
 *
 * The hot path (one statement) charges the plain case; everything else (a renewal due, spend
 * limits, auto top-up, replays, refusals, overage, alert levels) runs the complete path in one
 * transaction. Both make the same decisions (a property test holds them to it).
 */
export async function recordUsage(prisma: PrismaClient, hot: UsageHotPath, clock: Clock, command: RecordUsageCommand): Promise<RecordUsageOutcome> {
  const usage = normalizeUsage(command);
  const outcome = await recordUsageHot(hot, clock, usage, command.accountId);
  if (outcome.kind === 'recorded') {
    flushEvents(prisma, [{ topic: 'balance', accountId: command.accountId, creditType: outcome.balance.creditType }]);
    return outcome;
  }
  return inTransaction(prisma, (tx) => recordUsageComplete(tx, clock, usage, command.accountId, hot.occurredAtWindow));
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
  return { kind: 'recorded', usageEvent, balance: await loadBalance(tx, balanceScope, usageEvent.creditType), replayed: true };
}

/**
 * A period's usage total is stated as a JSON number: a debit that would take it beyond 2^53 - 1 is
 * refused (the constraint period_usage_totals_within_credits holds it on every path even so).
 */
async function assertPeriodTotalWithin(tx: Tx, account: LockedAccount, creditType: string, cost: number): Promise<void> {
  const [total] = await tx.$queryRaw<Array<{ used: bigint }>>`
    SELECT used FROM period_usage_totals WHERE account_id = ${account.id} AND credit_type = ${creditType} AND period_start = ${account.currentPeriodStart}`;
  if ((total?.used ?? 0n) + BigInt(cost) > BigInt(MAX_CREDITS)) {
    throw new BillingError(ErrorCode.INVALID_CREDITS, `this period's usage of ${creditType} would pass ${MAX_CREDITS} credits, the most a total can state`, {
      field: 'credits',
    });
  }
}

/**
 * The complete path: renews an ended period first (so credits are spendable the instant a period
 * starts, job runner or not), then reads step by step, checks spend limits and queues auto top-ups.
 */
export async function recordUsageComplete(
  tx: Tx,
  clock: Clock,
  usage: NormalizedUsage,
  accountId: string,
  occurredAtWindow: OccurredAtWindow = DEFAULT_OCCURRED_AT_WINDOW,
): Promise<RecordUsageOutcome> {
  const policies = ledgerPolicies();
  const account = await policies.accountLocked(tx, await lockAccount(tx, clock, accountId), 'periodEnded');
  const balanceScope = { ...account, accountId: account.id };

  const previous = await findUsageEventByKey(tx, account.id, usage.idempotencyKey);
  if (previous) return replay(tx, balanceScope, usage, previous);
  const refusalKey = { accountId: account.id, kind: 'usage' as const, idempotencyKey: usage.idempotencyKey, requestHash: usage.requestHash };
  const refused = await storedRefusal(tx, refusalKey);
  if (refused) return refused;
  await assertUsageAllowed(tx, account);
  assertOccurredAtWithin(usage.occurredAt, account.now, occurredAtWindow);

  const feature = getFeature(await findFeature(tx, usage.featureKey), usage.featureKey);
  const cost = computeUsageCost(feature, { quantity: usage.quantity, credits: usage.credits });
  const plan = await getPlanById(tx, account.planId);
  const seat = usage.seatId ? await getActiveSeat(tx, account.id, usage.seatId) : null;
  const decision = await authorizeSpend(tx, account, plan, { feature, seat, cost, tags: usage.tags, allowOverage: true });
  if (decision.kind === 'spendLimitExceeded') await policies.spendLimitReached(tx, account, decision.spendLimit);
  if (decision.kind !== 'authorized') {
    await rememberRefusal(tx, { ...refusalKey, refusal: decision, at: clock.now() });
    return decision;
  }

  await assertPeriodTotalWithin(tx, account, feature.creditType, cost);
  const eventId = await insertDebit(tx, account, toDebit(usage, feature, seat, cost, decision, usage.occurredAt ?? account.now));
  for (const limit of decision.limitsReached) await policies.spendLimitReached(tx, account, limit);
  if (decision.sharedAfter !== null) {
    await policies.sharedPoolDrawn(tx, account, feature.creditType, { before: decision.sharedBefore, after: decision.sharedAfter });
  }
  const usageEvent = await findUsageEvent(tx, eventId);
  if (!usageEvent) throw new Error('usage event vanished inside its own transaction');
  const balance = await loadBalance(tx, balanceScope, feature.creditType);
  await policies.balanceChanged(tx, account, balance);
  return { kind: 'recorded', usageEvent, balance, replayed: false };
}
