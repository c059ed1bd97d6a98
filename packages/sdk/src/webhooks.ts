/** An alert as the server POSTs it to the account's webhook (`configureAlertWebhook`). */
export interface AlertWebhookEvent {
  type: 'alert';
  alert: {
    id: string;
    accountId: string;
    kind: string;
    creditType: string | null;
    threshold: number | null;
    message: string;
    createdAt: string;
  };
}

/** The ledger events an operator's endpoint may receive (`createWebhookEndpoint`). */
export type LedgerEventType =
  | 'grant.created'
  | 'grant.expired'
  | 'grant.voided'
  | 'adjustment'
  | 'purchase.completed'
  | 'purchase.failed'
  | 'plan.changed'
  | 'alert.raised';

/**
 * A ledger event as the server POSTs it to an operator's endpoint: `id` is the event's (the same in
 * a repeated delivery), `createdAt` the ledger's time (a test clock's for accounts on one), `data`
 * what changed (a grant's id, credits, cost basis; a purchase; the plans; an alert).
 */
export interface LedgerWebhookEvent {
  id: string;
  type: LedgerEventType;
  accountId: string;
  createdAt: string;
  data: Record<string, unknown>;
}

/** What an account's alert webhook receives (`configureAlertWebhook`). */
export type WebhookEvent = AlertWebhookEvent;

/** The signature is missing, malformed, wrong, or too old (a replay). Answer 400 and drop the body. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebhookVerificationError';
  }
}

export interface VerifyWebhookOptions {
  /** The raw request body, exactly as received (not parsed and re-serialized). */
  payload: string | Uint8Array;
  /** The `Billing-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. */
  signature: string | null | undefined;
  /** The webhook's secret (`whsec_…`, from configureAlertWebhook). */
  secret: string;
  /** How old a signature may be, in seconds; default 300. Older ones are refused as replays. */
  toleranceSeconds?: number;
  /** The current time in unix seconds; default now. */
  now?: number;
}

const SIGNATURE_BYTES = 32;
/** Signatures a header may carry (one per secret the sender signs with, as during a rotation). */
const MAX_SIGNATURES = 4;

function hexToBytes(hex: string) {
  if (!/^(?:[0-9a-f]{2})+$/i.test(hex)) return null;
  const bytes = new Uint8Array(hex.length / 2);
  for (let index = 0; index < bytes.length; index += 1) bytes[index] = Number.parseInt(hex.slice(index * 2, index * 2 + 2), 16);
  return bytes;
}

/**
 * Checks the signature of a webhook delivery (alerts) and returns its parsed body; throws a
 * WebhookVerificationError otherwise. Uses Web Crypto (Node 20+, browsers, edge runtimes); the
 * comparison is constant-time (`crypto.subtle.verify`). Receivers should also drop a repeated
 * `alert.id`: deliveries are at least once.
 */
export async function verifyWebhook(options: VerifyWebhookOptions): Promise<WebhookEvent> {
  return JSON.parse(await verifiedBody(options)) as WebhookEvent;
}

/**
 * The same check for a delivery to an operator's ledger event endpoint (`createWebhookEndpoint`,
 * with that endpoint's secret); returns the event. Drop a repeated `id`: deliveries are at least once.
 */
export async function verifyLedgerWebhook(options: VerifyWebhookOptions): Promise<LedgerWebhookEvent> {
  return JSON.parse(await verifiedBody(options)) as LedgerWebhookEvent;
}

async function verifiedBody(options: VerifyWebhookOptions): Promise<string> {
  // The types are not checked at run time: a framework's repeated header (an array), a parsed body
  // or an unset secret must be refused with the typed error, not crash the receiver with a TypeError.
  if (typeof options.payload !== 'string' && !(options.payload instanceof Uint8Array)) {
    throw new WebhookVerificationError('the payload must be the raw request body (a string or bytes), not a parsed one');
  }
  if (typeof options.secret !== 'string' || options.secret === '') throw new WebhookVerificationError('no webhook secret was given');
  const header = typeof options.signature === 'string' ? options.signature : '';
  let timestamp: number | null = null;
  const signatures: Array<NonNullable<ReturnType<typeof hexToBytes>>> = [];
  for (const part of header.split(',')) {
    const [name, value] = part.trim().split('=', 2);
    if (name === 't' && value && /^\d+$/.test(value)) timestamp = Number(value);
    if (name === 'v1' && value) {
      const bytes = hexToBytes(value);
      // Only an HMAC-SHA256's 32 bytes can match: anything else is not worth hashing the body for.
      if (bytes && bytes.length === SIGNATURE_BYTES) signatures.push(bytes);
    }
  }
  if (timestamp === null || signatures.length === 0) throw new WebhookVerificationError('the Billing-Signature header is missing or malformed');
  // Each candidate costs an HMAC of the whole body: a forged header with hundreds of them would make
  // a large body cost hundreds of times its size to refuse. The server signs with one secret.
  if (signatures.length > MAX_SIGNATURES) throw new WebhookVerificationError(`the Billing-Signature header carries more than ${MAX_SIGNATURES} signatures`);
  const now = options.now ?? Math.floor(Date.now() / 1000);
  // Written so that a NaN tolerance or clock (a missing setting) refuses instead of accepting replays.
  if (!(Math.abs(now - timestamp) <= (options.toleranceSeconds ?? 300))) throw new WebhookVerificationError('the signature is too old (or from the future)');
  const encoder = new TextEncoder();
  const body = typeof options.payload === 'string' ? options.payload : new TextDecoder().decode(options.payload);
  const key = await globalThis.crypto.subtle.importKey('raw', encoder.encode(options.secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
  const signed = encoder.encode(`${timestamp}.${body}`);
  for (const signature of signatures) {
    if (await globalThis.crypto.subtle.verify('HMAC', key, signature, signed)) return body;
  }
  throw new WebhookVerificationError('the signature does not match the body and secret');
}
