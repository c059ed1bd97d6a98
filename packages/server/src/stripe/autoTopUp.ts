import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertCode } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { invalidInput } from '../domain/errors.ts';
import { newId } from '../domain/ids.ts';
import { publishAfterCommit } from '../realtime/events.ts';
import { createPurchase, getCreditPack, MAX_PACKS_PER_PURCHASE } from './purchases.ts';

export interface AutoTopUpRecord {
  id: string;
  accountId: string;
  creditType: string;
  enabled: boolean;
  thresholdCredits: number;
  packCode: string;
  /** Buy as many packs as bring the shared balance to this; null: one pack. */
  targetBalanceCredits: number | null;
  maxPurchasesPerPeriod: number;
  purchasesThisPeriod: number;
  maxPurchasesPerMonth: number | null;
  /** Minor units of the pack's currency. */
  maxAmountPerMonth: number | null;
  purchasesThisMonth: number;
  amountThisMonth: number;
  currency: string;
  maxConsecutiveFailures: number;
  consecutiveFailures: number;
  retryNotBefore: Date | null;
  pausedAt: Date | null;
  armed: boolean;
  /** A purchase of this configuration is under way (not yet paid, failed or refunded). */
  unsettled: boolean;
}

export interface ConfigureAutoTopUpCommand {
  accountId: string;
  creditType: string;
  enabled: boolean;
  thresholdCredits: number;
  packCode: string;
  maxPurchasesPerPeriod: number;
  targetBalanceCredits?: number | null;
  maxPurchasesPerMonth?: number | null;
  maxAmountPerMonth?: number | null;
  maxConsecutiveFailures?: number | null;
}

export const MAX_AUTO_TOP_UPS_PER_PERIOD = 100;
export const MAX_AUTO_TOP_UPS_PER_MONTH = 1_000;
/** A single payment can be at most this many minor units (Stripe's limit for most currencies). */
export const MAX_AUTO_TOP_UP_AMOUNT_PER_MONTH = 99_999_999;
export const DEFAULT_MAX_CONSECUTIVE_FAILURES = 3;
export const MAX_CONSECUTIVE_FAILURES_LIMIT = 10;

/** The calendar month (UTC) holding `instant`: the window of the monthly caps, on the account's clock. */
export function calendarMonthOf(instant: Date): { start: Date; end: Date } {
  return {
    start: new Date(Date.UTC(instant.getUTCFullYear(), instant.getUTCMonth(), 1)),
    end: new Date(Date.UTC(instant.getUTCFullYear(), instant.getUTCMonth() + 1, 1)),
  };
}

/** Auto top-ups of the account with what they bought (or are buying) this period and this calendar month. */
export async function listAutoTopUps(
  tx: Tx,
  account: Pick<LockedAccount, 'id' | 'currentPeriodStart' | 'now'>,
  creditType?: string,
): Promise<AutoTopUpRecord[]> {
  const month = calendarMonthOf(account.now);
  const rows = await tx.$queryRaw<
    Array<{
      id: string;
      account_id: string;
      credit_type: string;
      enabled: boolean;
      threshold_credits: bigint;
      pack_code: string;
      target_balance_credits: bigint | null;
      max_purchases_per_period: number;
      max_purchases_per_month: number | null;
      max_amount_per_month: number | null;
      max_consecutive_failures: number;
      consecutive_failures: number;
      retry_not_before: Date | null;
      paused_at: Date | null;
      armed: boolean;
      currency: string;
      purchases: bigint;
      month_purchases: bigint;
      month_amount: bigint;
      unsettled: boolean;
    }>
  >`
    SELECT c.id, c.account_id, c.credit_type, c.enabled, c.threshold_credits, c.pack_code, c.target_balance_credits,
           c.max_purchases_per_period, c.max_purchases_per_month, c.max_amount_per_month, c.max_consecutive_failures,
           c.consecutive_failures, c.retry_not_before, c.paused_at, c.armed, pack.price_currency AS currency,
           (SELECT count(*) FROM top_up_purchases p
             WHERE p.auto_top_up_config_id = c.id AND p.period_start = ${account.currentPeriodStart} AND p.status <> 'FAILED') AS purchases,
           (SELECT count(*) FROM top_up_purchases p
             WHERE p.auto_top_up_config_id = c.id AND p.created_at >= ${month.start} AND p.created_at < ${month.end}
               AND p.status <> 'FAILED') AS month_purchases,
           (SELECT coalesce(sum(p.amount), 0) FROM top_up_purchases p
             WHERE p.auto_top_up_config_id = c.id AND p.created_at >= ${month.start} AND p.created_at < ${month.end}
               AND p.status <> 'FAILED' AND p.currency = pack.price_currency) AS month_amount,
           EXISTS (SELECT 1 FROM top_up_purchases p
             WHERE p.auto_top_up_config_id = c.id AND p.status NOT IN ('COMPLETED', 'FAILED', 'REFUNDED')) AS unsettled
    FROM auto_top_up_configs c JOIN credit_packs pack ON pack.code = c.pack_code
    WHERE c.account_id = ${account.id} AND (${creditType ?? null}::text IS NULL OR c.credit_type = ${creditType ?? null})
    ORDER BY c.credit_type`;
  return rows.map((row) => ({
    id: row.id,
    accountId: row.account_id,
    creditType: row.credit_type,
    enabled: row.enabled,
    thresholdCredits: toCredits(row.threshold_credits),
    packCode: row.pack_code,
    targetBalanceCredits: row.target_balance_credits === null ? null : toCredits(row.target_balance_credits),
    maxPurchasesPerPeriod: row.max_purchases_per_period,
    purchasesThisPeriod: Number(row.purchases),
    maxPurchasesPerMonth: row.max_purchases_per_month,
    maxAmountPerMonth: row.max_amount_per_month,
    purchasesThisMonth: Number(row.month_purchases),
    amountThisMonth: Number(row.month_amount),
    currency: row.currency,
    maxConsecutiveFailures: row.max_consecutive_failures,
    consecutiveFailures: row.consecutive_failures,
    retryNotBefore: row.retry_not_before,
    pausedAt: row.paused_at,
    armed: row.armed,
    unsettled: row.unsettled,
  }));
}

