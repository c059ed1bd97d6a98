/**
 * Cards on file for fakeStripe.ts (issue 18): payment methods, setup-mode Checkout, SetupIntents,
 * saving the card of a paid Checkout (`payment_intent_data[setup_future_usage]`), Customer Portal
 * sessions, cards that need authentication or are declined when charged, and Stripe errors injected
 * on demand (4xx, 429, 5xx, a dropped connection).
 *
 * Endpoints added:
 * - `POST /v1/checkout/sessions` with `mode=setup` (`currency` or `allowed_payment_method_types` required, as on Stripe)
 * - `GET /v1/payment_methods/:id`, `POST /v1/payment_methods/:id/detach`
 * - `GET /v1/setup_intents/:id`
 * - `POST /v1/billing_portal/sessions`
 *
 * Cards behave like Stripe's test cards: `visa` (4242 4242 4242 4242) and `mastercard` pay;
 * `authenticationRequired` (4000 0027 6000 3184) is saved, but every off-session payment on it
 * fails with 402 `authentication_required` (its PaymentIntent in `requires_payment_method`), and an
 * on-session one answers `requires_action`; `chargeDeclined` (4000 0000 0000 0341) is saved, and
 * payments on it are declined. Stripe's test tokens `pm_card_visa`, `pm_card_authenticationRequired`
 * and `pm_card_chargeDeclined` behave the same without being stored. A confirmed charge below Stripe's
 * minimum (50 cents in usd and eur, 30 pence) is refused with 400 `amount_too_small`. A setup-mode session is stored
 * with the payment sessions; its amounts read 0 (Stripe answers null there, and nothing reads them).
 */
import {
  decline,
  invalidRequest,
  lookup,
  missingResource,
  newId,
  nowSeconds,
  ok,
  optionalString,
  asObject,
  mergeMetadata,
  type FakeCheckoutSession,
  type FakeState,
  type IntentFields,
  type Metadata,
  type Reply,
  type Route,
  type RouteContext,
} from './fakeStripe.ts';

export type FakeCard = 'visa' | 'mastercard' | 'authenticationRequired' | 'chargeDeclined';

const CARDS: Record<FakeCard, { brand: string; last4: string }> = {
  visa: { brand: 'visa', last4: '4242' },
  mastercard: { brand: 'mastercard', last4: '4444' },
  authenticationRequired: { brand: 'visa', last4: '3184' },
  chargeDeclined: { brand: 'visa', last4: '0341' },
};

export interface FakePaymentMethod {
  id: string;
  object: 'payment_method';
  type: 'card';
  created: number;
  livemode: false;
  customer: string | null;
  metadata: Metadata;
  card: { brand: string; last4: string; exp_month: number; exp_year: number; funding: 'credit'; country: 'US' };
}

export interface FakeSetupIntent {
  id: string;
  object: 'setup_intent';
  created: number;
  livemode: false;
  status: 'succeeded';
  usage: 'off_session';
  customer: string | null;
  payment_method: string;
  metadata: Metadata;
}

export interface FakeBillingPortalSession {
  id: string;
  object: 'billing_portal.session';
  created: number;
  livemode: false;
  customer: string;
  return_url: string | null;
  url: string;
}

/** An error the fake answers instead of executing a request. `status: 0` drops the connection unanswered. */
export interface FakeFailure {
  status: number;
  type?: string;
  code?: string;
  message?: string;
  /** Only requests whose path starts with this (default: any request). */
  path?: string;
  /**
   * Execute the request (and record its idempotency key) as usual, then drop the connection without
   * answering: the charge happened, the caller never learns it. `status` is then ignored.
   */
  afterExecuting?: boolean;
}

