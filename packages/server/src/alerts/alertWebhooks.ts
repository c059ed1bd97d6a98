import { createHmac, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { lockAccount } from '../accounts/lockAccount.ts';
import { inTransaction, type Tx } from '../db/transaction.ts';
import type { Clock } from '../domain/clock.ts';
import type { PrismaClient } from '../generated/prisma/client.ts';
import { checkWebhookUrl, postToWebhook, type WebhookResponse, type WebhookTargetPolicy } from './webhookTarget.ts';

export interface AlertWebhookRecord {
  accountId: string;
  url: string;
  enabled: boolean;
  secret: string;
}

export interface ConfigureAlertWebhookCommand {
  accountId: string;
  url: string;
  enabled?: boolean | null;
}

/**
 * Sets where the account's alerts go; the signing secret is made once and kept across changes. The
 * URL must be https to a public address (webhookTarget.ts) unless the policy allows private ones.
 */
export async function configureAlertWebhook(
  tx: Tx,
  clock: Clock,
  command: ConfigureAlertWebhookCommand,
  policy: Pick<WebhookTargetPolicy, 'allowPrivate'>,
): Promise<AlertWebhookRecord> {
  checkWebhookUrl(command.url, policy);
  const account = await lockAccount(tx, clock, command.accountId);
  const enabled = command.enabled ?? true;
  const webhook = await tx.alertWebhook.upsert({
    where: { accountId: account.id },
    create: { accountId: account.id, url: command.url, enabled, secret: `whsec_${randomBytes(24).toString('hex')}`, createdAt: account.now },
    update: { url: command.url, enabled },
  });
  return { accountId: webhook.accountId, url: webhook.url, enabled: webhook.enabled, secret: webhook.secret };
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, like Stripe's, so receivers can reject replays. */
export function signAlertDelivery(body: string, secret: string, timestamp: number): string {
  const signature = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
  return `t=${timestamp},v1=${signature}`;
}

export interface AlertDeliveryOptions {
  prisma: PrismaClient;
  clock: Clock;
  logger: Logger;
  /** The first retry waits this long; each further one twice as long, up to an hour. */
  retryBaseMs: number;
  /** Which receivers may be reached, and how long one delivery may take. */
  target: WebhookTargetPolicy;
  /** Told each delivery's outcome (metrics). */
  observe?: (delivered: boolean) => void;
}

/** Attempts after which a delivery is given up (its last error stays recorded). */
const MAX_ATTEMPTS = 25;
/** While one instance POSTs a delivery, others leave it alone this long. */
const LEASE_MS = 60_000;

interface DueDelivery {
  id: string;
  attempts: number;
  url: string;
  secret: string;
  alert_id: string;
  account_id: string;
  kind: string;
  credit_type: string | null;
  threshold: number | null;
  message: string;
  created_at: Date;
}

/**
 * Sends due alert deliveries from the outbox: each is leased (so several instances do not send it
 * at once), POSTed with its signature, then marked delivered, or rescheduled with backoff. Deliveries
 * are at least once; the body carries the alert id for receivers to drop a rare repeat.
 */
export async function deliverDueAlerts(options: AlertDeliveryOptions): Promise<number> {
  const { prisma, clock } = options;
  const now = clock.now();
  const due = await inTransaction(prisma, async (tx) => {
    const rows = await tx.$queryRaw<DueDelivery[]>`
      SELECT d.id, d.attempts, w.url, w.secret, a.id AS alert_id, a.account_id, a.kind::text AS kind, a.credit_type, a.threshold,
             a.message, a.created_at
      FROM alert_deliveries d
      JOIN alerts a ON a.id = d.alert_id
      JOIN alert_webhooks w ON w.account_id = d.account_id AND w.enabled
      WHERE d.delivered_at IS NULL AND d.next_attempt_at <= ${now} AND d.attempts < ${MAX_ATTEMPTS}
      ORDER BY d.next_attempt_at
      LIMIT 50
      FOR UPDATE OF d SKIP LOCKED`;
    if (rows.length > 0) {
      await tx.$executeRaw`
        UPDATE alert_deliveries SET next_attempt_at = ${new Date(now.getTime() + LEASE_MS)} WHERE id = ANY(${rows.map((row) => row.id)}::text[])`;
    }
    return rows;
  });
  await Promise.all(
    due.map(async (delivery) => {
      const body = JSON.stringify({
        type: 'alert',
        alert: {
          id: delivery.alert_id,
          accountId: delivery.account_id,
          kind: delivery.kind,
          creditType: delivery.credit_type,
          threshold: delivery.threshold,
          message: delivery.message,
          createdAt: delivery.created_at.toISOString(),
        },
      });
      await attemptDelivery(options, delivery, body, 'alert');
    }),
  );
  return due.length;
}

/**
 * One signed POST of an outbox row (alert or ledger event) and its outcome: delivered, or the next
 * attempt after an exponential backoff capped at an hour.
 */
export async function attemptDelivery(
  options: AlertDeliveryOptions,
  delivery: { id: string; url: string; secret: string; attempts: number },
  body: string,
  what: 'alert' | 'ledger event',
): Promise<void> {
  const { prisma, clock, logger } = options;
  let error: string | null = null;
  try {
    const response: WebhookResponse = await postToWebhook(
      delivery.url,
      body,
      {
        'content-type': 'application/json',
        'billing-signature': signAlertDelivery(body, delivery.secret, Math.floor(Date.now() / 1000)),
        'billing-delivery-id': delivery.id,
      },
      options.target,
    );
    if (response.status < 200 || response.status > 299) error = `HTTP ${response.status}`;
  } catch (caught) {
    error = caught instanceof Error ? caught.message : String(caught);
  }
  options.observe?.(error === null);
  const attempts = delivery.attempts + 1;
  if (error === null) {
    await prisma.alertDelivery.update({ where: { id: delivery.id }, data: { attempts, deliveredAt: clock.now(), lastError: null } });
  } else {
    const delay = Math.min(options.retryBaseMs * 2 ** (attempts - 1), 3_600_000);
    await prisma.alertDelivery.update({
      where: { id: delivery.id },
      data: { attempts, nextAttemptAt: new Date(clock.now().getTime() + delay), lastError: error.slice(0, 500) },
    });
    logger.warn({ deliveryId: delivery.id, attempts, error }, `${what} delivery failed; will retry`);
  }
}
