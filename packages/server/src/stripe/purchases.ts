import { lockAccount, type LockedAccount } from '../accounts/lockAccount.ts';
import { toCreditPackRecord, type CreditPackRecord } from '../catalog/creditPacks.ts';
import type { Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import { toCredits } from '../domain/credits.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import { hashRequest } from '../domain/hash.ts';
import { newId } from '../domain/ids.ts';
import type { TopUpPurchase } from '../generated/prisma/client.ts';
import { insertGrant } from '../ledger/grants.ts';
import { assertIdempotencyKey } from '../ledger/usageInput.ts';
import { computeBillingPeriod } from '../domain/billingPeriod.ts';
import { evaluateBalanceAlerts, raiseAlert } from '../alerts/alerts.ts';
import { loadBalance } from '../ledger/balances.ts';
import { notifyBalanceChanged, notifyPurchaseChanged } from '../realtime/events.ts';

export type TopUpStatus = 'PENDING' | 'REQUIRES_ACTION' | 'COMPLETED' | 'FAILED' | 'REFUNDED';

export interface TopUpPurchaseRecord {
  id: string;
  accountId: string;
  packCode: string;
  quantity: number;
  credits: number;
  amount: { amount: number; currency: string };
  status: TopUpStatus;
  source: 'PURCHASE' | 'AUTO_TOP_UP';
  offSession: boolean;
  checkoutUrl: string | null;
  checkoutSessionId: string | null;
  savePaymentMethod: boolean;
  paymentIntentId: string | null;
  grantId: string | null;
  clawedBackCredits: number;
  uncollectedCredits: number;
  failureCode: string | null;
  failureMessage: string | null;
  /** The typed error the refusal that failed it was answered with, if Stripe refused it. */
  refusalCode: string | null;
  requestHash: string;
  createdAt: Date;
  completedAt: Date | null;
}

export const MAX_PACKS_PER_PURCHASE = 100;

export function toPurchaseRecord(row: TopUpPurchase): TopUpPurchaseRecord {
  return {
    id: row.id,
    accountId: row.accountId,
    packCode: row.packCode,
    quantity: row.quantity,
    credits: toCredits(row.credits),
    amount: { amount: row.amount, currency: row.currency },
    status: row.status,
    source: row.source === 'AUTO_TOP_UP' ? 'AUTO_TOP_UP' : 'PURCHASE',
    offSession: row.offSession,
    checkoutUrl: row.checkoutUrl,
    checkoutSessionId: row.checkoutSessionId,
    savePaymentMethod: row.savePaymentMethod,
    paymentIntentId: row.paymentIntentId,
    grantId: row.grantId,
    clawedBackCredits: toCredits(row.clawedBackCredits),
    uncollectedCredits: toCredits(row.uncollectedCredits),
    failureCode: row.failureCode,
    failureMessage: row.failureMessage,
    refusalCode: row.refusalCode,
    requestHash: row.requestHash,
    createdAt: row.createdAt,
    completedAt: row.completedAt,
  };
}

export async function getCreditPack(tx: Tx, code: string): Promise<CreditPackRecord> {
  const pack = await tx.creditPack.findUnique({ where: { code } });
  if (!pack) throw new BillingError(ErrorCode.PACK_NOT_FOUND, `credit pack ${code} not found`);
  return toCreditPackRecord(pack);
}

export interface NewPurchase {
  accountId: string;
  packCode: string;
  quantity?: number | null;
  source: 'PURCHASE' | 'AUTO_TOP_UP';
  offSession: boolean;
  successUrl?: string | null;
  cancelUrl?: string | null;
  /** Checkout purchases: save the card for later off-session payments. */
  savePaymentMethod?: boolean | null;
  idempotencyKey: string;
  autoTopUpConfigId?: string | null;
}

/** Stripe accepts Checkout return URLs of up to 5,000 characters; ours are held to 2,048. */
export const MAX_REDIRECT_URL_LENGTH = 2_048;

/** A URL a Stripe-hosted page sends the customer back to: absolute http(s), at most MAX_REDIRECT_URL_LENGTH. */
export function assertRedirectUrl(value: string | null | undefined, field: string, context = 'for a Checkout purchase (or set offSession)'): string {
  if (!value) throw invalidInput(`${field} is required ${context}`, field);
  if (value.length > MAX_REDIRECT_URL_LENGTH) throw invalidInput(`${field} must be at most ${MAX_REDIRECT_URL_LENGTH} characters`, field);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidInput(`${field} must be an absolute http(s) URL`, field);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw invalidInput(`${field} must be an absolute http(s) URL`, field);
  return value;
}

/**
 * Records the intent to buy (a PENDING purchase) before Stripe is called, so that whatever happens
 * next, the purchase id, and every idempotency key derived from it, already exists. The same key and
 * input return the existing purchase, so a retried call resumes it instead of buying twice.
 */
export async function createPurchase(tx: Tx, clock: Clock, input: NewPurchase): Promise<{ purchase: TopUpPurchaseRecord; created: boolean }> {
  const idempotencyKey = assertIdempotencyKey(input.idempotencyKey);
  const quantity = input.quantity ?? 1;
  if (!Number.isInteger(quantity) || quantity < 1 || quantity > MAX_PACKS_PER_PURCHASE) {
    throw new BillingError(ErrorCode.INVALID_QUANTITY, `quantity must be from 1 to ${MAX_PACKS_PER_PURCHASE} packs`, { field: 'quantity' });
  }
  if (input.offSession && input.savePaymentMethod) {
    throw invalidInput('savePaymentMethod saves the card entered in Checkout; an off-session purchase uses the card already saved', 'savePaymentMethod');
  }
  if (!input.offSession) {
    assertRedirectUrl(input.successUrl, 'successUrl');
    assertRedirectUrl(input.cancelUrl, 'cancelUrl');
  }
  const requestHash = hashRequest({
    packCode: input.packCode,
    quantity,
    offSession: input.offSession,
    successUrl: input.offSession ? null : input.successUrl,
    cancelUrl: input.offSession ? null : input.cancelUrl,
    // Absent from the hash when false, so that keys used before the option existed still match.
    ...(input.savePaymentMethod ? { savePaymentMethod: true } : {}),
  });
  const account = await lockAccount(tx, clock, input.accountId);
  const previous = await tx.topUpPurchase.findUnique({ where: { accountId_idempotencyKey: { accountId: account.id, idempotencyKey } } });
  if (previous) {
    if (previous.requestHash !== requestHash) {
      throw new BillingError(ErrorCode.IDEMPOTENCY_CONFLICT, `idempotency key ${idempotencyKey} was already used with a different purchase`);
    }
    return { purchase: toPurchaseRecord(previous), created: false };
  }
  const pack = await getCreditPack(tx, input.packCode);
  const credits = pack.credits * quantity;
  const amount = pack.price.amount * quantity;
  if (!Number.isSafeInteger(credits) || !Number.isSafeInteger(amount) || amount > 99_999_999) {
    throw new BillingError(ErrorCode.INVALID_QUANTITY, 'the purchase is larger than a single payment can be', { field: 'quantity' });
  }
  const row = await tx.topUpPurchase.create({
    data: {
      id: newId(),
      accountId: account.id,
      packCode: pack.code,
      quantity,
      credits: BigInt(credits),
      amount,
      currency: pack.price.currency,
      status: 'PENDING',
      source: input.source,
      offSession: input.offSession,
      savePaymentMethod: input.savePaymentMethod ?? false,
      autoTopUpConfigId: input.autoTopUpConfigId ?? null,
      periodStart: account.currentPeriodStart,
      idempotencyKey,
      requestHash,
      createdAt: account.now,
    },
  });
  notifyPurchaseChanged(tx, account.id, row.id);
  return { purchase: toPurchaseRecord(row), created: true };
}

export async function findPurchase(tx: Tx, id: string): Promise<TopUpPurchaseRecord | null> {
  const row = await tx.topUpPurchase.findUnique({ where: { id } });
  return row ? toPurchaseRecord(row) : null;
}

/** The purchase, re-read under its account's lock so that its status cannot change underneath. */
async function lockPurchase(tx: Tx, clock: Clock, purchaseId: string): Promise<{ account: LockedAccount; purchase: TopUpPurchase } | null> {
  const found = await tx.topUpPurchase.findUnique({ where: { id: purchaseId }, select: { accountId: true } });
  if (!found) return null;
  const account = await lockAccount(tx, clock, found.accountId);
  const purchase = await tx.topUpPurchase.findUnique({ where: { id: purchaseId } });
  return purchase ? { account, purchase } : null;
}

/**
 * When purchased credits expire: the pack's days after purchase; auto top-up credits last through
 * the period they were bought in and roll over one period (Hex), never beyond the pack's own expiry.
 */
async function computePurchaseExpiry(tx: Tx, account: LockedAccount, purchase: TopUpPurchase): Promise<Date | null> {
  const pack = await tx.creditPack.findUnique({ where: { code: purchase.packCode } });
  const packExpiry = pack?.expiresAfterDays ? new Date(account.now.getTime() + pack.expiresAfterDays * 86_400_000) : null;
  if (purchase.source !== 'AUTO_TOP_UP') return packExpiry;
  const plan = await tx.plan.findUniqueOrThrow({ where: { id: account.planId } });
  const rolloverEnd = computeBillingPeriod(account.periodAnchor, plan.interval, account.periodIndex + 1).end;
  return packExpiry && packExpiry < rolloverEnd ? packExpiry : rolloverEnd;
}

/**
 * Grants a paid purchase's credits, exactly once: whatever the number and order of webhook
 * deliveries and synchronous confirmations, only the first one that finds it unpaid grants. Returns
 * the purchase as it stands.
 */
export async function completePurchase(tx: Tx, clock: Clock, purchaseId: string, paymentIntentId: string | null): Promise<TopUpPurchaseRecord | null> {
  const locked = await lockPurchase(tx, clock, purchaseId);
  if (!locked) return null;
  const { account, purchase } = locked;
  if (purchase.status === 'COMPLETED' || purchase.status === 'REFUNDED') {
    if (!purchase.paymentIntentId && paymentIntentId) {
      await tx.topUpPurchase.update({ where: { id: purchase.id }, data: { paymentIntentId } });
    }
    return findPurchase(tx, purchase.id);
  }
  const grant = await insertGrant(
    tx,
    {
      accountId: account.id,
      seatId: null,
      creditType: (await getCreditPack(tx, purchase.packCode)).creditType,
      source: purchase.source,
      amount: toCredits(purchase.credits),
      effectiveAt: account.now,
      expiresAt: await computePurchaseExpiry(tx, account, purchase),
      idempotencyKey: `purchase:${purchase.id}`,
      cost: { totalAmount: purchase.amount, currency: purchase.currency },
    },
    account.now,
  );
  await tx.topUpPurchase.update({
    where: { id: purchase.id },
    data: {
      status: 'COMPLETED',
      grantId: grant.id,
      completedAt: account.now,
      failureCode: null,
      failureMessage: null,
      refusalCode: null,
      ...(paymentIntentId ? { paymentIntentId } : {}),
    },
  });
  notifyPurchaseChanged(tx, account.id, purchase.id);
  // Credits bought that lift the shared balance to the auto top-up's threshold or above re-arm it at
  // once, not only when a later spend sees the balance (which an expiry could lower first).
  await tx.$executeRaw`
    UPDATE auto_top_up_configs c SET armed = true
    WHERE c.account_id = ${account.id} AND c.credit_type = ${grant.creditType} AND NOT c.armed
      AND (SELECT coalesce(sum(g.remaining), 0) FROM live_grants(${account.id}, ${grant.creditType}, ${account.now}::timestamp(3)) g
           WHERE g.seat_id IS NULL) >= c.threshold_credits`;
  if (purchase.autoTopUpConfigId) {
    await tx.autoTopUpConfig.update({ where: { id: purchase.autoTopUpConfigId }, data: { consecutiveFailures: 0, retryNotBefore: null } });
    await raiseAlert(tx, {
      accountId: account.id,
      kind: 'AUTO_TOP_UP_SUCCEEDED',
      creditType: grant.creditType,
      threshold: null,
      message: `auto top-up bought ${grant.amount} ${grant.creditType} credits (${purchase.packCode})`,
      periodStart: account.currentPeriodStart,
      dedupeKey: `auto-top-up-succeeded:${purchase.id}`,
      at: account.now,
    });
  }
  return findPurchase(tx, purchase.id);
}

/** Backoff after the n-th failed auto top-up in a row: 1 minute, doubling, at most a day. */
export function computeAutoTopUpBackoffMs(consecutiveFailures: number): number {
  return Math.min(60_000 * 2 ** Math.max(0, consecutiveFailures - 1), 86_400_000);
}

/**
 * Marks a pending purchase failed (a paid one stays paid: a late failure event changes nothing). A
 * failed auto top-up re-arms its configuration, so that the crossing it was for is tried again after
 * the backoff, and after `maxConsecutiveFailures` failures in a row pauses it until reconfigured.
 */
export async function failPurchase(
  tx: Tx,
  clock: Clock,
  purchaseId: string,
  code: string,
  message: string,
  refusalCode: string | null = null,
): Promise<TopUpPurchaseRecord | null> {
  const locked = await lockPurchase(tx, clock, purchaseId);
  if (!locked) return null;
  const { account, purchase } = locked;
  if (purchase.status !== 'PENDING' && purchase.status !== 'REQUIRES_ACTION') return findPurchase(tx, purchase.id);
  await tx.topUpPurchase.update({ where: { id: purchase.id }, data: { status: 'FAILED', failureCode: code, failureMessage: message.slice(0, 500), refusalCode } });
  notifyPurchaseChanged(tx, account.id, purchase.id);
  if (purchase.autoTopUpConfigId) {
    const config = await tx.autoTopUpConfig.findUniqueOrThrow({ where: { id: purchase.autoTopUpConfigId } });
    const failures = config.consecutiveFailures + 1;
    const backoffMs = computeAutoTopUpBackoffMs(failures);
    const pause = config.pausedAt === null && failures >= config.maxConsecutiveFailures;
    await tx.autoTopUpConfig.update({
      where: { id: config.id },
      data: {
        consecutiveFailures: failures,
        retryNotBefore: new Date(account.now.getTime() + backoffMs),
        armed: true,
        ...(pause ? { pausedAt: account.now } : {}),
      },
    });
    await raiseAlert(tx, {
      accountId: account.id,
      kind: 'AUTO_TOP_UP_FAILED',
      creditType: config.creditType,
      threshold: null,
      message: pause
        ? `auto top-up of ${purchase.packCode} failed: ${code}`
        : `auto top-up of ${purchase.packCode} failed: ${code}; next attempt not before ${backoffMs / 60_000} min`,
      periodStart: account.currentPeriodStart,
      dedupeKey: `auto-top-up-failed:${purchase.id}`,
      at: account.now,
    });
    if (pause) {
      await raiseAlert(tx, {
        accountId: account.id,
        kind: 'AUTO_TOP_UP_PAUSED',
        creditType: config.creditType,
        threshold: failures,
        message: `auto top-up of ${config.creditType} paused after ${failures} failed payments in a row (last: ${code}); configure it again to resume`,
        periodStart: account.currentPeriodStart,
        dedupeKey: `auto-top-up-paused:${purchase.id}`,
        at: account.now,
      });
    }
  }
  return findPurchase(tx, purchase.id);
}

/**
 * An off-session payment needs the customer to authenticate it: the purchase waits in
 * REQUIRES_ACTION with the Checkout Session where they complete it, and the account gets an alert.
 * No automatic attempt touches it again (retries and auto top-ups look for PENDING ones only).
 */
export async function awaitAuthentication(
  tx: Tx,
  clock: Clock,
  purchaseId: string,
  session: { id: string; url: string },
  code: string,
): Promise<TopUpPurchaseRecord | null> {
  const locked = await lockPurchase(tx, clock, purchaseId);
  if (!locked) return null;
  const { account, purchase } = locked;
  if (purchase.status !== 'PENDING') return findPurchase(tx, purchase.id);
  const message = 'the bank asks the customer to authenticate this payment; it waits for them at the purchase’s actionUrl';
  await tx.topUpPurchase.update({
    where: { id: purchase.id },
    data: { status: 'REQUIRES_ACTION', checkoutSessionId: session.id, checkoutUrl: session.url, failureCode: code, failureMessage: message },
  });
  notifyPurchaseChanged(tx, account.id, purchase.id);
  const pack = await getCreditPack(tx, purchase.packCode);
  await raiseAlert(tx, {
    accountId: account.id,
    kind: 'PAYMENT_ACTION_REQUIRED',
    creditType: pack.creditType,
    threshold: null,
    message: `a payment of ${purchase.amount} ${purchase.currency} (${purchase.packCode}, purchase ${purchase.id}) needs the customer to authenticate it at the purchase's actionUrl`,
    periodStart: account.currentPeriodStart,
    dedupeKey: `payment-action-required:${purchase.id}`,
    at: account.now,
  });
  return findPurchase(tx, purchase.id);
}

/**
 * A refunded charge takes back what is left of the purchase's grant, in proportion to the amount
 * refunded (a CLAWBACK entry). Credits already spent are not taken back (no balance goes negative);
 * they are recorded on the purchase as uncollected, for the operator to settle outside the ledger.
 * Only spent or held credits are: what a void or a negative adjustment took, or what expired, is
 * already gone from the customer and counted there, so uncollected never exceeds what the grant's
 * usage and holds hold now (its DEBIT, REFUND, RESERVE and RELEASE entries: one sum over the grant's
 * entries through their grant index, once per signed refund event).
 */
export async function clawBackPurchase(
  tx: Tx,
  clock: Clock,
  paymentIntentId: string,
  amountRefunded: number,
  amountCharged: number,
): Promise<TopUpPurchaseRecord | null> {
  const found = await tx.topUpPurchase.findUnique({ where: { paymentIntentId }, select: { id: true } });
  if (!found) return null;
  const locked = await lockPurchase(tx, clock, found.id);
  if (!locked) return null;
  const { account, purchase } = locked;
  if (!purchase.grantId || (purchase.status !== 'COMPLETED' && purchase.status !== 'REFUNDED')) return findPurchase(tx, purchase.id);
  const credits = toCredits(purchase.credits);
  const share = amountCharged > 0 ? Math.min(1, amountRefunded / amountCharged) : 1;
  const due = Math.floor(credits * share) - toCredits(purchase.clawedBackCredits) - toCredits(purchase.uncollectedCredits);
  if (due <= 0) return findPurchase(tx, purchase.id);
  const [grant] = await tx.$queryRaw<Array<{ remaining: bigint; live: boolean; spent: bigint }>>`
    SELECT remaining, (expires_at IS NULL OR expires_at > ${account.now}) AS live,
           (SELECT coalesce(-sum(credits), 0) FROM ledger_entries
            WHERE grant_id = grants.id AND type IN ('DEBIT', 'REFUND', 'RESERVE', 'RELEASE'))::bigint AS spent
    FROM grants WHERE id = ${purchase.grantId} FOR UPDATE`;
  const takeable = grant?.live ? Math.min(due, toCredits(grant.remaining)) : 0;
  const uncollected = Math.max(0, Math.min(due - takeable, toCredits(grant?.spent ?? 0n) - toCredits(purchase.uncollectedCredits)));
  if (takeable > 0) {
    await tx.$executeRaw`UPDATE grants SET remaining = remaining - ${BigInt(takeable)} WHERE id = ${purchase.grantId}`;
    await tx.$executeRaw`
      INSERT INTO ledger_entries (account_id, grant_id, type, credits, created_at)
      VALUES (${account.id}, ${purchase.grantId}, 'CLAWBACK'::"LedgerEntryType", ${BigInt(-takeable)}, ${account.now})`;
    const creditType = (await getCreditPack(tx, purchase.packCode)).creditType;
    notifyBalanceChanged(tx, account.id, creditType);
    await evaluateBalanceAlerts(tx, account, await loadBalance(tx, { ...account, accountId: account.id }, creditType), account.now);
  }
  notifyPurchaseChanged(tx, account.id, purchase.id);
  await tx.topUpPurchase.update({
    where: { id: purchase.id },
    data: {
      status: 'REFUNDED',
      clawedBackCredits: { increment: BigInt(takeable) },
      uncollectedCredits: { increment: BigInt(uncollected) },
    },
  });
  return findPurchase(tx, purchase.id);
}