export interface FakeCardControls {
  readonly paymentMethods: ReadonlyMap<string, Readonly<FakePaymentMethod>>;
  readonly setupIntents: ReadonlyMap<string, Readonly<FakeSetupIntent>>;
  readonly portalSessions: ReadonlyMap<string, Readonly<FakeBillingPortalSession>>;
  /** Stores a card, attached to the customer if one is given (as the Customer Portal would). */
  addCard(customerId: string | null, card?: FakeCard): FakePaymentMethod;
  /**
   * Does what a customer entering a card on a setup-mode session's page would: a card attached to
   * the session's customer, a succeeded SetupIntent, the session complete. Returns snapshots.
   */
  completeSetup(sessionId: string, card?: FakeCard): { session: FakeCheckoutSession; setupIntent: FakeSetupIntent; paymentMethod: FakePaymentMethod };
  /** The next `n` API requests (matching `failure.path`) answer this failure unexecuted; the client's own retries count. */
  failNextRequests(n: number, failure: FakeFailure): void;
}

class CardState {
  readonly paymentMethods = new Map<string, FakePaymentMethod>();
  readonly behaviours = new Map<string, FakeCard>();
  readonly setupIntents = new Map<string, FakeSetupIntent>();
  readonly portalSessions = new Map<string, FakeBillingPortalSession>();
  readonly failures: Array<{ failure: FakeFailure; remaining: number }> = [];
}

const cardStates = new WeakMap<FakeState, CardState>();

function cardsOf(state: FakeState): CardState {
  let cards = cardStates.get(state);
  if (!cards) {
    cards = new CardState();
    cardStates.set(state, cards);
  }
  return cards;
}

/** Stores a new card payment method; `customer` attaches it. */
export function storeCard(state: FakeState, customer: string | null, card: FakeCard = 'visa'): FakePaymentMethod {
  const cards = cardsOf(state);
  const method: FakePaymentMethod = {
    id: newId('pm'),
    object: 'payment_method',
    type: 'card',
    created: nowSeconds(),
    livemode: false,
    customer,
    metadata: {},
    card: { ...CARDS[card], exp_month: 12, exp_year: new Date().getUTCFullYear() + 3, funding: 'credit', country: 'US' },
  };
  cards.paymentMethods.set(method.id, method);
  cards.behaviours.set(method.id, card);
  return method;
}

export function cardControls(state: FakeState): FakeCardControls {
  const cards = cardsOf(state);
  return {
    paymentMethods: cards.paymentMethods,
    setupIntents: cards.setupIntents,
    portalSessions: cards.portalSessions,
    addCard(customerId, card) {
      if (customerId !== null && !state.customers.has(customerId)) throw new Error(`fakeStripe: no such customer ${customerId}`);
      return structuredClone(storeCard(state, customerId, card));
    },
    completeSetup(sessionId, card) {
      const session = state.checkoutSessions.get(sessionId);
      if (!session) throw new Error(`fakeStripe: no such checkout session ${sessionId}`);
      if (session.mode !== 'setup') throw new Error(`fakeStripe: checkout session ${sessionId} is in ${session.mode} mode`);
      if (session.status !== 'open') throw new Error(`fakeStripe: checkout session ${sessionId} is ${session.status}`);
      const paymentMethod = storeCard(state, session.customer, card);
      const setupIntent: FakeSetupIntent = {
        id: newId('seti'),
        object: 'setup_intent',
        created: nowSeconds(),
        livemode: false,
        status: 'succeeded',
        usage: 'off_session',
        customer: session.customer,
        payment_method: paymentMethod.id,
        metadata: { ...(state.checkoutPaymentIntentData.get(sessionId)?.metadata ?? {}) },
      };
      cards.setupIntents.set(setupIntent.id, setupIntent);
      session.status = 'complete';
      session.setup_intent = setupIntent.id;
      session.url = null;
      return { session: structuredClone(session), setupIntent: structuredClone(setupIntent), paymentMethod: structuredClone(paymentMethod) };
    },
    failNextRequests(n, failure) {
      if (!Number.isInteger(n) || n < 0) throw new Error(`fakeStripe: failNextRequests needs a non-negative integer, got ${n}`);
      cards.failures.push({ failure, remaining: n });
    },
  };
}

