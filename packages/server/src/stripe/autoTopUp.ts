import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { assertCode } from '../catalog/validation.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { assertCredits, toCredits } from '../domain/credits.ts';
import { invalidInput } from '../domain/errors.ts';
import { newId } from '../domain/ids.ts';
import { createPurchase, getCreditPack } from './purchases.ts';

export interface AutoTopUpRecord {
  id: string;
  accountId: string;
  creditType: string;
  enabled: boolean;
  thresholdCredits: number;
  packCode: string;
  maxPurchasesPerPeriod: number;
  purchasesThisPeriod: number;
  consecutiveFailures: number;
  retryNotBefore: Date | null;
}

export interface ConfigureAutoTopUpCommand {
  accountId: string;
  creditType: string;
  enabled: boolean;
  thresholdCredits: number;
  packCode: string;
  maxPurchasesPerPeriod: number;
}

export const MAX_AUTO_TOP_UPS_PER_PERIOD = 100;

/** Auto top-ups of the account with how many were bought (or are being bought) this period. */
export async function listAutoTopUps(tx: Tx, account: Pick<LockedAccount, 'id' | 'currentPeriodStart'>, creditType?: string): Promise<AutoTopUpRecord[]> {
  const rows = await tx.$queryRaw<
    Array<{
      id: string;
      account_id: string;
      credit_type: string;
      enabled: boolean;
      threshold_credits: bigint;
      pack_code: string;
      max_purchases_per_period: number;
      consecutive_failures: number;
      retry_not_before: Date | null;
      purchases: bigint;
    }>
  >`
    SELECT c.id, c.account_id, c.credit_type, c.enabled, c.threshold_credits, c.pack_code, c.max_purchases_per_period,
           c.consecutive_failures, c.retry_not_before,
           (SELECT count(*) FROM top_up_purchases p
             WHERE p.auto_top_up_config_id = c.id AND p.period_start = ${account.currentPeriodStart} AND p.status <> 'FAILED') AS purchases
    FROM auto_top_up_configs c
    WHERE c.account_id = ${account.id} AND (${creditType ?? null}::text IS NULL OR c.credit_type = ${creditType ?? null})
    ORDER BY c.credit_type`;
  return rows.map((row) => ({
    id: row.id,
    accountId: row.account_id,
    creditType: row.credit_type,
    enabled: row.enabled,
    thresholdCredits: toCredits(row.threshold_credits),
    packCode: row.pack_code,
    maxPurchasesPerPeriod: row.max_purchases_per_period,
    purchasesThisPeriod: Number(row.purchases),
    consecutiveFailures: row.consecutive_failures,
    retryNotBefore: row.retry_not_before,
  }));
}

/** Sets (or replaces) the auto top-up of one credit type of the account. */
export async function configureAutoTopUp(tx: Tx, clock: Clock, command: ConfigureAutoTopUpCommand): Promise<AutoTopUpRecord> {
  const account = await lockAccount(tx, clock, command.accountId);
  const creditType = assertCode(command.creditType, 'creditType');
  const thresholdCredits = assertCredits(command.thresholdCredits, 'thresholdCredits', { allowZero: true });
  if (!Number.isInteger(command.maxPurchasesPerPeriod) || command.maxPurchasesPerPeriod < 0 || command.maxPurchasesPerPeriod > MAX_AUTO_TOP_UPS_PER_PERIOD) {
    throw invalidInput(`maxPurchasesPerPeriod must be from 0 to ${MAX_AUTO_TOP_UPS_PER_PERIOD}`, 'maxPurchasesPerPeriod');
  }
  const pack = await getCreditPack(tx, command.packCode);
  if (pack.creditType !== creditType) {
    throw invalidInput(`pack ${pack.code} adds ${pack.creditType} credits, not ${creditType}`, 'packCode');
  }
  const data = { enabled: command.enabled, thresholdCredits: BigInt(thresholdCredits), packCode: pack.code, maxPurchasesPerPeriod: command.maxPurchasesPerPeriod };
  await tx.autoTopUpConfig.upsert({
    where: { accountId_creditType: { accountId: account.id, creditType } },
    create: { id: newId(), accountId: account.id, creditType, createdAt: account.now, ...data },
    // A new configuration is a fresh start: a past failure's backoff no longer applies.
    update: { ...data, consecutiveFailures: 0, retryNotBefore: null },
  });
  const [record] = await listAutoTopUps(tx, account, creditType);
  if (!record) throw new Error('auto top-up vanished inside its own transaction');
  return record;
}

/**
 * Called in the debit's transaction, under the account lock, when the debit drew from the shared
 * pool: when the shared balance is now below the threshold, records one PENDING auto top-up to be
 * paid after commit. The lock and the "none pending" rule make it once per crossing however many
 * debits race; the monthly cap and the backoff after a failure keep a declined card from being
 * hammered. Returns the purchase to pay, or null.
 */
export async function queueAutoTopUp(tx: Tx, account: LockedAccount, creditType: string, sharedAfter: number): Promise<string | null> {
  const [config] = await listAutoTopUps(tx, account, creditType);
  if (!config || !config.enabled || sharedAfter >= config.thresholdCredits) return null;
  if (config.purchasesThisPeriod >= config.maxPurchasesPerPeriod) return null;
  if (config.retryNotBefore && config.retryNotBefore.getTime() > account.now.getTime()) return null;
  const pending = await tx.topUpPurchase.count({ where: { autoTopUpConfigId: config.id, status: 'PENDING' } });
  if (pending > 0) return null;
  const { purchase } = await createPurchase(tx, { now: () => account.now }, {
    accountId: account.id,
    packCode: config.packCode,
    quantity: 1,
    source: 'AUTO_TOP_UP',
    offSession: true,
    idempotencyKey: `auto-top-up:${newId()}`,
    autoTopUpConfigId: config.id,
  });
  return purchase.id;
}
