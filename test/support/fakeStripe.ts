/**
 * A small in-process stand-in for Stripe's REST API, for tests that must run without network access
 * or stripe-mock. It is a real `node:http` server, so the official `stripe` client talks to it over
 * HTTP exactly as it would to api.stripe.com (form-encoded bodies, idempotency keys, error shapes).
 *
 * Supported endpoints (anything else is a Stripe-shaped 404):
 * - `POST /v1/customers`, `GET /v1/customers/:id`, `POST /v1/customers/:id` (update)
 * - `POST /v1/checkout/sessions` (mode=payment, `line_items[][price_data]` only), `GET /v1/checkout/sessions/:id`
 * - `POST /v1/payment_intents`, `GET /v1/payment_intents/:id`, `GET /v1/payment_intents/search` (metadata queries)
 * - `GET /checkout/:sessionId`: a placeholder page behind `session.url`
 * - invoices and invoice items: see fakeStripeBilling.ts
 * - cards on file (setup-mode Checkout, payment methods, SetupIntents, portal sessions, cards that
 *   need authentication or decline, injected errors): fakeStripeCards.ts
 * - products, prices, subscriptions, subscription-mode Checkout, test clocks: see fakeStripeSubscriptions.ts
 *
 * Form values are kept as the strings they arrive as (`amount=500` parses to `'500'`); only the fields
 * the fake computes with (amounts, quantities) are converted, and they are returned as numbers like
 * Stripe does.
 */
import { randomInt } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { billingControls, billingRoutes, FakeBillingState, type FakeBilling } from './fakeStripeBilling.ts';
import {
  cardControls,
  cardRoutes,
  chargeCard,
  createSetupCheckoutSession,
  failureBody,
  storeCard,
  takeFailure,
  type FakeCard,
  type FakeCardControls,
} from './fakeStripeCards.ts';
import {
  createSubscriptionCheckoutSession,
  FakeSubscriptionsState,
  subscriptionControls,
  subscriptionRoutes,
  type FakeSubscriptions,
} from './fakeStripeSubscriptions.ts';

export type Metadata = Record<string, string>;

export interface FakeCustomer {
  id: string;
  object: 'customer';
  created: number;
  livemode: false;
  email: string | null;
  name: string | null;
  metadata: Metadata;
  invoice_settings: { default_payment_method: string | null };
  /** The Stripe test clock the customer lives by (fakeStripeSubscriptions.ts), or null. */
  test_clock: string | null;
}

export interface FakeCheckoutSession {
  id: string;
  object: 'checkout.session';
  created: number;
  expires_at: number;
  livemode: false;
  /** Null once the session is complete, as on Stripe. */
  url: string | null;
  mode: 'payment' | 'setup' | 'subscription';
  /** The subscription a completed subscription-mode session created (fakeStripeSubscriptions.ts). */
  subscription?: string | null;
  customer: string | null;
  customer_email: string | null;
  client_reference_id: string | null;
  metadata: Metadata;
  payment_intent: string | null;
  /** Setup mode: the SetupIntent, once the customer has entered a card. */
  setup_intent?: string | null;
  payment_status: 'unpaid' | 'paid' | 'no_payment_required';
  status: 'open' | 'complete' | 'expired';
  amount_subtotal: number;
  amount_total: number;
  currency: string;
  success_url: string | null;
  cancel_url: string | null;
}

/** What the session was created with under `payment_intent_data`, which Stripe does not echo back on the session. */
export interface FakeCheckoutPaymentIntentData {
  metadata: Metadata;
  /** `off_session`: the card paid with is attached to the customer, to charge it later. */
  setup_future_usage: string | null;
}

export interface FakePaymentError {
  type: 'card_error';
  code: 'card_declined';
  decline_code: 'generic_decline';
  message: string;
  charge: string;
  doc_url: string;
}

export interface FakePaymentIntent {
  id: string;
  object: 'payment_intent';
  created: number;
  livemode: false;
  status: 'requires_payment_method' | 'requires_confirmation' | 'requires_action' | 'succeeded';
  amount: number;
  amount_received: number;
  currency: string;
  customer: string | null;
  payment_method: string | null;
  description: string | null;
  metadata: Metadata;
  /** The attempted charge: set for succeeded and declined confirmations alike. */
  latest_charge: string | null;
  last_payment_error: FakePaymentError | null;
}

