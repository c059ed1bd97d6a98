import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

export interface LiveSubscription<T> {
  /** Everything received so far, in order. */
  events: T[];
  /** Errors the server sent for the operation (a refused subscription lands here). */
  errors: unknown[];
  /** Resolves with the first `count` events once that many have arrived (rejects after a timeout). */
  take(count: number, timeoutMs?: number): Promise<T[]>;
  /** Resolves once the operation ended (completed or failed). */
  ended: Promise<void>;
}

export interface LiveClient {
  client: Client;
  subscribe<T>(query: string, variables: Record<string, unknown>, pick: (data: any) => T): LiveSubscription<T>;
  /** Resolves with the close code when the socket closes (4403 when the key is refused). */
  closed: Promise<number>;
  dispose(): Promise<void>;
}

/** A front end's connection: the official graphql-ws client, the key in connection_init. */
export function connectLive(httpUrl: string, apiKey: string, options: { retryAttempts?: number } = {}): LiveClient {
  let resolveClosed: (code: number) => void = () => {};
  const closed = new Promise<number>((resolve) => {
    resolveClosed = resolve;
  });
  const client = createClient({
    url: `${httpUrl.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${apiKey}` },
    retryAttempts: options.retryAttempts ?? 0,
    lazy: false,
    // The close (4403 for a refused key) is reported through on.closed below.
    onNonLazyError: () => {},
    shouldRetry: () => (options.retryAttempts ?? 0) > 0,
    on: { closed: (event) => resolveClosed((event as { code: number }).code) },
  });
  return {
    client,
    closed,
    subscribe<T>(query: string, variables: Record<string, unknown>, pick: (data: any) => T): LiveSubscription<T> {
      const events: T[] = [];
      const errors: unknown[] = [];
      const waiters: Array<() => void> = [];
      let resolveEnded: () => void = () => {};
      const ended = new Promise<void>((resolve) => {
        resolveEnded = resolve;
      });
      client.subscribe(
        { query, variables },
        {
          next: (result) => {
            if (result.errors) errors.push(...result.errors);
            if (result.data) events.push(pick(result.data));
            for (const waiter of waiters.splice(0)) waiter();
          },
          error: (error) => {
            errors.push(error);
            resolveEnded();
            for (const waiter of waiters.splice(0)) waiter();
          },
          complete: () => resolveEnded(),
        },
      );
      return {
        events,
        errors,
        ended,
        async take(count, timeoutMs = 10_000) {
          const deadline = Date.now() + timeoutMs;
          while (events.length < count) {
            if (Date.now() > deadline) throw new Error(`received ${events.length} of ${count} events: ${JSON.stringify(events)} ${JSON.stringify(errors)}`);
            await new Promise<void>((resolve) => {
              waiters.push(resolve);
              setTimeout(resolve, 100);
            });
          }
          return events.slice(0, count);
        },
      };
    },
    dispose: async () => {
      await client.dispose();
    },
  };
}

export const ALERTS_SUBSCRIPTION = `subscription($accountId: ID!) { creditAlerts(accountId: $accountId) { id kind creditType threshold message } }`;
export const BALANCE_SUBSCRIPTION = `subscription($accountId: ID!) { balanceUpdated(accountId: $accountId) { creditType available periodUsed } }`;

/** Waits until the server has the client's subscriptions live: a probe change must come back. */
export async function waitUntilLive(live: LiveClient, accountId: string, probe: () => Promise<unknown>): Promise<void> {
  const balances = live.subscribe(BALANCE_SUBSCRIPTION, { accountId }, (data) => data.balanceUpdated);
  const deadline = Date.now() + 15_000;
  while (balances.events.length === 0) {
    if (Date.now() > deadline) throw new Error('subscriptions never became live');
    await probe();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
