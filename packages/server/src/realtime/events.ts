/**
 * Events that clients follow live. Domain code announces them inside its transaction with
 * `publishAfterCommit`; they are held with that transaction and handed to the publisher only after it
 * commits (never before: a subscriber must never see what a rollback undid), and dropped if it rolls
 * back.
 */

/** An alert as it travels (through Redis too): JSON only. */
export interface AlertPayload {
  id: string;
  accountId: string;
  kind: string;
  creditType: string | null;
  threshold: number | null;
  message: string;
  /** The seat it is about; absent in payloads of instances older than the field (the whole account). */
  seatId?: string | null;
  createdAt: string;
  acknowledgedAt: string | null;
}

export type BillingEvent =
  | { topic: 'alert'; accountId: string; alert: AlertPayload }
  | { topic: 'balance'; accountId: string; creditType: string }
  /** A credit purchase was started or changed status (followers re-read it). */
  | { topic: 'purchase'; accountId: string; purchaseId: string }
  /** An auto top-up was queued: the instance that committed it pays it; never sent to the others. */
  | { topic: 'autoTopUpQueued'; accountId: string; purchaseId: string };

export interface EventPublisher {
  publish(event: BillingEvent): void;
}

const pendingByTransaction = new WeakMap<object, BillingEvent[]>();
const publisherByClient = new WeakMap<object, EventPublisher>();

/** Where events of transactions run on this client go once they commit. */
export function attachEventPublisher(client: object, publisher: EventPublisher): void {
  publisherByClient.set(client, publisher);
}

export function openEventBuffer(transaction: object): BillingEvent[] {
  const buffer: BillingEvent[] = [];
  pendingByTransaction.set(transaction, buffer);
  return buffer;
}

/** Publishes a committed transaction's events in the order announced, each balance change once. */
export function flushEvents(client: object, events: BillingEvent[]): void {
  const publisher = publisherByClient.get(client);
  if (!publisher) return;
  const seen = new Set<string>();
  for (const event of events) {
    if (event.topic === 'balance') {
      const key = `${event.accountId}/${event.creditType}`;
      if (seen.has(key)) continue;
      seen.add(key);
    }
    publisher.publish(event);
  }
}

/** Announces an event of the transaction; outside a managed transaction there is no one to tell. */
export function publishAfterCommit(transaction: object, event: BillingEvent): void {
  pendingByTransaction.get(transaction)?.push(event);
}

export function notifyBalanceChanged(transaction: object, accountId: string, creditType: string): void {
  publishAfterCommit(transaction, { topic: 'balance', accountId, creditType });
}

export function notifyPurchaseChanged(transaction: object, accountId: string, purchaseId: string): void {
  publishAfterCommit(transaction, { topic: 'purchase', accountId, purchaseId });
}
