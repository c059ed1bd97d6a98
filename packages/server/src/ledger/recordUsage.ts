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
import { authorizeSpend, getActiveSeat, type SpendRefusal } from './authorizeSpend.ts';
import { loadBalance, type BalanceRecord } from './balances.ts';
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

/**
 * Writes a debit: the event, one draw and one DEBIT ledger entry per grant drawn, and the grants' new
 * remaining amounts, in one statement. The grants' CHECK (remaining >= 0) is the last line of
 * defence: a draw computed from a stale read would abort the transaction rather than overspend.
 */
export async function insertDebit(tx: Tx, account: LockedAccount, debit: NewDebit): Promise<string> {
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
 * are not remembered, so the same key may be retried once credits exist. A period that has ended is
 * renewed first, so credits are spendable the instant a period starts, job runner or not.
 */
export async function recordUsage(tx: Tx, clock: Clock, command: RecordUsageCommand): Promise<RecordUsageOutcome> {
  const usage = normalizeUsage(command);
  const account = await renewIfPeriodEnded(tx, await lockAccount(tx, clock, command.accountId));
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
    return {
      kind: 'recorded',
      usageEvent: previous,
      balance: await loadBalance(tx, balanceScope, previous.creditType),
      replayed: true,
      autoTopUpPurchaseId: null,
    };
  }

  const feature = getFeature(await findFeature(tx, usage.featureKey), usage.featureKey);
  const cost = computeUsageCost(feature, { quantity: usage.quantity, credits: usage.credits });
  const plan = await getPlanById(tx, account.planId);
  const seat = usage.seatId ? await getActiveSeat(tx, account.id, usage.seatId) : null;
  const decision = await authorizeSpend(tx, account, plan, { feature, seat, cost, tags: usage.tags, allowOverage: true });
  if (decision.kind === 'spendLimitExceeded') await raiseSpendLimitReached(tx, account, decision.spendLimit);
  if (decision.kind !== 'authorized') return decision;

  const eventId = await insertDebit(tx, account, {
    featureKey: feature.key,
    creditType: feature.creditType,
    seatId: seat?.id ?? null,
    quantity: usage.quantity,
    credits: cost,
    overageCredits: decision.overage,
    tags: usage.tags,
    idempotencyKey: usage.idempotencyKey,
    requestHash: usage.requestHash,
    occurredAt: usage.occurredAt ?? account.now,
    metadata: usage.metadata,
    draws: decision.draws,
  });
  for (const limit of decision.limitsReached) await raiseSpendLimitReached(tx, account, limit);
  const autoTopUpPurchaseId =
    account.hasAutoTopUp && decision.sharedAfter !== null ? await queueAutoTopUp(tx, account, feature.creditType, decision.sharedAfter) : null;
  const usageEvent = await findUsageEvent(tx, eventId);
  if (!usageEvent) throw new Error('usage event vanished inside its own transaction');
  const balance = await loadBalance(tx, balanceScope, feature.creditType);
  await evaluateBalanceAlerts(tx, account, balance, account.now);
  return { kind: 'recorded', usageEvent, balance, replayed: false, autoTopUpPurchaseId };
}
