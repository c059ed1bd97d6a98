import { randomBytes } from 'node:crypto';
import type { Tx } from '../db/transaction.ts';
import { inTransaction } from '../db/transaction.ts';
import { BillingError, ErrorCode, invalidInput } from '../domain/errors.ts';
import type { Clock } from '../domain/clock.ts';
import { newId } from '../domain/ids.ts';
import type { WebhookEndpoint } from '../generated/prisma/client.ts';
import { attemptDelivery, type AlertDeliveryOptions } from './alertWebhooks.ts';
import { checkWebhookUrl, postToWebhook, type WebhookTargetPolicy } from './webhookTarget.ts';

/**
 * The ledger events an endpoint may receive. Each is written by a database trigger in the
 * transaction of its change (migrations ledger_event_webhooks and ledger_corrections): `grant.voided`
 * by voidGrant, `adjustment` by every other correction's ADJUST entries (adjustCredits,
 * changeGrantExpiry).
 */
export const LEDGER_EVENT_TYPES = [
  'grant.created',
  'grant.expired',
  'grant.voided',
  'adjustment',
  'purchase.completed',
  'purchase.failed',
  'plan.changed',
  'alert.raised',
] as const;

export type LedgerEventType = (typeof LEDGER_EVENT_TYPES)[number];

/** Endpoints one operator may have: every event is one outbox row per matching endpoint. */
export const MAX_WEBHOOK_ENDPOINTS = 20;

export interface WebhookEndpointRecord {
  id: string;
  url: string;
  eventTypes: string[];
  accountId: string | null;
  enabled: boolean;
  createdAt: Date;
}

export function toWebhookEndpointRecord(row: WebhookEndpoint): WebhookEndpointRecord {
  return { id: row.id, url: row.url, eventTypes: row.eventTypes, accountId: row.accountId, enabled: row.enabled, createdAt: row.createdAt };
}

function assertEventTypes(types: readonly string[] | null | undefined): string[] {
  const list = [...new Set(types ?? [])];
  for (const type of list) {
    if (!(LEDGER_EVENT_TYPES as readonly string[]).includes(type)) {
      throw invalidInput(`eventTypes: ${JSON.stringify(type).slice(0, 64)} is not one of ${LEDGER_EVENT_TYPES.join(', ')}`, 'eventTypes');
    }
  }
  return list.sort();
}

/** Refuses one more enabled endpoint beyond the limit, whether created or turned back on. */
async function assertEndpointRoom(tx: Tx, field: string): Promise<void> {
  // Serializes creations and re-enablings, so that two at once cannot pass the limit together.
  await tx.$queryRaw`SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext('webhook_endpoints'))) AS taken`;
  if ((await tx.webhookEndpoint.count({ where: { enabled: true } })) >= MAX_WEBHOOK_ENDPOINTS) {
    throw invalidInput(`at most ${MAX_WEBHOOK_ENDPOINTS} enabled webhook endpoints`, field);
  }
}

export interface CreateWebhookEndpointCommand {
  url: string;
  eventTypes?: readonly string[] | null;
  accountId?: string | null;
}

/** A new receiver of ledger events; its signing secret is answered once, here. */
export async function createWebhookEndpoint(
  tx: Tx,
  clock: Clock,
  command: CreateWebhookEndpointCommand,
  policy: Pick<WebhookTargetPolicy, 'allowPrivate'>,
): Promise<WebhookEndpointRecord & { secret: string }> {
  checkWebhookUrl(command.url, policy);
  const eventTypes = assertEventTypes(command.eventTypes);
  if (command.accountId) {
    const account = await tx.account.findUnique({ where: { id: command.accountId }, select: { id: true } });
    if (!account) throw new BillingError(ErrorCode.ACCOUNT_NOT_FOUND, `account ${command.accountId} not found`);
  }
  await assertEndpointRoom(tx, 'url');
  const row = await tx.webhookEndpoint.create({
    data: {
      id: newId(),
      url: command.url,
      secret: `whsec_${randomBytes(24).toString('hex')}`,
      eventTypes,
      accountId: command.accountId ?? null,
      enabled: true,
      createdAt: clock.now(),
    },
  });
  return { ...toWebhookEndpointRecord(row), secret: row.secret };
}

export interface UpdateWebhookEndpointCommand {
  id: string;
  eventTypes?: readonly string[] | null;
  enabled?: boolean | null;
}

/** Changes what an endpoint receives, or turns it off (its pending deliveries then wait, undelivered). */
export async function updateWebhookEndpoint(tx: Tx, command: UpdateWebhookEndpointCommand): Promise<WebhookEndpointRecord> {
  const found = await tx.webhookEndpoint.findUnique({ where: { id: command.id } });
  if (!found) throw new BillingError(ErrorCode.WEBHOOK_ENDPOINT_NOT_FOUND, `webhook endpoint ${command.id} not found`);
  if (command.enabled === true && !found.enabled) await assertEndpointRoom(tx, 'enabled');
  const row = await tx.webhookEndpoint.update({
    where: { id: found.id },
    data: {
      ...(command.eventTypes !== undefined && command.eventTypes !== null ? { eventTypes: assertEventTypes(command.eventTypes) } : {}),
      ...(command.enabled !== undefined && command.enabled !== null ? { enabled: command.enabled } : {}),
    },
  });
  return toWebhookEndpointRecord(row);
}

/** While one instance POSTs a delivery, others leave it alone this long. */
const LEASE_MS = 60_000;
/** Attempts after which a delivery is given up (its last error stays recorded), as for alerts. */
const MAX_ATTEMPTS = 25;

interface DueEventDelivery {
  id: string;
  attempts: number;
  url: string;
  secret: string;
  payload: unknown;
}

/**
 * Sends due ledger-event deliveries from the alert outbox to their endpoints, exactly as alert
 * deliveries are sent: leased, POSTed with the `Billing-Signature` of the endpoint's secret within
 * the SSRF rules (webhookTarget.ts), marked delivered or retried with backoff. At least once: the
 * body's `id` is the event's, the same for a repeat, for receivers to drop it.
 */
export async function deliverDueLedgerEvents(options: AlertDeliveryOptions): Promise<number> {
  const { prisma, clock } = options;
  const now = clock.now();
  const due = await inTransaction(prisma, async (tx) => {
    const rows = await tx.$queryRaw<DueEventDelivery[]>`
      SELECT d.id, d.attempts, e.url, e.secret, d.payload
      FROM alert_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled
      WHERE d.endpoint_id IS NOT NULL AND d.delivered_at IS NULL AND d.next_attempt_at <= ${now} AND d.attempts < ${MAX_ATTEMPTS}
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
      await attemptDelivery(options, delivery, JSON.stringify(delivery.payload), 'ledger event');
    }),
  );
  return due.length;
}
