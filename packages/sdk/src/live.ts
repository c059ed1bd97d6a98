import { createClient, type Client } from 'graphql-ws/client';
import { BillingApiError, type ErrorCode, type GraphQLErrorEntry } from './errors.ts';

/** What happens to the connection under a live feed, for a status indicator or a re-read. */
export type LiveEvent =
  /** The WebSocket is open and the key accepted (also on a new feed of an open socket). */
  | { type: 'connected' }
  /** The connection was lost; the SDK is trying again (`attempt` counts from 1), with backoff. */
  | { type: 'reconnecting'; attempt: number }
  /**
   * Connected again and resubscribed. `subscribeToBalance` then sends the current balances first,
   * so nothing is missed; alerts raised while away are not replayed: read `alerts()` if they matter.
   */
  | { type: 'reconnected' };

/** Callbacks of a live feed. Without `onData` the feed is read with `for await`. */
export interface LiveHandlers<T> {
  /** Each event, in order. */
  onData?: (event: T) => void;
  /**
   * The feed ended with an error and will send nothing more: the key was refused (code
   * UNAUTHENTICATED, closeCode 4403), the account is unknown or another tenant's (ACCOUNT_NOT_FOUND),
   * or the socket closed for good (CONNECTION_CLOSED). Without this handler the error goes to the
   * client's `onLiveError`, else to `console.error`: it never becomes an unhandled rejection.
   */
  onError?: (error: BillingApiError) => void;
  /** Connection lifecycle: connected, reconnecting, reconnected. */
  onLiveEvent?: (event: LiveEvent) => void;
}

/**
 * A live subscription. With `onData` it calls back; otherwise iterate it with `for await` (one
 * loop at a time), which throws a `BillingApiError` when the feed fails. `unsubscribe()` ends it.
 */
export interface LiveFeed<T> extends AsyncIterable<T> {
  /** Ends the feed (a `for await` over it finishes); the shared socket closes with the last feed. */
  unsubscribe(): Promise<void>;
}

export interface LiveOptions {
  url: string;
  /** Read at each (re)connection, so that a refreshed session token is used on reconnect. */
  authorization: () => string;
  webSocketImpl?: unknown;
  /** Ping interval; a socket without a pong within `keepAliveMs / 2` is closed and reconnected. */
  keepAliveMs: number;
  /** Where errors of feeds without `onError` go. */
  onLiveError?: (error: BillingApiError) => void;
}

interface ActiveFeed {
  onLiveEvent(event: LiveEvent): void;
}

/** `graphql-ws` closes with 4403 when the server's onConnect refuses the key. */
const FORBIDDEN = 4403;
/** Our own close when a ping gets no pong: not fatal, the client reconnects. */
const PONG_TIMEOUT = 4408;

function isCloseEvent(value: unknown): value is { code: number; reason: string } {
  return typeof value === 'object' && value !== null && 'code' in value && typeof (value as { code: unknown }).code === 'number';
}

/** Whatever graphql-ws hands a sink's `error`, as a typed error. */
export function toLiveError(error: unknown): BillingApiError {
  if (error instanceof BillingApiError) return error;
  if (isCloseEvent(error)) {
    const refused = error.code === FORBIDDEN;
    const message = refused
      ? 'the live connection was refused: the API key or session token is not valid (close code 4403)'
      : `the live connection closed for good (close code ${error.code}${error.reason ? `: ${error.reason}` : ''})`;
    return new BillingApiError(message, refused ? 'UNAUTHENTICATED' : 'CONNECTION_CLOSED', [], 0, { closeCode: error.code });
  }
  if (Array.isArray(error)) return fromGraphQLErrors(error as GraphQLErrorEntry[]);
  const message = error instanceof Error ? error.message : String(error);
  return new BillingApiError(`the live connection failed: ${message}`, 'CONNECTION_CLOSED', [], 0, { cause: error });
}

function fromGraphQLErrors(errors: ReadonlyArray<GraphQLErrorEntry>): BillingApiError {
  const first = errors[0];
  const code = typeof first?.extensions?.code === 'string' ? (first.extensions.code as ErrorCode) : 'INTERNAL_SERVER_ERROR';
  return new BillingApiError(first?.message ?? 'the subscription failed', code, errors, 0);
}

/** One WebSocket (graphql-ws) shared by every feed of a client, opened with the first feed. */
export class LiveConnection {
  private client: Client | null = null;
  private readonly feeds = new Set<ActiveFeed>();
  private connected = false;

  constructor(private readonly options: LiveOptions) {}