function assertCount(value: number | null | undefined, field: string, max: number, allowNull: boolean): number | null {
  if (value === null || value === undefined) {
    if (allowNull) return null;
    throw invalidInput(`${field} is required`, field);
  }
  if (!Number.isInteger(value) || value < 0 || value > max) throw invalidInput(`${field} must be from 0 to ${max}`, field);
  return value;
}

/**
 * Sets (or replaces) the auto top-up of one credit type of the account. A new configuration is a
 * fresh start: armed, no failures, no backoff, not paused (the only way out of a pause).
 */
export async function configureAutoTopUp(tx: Tx, clock: Clock, command: ConfigureAutoTopUpCommand): Promise<AutoTopUpRecord> {
  const account = await lockAccount(tx, clock, command.accountId);
  const creditType = assertCode(command.creditType, 'creditType');
  const thresholdCredits = assertCredits(command.thresholdCredits, 'thresholdCredits', { allowZero: true });
  const maxPurchasesPerPeriod = assertCount(command.maxPurchasesPerPeriod, 'maxPurchasesPerPeriod', MAX_AUTO_TOP_UPS_PER_PERIOD, false) ?? 0;
  const maxPurchasesPerMonth = assertCount(command.maxPurchasesPerMonth, 'maxPurchasesPerMonth', MAX_AUTO_TOP_UPS_PER_MONTH, true);
  const maxAmountPerMonth = assertCount(command.maxAmountPerMonth, 'maxAmountPerMonth', MAX_AUTO_TOP_UP_AMOUNT_PER_MONTH, true);
  let targetBalanceCredits: number | null = null;
  if (command.targetBalanceCredits !== null && command.targetBalanceCredits !== undefined) {
    targetBalanceCredits = assertCredits(command.targetBalanceCredits, 'targetBalanceCredits');
    // At or below the threshold a purchase would never lift the balance out of the crossing.
    if (targetBalanceCredits <= thresholdCredits) throw invalidInput('targetBalanceCredits must be above thresholdCredits', 'targetBalanceCredits');
  }
  const maxConsecutiveFailures = command.maxConsecutiveFailures ?? DEFAULT_MAX_CONSECUTIVE_FAILURES;
  if (!Number.isInteger(maxConsecutiveFailures) || maxConsecutiveFailures < 1 || maxConsecutiveFailures > MAX_CONSECUTIVE_FAILURES_LIMIT) {
    throw invalidInput(`maxConsecutiveFailures must be from 1 to ${MAX_CONSECUTIVE_FAILURES_LIMIT}`, 'maxConsecutiveFailures');
  }
  const pack = await getCreditPack(tx, command.packCode);
  if (pack.creditType !== creditType) {
    throw invalidInput(`pack ${pack.code} adds ${pack.creditType} credits, not ${creditType}`, 'packCode');
  }
  const data = {
    enabled: command.enabled,
    thresholdCredits: BigInt(thresholdCredits),
    packCode: pack.code,
    maxPurchasesPerPeriod,
    targetBalanceCredits: targetBalanceCredits === null ? null : BigInt(targetBalanceCredits),
    maxPurchasesPerMonth,
    maxAmountPerMonth,
    maxConsecutiveFailures,
  };
  await tx.autoTopUpConfig.upsert({
    where: { accountId_creditType: { accountId: account.id, creditType } },
    create: { id: newId(), accountId: account.id, creditType, createdAt: account.now, ...data },
    update: { ...data, consecutiveFailures: 0, retryNotBefore: null, pausedAt: null, armed: true },
  });
  const [record] = await listAutoTopUps(tx, account, creditType);
  if (!record) throw new Error('auto top-up vanished inside its own transaction');
  return record;
}

