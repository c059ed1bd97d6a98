import type { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { createPubSub, type PubSub } from 'graphql-yoga';
import type { Redis } from 'ioredis';
import type { AlertPayload, EventPublisher } from './events.ts';

export type BillingPubSub = PubSub<{
  creditAlert: [accountId: string, alert: AlertPayload];
  balanceUpdated: [accountId: string, change: { creditType: string }];
  /** Some API key stopped working: every instance drops the keys it had verified. */
  apiKeysRevoked: [revocation: { at: number }];
}>;

export interface BillingEventBus {
  pubSub: BillingPubSub;
  publisher: EventPublisher;
  close(): Promise<void>;
}

/**
 * Live events: in-process, or through Redis when a URL is given so that a subscriber on one
 * instance receives what another instance published (no sticky WebSockets needed). The Redis
 * libraries are loaded only then.
 */
export async function createEventBus(redisUrl?: string): Promise<BillingEventBus> {
  let clients: { publishClient: Redis; subscribeClient: Redis } | null = null;
  let eventTarget: ReturnType<typeof createRedisEventTarget> | undefined;
  if (redisUrl) {
    const [{ Redis }, { createRedisEventTarget }] = await Promise.all([import('ioredis'), import('@graphql-yoga/redis-event-target')]);
    clients = {
      publishClient: new Redis(redisUrl, { maxRetriesPerRequest: null, lazyConnect: false }),
      subscribeClient: new Redis(redisUrl, { maxRetriesPerRequest: null, lazyConnect: false }),
    };
    // ioredis reconnects by itself; without a listener a lost connection would be an unhandled error.
    clients.publishClient.on('error', () => {});
    clients.subscribeClient.on('error', () => {});
    eventTarget = createRedisEventTarget(clients);
  }
  const pubSub: BillingPubSub = createPubSub(eventTarget ? { eventTarget } : undefined);
  return {
    pubSub,
    publisher: {
      publish(event) {
        if (event.topic === 'alert') pubSub.publish('creditAlert', event.accountId, event.alert);
        else pubSub.publish('balanceUpdated', event.accountId, { creditType: event.creditType });
      },
    },
    async close() {
      if (!clients) return;
      await Promise.allSettled([clients.publishClient.quit(), clients.subscribeClient.quit()]);
    },
  };
}
