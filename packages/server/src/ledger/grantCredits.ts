import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertCode, assertMoney } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, MAX_CREDITS } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { Prisma } from '../generated/prisma/client.ts';
import { GRANT_COLUMNS, insertGrant, toGrantRecord, type GrantCost, type GrantFunding, type GrantRecord, type GrantRow, type GrantSource } from './grants.ts';
import { getActiveSeat } from './authorizeSpend.ts';
import { assertIdempotencyKey, assertMetadata, assertStorableText } from './usageInput.ts';

export interface GrantCreditsCommand {
  accountId: string;
  creditType: string;
  amount: number;
  source: GrantSource;
  expiresAt?: Date | null;
  effectiveAt?: Date | null;
  seatId?: string | null;
  priority?: number | null;
  idempotencyKey: string;
  /** What one credit cost and whether it was paid for; absent: the rule by source (bonus, trial, adjustment: promotional at zero). */
  costBasis?: { unitCost: number; currency?: string | null; funding: GrantFunding } | null;
  /** Only these features (of the grant's credit type) may spend it; absent or empty: every feature. */
  featureKeys?: readonly string[] | null;
  /** Why (kept on the grant, at most MAX_REASON_LENGTH characters). */
  reason?: string | null;
  /** The operator's JSON kept on the grant (at most MAX_METADATA_BYTES). */
  metadata?: unknown;
}

export const MAX_REASON_LENGTH = 500;

/** A reason as corrections require it: not blank, at most MAX_REASON_LENGTH characters, no control characters but line breaks and tabs. */
export function assertReason(reason: string, field = 'reason'): string {
  const text = assertStorableText(reason, field).trim();
  if (text.length === 0 || text.length > MAX_REASON_LENGTH || /\p{Cc}/u.test(text.replace(/[\n\t]/g, ' '))) {
    throw invalidInput(`${field} must be 1-${MAX_REASON_LENGTH} characters of text`, field);
  }
  return text;
}

/** An optional reason (grantCredits): absent stays absent, given it must be one. */
export function assertOptionalReason(reason: string | null | undefined): string | null {
  return reason === null || reason === undefined ? null : assertReason(reason);
}

export const MAX_GRANT_FEATURES = 50;

/**
 * The features a grant is scoped to, sorted and without repeats: at most MAX_GRANT_FEATURES, each an
 * existing feature of the grant's own credit type (a grant of one pool can never pay another's).
 */
export async function assertGrantFeatures(tx: Tx, creditType: string, featureKeys: readonly string[] | null | undefined): Promise<string[]> {
  const keys = [...new Set(featureKeys ?? [])].sort();
  if (keys.length > MAX_GRANT_FEATURES) throw invalidInput(`a grant may list at most ${MAX_GRANT_FEATURES} features`, 'featureKeys');
  if (keys.length === 0) return keys;
  const features = await tx.feature.findMany({ where: { key: { in: keys } }, select: { key: true, creditType: true } });
  for (const key of keys) {
    const feature = features.find((candidate) => candidate.key === key);
    if (!feature) throw new BillingError(ErrorCode.UNKNOWN_FEATURE, `unknown feature ${key}`, { featureKey: key });
    if (feature.creditType !== creditType) throw invalidInput(`feature ${key} spends ${feature.creditType}, not ${creditType}`, 'featureKeys');
  }
  return keys;
}

/** The smallest positive unit cost a grant stores (numeric(40, 20)). */
const MIN_UNIT_COST = 1e-20;

/**
 * A unit cost above 0 but below what a grant stores would be written as 0: PAID credits of no value,
 * which the refusal of a PAID unit cost of 0 is there to prevent.
 */
export function assertStorableUnitCost(unitCost: number): void {
  if (unitCost > 0 && unitCost < MIN_UNIT_COST) throw invalidInput('costBasis.unitCost must be 0 or at least 10^-20', 'costBasis.unitCost');
}

export function assertCostBasis(basis: GrantCreditsCommand['costBasis']): GrantCost | null {
  if (!basis) return null;
  if (!(Number.isFinite(basis.unitCost) && basis.unitCost >= 0 && basis.unitCost <= 1e12)) {
    throw invalidInput('costBasis.unitCost must be minor units per credit, from 0 to 10^12', 'costBasis.unitCost');
  }
  assertStorableUnitCost(basis.unitCost);
  const currency = basis.currency ? assertMoney(0, basis.currency).currency : null;
  if (basis.unitCost > 0 && !currency) throw invalidInput('costBasis.currency is required with a unit cost above 0', 'costBasis.currency');
  if (basis.funding === 'PAID' && basis.unitCost === 0) throw invalidInput('PAID credits have a unit cost above 0', 'costBasis.funding');
  return { unitCost: basis.unitCost, currency, funding: basis.funding };
}