export interface FakeEvent<T = unknown> {
  id: string;
  object: 'event';
  type: string;
  api_version: string;
  /** Unix seconds. */
  created: number;
  livemode: false;
  pending_webhooks: number;
  request: { id: string | null; idempotency_key: string | null };
  data: { object: T };
}

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  /** The `Idempotency-Key` header. Note the official client adds a `stripe-node-retry-<uuid>` key to every POST that has none. */
  idempotencyKey: string | null;
  /** The form body (for GET, the query string) parsed into nested objects and arrays; leaf values are strings. */
  body: Record<string, unknown>;
  /** When the request arrived. */
  at: Date;
  /** The HTTP status the fake answered with. */
  status: number;
  /** True when the answer was replayed from an earlier request with the same idempotency key. */
  replayed: boolean;
}

export interface SignedPayload {
  /** The exact JSON text that was signed: pass it unmodified as the raw webhook body. */
  body: string;
  /** The value of the `Stripe-Signature` header. */
  signature: string;
}

export interface FakeStripe {
  /** Base URL, e.g. `http://127.0.0.1:1234` (no trailing slash). */
  readonly url: string;
  readonly port: number;
  /** The official client, configured against this server. */
  readonly client: Stripe;
  /** Every request received, in order, replays included. */
  readonly requests: readonly RecordedRequest[];
  /** Stored objects by id (live: they reflect later changes). */
  readonly customers: ReadonlyMap<string, Readonly<FakeCustomer>>;
  readonly checkoutSessions: ReadonlyMap<string, Readonly<FakeCheckoutSession>>;
  /** `payment_intent_data` of each checkout session, by session id. */
  readonly checkoutPaymentIntentData: ReadonlyMap<string, Readonly<FakeCheckoutPaymentIntentData>>;
  readonly paymentIntents: ReadonlyMap<string, Readonly<FakePaymentIntent>>;
  /** Invoices and invoice items (fakeStripeBilling.ts). */
  readonly billing: FakeBilling;
  /** Cards on file, setup-mode Checkout, portal sessions and injected errors (fakeStripeCards.ts). */
  readonly cards: FakeCardControls;
  /** Prices, subscriptions, test clocks (fakeStripeSubscriptions.ts). */
  readonly subscriptions: FakeSubscriptions;
  /** Forgets recorded requests. Stored objects, idempotency records and armed declines are kept. */
  reset(): void;
  /** Sets `invoice_settings.default_payment_method`. Throws if the customer is unknown. */
  setDefaultPaymentMethod(customerId: string, paymentMethodId: string | null): void;
  /**
   * Declines the next `n` confirmed PaymentIntent creations (402 `card_declined`) on top of any
   * already armed. Idempotent replays, payments already declined by {@link FakeStripe.declineCustomer}
   * and {@link FakeStripe.completeCheckout} do not use them up.
   */
  declineNextPayments(n: number): void;
  /** While on, every confirmed PaymentIntent for this customer is declined. */
  declineCustomer(customerId: string, on: boolean): void;
  /**
   * Does what a customer paying on the hosted page would: creates a succeeded PaymentIntent for the
   * session's `amount_total`, with the session's customer and its `payment_intent_data.metadata`,
   * paid with a new card (`card`, default visa) that is attached to the customer when the session
   * asked for `setup_future_usage`, and marks the session complete and paid. Returns snapshots (as the API would), e.g. to build webhook
   * events from. Throws if the session is unknown or not open.
   */
  completeCheckout(sessionId: string, card?: FakeCard): { session: FakeCheckoutSession; paymentIntent: FakePaymentIntent };
  /** Expires an open Checkout Session unpaid, as Stripe does after its `expires_at`. Returns a snapshot. */
  expireCheckout(sessionId: string): FakeCheckoutSession;
  /**
   * The next `n` POSTs to `path` are carried out (and their idempotency key saved) but their answer is
   * lost: the connection is closed instead, as when a network fails after Stripe acted.
   */
  loseAnswers(path: string, n: number): void;
  /** A Stripe Event carrying a snapshot (deep copy) of `object`. */
  event<T>(type: string, object: T): FakeEvent<T>;
  /**
   * Serializes `event` and signs it as Stripe signs webhooks, with the client's
   * `webhooks.generateTestHeaderString`. `timestamp` is in Unix seconds (default now; note the client
   * treats 0 as "now" too).
   */
  signedPayload(event: object, secret: string, timestamp?: number): SignedPayload;
  close(): Promise<void>;
}

