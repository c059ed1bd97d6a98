import type { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { createPubSub, type PubSub } from 'graphql-yoga';
import type { Redis } from 'ioredis';
import type { AlertPayload, EventPublisher } from './events.ts';
import type { RedisWatch } from './redisWatch.ts';

export type BillingPubSub = PubSub<{
  creditAlert: [accountId: string, alert: AlertPayload];
  balanceUpdated: [accountId: string, change: { creditType: string }];
  topUpUpdated: [accountId: string, change: { purchaseId: string }];
  /** Some API key stopped working: every instance drops the keys it had verified. */
  apiKeysRevoked: [revocation: { at: number }];
}>;

export interface BillingEventBus {
  pubSub: BillingPubSub;
  publisher: EventPublisher;
  close(): Promise<void>;
}

type RedisEventTarget = ReturnType<typeof createRedisEventTarget>;
type Listener = ((event: Event) => void) | { handleEvent(event: Event): void };

/**
 * The Redis event target, degrading to this instance alone while Redis is away: listeners are kept
 * here too, and an event published while the connection is not ready is delivered to them directly
 * (it cannot reach the other instances; live events are notifications, and a client re-reads what
 * it shows when its feed reconnects). When Redis is up, events go only through it, so none arrives
 * twice. ioredis re-subscribes the channels itself after a reconnect.
 */
function degradingEventTarget(redis: RedisEventTarget, publishClient: Redis): RedisEventTarget {
  const local = new Map<string, Set<Listener>>();
  const target = {
    addEventListener(topic: string, listener: Listener | null) {
      redis.addEventListener(topic, listener as Parameters<RedisEventTarget['addEventListener']>[1]);
      if (listener) local.set(topic, (local.get(topic) ?? new Set()).add(listener));
    },
    removeEventListener(topic: string, listener: Listener | null) {
      redis.removeEventListener(topic, listener as Parameters<RedisEventTarget['removeEventListener']>[1]);
      if (listener) local.get(topic)?.delete(listener);
    },
    dispatchEvent(event: Parameters<RedisEventTarget['dispatchEvent']>[0]) {
      if (publishClient.status === 'ready') return redis.dispatchEvent(event);
      for (const listener of local.get(event.type) ?? []) {
        if (typeof listener === 'function') listener(event);
        else listener.handleEvent(event);
      }
      return true;
    },
  };
  // The target's methods are generic over the event type, which plain functions cannot state.
  return target as unknown as RedisEventTarget;
}

/**
 * Live events: in-process, or through Redis when a URL is given so that a subscriber on one
 * instance receives what another instance published (no sticky WebSockets needed). The Redis
 * libraries are loaded only then.
 */
export async function createEventBus(redisUrl?: string, watch?: RedisWatch): Promise<BillingEventBus> {
  let clients: { publishClient: Redis; subscribeClient: Redis } | null = null;
  let eventTarget: RedisEventTarget | undefined;
  if (redisUrl) {
    const [{ Redis }, { createRedisEventTarget }] = await Promise.all([import('ioredis'), import('@graphql-yoga/redis-event-target')]);
    clients = {
      publishClient: new Redis(redisUrl, { maxRetriesPerRequest: null, lazyConnect: false }),
      subscribeClient: new Redis(redisUrl, { maxRetriesPerRequest: null, lazyConnect: false }),
    };
    // ioredis reconnects by itself; without a listener a lost connection would be an unhandled error.
    for (const [role, client] of [['events', clients.publishClient], ['subscriptions', clients.subscribeClient]] as const) {
      if (watch) watch.watch(client, role);
      else client.on('error', () => {});
    }
    eventTarget = degradingEventTarget(createRedisEventTarget(clients), clients.publishClient);
  }
  const pubSub: BillingPubSub = createPubSub(eventTarget ? { eventTarget } : undefined);
  return {
    pubSub,
    publisher: {
      publish(event) {
        switch (event.topic) {
          case 'alert':
            return pubSub.publish('creditAlert', event.accountId, event.alert);
          case 'balance':
            return pubSub.publish('balanceUpdated', event.accountId, { creditType: event.creditType });
          case 'purchase':
            return pubSub.publish('topUpUpdated', event.accountId, { purchaseId: event.purchaseId });
          default:
            // Local work (autoTopUpQueued) is the publisher's in app.ts, not a live event.
            return;
        }
      },
    },
    async close() {
      if (!clients) return;
      // QUIT would wait for a Redis that is away (it queues until a reconnect): then just disconnect.
      await Promise.allSettled(
        [clients.publishClient, clients.subscribeClient].map((client) => (client.status === 'ready' ? client.quit() : Promise.resolve(client.disconnect()))),
      );
    },
  };
}