export interface SharedBalanceChange {
  /** The shared pool's spendable credits before the spend and after it. */
  before: number;
  after: number;
}

export type AutoTopUpDecision =
  | { kind: 'buy'; packs: number }
  | { kind: 'wait'; armed: boolean; reason: 'disabled' | 'above threshold' | 'bought for this crossing' | 'paused' | 'backoff' | 'under way' | 'cap' };

/**
 * Whether a spend that left the shared balance at `change.after` buys, and how many packs. It buys
 * once per crossing: only when armed, and armed again only once the balance is seen at or above the
 * threshold (before a later spend, or after one). A crossing that cannot buy yet (paused, backoff, a
 * purchase under way, a cap) stays armed, so it buys at the first spend after that clears.
 */
export function decideAutoTopUp(
  config: Pick<
    AutoTopUpRecord,
    | 'enabled' | 'thresholdCredits' | 'targetBalanceCredits' | 'armed' | 'pausedAt' | 'retryNotBefore' | 'unsettled'
    | 'maxPurchasesPerPeriod' | 'purchasesThisPeriod' | 'maxPurchasesPerMonth' | 'purchasesThisMonth' | 'maxAmountPerMonth' | 'amountThisMonth'
  >,
  pack: { credits: number; priceAmount: number },
  change: SharedBalanceChange,
  now: Date,
): AutoTopUpDecision {
  if (!config.enabled) return { kind: 'wait', armed: config.armed, reason: 'disabled' };
  if (change.after >= config.thresholdCredits) return { kind: 'wait', armed: true, reason: 'above threshold' };
  const armed = config.armed || change.before >= config.thresholdCredits;
  if (!armed) return { kind: 'wait', armed: false, reason: 'bought for this crossing' };
  if (config.pausedAt) return { kind: 'wait', armed, reason: 'paused' };
  if (config.retryNotBefore && config.retryNotBefore.getTime() > now.getTime()) return { kind: 'wait', armed, reason: 'backoff' };
  if (config.unsettled) return { kind: 'wait', armed, reason: 'under way' };
  if (config.purchasesThisPeriod >= config.maxPurchasesPerPeriod) return { kind: 'wait', armed, reason: 'cap' };
  if (config.maxPurchasesPerMonth !== null && config.purchasesThisMonth >= config.maxPurchasesPerMonth) return { kind: 'wait', armed, reason: 'cap' };
  let packs = config.targetBalanceCredits === null ? 1 : Math.ceil((config.targetBalanceCredits - change.after) / pack.credits);
  packs = Math.min(Math.max(packs, 1), MAX_PACKS_PER_PURCHASE);
  if (config.maxAmountPerMonth !== null) {
    // Fewer packs when the money cap allows fewer: the target is approached, never the cap passed.
    const affordable = pack.priceAmount > 0 ? Math.floor((config.maxAmountPerMonth - config.amountThisMonth) / pack.priceAmount) : packs;
    packs = Math.min(packs, affordable);
    if (packs < 1) return { kind: 'wait', armed, reason: 'cap' };
  }
  return { kind: 'buy', packs };
}

/**
 * Called in a spend's transaction, under the account lock, when the spend drew from the shared pool:
 * records (at most) one PENDING auto top-up, paid after commit by the instance that committed it
 * (the `autoTopUpQueued` event). The account lock serializes racing spends, and the first one to
 * buy disarms the configuration, so however many cross at once, one purchase is made. Returns the
 * purchase queued, or null.
 */
export async function queueAutoTopUp(tx: Tx, account: LockedAccount, creditType: string, change: SharedBalanceChange): Promise<string | null> {
  const [config] = await listAutoTopUps(tx, account, creditType);
  if (!config) return null;
  const pack = await getCreditPack(tx, config.packCode);
  const decision = decideAutoTopUp(config, { credits: pack.credits, priceAmount: pack.price.amount }, change, account.now);
  if (decision.kind === 'wait') {
    if (decision.armed !== config.armed) await tx.autoTopUpConfig.update({ where: { id: config.id }, data: { armed: decision.armed } });
    return null;
  }
  const { purchase } = await createPurchase(tx, { now: () => account.now }, {
    accountId: account.id,
    packCode: config.packCode,
    quantity: decision.packs,
    source: 'AUTO_TOP_UP',
    offSession: true,
    idempotencyKey: `auto-top-up:${newId()}`,
    autoTopUpConfigId: config.id,
  });
  await tx.autoTopUpConfig.update({ where: { id: config.id }, data: { armed: false } });
  publishAfterCommit(tx, { topic: 'autoTopUpQueued', accountId: account.id, purchaseId: purchase.id });
  return purchase.id;
}