/** Starts a fake on a free port of 127.0.0.1. */
export async function startFakeStripe(): Promise<FakeStripe> {
  const state = new FakeState();
  const server = createServer((req, res) => {
    handle(state, req, res).catch((error: unknown) => {
      // Only a bug in the fake gets here; the header stops the client's automatic retries of 5xx.
      if (!res.headersSent) {
        send(res, 500, { error: { type: 'api_error', message: `fakeStripe: ${String(error)}` } }, { 'Stripe-Should-Retry': 'false' });
      } else {
        res.destroy();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  state.baseUrl = `http://127.0.0.1:${port}`;
  const client = new Stripe('sk_test_fake', { host: '127.0.0.1', port, protocol: 'http' });
  return buildControls(state, server, client, port);
}

// ---------------------------------------------------------------------------------------------
// State

/** The first answer to a POST carrying a given idempotency key. */
interface IdempotencyRecord {
  path: string;
  rawBody: string;
  status: number;
  responseBody: string;
  requestId: string;
}

export class FakeState {
  baseUrl = '';
  readonly requests: RecordedRequest[] = [];
  readonly customers = new Map<string, FakeCustomer>();
  readonly checkoutSessions = new Map<string, FakeCheckoutSession>();
  readonly checkoutPaymentIntentData = new Map<string, FakeCheckoutPaymentIntentData>();
  readonly paymentIntents = new Map<string, FakePaymentIntent>();
  readonly idempotency = new Map<string, IdempotencyRecord>();
  readonly decliningCustomers = new Set<string>();
  pendingDeclines = 0;
  readonly billing = new FakeBillingState();
  /** POSTs whose answers are to be lost, by path. */
  readonly lostAnswers = new Map<string, number>();
  readonly subscriptions = new FakeSubscriptionsState();

  storeIntent(fields: IntentFields, outcome: IntentOutcome): FakePaymentIntent {
    const intent: FakePaymentIntent = { id: newId('pi'), object: 'payment_intent', created: nowSeconds(), livemode: false, ...fields, ...outcome };
    this.paymentIntents.set(intent.id, intent);
    return intent;
  }
}

/** What the creator of a PaymentIntent chooses. */
export type IntentFields = Pick<FakePaymentIntent, 'amount' | 'currency' | 'customer' | 'payment_method' | 'description' | 'metadata'>;
/** What confirming it (or not) decides. */
export type IntentOutcome = Pick<FakePaymentIntent, 'status' | 'amount_received' | 'latest_charge' | 'last_payment_error'>;

export const succeeded = (amount: number): IntentOutcome => ({ status: 'succeeded', amount_received: amount, latest_charge: newId('ch'), last_payment_error: null });

function buildControls(state: FakeState, server: Server, client: Stripe, port: number): FakeStripe {
  const requireCustomer = (customerId: string): FakeCustomer => {
    const customer = state.customers.get(customerId);
    if (!customer) throw new Error(`fakeStripe: no such customer ${customerId}`);
    return customer;
  };
  return {
    url: state.baseUrl,
    port,
    client,
    requests: state.requests,
    customers: state.customers,
    checkoutSessions: state.checkoutSessions,
    checkoutPaymentIntentData: state.checkoutPaymentIntentData,
    paymentIntents: state.paymentIntents,
    billing: billingControls(state),
    cards: cardControls(state),
    subscriptions: subscriptionControls(state),
    reset() {
      state.requests.length = 0;
    },
    setDefaultPaymentMethod(customerId, paymentMethodId) {
      requireCustomer(customerId).invoice_settings.default_payment_method = paymentMethodId;
    },
    declineNextPayments(n) {
      if (!Number.isInteger(n) || n < 0) throw new Error(`fakeStripe: declineNextPayments needs a non-negative integer, got ${n}`);
      state.pendingDeclines += n;
    },
    declineCustomer(customerId, on) {
      if (on) state.decliningCustomers.add(customerId);
      else state.decliningCustomers.delete(customerId);
    },
    completeCheckout(sessionId, card) {
      const session = state.checkoutSessions.get(sessionId);
      if (!session) throw new Error(`fakeStripe: no such checkout session ${sessionId}`);
      if (session.status !== 'open') throw new Error(`fakeStripe: checkout session ${sessionId} is ${session.status}`);
      const saveCard = state.checkoutPaymentIntentData.get(sessionId)?.setup_future_usage != null;
      const paymentIntent = state.storeIntent(
        {
          amount: session.amount_total,
          currency: session.currency,
          customer: session.customer,
          payment_method: storeCard(state, saveCard ? session.customer : null, card).id,
          description: null,
          metadata: { ...(state.checkoutPaymentIntentData.get(sessionId)?.metadata ?? {}) },
        },
        succeeded(session.amount_total),
      );
      session.status = 'complete';
      session.payment_status = 'paid';
      session.payment_intent = paymentIntent.id;
      session.url = null;
      return { session: structuredClone(session), paymentIntent: structuredClone(paymentIntent) };
    },
    expireCheckout(sessionId) {
      const session = state.checkoutSessions.get(sessionId);
      if (!session) throw new Error(`fakeStripe: no such checkout session ${sessionId}`);
      if (session.status !== 'open') throw new Error(`fakeStripe: checkout session ${sessionId} is ${session.status}`);
      session.status = 'expired';
      session.url = null;
      return structuredClone(session);
    },
    loseAnswers(path, n) {
      state.lostAnswers.set(path, (state.lostAnswers.get(path) ?? 0) + n);
    },
    event(type, object) {
      return {
        id: newId('evt'),
        object: 'event',
        type,
        api_version: Stripe.API_VERSION,
        created: nowSeconds(),
        livemode: false,
        pending_webhooks: 1,
        request: { id: null, idempotency_key: null },
        data: { object: structuredClone(object) },
      };
    },
    signedPayload(event, secret, timestamp) {
      const body = JSON.stringify(event);
      const signature = client.webhooks.generateTestHeaderString({ payload: body, secret, ...(timestamp === undefined ? {} : { timestamp }) });
      return { body, signature };
    },
    async close() {
      await new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        // close() drops only idle keep-alive sockets (which the client pools); this ends busy ones too, so it cannot hang.
        server.closeAllConnections();
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

/** An error answered in Stripe's shape: `{ error: { type, code?, message, param?, ... } }`. */
export class ApiError extends Error {
  readonly status: number;
  readonly error: { type: string; message: string; code?: string; param?: string; [key: string]: unknown };

  constructor(status: number, error: ApiError['error']) {
    super(error.message);
    this.status = status;
    this.error = error;
  }
}

export const invalidRequest = (message: string, extra: { code?: string; param?: string } = {}): ApiError =>
  new ApiError(400, { type: 'invalid_request_error', message, ...extra });

export const missingResource = (kind: string, id: string, status: 400 | 404, param?: string): ApiError =>
  new ApiError(status, {
    type: 'invalid_request_error',
    code: 'resource_missing',
    message: `No such ${kind}: '${id}'`,
    ...(param ? { param } : {}),
  });

export interface Reply {
  status: number;
  body: unknown;
}

export interface RouteContext {
  state: FakeState;
  params: string[];
  body: Record<string, unknown>;
}

export interface Route {
  method: string;
  pattern: RegExp;
  handler: (ctx: RouteContext) => Reply;
}

const ID = '([A-Za-z0-9_]+)';
const routes: Route[] = [
  { method: 'POST', pattern: /^\/v1\/customers$/, handler: createCustomer },
  { method: 'GET', pattern: new RegExp(`^/v1/customers/${ID}$`), handler: ({ state, params }) => ok(lookup(state.customers, 'customer', params[0])) },
  { method: 'POST', pattern: new RegExp(`^/v1/customers/${ID}$`), handler: updateCustomer },
  { method: 'POST', pattern: /^\/v1\/checkout\/sessions$/, handler: createCheckoutSession },
  {
    method: 'GET',
    pattern: new RegExp(`^/v1/checkout/sessions/${ID}$`),
    handler: ({ state, params }) => ok(lookup(state.checkoutSessions, 'checkout.session', params[0])),
  },
  { method: 'POST', pattern: /^\/v1\/payment_intents$/, handler: createPaymentIntent },
  {
    method: 'GET',
    pattern: new RegExp(`^/v1/payment_intents/${ID}$`),
    handler: ({ state, params }) => ok(lookup(state.paymentIntents, 'payment_intent', params[0])),
  },
  ...cardRoutes,
];

async function handle(state: FakeState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const at = new Date();
  const method = req.method ?? 'GET';
  const url = new URL(req.url ?? '/', 'http://fake');
  const path = url.pathname;
  const rawBody = await readBody(req);
  const idempotencyKey = headerValue(req, 'idempotency-key');
  const stripeVersion = headerValue(req, 'stripe-version');
  const record = (status: number, body: Record<string, unknown>, replayed: boolean): void => {
    state.requests.push({ method, path, idempotencyKey, body, at, status, replayed });
  };
  const requestId = newId('req', 14);
  const injected = path.startsWith('/v1/') ? takeFailure(state, path) : null;
  if (injected?.afterExecuting) {
    // Whatever is answered below is lost with the connection (headers go out only with end()).
    res.end = (() => {
      req.socket.destroy();
      return res;
    }) as typeof res.end;
  } else if (injected?.status === 0) {
    record(0, {}, false);
    req.socket.destroy();
    return;
  } else if (injected) {
    record(injected.status, {}, false);
    send(res, injected.status, failureBody(injected), { 'Request-Id': requestId });
    return;
  }
  const headers: Record<string, string> = { 'Request-Id': requestId };
  if (stripeVersion) headers['Stripe-Version'] = stripeVersion;

  const checkoutPage = method === 'GET' ? /^\/checkout\/([A-Za-z0-9_]+)$/.exec(path) : null;
  if (checkoutPage) {
    const session = state.checkoutSessions.get(checkoutPage[1] ?? '');
    const status = session ? 200 : 404;
    record(status, {}, false);
    res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(session ? `<!doctype html><title>Fake Checkout</title><p>Fake Stripe Checkout for ${session.id} (${session.status})</p>` : 'Not found');
    return;
  }

  let body: Record<string, unknown> = {};
  try {
    body = parseForm(method === 'GET' || method === 'DELETE' ? url.search.slice(1) : rawBody);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    record(error.status, {}, false);
    send(res, error.status, { error: error.error }, headers);
    return;
  }

  if (!headerValue(req, 'authorization')?.startsWith('Bearer sk_')) {
    const error = { type: 'invalid_request_error', message: 'You did not provide a valid API key (expected Authorization: Bearer sk_...).' };
    record(401, body, false);
    send(res, 401, { error }, headers);
    return;
  }

  // Stripe ignores idempotency keys on GET and DELETE.
  const idempotent = idempotencyKey !== null && method === 'POST';
  if (idempotent) {
    const previous = state.idempotency.get(idempotencyKey);
    if (previous) {
      if (previous.path !== path || previous.rawBody !== rawBody) {
        const message = previous.path === path
          ? `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`
          : `Keys for idempotent requests can only be used for the same endpoint they were first used for ('POST ${previous.path}'). Try using a key other than '${idempotencyKey}' if you meant to execute a different request.`;
        record(400, body, false);
        send(res, 400, { error: { type: 'idempotency_error', message } }, { ...headers, 'Idempotency-Key': idempotencyKey });
        return;
      }
      record(previous.status, body, true);
      if (loseAnswer(state, path)) {
        res.destroy();
        return;
      }
      sendRaw(res, previous.status, previous.responseBody, {
        ...headers,
        'Idempotency-Key': idempotencyKey,
        'Idempotent-Replayed': 'true',
        'Original-Request': previous.requestId,
      });
      return;
    }
  }

  const reply = route(state, method, path, body);
  const responseBody = JSON.stringify(reply.body, null, 2);
  // As on Stripe, only requests that got as far as executing are saved: validation failures (400/404)
  // may be retried with the same key, while a card decline (402) is replayed.
  if (idempotent && (reply.status < 400 || reply.status === 402)) {
    state.idempotency.set(idempotencyKey, { path, rawBody, status: reply.status, responseBody, requestId });
  }
  record(reply.status, body, false);
  if (method === 'POST' && loseAnswer(state, path)) {
    res.destroy();
    return;
  }
  sendRaw(res, reply.status, responseBody, idempotent ? { ...headers, 'Idempotency-Key': idempotencyKey } : headers);
}

function route(state: FakeState, method: string, path: string, body: Record<string, unknown>): Reply {
  try {
    for (const candidate of [...reconciliationRoutes, ...routes, ...billingRoutes, ...subscriptionRoutes]) {
      if (candidate.method !== method) continue;
      const match = candidate.pattern.exec(path);
      if (match) return candidate.handler({ state, params: match.slice(1), body });
    }
    throw new ApiError(404, { type: 'invalid_request_error', message: `Unrecognized request URL (${method}: ${path}). fakeStripe does not implement it.` });
  } catch (error) {
    if (error instanceof ApiError) return { status: error.status, body: { error: error.error } };
    throw error;
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  sendRaw(res, status, JSON.stringify(body, null, 2), headers);
}

function sendRaw(res: ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function headerValue(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name];
  return (Array.isArray(value) ? value[0] : value) ?? null;
}

// ---------------------------------------------------------------------------------------------
// Endpoints

export const ok = (body: unknown): Reply => ({ status: 200, body });

export function lookup<T>(map: Map<string, T>, kind: string, id: string | undefined): T {
  const found = map.get(id ?? '');
  if (!found) throw missingResource(kind, id ?? '', 404);
  return found;
}

function createCustomer({ state, body }: RouteContext): Reply {
  const customer: FakeCustomer = {
    id: newId('cus'),
    object: 'customer',
    created: nowSeconds(),
    livemode: false,
    email: optionalString(body, 'email'),
    name: optionalString(body, 'name'),
    metadata: mergeMetadata({}, body.metadata),
    invoice_settings: {
      default_payment_method: optionalString(asObject(body.invoice_settings, 'invoice_settings'), 'default_payment_method', 'invoice_settings[default_payment_method]'),
    },
    test_clock: optionalString(body, 'test_clock'),
  };
  if (customer.test_clock !== null && !state.subscriptions.testClocks.has(customer.test_clock)) throw missingResource('test_clock', customer.test_clock, 400, 'test_clock');
  state.customers.set(customer.id, customer);
  return ok(customer);
}

function updateCustomer({ state, params, body }: RouteContext): Reply {
  const customer = lookup(state.customers, 'customer', params[0]);
  if ('email' in body) customer.email = optionalString(body, 'email');
  if ('name' in body) customer.name = optionalString(body, 'name');
  if ('metadata' in body) customer.metadata = mergeMetadata(customer.metadata, body.metadata);
  const invoiceSettings = asObject(body.invoice_settings, 'invoice_settings');
  if ('default_payment_method' in invoiceSettings) {
    customer.invoice_settings.default_payment_method = optionalString(invoiceSettings, 'default_payment_method', 'invoice_settings[default_payment_method]');
  }
  return ok(customer);
}

function createCheckoutSession({ state, body, params }: RouteContext): Reply {
  const mode = optionalString(body, 'mode');
  if (mode === 'setup') return createSetupCheckoutSession({ state, body, params });
  if (mode === 'subscription') return createSubscriptionCheckoutSession({ state, body, params });
  if (mode !== 'payment') throw invalidRequest(`fakeStripe supports only mode=payment, got ${mode ?? 'none'}.`, { param: 'mode' });
  const customer = optionalString(body, 'customer');
  if (customer !== null && !state.customers.has(customer)) throw missingResource('customer', customer, 400, 'customer');

  const items = body.line_items;
  if (!Array.isArray(items) || items.length === 0) throw invalidRequest('Missing required param: line_items.', { code: 'parameter_missing', param: 'line_items' });
  let amountTotal = 0;
  let currency: string | null = optionalString(body, 'currency')?.toLowerCase() ?? null;
  items.forEach((item: unknown, index) => {
    const param = `line_items[${index}]`;
    const line = asObject(item, param);
    if (!('price_data' in line)) throw invalidRequest(`fakeStripe supports only ${param}[price_data] (it stores no prices).`, { param: `${param}[price_data]` });
    const priceData = asObject(line.price_data, `${param}[price_data]`);
    const unitAmount = requiredInteger(priceData, 'unit_amount', `${param}[price_data][unit_amount]`);
    const quantity = requiredInteger(line, 'quantity', `${param}[quantity]`);
    const itemCurrency = optionalString(priceData, 'currency', `${param}[price_data][currency]`)?.toLowerCase();
    if (!itemCurrency) throw invalidRequest(`Missing required param: ${param}[price_data][currency].`, { code: 'parameter_missing', param: `${param}[price_data][currency]` });
    if (currency !== null && currency !== itemCurrency) throw invalidRequest('All line items must use the same currency.', { param: `${param}[price_data][currency]` });
    currency = itemCurrency;
    amountTotal += unitAmount * quantity;
  });

  const created = nowSeconds();
  const id = newId('cs_test', 58);
  const session: FakeCheckoutSession = {
    id,
    object: 'checkout.session',
    created,
    expires_at: created + 24 * 60 * 60,
    livemode: false,
    url: `${state.baseUrl}/checkout/${id}`,
    mode,
    customer,
    customer_email: optionalString(body, 'customer_email'),
    client_reference_id: optionalString(body, 'client_reference_id'),
    metadata: mergeMetadata({}, body.metadata),
    payment_intent: null,
    setup_intent: null,
    payment_status: 'unpaid',
    status: 'open',
    amount_subtotal: amountTotal,
    amount_total: amountTotal,
    currency: currency ?? 'usd',
    success_url: optionalString(body, 'success_url'),
    cancel_url: optionalString(body, 'cancel_url'),
  };
  const paymentIntentData = asObject(body.payment_intent_data, 'payment_intent_data');
  state.checkoutSessions.set(id, session);
  state.checkoutPaymentIntentData.set(id, {
    metadata: mergeMetadata({}, paymentIntentData.metadata, 'payment_intent_data[metadata]'),
    setup_future_usage: optionalString(paymentIntentData, 'setup_future_usage', 'payment_intent_data[setup_future_usage]'),
  });
  return ok(session);
}

function createPaymentIntent({ state, body }: RouteContext): Reply {
  const amount = requiredInteger(body, 'amount', 'amount');
  if (amount < 1) throw invalidRequest('Amount must be at least 1.', { code: 'amount_too_small', param: 'amount' });
  const currency = optionalString(body, 'currency')?.toLowerCase();
  if (!currency) throw invalidRequest('Missing required param: currency.', { code: 'parameter_missing', param: 'currency' });
  const customer = optionalString(body, 'customer');
  if (customer !== null && !state.customers.has(customer)) throw missingResource('customer', customer, 400, 'customer');
  const paymentMethod = optionalString(body, 'payment_method');
  const confirm = body.confirm === 'true';
  if (confirm && paymentMethod === null) {
    throw invalidRequest('You must provide a payment_method to confirm this PaymentIntent.', { code: 'parameter_missing', param: 'payment_method' });
  }
  const fields: IntentFields = {
    amount,
    currency,
    customer,
    payment_method: paymentMethod,
    description: optionalString(body, 'description'),
    metadata: mergeMetadata({}, body.metadata),
  };

  if (!confirm) {
    const status = paymentMethod === null ? 'requires_payment_method' : 'requires_confirmation';
    return ok(state.storeIntent(fields, { status, amount_received: 0, latest_charge: null, last_payment_error: null }));
  }
  const byCard = chargeCard(state, fields, body.off_session === 'true');
  if (byCard) return byCard;
  // A payment declined because of its customer does not use up an armed `declineNextPayments`.
  if (customer !== null && state.decliningCustomers.has(customer)) return decline(state, fields);
  if (state.pendingDeclines > 0) {
    state.pendingDeclines -= 1;
    return decline(state, fields);
  }
  return ok(state.storeIntent(fields, succeeded(amount)));
}

export function decline(state: FakeState, fields: IntentFields): Reply {
  const charge = newId('ch');
  const paymentError: FakePaymentError = {
    type: 'card_error',
    code: 'card_declined',
    decline_code: 'generic_decline',
    message: 'Your card was declined.',
    charge,
    doc_url: 'https://stripe.com/docs/error-codes/card-declined',
  };
  // As on Stripe, the failed intent exists and can be retrieved; it is also embedded in the error.
  const intent = state.storeIntent(fields, { status: 'requires_payment_method', amount_received: 0, latest_charge: charge, last_payment_error: paymentError });
  return { status: 402, body: { error: { ...paymentError, payment_intent: intent } } };
}

// ---------------------------------------------------------------------------------------------
// Reconciliation: searching PaymentIntents, lost answers

function loseAnswer(state: FakeState, path: string): boolean {
  const left = state.lostAnswers.get(path) ?? 0;
  if (left <= 0) return false;
  state.lostAnswers.set(path, left - 1);
  return true;
}

/**
 * `GET /v1/payment_intents/search` for the one query form the product sends,
 * `metadata['key']:'value'` (Stripe's search language has much more; anything else is a 400).
 */
function searchPaymentIntents({ state, body }: RouteContext): Reply {
  const query = optionalString(body, 'query');
  const match = query === null ? null : /^metadata\['([A-Za-z0-9_]+)'\]:'([^']*)'$/.exec(query);
  if (!match) throw invalidRequest(`fakeStripe supports only metadata['key']:'value' searches, got ${query ?? 'none'}.`, { param: 'query' });
  const [, key = '', value = ''] = match;
  const data = [...state.paymentIntents.values()].filter((intent) => intent.metadata[key] === value).reverse();
  return ok({ object: 'search_result', url: '/v1/payment_intents/search', has_more: false, next_page: null, data });
}

const reconciliationRoutes: Route[] = [{ method: 'GET', pattern: /^\/v1\/payment_intents\/search$/, handler: searchPaymentIntents }];

// ---------------------------------------------------------------------------------------------
// Parameters

export function asObject(value: unknown, param: string): Record<string, unknown> {
  if (value === undefined || value === '') return {};
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  throw invalidRequest(`Invalid object: ${param}.`, { param });
}

/** A string parameter; absent or empty (how the client sends `null`) reads as null. */
export function optionalString(body: Record<string, unknown>, key: string, param = key): string | null {
  const value = body[key];
  if (value === undefined || value === '') return null;
  if (typeof value !== 'string') throw invalidRequest(`Invalid string: ${param}.`, { param });
  return value;
}

export function requiredInteger(body: Record<string, unknown>, key: string, param: string): number {
  const value = body[key];
  if (value === undefined || value === '') throw invalidRequest(`Missing required param: ${param}.`, { code: 'parameter_missing', param });
  if (typeof value !== 'string' || !/^\d+$/.test(value)) throw invalidRequest(`Invalid integer: ${String(value)}.`, { code: 'parameter_invalid_integer', param });
  return Number(value);
}

/** Applies a metadata parameter as Stripe does: an empty value removes that key, an empty `metadata` removes all. */
export function mergeMetadata(current: Metadata, update: unknown, param = 'metadata'): Metadata {
  if (update === undefined) return { ...current };
  if (update === '') return {};
  if (typeof update !== 'object' || update === null || Array.isArray(update)) throw invalidRequest(`Invalid object: ${param}.`, { param });
  const merged = { ...current };
  for (const [key, value] of Object.entries(update)) {
    if (typeof value !== 'string') throw invalidRequest(`Invalid string: ${param}[${key}].`, { param: `${param}[${key}]` });
    if (value === '') delete merged[key];
    else merged[key] = value;
  }
  return merged;
}

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Parses `application/x-www-form-urlencoded` with Stripe's bracket notation into nested objects and
 * arrays: `a[b][0][c]=1` becomes `{ a: { b: [{ c: '1' }] } }`. Leaves stay strings; numeric segments
 * make arrays. Throws a 400 ApiError on contradictory keys (`a=1&a[b]=2`) or repeated scalars.
 */
export function parseForm(text: string): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  if (text === '') return root;
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const separator = pair.indexOf('=');
    const rawKey = separator === -1 ? pair : pair.slice(0, separator);
    const rawValue = separator === -1 ? '' : pair.slice(separator + 1);
    let key: string;
    let value: string;
    try {
      key = decodeURIComponent(rawKey.replace(/\+/g, ' '));
      value = decodeURIComponent(rawValue.replace(/\+/g, ' '));
    } catch {
      throw invalidRequest(`Malformed form encoding in '${pair}'.`);
    }
    assignPath(root, keySegments(key), value, key);
  }
  return compactArrays(root) as Record<string, unknown>;
}

function keySegments(key: string): string[] {
  const match = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(key);
  // Keys that are not well-formed bracket paths are taken literally, as qs does.
  if (!match) return [key];
  const segments = [match[1] ?? ''];
  for (const [, inner] of (match[2] ?? '').matchAll(/\[([^[\]]*)\]/g)) segments.push(inner ?? '');
  return segments;
}

const isIndex = (segment: string): boolean => /^\d+$/.test(segment);

function assignPath(root: Record<string, unknown>, segments: string[], value: string, key: string): void {
  if (segments.some((segment) => FORBIDDEN_KEYS.has(segment))) throw invalidRequest(`Invalid parameter name: ${key}.`);
  let container: Record<string, unknown> | unknown[] = root;
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] ?? '';
    const last = i === segments.length - 1;
    if (Array.isArray(container)) {
      if (segment !== '' && !isIndex(segment)) throw invalidRequest(`Invalid array: ${key} mixes indexes and names.`);
    } else if (segment === '') {
      throw invalidRequest(`Invalid parameter name: ${key}.`);
    }
    // `a[]=x` appends, as the client never sends it but hand-written forms do.
    const slot = Array.isArray(container) && segment === '' ? container.length : segment;
    const existing: unknown = (container as Record<string | number, unknown>)[slot];
    if (last) {
      if (existing !== undefined) throw invalidRequest(`Received ${key} more than once, or both as a value and as a hash.`, { param: key });
      (container as Record<string | number, unknown>)[slot] = value;
      return;
    }
    if (existing === undefined) {
      const next = segments[i + 1] ?? '';
      const child: Record<string, unknown> | unknown[] = next === '' || isIndex(next) ? [] : {};
      (container as Record<string | number, unknown>)[slot] = child;
      container = child;
    } else if (typeof existing === 'object' && existing !== null) {
      container = existing as Record<string, unknown> | unknown[];
    } else {
      throw invalidRequest(`Received ${key} as a hash but also as a value.`, { param: key });
    }
  }
}

/** The client skips `undefined` array elements but keeps later indexes, so arrays may arrive with holes. */
function compactArrays(value: unknown): unknown {
  if (Array.isArray(value)) return Object.values(value).map(compactArrays);
  if (typeof value === 'object' && value !== null) {
    for (const [key, child] of Object.entries(value)) (value as Record<string, unknown>)[key] = compactArrays(child);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Ids and time

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** `prefix_` followed by `length` random alphanumerics, like Stripe's ids. */
export function newId(prefix: string, length = 24): string {
  let suffix = '';
  for (let i = 0; i < length; i++) suffix += ALPHANUMERIC[randomInt(ALPHANUMERIC.length)];
  return `${prefix}_${suffix}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
