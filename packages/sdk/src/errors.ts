import type { ServerErrorCode } from './generated/errorCodes.ts';

export { SERVER_ERROR_CODES, type ServerErrorCode } from './generated/errorCodes.ts';

/**
 * Codes the SDK itself gives an error when the server's answer carries none: `HTTP_ERROR` (an
 * answer that is not GraphQL, see `status`), `CONNECTION_CLOSED` (a live feed's socket closed for
 * good, see `closeCode`), `TIMEOUT` and `ABORTED` (see BillingNetworkError).
 */
export type ClientErrorCode = 'HTTP_ERROR' | 'CONNECTION_CLOSED' | 'TIMEOUT' | 'ABORTED' | 'NETWORK_ERROR';

/** Every code a `BillingApiError` or `BillingNetworkError` can carry: switch on it. */
export type ErrorCode = ServerErrorCode | ClientErrorCode;

/** One GraphQL error as the server sent it. */
export interface GraphQLErrorEntry {
  message: string;
  path?: ReadonlyArray<string | number>;
  extensions?: Record<string, unknown>;
}

/** What an error knows beyond its code. */
export interface BillingApiErrorDetails {
  /** The server's `x-request-id` for this call: quote it when asking the operator. */
  requestId?: string | null;
  /** The server says trying again later may succeed (rate limits, `extensions.retryable`). */
  retryable?: boolean;
  /** How long the server asked to wait before trying again (`Retry-After`), in milliseconds. */
  retryAfterMs?: number | null;
  /** A live feed's WebSocket close code (4403: the key or session was refused). */
  closeCode?: number | null;
  cause?: unknown;
}

/** The server answered with an error, or refused a live feed. Switch on `code`. */
export class BillingApiError extends Error {
  /** The server's `x-request-id` for this call (null for live feeds and answers without one). */
  readonly requestId: string | null;
  /** Whether the server said trying again later may succeed. */
  readonly retryable: boolean;
  /** The wait the server asked for before a retry, in milliseconds (`Retry-After`), or null. */
  readonly retryAfterMs: number | null;
  /** For a live feed closed for good: the WebSocket close code. */
  readonly closeCode: number | null;

  constructor(
    message: string,
    /** The stable code (`extensions.code`): switch on it. */
    readonly code: ErrorCode,
    /** Every GraphQL error of the answer (the first gave `code` and `message`). */
    readonly errors: ReadonlyArray<GraphQLErrorEntry>,
    /** The HTTP status of the answer (200 for GraphQL errors of an answered request, 0 for live feeds). */
    readonly status: number,
    details: BillingApiErrorDetails = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'BillingApiError';
    this.requestId = details.requestId ?? null;
    this.retryable = details.retryable ?? false;
    this.retryAfterMs = details.retryAfterMs ?? null;
    this.closeCode = details.closeCode ?? null;
  }
}

/**
 * The request got no answer: the server could not be reached, the connection dropped, the timeout
 * passed (`code` TIMEOUT) or the caller's signal aborted it (`code` ABORTED). Whether the server
 * acted is unknown: repeat it only with the same idempotency key.
 */
export class BillingNetworkError extends Error {
  constructor(
    message: string,
    cause: unknown,
    /** NETWORK_ERROR, TIMEOUT or ABORTED. */
    readonly code: 'NETWORK_ERROR' | 'TIMEOUT' | 'ABORTED' = 'NETWORK_ERROR',
    /** The `x-request-id` the SDK sent, to find the call in the server's logs if it arrived. */
    readonly requestId: string | null = null,
  ) {
    super(message, { cause });
    this.name = 'BillingNetworkError';
  }
}