/** The injected failure this request meets, if any (used up by it). */
export function takeFailure(state: FakeState, path: string): FakeFailure | null {
  const cards = cardsOf(state);
  const armed = cards.failures.find((entry) => entry.remaining > 0 && (entry.failure.path === undefined || path.startsWith(entry.failure.path)));
  if (!armed) return null;
  armed.remaining -= 1;
  return armed.failure;
}

/** Stripe's error body for an injected failure. */
export function failureBody(failure: FakeFailure): { error: Record<string, unknown> } {
  const type = failure.type ?? (failure.status === 429 ? 'rate_limit_error' : failure.status >= 500 ? 'api_error' : 'invalid_request_error');
  return { error: { type, message: failure.message ?? `fakeStripe: injected ${failure.status}`, ...(failure.code ? { code: failure.code } : {}) } };
}

/** `mode=setup`: a session that saves a card for later, charging nothing. */
export function createSetupCheckoutSession({ state, body }: RouteContext): Reply {
  const customer = optionalString(body, 'customer');
  if (customer !== null && !state.customers.has(customer)) throw missingResource('customer', customer, 400, 'customer');
  const currency = optionalString(body, 'currency')?.toLowerCase() ?? null;
  const allowed = body.allowed_payment_method_types ?? body.payment_method_types;
  if (currency === null && !Array.isArray(allowed)) {
    throw invalidRequest('Missing required param: currency (required in setup mode when allowed_payment_method_types is not set).', {
      code: 'parameter_missing',
      param: 'currency',
    });
  }
  if ('line_items' in body) throw invalidRequest('You cannot pass `line_items` in `setup` mode.', { param: 'line_items' });
  const created = nowSeconds();
  const id = newId('cs_test', 58);
  const session: FakeCheckoutSession = {
    id,
    object: 'checkout.session',
    created,
    expires_at: created + 24 * 60 * 60,
    livemode: false,
    url: `${state.baseUrl}/checkout/${id}`,
    mode: 'setup',
    customer,
    customer_email: optionalString(body, 'customer_email'),
    client_reference_id: optionalString(body, 'client_reference_id'),
    metadata: mergeMetadata({}, body.metadata),
    payment_intent: null,
    setup_intent: null,
    payment_status: 'no_payment_required',
    status: 'open',
    amount_subtotal: 0,
    amount_total: 0,
    currency: currency ?? 'usd',
    success_url: optionalString(body, 'success_url'),
    cancel_url: optionalString(body, 'cancel_url'),
  };
  const setupIntentData = asObject(body.setup_intent_data, 'setup_intent_data');
  state.checkoutSessions.set(id, session);
  state.checkoutPaymentIntentData.set(id, { metadata: mergeMetadata({}, setupIntentData.metadata, 'setup_intent_data[metadata]'), setup_future_usage: null });
  return ok(session);
}

/** Stripe's minimum charge amounts (minor units) for a few currencies; others are not checked. */
const MINIMUM_CHARGE: Record<string, number> = { usd: 50, eur: 50, gbp: 30 };

/** What charging this payment method does, as Stripe's test cards do; unknown ids pay. */
function behaviourOf(state: FakeState, paymentMethodId: string): FakeCard {
  const stored = cardsOf(state).behaviours.get(paymentMethodId);
  if (stored) return stored;
  if (paymentMethodId === 'pm_card_authenticationRequired') return 'authenticationRequired';
  if (paymentMethodId === 'pm_card_chargeDeclined') return 'chargeDeclined';
  return 'visa';
}

/**
 * A confirmed PaymentIntent's answer decided by its card, or null to let the fake's other rules
 * (armed declines, success) decide. A stored card must belong to the PaymentIntent's customer.
 */