  private open(): Client {
    if (this.client) return this.client;
    const webSocketImpl = this.options.webSocketImpl ?? (globalThis as { WebSocket?: unknown }).WebSocket;
    if (!webSocketImpl) throw new Error('no WebSocket implementation: pass webSocketImpl (in Node 20: WebSocket from "ws")');
    let socket: { readyState: number; close(code: number, reason: string): void; terminate?: () => void } | null = null;
    let pongTimer: ReturnType<typeof setTimeout> | undefined;
    this.client = createClient({
      url: this.options.url,
      webSocketImpl,
      connectionParams: () => ({ authorization: this.options.authorization() }),
      keepAlive: this.options.keepAliveMs,
      // Reconnect (and resubscribe) for as long as it takes when the server restarts or a load
      // balancer drops the socket; a refused key (4403) is final.
      retryAttempts: Number.POSITIVE_INFINITY,
      shouldRetry: (event) => !(isCloseEvent(event) && event.code === FORBIDDEN),
      retryWait: async (retries) => {
        this.broadcast({ type: 'reconnecting', attempt: retries + 1 });
        // Jitter, so that the clients of a restarted server do not all come back in the same instant.
        const ceiling = Math.min(250 * 2 ** retries, 10_000);
        await new Promise((resolve) => setTimeout(resolve, ceiling / 2 + Math.random() * (ceiling / 2)));
      },
      on: {
        connected: (opened, _payload, wasRetry) => {
          socket = opened as typeof socket;
          this.connected = true;
          this.broadcast({ type: wasRetry ? 'reconnected' : 'connected' });
        },
        closed: () => {
          socket = null;
          this.connected = false;
          clearTimeout(pongTimer);
        },
        ping: (received) => {
          if (received) return;
          clearTimeout(pongTimer);
          // A half-open socket (a sleeping laptop, a dropped NAT entry) never errors by itself.
          pongTimer = setTimeout(() => {
            if (!socket || socket.readyState !== 1) return;
            // A closing handshake over a dead connection would wait for the peer; `ws` can drop it at once.
            if (socket.terminate) socket.terminate();
            else socket.close(PONG_TIMEOUT, 'no pong');
          }, this.options.keepAliveMs / 2);
        },
        pong: (received) => {
          if (received) clearTimeout(pongTimer);
        },
      },
    });
    return this.client;
  }

  private broadcast(event: LiveEvent): void {
    for (const feed of this.feeds) feed.onLiveEvent(event);
  }

  private reportUnhandled(error: BillingApiError): void {
    if (this.options.onLiveError) this.options.onLiveError(error);
    else console.error('[@credit-billing/sdk] live feed ended:', error);
  }

  subscribe<Data, T>(query: string, variables: Record<string, unknown>, pick: (data: Data) => T, handlers: LiveHandlers<T> = {}): LiveFeed<T> {
    const client = this.open();
    const queue: T[] = [];
    let failure: BillingApiError | null = null;
    let ended = false;
    let wake: (() => void) | null = null;
    let iterating = false;
    const notify = () => {
      const waiting = wake;
      wake = null;
      waiting?.();
    };
    const safely = (callback: () => void) => {
      try {
        callback();
      } catch (error) {
        // A throwing handler of the host must not end the feed or escape as an unhandled error.
        console.error('[@credit-billing/sdk] a live feed handler threw:', error);
      }
    };
    const feed: ActiveFeed = { onLiveEvent: (event) => handlers.onLiveEvent && safely(() => handlers.onLiveEvent!(event)) };
    const finish = (error: BillingApiError | null) => {
      if (ended) return;
      ended = true;
      this.feeds.delete(feed);
      if (error) {
        failure = error;
        if (handlers.onError) safely(() => handlers.onError!(error));
        else if (handlers.onData || !iterating) this.reportUnhandled(error);
      }
      notify();
    };
    this.feeds.add(feed);
    if (this.connected) queueMicrotask(() => feed.onLiveEvent({ type: 'connected' }));
    const stop = client.subscribe<Data>(
      { query, variables },
      {
        next: (result) => {
          if (ended) return;
          if (result.errors?.length) {
            finish(fromGraphQLErrors(result.errors as ReadonlyArray<GraphQLErrorEntry>));
            stop();
            return;
          }
          if (result.data === undefined || result.data === null) return;
          const event = pick(result.data);
          if (handlers.onData) safely(() => handlers.onData!(event));
          else {
            queue.push(event);
            notify();
          }
        },
        error: (error) => finish(toLiveError(error)),
        complete: () => finish(null),
      },
    );
    return {
      [Symbol.asyncIterator]: (): AsyncIterator<T> => {
        if (handlers.onData) throw new TypeError('this feed calls onData: it cannot also be iterated');
        if (iterating) throw new TypeError('this feed is already being iterated');
        iterating = true;
        return {
          next: async (): Promise<IteratorResult<T>> => {
            for (;;) {
              if (queue.length > 0) return { done: false, value: queue.shift()! };
              if (failure) {
                const error = failure;
                failure = null;
                throw error;
              }
              if (ended) return { done: true, value: undefined };
              await new Promise<void>((resolve) => {
                wake = resolve;
              });
            }
          },
          return: async (): Promise<IteratorResult<T>> => {
            stop();
            finish(null);
            return { done: true, value: undefined };
          },
        };
      },
      unsubscribe: async () => {
        stop();
        finish(null);
      },
    };
  }

  /** Closes the socket: every feed ends. */
  async close(): Promise<void> {
    const client = this.client;
    this.client = null;
    this.connected = false;
    await client?.dispose();
  }
}