/**
 * An operator's grant (bonus, trial, adjustment, a purchase recorded elsewhere). Idempotent on the
 * key like usage: a retry returns the first grant, other input under the same key is a conflict.
 */
export async function grantCredits(tx: Tx, clock: Clock, command: GrantCreditsCommand): Promise<GrantRecord> {
  const idempotencyKey = assertIdempotencyKey(command.idempotencyKey);
  const creditType = assertCode(command.creditType, 'creditType');
  const amount = assertCredits(command.amount, 'amount');
  if (command.priority !== undefined && command.priority !== null && (!Number.isSafeInteger(command.priority) || command.priority < 0 || command.priority > 1_000_000)) {
    throw invalidInput('priority must be a whole number from 0 to 1000000', 'priority');
  }
  const cost = assertCostBasis(command.costBasis);
  const featureKeys = await assertGrantFeatures(tx, creditType, command.featureKeys);
  const reason = assertOptionalReason(command.reason);
  const metadata = assertMetadata(command.metadata);
  const requestHash = hashRequest({
    ...(cost ? { cost } : {}),
    ...(featureKeys.length > 0 ? { featureKeys } : {}),
    // Left out when absent, so that keys stored before grants had them still match their retries.
    ...(reason !== null ? { reason } : {}),
    ...(metadata !== null ? { metadata } : {}),
    creditType,
    amount,
    source: command.source,
    expiresAt: command.expiresAt?.toISOString() ?? null,
    effectiveAt: command.effectiveAt?.toISOString() ?? null,
    seatId: command.seatId ?? null,
    priority: command.priority ?? null,
  });
  const account = await lockAccount(tx, clock, command.accountId);

  const previous = await tx.$queryRaw<Array<GrantRow & { request_hash: string | null }>>`
    SELECT ${Prisma.raw(GRANT_COLUMNS)}, request_hash FROM grants
    WHERE account_id = ${account.id} AND idempotency_key = ${idempotencyKey}`;
  if (previous[0]) {
    if (previous[0].request_hash !== requestHash) {
      throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${idempotencyKey} was already used with a different grant`);
    }
    return toGrantRecord(previous[0]);
  }

  const effectiveAt = command.effectiveAt ?? account.now;
  assertExpiryAfter(command.expiresAt ?? null, effectiveAt, account.now);
  const seatId = command.seatId ? (await getActiveSeat(tx, account.id, command.seatId)).id : null;
  await assertPoolRoom(tx, account, creditType, amount, command.source);
  return insertGrant(
    tx,
    {
      accountId: account.id,
      seatId,
      creditType,
      source: command.source,
      amount,
      priority: command.priority ?? undefined,
      effectiveAt,
      expiresAt: command.expiresAt ?? null,
      idempotencyKey,
      requestHash,
      cost,
      featureKeys,
      reason,
      metadata,
    },
    account.now,
  );
}

export function assertExpiryAfter(expiresAt: Date | null, effectiveAt: Date, now: Date): void {
  if (expiresAt && expiresAt.getTime() <= Math.max(effectiveAt.getTime(), now.getTime())) {
    throw invalidInput('expiresAt must be in the future and after effectiveAt', 'expiresAt');
  }
}

/** Balances are sums of grants: each one within range does not make their sum so. */
export async function poolHasRoom(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>,
  creditType: string,
  amount: number,
  source: GrantSource,
): Promise<boolean> {
  const [pool] = await tx.$queryRaw<Array<{ remaining: bigint; allocation: bigint }>>`
    SELECT coalesce(sum(remaining), 0)::bigint AS remaining,
           coalesce(sum(amount) FILTER (WHERE source IN ('PLAN', 'SEAT') AND period_start = ${account.currentPeriodStart}), 0)::bigint AS allocation
    FROM grants WHERE account_id = ${account.id} AND credit_type = ${creditType}`;
  const allocates = source === 'PLAN' || source === 'SEAT';
  return !(BigInt(amount) + (pool?.remaining ?? 0n) > BigInt(MAX_CREDITS) || (allocates && BigInt(amount) + (pool?.allocation ?? 0n) > BigInt(MAX_CREDITS)));
}

/** INVALID_CREDITS when `amount` more would take the pool beyond MAX_CREDITS (poolHasRoom). */
export async function assertPoolRoom(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>,
  creditType: string,
  amount: number,
  source: GrantSource,
): Promise<void> {
  if (!(await poolHasRoom(tx, account, creditType, amount, source))) {
    throw new BillingError(ErrorCode.INVALID_CREDITS, `amount would take the ${creditType} pool beyond ${MAX_CREDITS} credits`, { field: 'amount' });
  }
}
