/**
 * Stable error codes. Clients switch on them (`extensions.code` on GraphQL errors, `code` on union
 * members), so a code, once published, is never renamed.
 */
export const ErrorCode = {
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  FORBIDDEN: 'FORBIDDEN',
  INVALID_INPUT: 'INVALID_INPUT',
  INVALID_QUANTITY: 'INVALID_QUANTITY',
  INVALID_CREDITS: 'INVALID_CREDITS',
  ACCOUNT_NOT_FOUND: 'ACCOUNT_NOT_FOUND',
  SEAT_NOT_FOUND: 'SEAT_NOT_FOUND',
  PLAN_NOT_FOUND: 'PLAN_NOT_FOUND',
  UNKNOWN_FEATURE: 'UNKNOWN_FEATURE',
  UNKNOWN_CREDIT_TYPE: 'UNKNOWN_CREDIT_TYPE',
  PACK_NOT_FOUND: 'PACK_NOT_FOUND',
  TEST_CLOCK_NOT_FOUND: 'TEST_CLOCK_NOT_FOUND',
  API_KEY_NOT_FOUND: 'API_KEY_NOT_FOUND',
  USAGE_EVENT_NOT_FOUND: 'USAGE_EVENT_NOT_FOUND',
  IDEMPOTENCY_CONFLICT: 'IDEMPOTENCY_CONFLICT',
  INSUFFICIENT_CREDITS: 'INSUFFICIENT_CREDITS',
  FEATURE_NOT_AVAILABLE: 'FEATURE_NOT_AVAILABLE',
  SPEND_LIMIT_EXCEEDED: 'SPEND_LIMIT_EXCEEDED',
  INVALID_TTL: 'INVALID_TTL',
  RESERVATION_NOT_FOUND: 'RESERVATION_NOT_FOUND',
  RESERVATION_RELEASED: 'RESERVATION_RELEASED',
  RESERVATION_EXPIRED: 'RESERVATION_EXPIRED',
  RESERVATION_ALREADY_SETTLED: 'RESERVATION_ALREADY_SETTLED',
  SETTLE_EXCEEDS_HOLD: 'SETTLE_EXCEEDS_HOLD',
  REFUND_EXCEEDS_CHARGE: 'REFUND_EXCEEDS_CHARGE',
  INVALID_CLOCK_ADVANCE: 'INVALID_CLOCK_ADVANCE',
  SPEND_LIMIT_NOT_FOUND: 'SPEND_LIMIT_NOT_FOUND',
  STRIPE_NOT_CONFIGURED: 'STRIPE_NOT_CONFIGURED',
  STRIPE_UNAVAILABLE: 'STRIPE_UNAVAILABLE',
  PAYMENT_DECLINED: 'PAYMENT_DECLINED',
  /** Stripe refused the request for good (amount_too_small, no such customer, invalid request): the purchase is FAILED. */
  PAYMENT_REFUSED: 'PAYMENT_REFUSED',
  /** An off-session purchase without a saved card: save one first (createPaymentMethodSetup). */
  PAYMENT_METHOD_REQUIRED: 'PAYMENT_METHOD_REQUIRED',
  ALERT_NOT_FOUND: 'ALERT_NOT_FOUND',
  SESSION_NOT_FOUND: 'SESSION_NOT_FOUND',
  PURCHASE_NOT_FOUND: 'PURCHASE_NOT_FOUND',
  /** The external id already names another account, or the account already has another one (set once). */
  EXTERNAL_ID_TAKEN: 'EXTERNAL_ID_TAKEN',
  SCHEDULED_GRANT_NOT_FOUND: 'SCHEDULED_GRANT_NOT_FOUND',
  /** New usage refused: the subscription's renewal is unpaid past its grace period (until the invoice is paid). */
  PAYMENT_OVERDUE: 'PAYMENT_OVERDUE',
  /** New usage refused: the subscription ended and no free plan took its place. */
  SUBSCRIPTION_ENDED: 'SUBSCRIPTION_ENDED',
  /** The account has no Stripe subscription that still bills. */
  NOT_SUBSCRIBED: 'NOT_SUBSCRIBED',
  /** The account already has a Stripe subscription that bills: change its plan instead. */
  SUBSCRIPTION_EXISTS: 'SUBSCRIPTION_EXISTS',
  /** The plan is not linked to a Stripe Price (linkPlanToStripePrice). */
  PLAN_NOT_SOLD_THROUGH_STRIPE: 'PLAN_NOT_SOLD_THROUGH_STRIPE',
  WEBHOOK_ENDPOINT_NOT_FOUND: 'WEBHOOK_ENDPOINT_NOT_FOUND',
  /** No such grant on the account named (another account's grant answers the same). */
  GRANT_NOT_FOUND: 'GRANT_NOT_FOUND',
  /** The grant was voided: nothing more can be corrected on it. */
  GRANT_VOIDED: 'GRANT_VOIDED',
  /** The grant has expired: its expiry can no longer be moved (grant new credits instead). */
  GRANT_EXPIRED: 'GRANT_EXPIRED',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Codes of requests refused before any resolver ran (HTTP and WebSocket guards, GraphQL itself). Not
 * BillingErrors, but clients switch on them all the same; with ErrorCode they are every code the
 * server sends (the SDK's ErrorCode type is printed from both by scripts/print-error-codes.ts).
 */
export const TransportErrorCode = {
  BAD_REQUEST: 'BAD_REQUEST',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  CSRF_HEADER_REQUIRED: 'CSRF_HEADER_REQUIRED',
  RATE_LIMITED: 'RATE_LIMITED',
  INTROSPECTION_DISABLED: 'INTROSPECTION_DISABLED',
  QUERY_TOO_DEEP: 'QUERY_TOO_DEEP',
  TOO_MANY_ALIASES: 'TOO_MANY_ALIASES',
  TOO_MANY_DIRECTIVES: 'TOO_MANY_DIRECTIVES',
  TOO_MANY_TOKENS: 'TOO_MANY_TOKENS',
  QUERY_TOO_COSTLY: 'QUERY_TOO_COSTLY',
  GRAPHQL_PARSE_FAILED: 'GRAPHQL_PARSE_FAILED',
  GRAPHQL_VALIDATION_FAILED: 'GRAPHQL_VALIDATION_FAILED',
  INTERNAL_SERVER_ERROR: 'INTERNAL_SERVER_ERROR',
  /** The database could not be reached or answer (HTTP 503, `retryable`): retry with the same idempotency key. */
  UNAVAILABLE: 'UNAVAILABLE',
  /** Costly operations already use this process's budget (HTTP 503, `retryable`, `retryAfter`). */
  SERVER_BUSY: 'SERVER_BUSY',
  /** A WebSocket already runs WS_MAX_SUBSCRIPTIONS_PER_SOCKET operations. */
  TOO_MANY_SUBSCRIPTIONS: 'TOO_MANY_SUBSCRIPTIONS',
} as const;

/** An expected failure: it reaches the client with its code; unexpected errors are masked. */
export class BillingError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'BillingError';
  }
}

export function invalidInput(message: string, field?: string): BillingError {
  return new BillingError(ErrorCode.INVALID_INPUT, message, field ? { field } : {});
}
