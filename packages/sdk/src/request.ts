import { BillingApiError, BillingNetworkError, type ErrorCode, type GraphQLErrorEntry } from './errors.ts';

/** Options every method takes as its last argument. */
export interface RequestOptions {
  /** Aborts the call (and its retries): it rejects with a BillingNetworkError of code ABORTED. */
  signal?: AbortSignal;
  /** Milliseconds to wait for each attempt's answer; default the client's `timeout` (30,000). */
  timeout?: number;
  /**
   * The idempotency key of a call that takes one (recordUsage, grantCredits, …), when the input has
   * none; for recordUsageBatch, events without a key get `<key>:<index>`. Default: a random UUID,
   * the same for every retry of the call.
   */
  idempotencyKey?: string;
  /** Extra HTTP headers for this call (the API key's `authorization` is always the client's). */
  headers?: Record<string, string>;
}

export interface TransportOptions {
  url: string;
  authorization: () => string;
  fetch: typeof fetch;
  headers: Record<string, string>;
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  /** A `Retry-After` longer than this is not waited for: the error is thrown. */
  maxRetryAfterMs: number;
}

/**
 * Whether a call may be repeated when its answer is lost: reads, and mutations made idempotent by
 * their key (the same key is sent again). Other mutations are sent again only when the server says
 * it did not run them (429).
 */
export type Repeatable = 'idempotent' | 'once';

/** Gateways answering for an unreachable server: as good as no answer. */
const GATEWAY_STATUSES = new Set([502, 503, 504]);

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Exponential backoff with jitter (half fixed, half random), so that clients do not retry in step. */
export function backoffMs(baseMs: number, attempt: number): number {
  const ceiling = Math.min(baseMs * 2 ** attempt, 10_000);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

/** `Retry-After` in seconds or as an HTTP date; else the `retryAfter` seconds of the error's extensions. */
function retryAfterMs(response: Response, first: GraphQLErrorEntry | undefined): number | null {
  const header = response.headers.get('retry-after');
  if (header) {
    const seconds = Number(header);
    if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
    const date = Date.parse(header);
    if (!Number.isNaN(date)) return Math.max(0, date - Date.now());
  }
  const extension = first?.extensions?.retryAfter;
  return typeof extension === 'number' && Number.isFinite(extension) ? Math.max(0, extension * 1000) : null;
}

interface GraphQLAnswer<Result> {
  data?: Result | null;
  errors?: GraphQLErrorEntry[];
}

/** The request id of each answer's data, for errors the client raises from an answer (a missing account). */
const requestIds = new WeakMap<object, string>();

/** The server's `x-request-id` of the call that answered `data`, if known. */
export function requestIdOf(data: object): string | null {
  return requestIds.get(data) ?? null;
}

function newRequestId(): string {
  return globalThis.crypto.randomUUID();
}

/**
 * Sends one GraphQL operation over HTTP: timeout per attempt, the caller's signal, retries with
 * jitter (a lost answer or gateway error for repeatable calls, 429 after its Retry-After for all,
 * errors the server marks `retryable` for repeatable calls). All retries live here.
 */
export async function sendOperation<Result>(
  transport: TransportOptions,
  query: string,
  variables: unknown,
  repeatable: Repeatable,
  options: RequestOptions = {},
): Promise<Result> {
  const requestId = newRequestId();
  const timeoutMs = options.timeout ?? transport.timeoutMs;
  const body = JSON.stringify({ query, variables });
  for (let attempt = 0; ; attempt += 1) {
    const canRetry = attempt < transport.retries;
    if (options.signal?.aborted) throw new BillingNetworkError('the call was aborted', options.signal.reason, 'ABORTED', requestId);
    // One controller for the timeout and the caller's signal (AbortSignal.any is too new for some browsers).
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const forward = () => controller.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', forward, { once: true });
    const signal = controller.signal;
    let response: Response;
    let text: string;
    try {
      response = await transport.fetch(transport.url, {
        method: 'POST',
        headers: {
          ...transport.headers,
          ...options.headers,
          'content-type': 'application/json',
          accept: 'application/json',
          authorization: transport.authorization(),
          'x-request-id': requestId,
        },
        body,
        signal,
      });
      text = await response.text();
    } catch (error) {
      if (options.signal?.aborted) throw new BillingNetworkError('the call was aborted', options.signal.reason, 'ABORTED', requestId);
      if (repeatable === 'idempotent' && canRetry) {
        await pause(backoffMs(transport.retryDelayMs, attempt), options.signal, requestId);
        continue;
      }
      throw timedOut
        ? new BillingNetworkError(`the billing API did not answer within ${timeoutMs} ms`, error, 'TIMEOUT', requestId)
        : new BillingNetworkError('the billing API could not be reached', error, 'NETWORK_ERROR', requestId);
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', forward);
    }
    const answeredId = response.headers.get('x-request-id') ?? requestId;
    let parsed: GraphQLAnswer<Result> | null;
    try {
      parsed = JSON.parse(text) as GraphQLAnswer<Result> | null;
    } catch {
      parsed = null;
    }
    const first = parsed?.errors?.[0];
    const wait = retryAfterMs(response, first);
    const code = typeof first?.extensions?.code === 'string' ? (first.extensions.code as ErrorCode) : null;
    const rateLimited = response.status === 429 || code === 'RATE_LIMITED';
    const markedRetryable = first?.extensions?.retryable === true;
    if (canRetry) {
      // A 429 is refused before anything ran: any call may be sent again, after the wait asked for.
      if (rateLimited && (wait ?? 0) <= transport.maxRetryAfterMs) {
        await pause((wait ?? backoffMs(transport.retryDelayMs, attempt)) + Math.random() * 250, options.signal, requestId);
        continue;
      }
      if (repeatable === 'idempotent' && (markedRetryable || (GATEWAY_STATUSES.has(response.status) && !code))) {
        await pause(Math.max(wait ?? 0, backoffMs(transport.retryDelayMs, attempt)), options.signal, requestId);
        continue;
      }
    }
    const details = { requestId: answeredId, retryable: rateLimited || markedRetryable, retryAfterMs: wait };
    if (first) throw new BillingApiError(first.message, code ?? 'HTTP_ERROR', parsed?.errors ?? [], response.status, details);
    if (!parsed || !parsed.data) throw new BillingApiError(`HTTP ${response.status} without a GraphQL answer`, 'HTTP_ERROR', [], response.status, details);
    if (typeof parsed.data === 'object') requestIds.set(parsed.data, answeredId);
    return parsed.data;
  }
}

async function pause(ms: number, signal: AbortSignal | undefined, requestId: string): Promise<void> {
  try {
    await sleep(ms, signal);
  } catch (reason) {
    throw new BillingNetworkError('the call was aborted', reason, 'ABORTED', requestId);
  }
}