export function chargeCard(state: FakeState, fields: IntentFields, offSession: boolean): Reply | null {
  const minimum = MINIMUM_CHARGE[fields.currency];
  if (minimum !== undefined && fields.amount < minimum) {
    throw invalidRequest(`Amount must be at least ${minimum} ${fields.currency} (minor units).`, { code: 'amount_too_small', param: 'amount' });
  }
  if (fields.payment_method === null) return null;
  const stored = cardsOf(state).paymentMethods.get(fields.payment_method);
  if (stored && stored.customer !== fields.customer) {
    throw invalidRequest(
      stored.customer === null
        ? `The provided PaymentMethod ${stored.id} was previously used or detached; attach it to a Customer to use it again.`
        : `The provided PaymentMethod ${stored.id} belongs to a different Customer.`,
      { param: 'payment_method' },
    );
  }
  const behaviour = behaviourOf(state, fields.payment_method);
  if (behaviour === 'chargeDeclined') return decline(state, fields);
  if (behaviour !== 'authenticationRequired') return null;
  if (!offSession) {
    const intent = state.storeIntent(fields, { status: 'requires_action', amount_received: 0, latest_charge: null, last_payment_error: null });
    return ok({ ...intent, next_action: { type: 'use_stripe_sdk', use_stripe_sdk: {} } });
  }
  const paymentError = {
    type: 'card_error' as const,
    code: 'authentication_required',
    decline_code: 'authentication_required',
    message: 'Your card was declined. This transaction requires authentication.',
    doc_url: 'https://stripe.com/docs/error-codes/authentication-required',
  };
  const intent = state.storeIntent(fields, { status: 'requires_payment_method', amount_received: 0, latest_charge: null, last_payment_error: null });
  return { status: 402, body: { error: { ...paymentError, payment_intent: { ...intent, last_payment_error: paymentError } } } };
}

function retrievePaymentMethod({ state, params }: RouteContext): Reply {
  const stored = cardsOf(state).paymentMethods.get(params[0] ?? '');
  if (!stored) throw missingResource('payment_method', params[0] ?? '', 404);
  return ok(stored);
}

function detachPaymentMethod({ state, params }: RouteContext): Reply {
  const stored = cardsOf(state).paymentMethods.get(params[0] ?? '');
  if (!stored) throw missingResource('payment_method', params[0] ?? '', 404);
  if (stored.customer === null) {
    throw invalidRequest('The payment method you provided is not attached to a customer so detachment is impossible.', { code: 'payment_method_unexpected_state' });
  }
  const customer = state.customers.get(stored.customer);
  // As on Stripe, a detached card stops being the customer's default.
  if (customer?.invoice_settings.default_payment_method === stored.id) customer.invoice_settings.default_payment_method = null;
  stored.customer = null;
  return ok(stored);
}

function createPortalSession({ state, body }: RouteContext): Reply {
  const customer = optionalString(body, 'customer');
  if (customer === null) throw invalidRequest('Missing required param: customer.', { code: 'parameter_missing', param: 'customer' });
  if (!state.customers.has(customer)) throw missingResource('customer', customer, 400, 'customer');
  const id = newId('bps');
  const session: FakeBillingPortalSession = {
    id,
    object: 'billing_portal.session',
    created: nowSeconds(),
    livemode: false,
    customer,
    return_url: optionalString(body, 'return_url'),
    url: `${state.baseUrl}/billing_portal/${id}`,
  };
  cardsOf(state).portalSessions.set(id, session);
  return ok(session);
}

const ID = '([A-Za-z0-9_]+)';

export const cardRoutes: Route[] = [
  { method: 'GET', pattern: new RegExp(`^/v1/payment_methods/${ID}$`), handler: retrievePaymentMethod },
  { method: 'POST', pattern: new RegExp(`^/v1/payment_methods/${ID}/detach$`), handler: detachPaymentMethod },
  { method: 'GET', pattern: new RegExp(`^/v1/setup_intents/${ID}$`), handler: ({ state, params }) => ok(lookup(cardsOf(state).setupIntents, 'setup_intent', params[0])) },
  { method: 'POST', pattern: /^\/v1\/billing_portal\/sessions$/, handler: createPortalSession },
];
