/**
 * Subscriptions for the fake Stripe server (fakeStripe.ts): products, recurring prices, test clocks,
 * subscription-mode Checkout, subscriptions (updates with prorations, cancellation at the period end,
 * pending updates), and the invoices they make, paid or failed against the customer's payment method.
 * The invoices live with the others (fakeStripeBilling.ts: `fake.billing.invoices`), and a renewal
 * invoice takes the customer's pending invoice items, as Stripe's does.
 * It follows Stripe's documented behaviour as far as the product uses it:
 *
 * - A subscription's billing cycle is anchored at its start (`billing_cycle_anchor`), or on its test
 *   clock's time when its customer lives by one; monthly periods fall on the anchor's day of month, or
 *   the last day of a shorter month, always counted from the anchor.
 * - Changing the price with `proration_behavior=always_invoice` invoices at once the unused time of the
 *   old price as a credit and the rest of the period at the new price (per second, rounded per line);
 *   with `payment_behavior=pending_if_incomplete` the change applies only once that invoice is paid
 *   (`pending_update` until then). `proration_behavior=none` changes the price for the next renewal.
 *   Changing the interval is not implemented (400).
 * - Renewals happen when the subscription's test clock is advanced past a period end (`POST
 *   /v1/test_helpers/test_clocks/:id/advance`): a `subscription_cycle` invoice is charged to the
 *   default payment method; a decline (fakeStripe's `declineCustomer`, `declineNextPayments`) leaves
 *   it open and the subscription `past_due`. A subscription set to cancel at the period end ends then.
 *   There are no automatic retries: `fake.billing.payInvoice` is the customer paying the hosted page.
 *
 * The fake sends no webhooks itself: every event Stripe would send is appended to
 * `fake.subscriptions.events`, in Stripe's order, for the test to deliver (repeated, reordered or
 * forged as it likes). Loaded by fakeStripe.ts; uses its helpers only when a request is handled.
 */
import type { FakeInvoice, FakeInvoiceLine } from './fakeStripeBilling.ts';
import {
  asObject,
  decline,
  invalidRequest,
  lookup,
  mergeMetadata,
  missingResource,
  newId,
  nowSeconds,
  ok,
  optionalString,
  requiredInteger,
  succeeded,
  type FakeCheckoutSession,
  type FakeEvent,
  type FakeState,
  type Metadata,
  type Reply,
  type Route,
  type RouteContext,
} from './fakeStripe.ts';

export type Interval = 'month' | 'year';

export interface FakeProduct {
  id: string;
  object: 'product';
  created: number;
  livemode: false;
  active: true;
  name: string;
  metadata: Metadata;
}

export interface FakePrice {
  id: string;
  object: 'price';
  created: number;
  livemode: false;
  active: true;
  type: 'recurring';
  product: string;
  currency: string;
  unit_amount: number;
  recurring: { interval: Interval; interval_count: 1 };
  metadata: Metadata;
}

export interface FakeTestClock {
  id: string;
  object: 'test_helpers.test_clock';
  created: number;
  livemode: false;
  name: string | null;
  frozen_time: number;
  status: 'ready';
}

export interface FakeSubscriptionItem {
  id: string;
  object: 'subscription_item';
  subscription: string;
  price: FakePrice;
  quantity: number;
  current_period_start: number;
  current_period_end: number;
}

export type SubscriptionStatus = 'active' | 'past_due' | 'unpaid' | 'canceled' | 'incomplete';

export interface FakeSubscription {
  id: string;
  object: 'subscription';
  created: number;
  livemode: false;
  customer: string;
  status: SubscriptionStatus;
  start_date: number;
  billing_cycle_anchor: number;
  cancel_at_period_end: boolean;
  canceled_at: number | null;
  ended_at: number | null;
  default_payment_method: string | null;
  latest_invoice: string | null;
  metadata: Metadata;
  pending_update: { expires_at: number; subscription_items: Array<{ id: string; price: string }> } | null;
  test_clock: string | null;
  items: { object: 'list'; data: FakeSubscriptionItem[]; has_more: false; url: string };
}

export class FakeSubscriptionsState {
  readonly products = new Map<string, FakeProduct>();
  readonly prices = new Map<string, FakePrice>();
  readonly testClocks = new Map<string, FakeTestClock>();
  readonly subscriptions = new Map<string, FakeSubscription>();
  /** `subscription_data` of subscription-mode Checkout Sessions, by session id. */
  readonly sessionSubscriptionData = new Map<string, { metadata: Metadata; priceId: string; quantity: number }>();
  /** What Stripe would have sent as webhooks, in order. */
  readonly events: FakeEvent[] = [];
  /** Where each subscription's period count stands (period n runs from anchor + n intervals). */
  readonly periodIndex = new Map<string, number>();
}

export interface FakeSubscriptions {
  readonly prices: ReadonlyMap<string, Readonly<FakePrice>>;
  readonly subscriptions: ReadonlyMap<string, Readonly<FakeSubscription>>;
  readonly testClocks: ReadonlyMap<string, Readonly<FakeTestClock>>;
  /** Every event Stripe would have sent so far, in order. */
  readonly events: readonly FakeEvent[];
  /** The events sent since the last call (and marks them taken). */
  takeEvents(): FakeEvent[];
  /**
   * The customer pays a subscription-mode Checkout Session: the subscription starts now (its
   * customer's test clock time, if any), anchored then, and its first invoice is paid. Queues
   * checkout.session.completed, customer.subscription.created and the invoice's events.
   */
  completeSubscriptionCheckout(sessionId: string): { session: FakeCheckoutSession; subscription: FakeSubscription; invoice: FakeInvoice };
  /** The customer pays an open invoice on its hosted page (a new card: no armed decline applies). */
  payInvoice(invoiceId: string): FakeInvoice;
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

function eventOf(state: FakeState, type: string, object: unknown, created: number): FakeEvent {
  const event: FakeEvent = {
    id: newId('evt'),
    object: 'event',
    type,
    api_version: '2026-10-28.endive',
    created,
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    data: { object: clone(object) },
  };
  state.subscriptions.events.push(event);
  return event;
}

// ---------------------------------------------------------------------------------------------
// Time

/** The anchor moved by whole months, on the anchor's day or the last day of a shorter month (Stripe's rule). */
function addMonths(anchorSeconds: number, months: number): number {
  const anchor = new Date(anchorSeconds * 1000);
  const total = anchor.getUTCMonth() + months;
  const year = anchor.getUTCFullYear() + Math.floor(total / 12);
  const month = ((total % 12) + 12) % 12;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  const day = Math.min(anchor.getUTCDate(), lastDay);
  return Date.UTC(year, month, day, anchor.getUTCHours(), anchor.getUTCMinutes(), anchor.getUTCSeconds()) / 1000;
}

function periodOf(anchor: number, interval: Interval, index: number): { start: number; end: number } {
  const months = interval === 'year' ? 12 : 1;
  return { start: addMonths(anchor, index * months), end: addMonths(anchor, (index + 1) * months) };
}

/** Now for a customer: its test clock's frozen time, else the real time. */
function customerNow(state: FakeState, customerId: string): number {
  const clockId = state.customers.get(customerId)?.test_clock ?? null;
  const clock = clockId ? state.subscriptions.testClocks.get(clockId) : undefined;
  return clock ? clock.frozen_time : nowSeconds();
}

// ---------------------------------------------------------------------------------------------
// Routes

const ID = '([A-Za-z0-9_]+)';

export const subscriptionRoutes: Route[] = [
  { method: 'POST', pattern: /^\/v1\/products$/, handler: createProduct },
  { method: 'POST', pattern: /^\/v1\/prices$/, handler: createPrice },
  { method: 'GET', pattern: new RegExp(`^/v1/prices/${ID}$`), handler: ({ state, params }) => ok(lookup(state.subscriptions.prices, 'price', params[0])) },
  { method: 'POST', pattern: /^\/v1\/test_helpers\/test_clocks$/, handler: createTestClock },
  {
    method: 'GET',
    pattern: new RegExp(`^/v1/test_helpers/test_clocks/${ID}$`),
    handler: ({ state, params }) => ok(lookup(state.subscriptions.testClocks, 'test_clock', params[0])),
  },
  { method: 'POST', pattern: new RegExp(`^/v1/test_helpers/test_clocks/${ID}/advance$`), handler: advanceTestClock },
  { method: 'GET', pattern: new RegExp(`^/v1/subscriptions/${ID}$`), handler: retrieveSubscription },
  { method: 'POST', pattern: new RegExp(`^/v1/subscriptions/${ID}$`), handler: updateSubscription },
];

function createProduct({ state, body }: RouteContext): Reply {
  const name = optionalString(body, 'name');
  if (!name) throw invalidRequest('Missing required param: name.', { code: 'parameter_missing', param: 'name' });
  const product: FakeProduct = { id: newId('prod', 14), object: 'product', created: nowSeconds(), livemode: false, active: true, name, metadata: mergeMetadata({}, body.metadata) };
  state.subscriptions.products.set(product.id, product);
  return ok(product);
}

function createPrice({ state, body }: RouteContext): Reply {
  const currency = optionalString(body, 'currency')?.toLowerCase();
  if (!currency) throw invalidRequest('Missing required param: currency.', { code: 'parameter_missing', param: 'currency' });
  const unitAmount = requiredInteger(body, 'unit_amount', 'unit_amount');
  const recurring = asObject(body.recurring, 'recurring');
  const interval = optionalString(recurring, 'interval', 'recurring[interval]');
  if (interval !== 'month' && interval !== 'year') {
    throw invalidRequest('fakeStripe supports only recurring prices with recurring[interval] month or year.', { param: 'recurring[interval]' });
  }
  let productId = optionalString(body, 'product');
  if (productId === null) {
    const productData = asObject(body.product_data, 'product_data');
    const name = optionalString(productData, 'name', 'product_data[name]');
    if (!name) throw invalidRequest('Missing required param: product.', { code: 'parameter_missing', param: 'product' });
    productId = (createProduct({ state, body: { name, metadata: productData.metadata ?? {} }, params: [] }).body as FakeProduct).id;
  } else if (!state.subscriptions.products.has(productId)) {
    throw missingResource('product', productId, 400, 'product');
  }
  const price: FakePrice = {
    id: newId('price'),
    object: 'price',
    created: nowSeconds(),
    livemode: false,
    active: true,
    type: 'recurring',
    product: productId,
    currency,
    unit_amount: unitAmount,
    recurring: { interval, interval_count: 1 },
    metadata: mergeMetadata({}, body.metadata),
  };
  state.subscriptions.prices.set(price.id, price);
  return ok(price);
}

function createTestClock({ state, body }: RouteContext): Reply {
  const frozenTime = requiredInteger(body, 'frozen_time', 'frozen_time');
  const clock: FakeTestClock = {
    id: newId('clock'),
    object: 'test_helpers.test_clock',
    created: nowSeconds(),
    livemode: false,
    name: optionalString(body, 'name'),
    frozen_time: frozenTime,
    status: 'ready',
  };
  state.subscriptions.testClocks.set(clock.id, clock);
  return ok(clock);
}

/**
 * A subscription-mode Checkout Session: `line_items[][price]` of a stored recurring price; the
 * subscription is created when the customer pays (`fake.billing.completeSubscriptionCheckout`).
 */
export function createSubscriptionCheckoutSession({ state, body }: RouteContext): Reply {
  const customer = optionalString(body, 'customer');
  if (customer === null) throw invalidRequest('fakeStripe needs a customer for mode=subscription.', { param: 'customer' });
  if (!state.customers.has(customer)) throw missingResource('customer', customer, 400, 'customer');
  const items = body.line_items;
  if (!Array.isArray(items) || items.length !== 1) throw invalidRequest('fakeStripe supports exactly one line item for mode=subscription.', { param: 'line_items' });
  const line = asObject(items[0], 'line_items[0]');
  const priceId = optionalString(line, 'price', 'line_items[0][price]');
  if (!priceId) throw invalidRequest('Missing required param: line_items[0][price].', { code: 'parameter_missing', param: 'line_items[0][price]' });
  const price = state.subscriptions.prices.get(priceId);
  if (!price) throw missingResource('price', priceId, 400, 'line_items[0][price]');
  const quantity = requiredInteger(line, 'quantity', 'line_items[0][quantity]');
  const subscriptionData = asObject(body.subscription_data, 'subscription_data');
  if ('billing_cycle_anchor' in subscriptionData) {
    throw invalidRequest('fakeStripe does not implement subscription_data[billing_cycle_anchor]: the cycle is anchored at the start.', { param: 'subscription_data[billing_cycle_anchor]' });
  }
  const created = customerNow(state, customer);
  const id = newId('cs_test', 58);
  const session: FakeCheckoutSession = {
    id,
    object: 'checkout.session',
    created,
    expires_at: created + 24 * 60 * 60,
    livemode: false,
    url: `${state.baseUrl}/checkout/${id}`,
    mode: 'subscription',
    subscription: null,
    customer,
    customer_email: null,
    client_reference_id: optionalString(body, 'client_reference_id'),
    metadata: mergeMetadata({}, body.metadata),
    payment_intent: null,
    payment_status: 'unpaid',
    status: 'open',
    amount_subtotal: price.unit_amount * quantity,
    amount_total: price.unit_amount * quantity,
    currency: price.currency,
    success_url: optionalString(body, 'success_url'),
    cancel_url: optionalString(body, 'cancel_url'),
  };
  state.checkoutSessions.set(id, session);
  state.subscriptions.sessionSubscriptionData.set(id, {
    metadata: mergeMetadata({}, subscriptionData.metadata, 'subscription_data[metadata]'),
    priceId,
    quantity,
  });
  return ok(session);
}

function expandSubscription(state: FakeState, subscription: FakeSubscription, expand: unknown): unknown {
  const copy: Record<string, unknown> = clone(subscription) as unknown as Record<string, unknown>;
  const wanted = Array.isArray(expand) ? expand : [];
  if (wanted.includes('latest_invoice') && subscription.latest_invoice) copy.latest_invoice = clone(state.billing.invoices.get(subscription.latest_invoice));
  return copy;
}

function retrieveSubscription({ state, params, body }: RouteContext): Reply {
  const subscription = lookup(state.subscriptions.subscriptions, 'subscription', params[0]);
  return ok(expandSubscription(state, subscription, body.expand));
}

function newSubscriptionInvoice(
  state: FakeState,
  subscription: FakeSubscription,
  reason: 'subscription_create' | 'subscription_cycle' | 'subscription_update',
  lines: Array<{ amount: number; description: string; proration: boolean; price: FakePrice; period: { start: number; end: number } }>,
  at: number,
): FakeInvoice {
  const id = newId('in');
  const item = subscription.items.data[0]!;
  const currency = item.price.currency;
  const invoiceLines: FakeInvoiceLine[] = lines.map((line) => ({
    id: newId('il'),
    object: 'line_item',
    amount: line.amount,
    currency,
    description: line.description,
    invoice: id,
    livemode: false,
    metadata: {},
    period: line.period,
    quantity: item.quantity,
    subtotal: line.amount,
    parent: {
      type: 'subscription_item_details',
      invoice_item_details: null,
      subscription_item_details: {
        invoice_item: null,
        proration: line.proration,
        proration_details: { credited_items: null },
        subscription: subscription.id,
        subscription_item: item.id,
      },
    },
  }));
  // A renewal invoice takes the customer's pending invoice items (overage, for instance), as Stripe's does.
  if (reason === 'subscription_cycle') {
    for (const pending of state.billing.invoiceItems.values()) {
      if (pending.customer !== subscription.customer || pending.invoice !== null || pending.currency !== currency) continue;
      pending.invoice = id;
      invoiceLines.push({
        id: newId('il'),
        object: 'line_item',
        amount: pending.amount,
        currency,
        description: pending.description,
        invoice: id,
        livemode: false,
        metadata: { ...pending.metadata },
        period: { ...pending.period },
        quantity: pending.quantity,
        subtotal: pending.amount,
        parent: {
          type: 'invoice_item_details',
          invoice_item_details: { invoice_item: pending.id, proration: false, proration_details: { credited_items: null }, subscription: subscription.id },
          subscription_item_details: null,
        },
      });
    }
  }
  const total = Math.max(0, invoiceLines.reduce((sum, line) => sum + line.amount, 0));
  state.billing.invoiceNumber += 1;
  const invoice: FakeInvoice = {
    id,
    object: 'invoice',
    created: at,
    livemode: false,
    customer: subscription.customer,
    status: 'open',
    number: `FAKE-${String(state.billing.invoiceNumber).padStart(4, '0')}`,
    currency,
    description: null,
    collection_method: 'charge_automatically',
    auto_advance: true,
    billing_reason: reason,
    metadata: {},
    subtotal: total,
    total,
    amount_due: total,
    amount_paid: 0,
    amount_remaining: total,
    attempt_count: 0,
    attempted: false,
    next_payment_attempt: null,
    hosted_invoice_url: `${state.baseUrl}/invoice/${id}`,
    invoice_pdf: `${state.baseUrl}/invoice/${id}/pdf`,
    period_start: lines[0]?.period.start ?? at,
    period_end: lines[0]?.period.end ?? at,
    parent: { type: 'subscription_details', subscription_details: { subscription: subscription.id, metadata: { ...subscription.metadata } } },
    payment_intent_id: null,
    status_transitions: { finalized_at: at, paid_at: null, voided_at: null },
    lines: { object: 'list', data: invoiceLines, has_more: false, total_count: invoiceLines.length, url: `/v1/invoices/${id}/lines` },
  };
  state.billing.invoices.set(id, invoice);
  subscription.latest_invoice = id;
  eventOf(state, 'invoice.created', invoice, at);
  eventOf(state, 'invoice.finalized', invoice, at);
  return invoice;
}

/** Charges an open invoice to the subscription's (else the customer's) default payment method. */
function attemptInvoicePayment(state: FakeState, invoice: FakeInvoice, at: number, force = false): boolean {
  const subscription = state.subscriptions.subscriptions.get(invoice.parent?.subscription_details.subscription ?? '');
  const customer = state.customers.get(invoice.customer);
  const paymentMethod = subscription?.default_payment_method ?? customer?.invoice_settings.default_payment_method ?? null;
  invoice.attempt_count += 1;
  invoice.attempted = true;
  invoice.next_payment_attempt = null;
  let declined = paymentMethod === null;
  if (!force && !declined && state.decliningCustomers.has(invoice.customer)) declined = true;
  if (!force && !declined && state.pendingDeclines > 0) {
    state.pendingDeclines -= 1;
    declined = true;
  }
  if (invoice.amount_due === 0) declined = false;
  if (declined) {
    eventOf(state, 'invoice.payment_failed', invoice, at);
    return false;
  }
  if (invoice.amount_due > 0) {
    const intent = state.storeIntent(
      { amount: invoice.amount_due, currency: invoice.currency, customer: invoice.customer, payment_method: paymentMethod ?? newId('pm'), description: `Invoice ${invoice.id}`, metadata: {} },
      succeeded(invoice.amount_due),
    );
    invoice.payment_intent_id = intent.id;
  }
  invoice.status = 'paid';
  invoice.amount_paid = invoice.amount_due;
  invoice.amount_remaining = 0;
  invoice.status_transitions.paid_at = at;
  eventOf(state, 'invoice.paid', invoice, at);
  eventOf(state, 'invoice.payment_succeeded', invoice, at);
  return true;
}

/** After an invoice of the subscription was paid: a pending update applies, a past-due subscription is active again. */
function afterInvoicePaid(state: FakeState, invoice: FakeInvoice, at: number): void {
  const subscription = state.subscriptions.subscriptions.get(invoice.parent?.subscription_details.subscription ?? '');
  if (!subscription) return;
  let changed = false;
  if (subscription.pending_update && invoice.billing_reason === 'subscription_update' && subscription.latest_invoice === invoice.id) {
    for (const update of subscription.pending_update.subscription_items) {
      const item = subscription.items.data.find((candidate) => candidate.id === update.id);
      const price = state.subscriptions.prices.get(update.price);
      if (item && price) item.price = price;
    }
    subscription.pending_update = null;
    changed = true;
  }
  if (subscription.status === 'past_due' || subscription.status === 'unpaid') {
    const unpaid = [...state.billing.invoices.values()].some(
      (candidate) => candidate.parent?.subscription_details.subscription === subscription.id && candidate.status === 'open' && candidate.billing_reason !== 'subscription_update',
    );
    if (!unpaid) {
      subscription.status = 'active';
      changed = true;
    }
  }
  if (changed) eventOf(state, 'customer.subscription.updated', subscription, at);
}

function updateSubscription({ state, params, body }: RouteContext): Reply {
  const subscription = lookup(state.subscriptions.subscriptions, 'subscription', params[0]);
  if (subscription.status === 'canceled') throw invalidRequest('A canceled subscription can only update its cancellation_details and metadata.');
  const at = customerNow(state, subscription.customer);
  if ('metadata' in body) subscription.metadata = mergeMetadata(subscription.metadata, body.metadata);
  if ('cancel_at_period_end' in body) subscription.cancel_at_period_end = body.cancel_at_period_end === 'true';
  // This API version takes `billing_cycle_anchor[type]`; older ones the bare value.
  const anchorParam = body.billing_cycle_anchor;
  const anchor = typeof anchorParam === 'string' ? anchorParam || null : optionalString(asObject(anchorParam, 'billing_cycle_anchor'), 'type', 'billing_cycle_anchor[type]');
  if (anchor !== null && anchor !== 'unchanged') throw invalidRequest('fakeStripe supports only billing_cycle_anchor=unchanged on update.', { param: 'billing_cycle_anchor' });
  const items = body.items;
  if (items !== undefined) {
    if (!Array.isArray(items) || items.length !== 1) throw invalidRequest('fakeStripe supports exactly one item in an update.', { param: 'items' });
    const change = asObject(items[0], 'items[0]');
    const itemId = optionalString(change, 'id', 'items[0][id]');
    const item = subscription.items.data.find((candidate) => candidate.id === itemId);
    if (!item) throw missingResource('subscription_item', itemId ?? '', 400, 'items[0][id]');
    const priceId = optionalString(change, 'price', 'items[0][price]');
    const price = priceId ? state.subscriptions.prices.get(priceId) : undefined;
    if (!priceId || !price) throw missingResource('price', priceId ?? '', 400, 'items[0][price]');
    if (price.recurring.interval !== item.price.recurring.interval) {
      throw invalidRequest('fakeStripe does not implement changing the interval (which resets the billing cycle anchor).', { param: 'items[0][price]' });
    }
    const proration = optionalString(body, 'proration_behavior') ?? 'create_prorations';
    const paymentBehavior = optionalString(body, 'payment_behavior') ?? 'allow_incomplete';
    if (proration === 'none') {
      item.price = price;
    } else if (proration === 'always_invoice') {
      const period = { start: item.current_period_start, end: item.current_period_end };
      const fraction = Math.max(0, period.end - at) / (period.end - period.start);
      const invoice = newSubscriptionInvoice(
        state,
        subscription,
        'subscription_update',
        [
          { amount: -Math.round(item.price.unit_amount * item.quantity * fraction), description: `Unused time on ${item.price.id}`, proration: true, price: item.price, period: { start: at, end: period.end } },
          { amount: Math.round(price.unit_amount * item.quantity * fraction), description: `Remaining time on ${price.id}`, proration: true, price, period: { start: at, end: period.end } },
        ],
        at,
      );
      const paid = attemptInvoicePayment(state, invoice, at);
      if (paid || paymentBehavior !== 'pending_if_incomplete') {
        item.price = price;
        if (!paid) subscription.status = 'past_due';
      } else {
        subscription.pending_update = { expires_at: at + 23 * 3600, subscription_items: [{ id: item.id, price: price.id }] };
      }
    } else {
      throw invalidRequest('fakeStripe supports proration_behavior always_invoice or none.', { param: 'proration_behavior' });
    }
  }
  eventOf(state, 'customer.subscription.updated', subscription, at);
  return ok(expandSubscription(state, subscription, body.expand));
}

/** Renews, or ends, every subscription of the clock's customers whose period ended by `to`, in time order. */
function advanceTestClock({ state, params, body }: RouteContext): Reply {
  const clock = lookup(state.subscriptions.testClocks, 'test_clock', params[0]);
  const to = requiredInteger(body, 'frozen_time', 'frozen_time');
  if (to < clock.frozen_time) throw invalidRequest('The frozen_time must be after the current frozen_time of the test clock.', { param: 'frozen_time' });
  for (;;) {
    const due = [...state.subscriptions.subscriptions.values()]
      .filter((subscription) => subscription.test_clock === clock.id && subscription.status !== 'canceled' && subscription.items.data[0]!.current_period_end <= to)
      .sort((a, b) => a.items.data[0]!.current_period_end - b.items.data[0]!.current_period_end)[0];
    if (!due) break;
    const item = due.items.data[0]!;
    const at = item.current_period_end;
    clock.frozen_time = at;
    if (due.cancel_at_period_end) {
      due.status = 'canceled';
      due.canceled_at = at;
      due.ended_at = at;
      eventOf(state, 'customer.subscription.deleted', due, at);
      continue;
    }
    const index = (state.subscriptions.periodIndex.get(due.id) ?? 0) + 1;
    state.subscriptions.periodIndex.set(due.id, index);
    const period = periodOf(due.billing_cycle_anchor, item.price.recurring.interval, index);
    item.current_period_start = period.start;
    item.current_period_end = period.end;
    const invoice = newSubscriptionInvoice(
      state,
      due,
      'subscription_cycle',
      [{ amount: item.price.unit_amount * item.quantity, description: `1 × ${item.price.id}`, proration: false, price: item.price, period }],
      at,
    );
    if (attemptInvoicePayment(state, invoice, at)) {
      afterInvoicePaid(state, invoice, at);
    } else if (due.status === 'active') {
      due.status = 'past_due';
      eventOf(state, 'customer.subscription.updated', due, at);
    }
  }
  clock.frozen_time = to;
  return ok(clock);
}

// ---------------------------------------------------------------------------------------------
// Controls

export function subscriptionControls(state: FakeState): FakeSubscriptions {
  let taken = 0;
  return {
    prices: state.subscriptions.prices,
    subscriptions: state.subscriptions.subscriptions,
    testClocks: state.subscriptions.testClocks,
    events: state.subscriptions.events,
    takeEvents() {
      const fresh = state.subscriptions.events.slice(taken);
      taken = state.subscriptions.events.length;
      return fresh;
    },
    completeSubscriptionCheckout(sessionId) {
      const session = state.checkoutSessions.get(sessionId);
      const data = state.subscriptions.sessionSubscriptionData.get(sessionId);
      if (!session || !data) throw new Error(`fakeStripe: no subscription-mode checkout session ${sessionId}`);
      if (session.status !== 'open') throw new Error(`fakeStripe: checkout session ${sessionId} is ${session.status}`);
      const customerId = session.customer!;
      const price = state.subscriptions.prices.get(data.priceId)!;
      const at = customerNow(state, customerId);
      const subscriptionId = newId('sub');
      const period = periodOf(at, price.recurring.interval, 0);
      const subscription: FakeSubscription = {
        id: subscriptionId,
        object: 'subscription',
        created: at,
        livemode: false,
        customer: customerId,
        status: 'active',
        start_date: at,
        billing_cycle_anchor: at,
        cancel_at_period_end: false,
        canceled_at: null,
        ended_at: null,
        default_payment_method: newId('pm'),
        latest_invoice: null,
        metadata: { ...data.metadata },
        pending_update: null,
        test_clock: state.customers.get(customerId)?.test_clock ?? null,
        items: {
          object: 'list',
          has_more: false,
          url: `/v1/subscription_items?subscription=${subscriptionId}`,
          data: [{ id: newId('si', 14), object: 'subscription_item', subscription: subscriptionId, price, quantity: data.quantity, current_period_start: period.start, current_period_end: period.end }],
        },
      };
      state.subscriptions.subscriptions.set(subscriptionId, subscription);
      state.subscriptions.periodIndex.set(subscriptionId, 0);
      session.status = 'complete';
      session.payment_status = 'paid';
      session.subscription = subscriptionId;
      session.url = null;
      const created = eventOf(state, 'customer.subscription.created', subscription, at);
      const invoice = newSubscriptionInvoice(
        state,
        subscription,
        'subscription_create',
        [{ amount: price.unit_amount * data.quantity, description: `1 × ${price.id}`, proration: false, price, period }],
        at,
      );
      // The event of the subscription as created names its first invoice, as Stripe's does.
      (created.data.object as FakeSubscription).latest_invoice = invoice.id;
      attemptInvoicePayment(state, invoice, at, true);
      eventOf(state, 'checkout.session.completed', session, at);
      return { session: clone(session), subscription: clone(subscription), invoice: clone(invoice) };
    },
    payInvoice(invoiceId) {
      const invoice = state.billing.invoices.get(invoiceId);
      if (!invoice) throw new Error(`fakeStripe: no such invoice ${invoiceId}`);
      if (invoice.status !== 'open') throw new Error(`fakeStripe: invoice ${invoiceId} is ${invoice.status}`);
      const at = customerNow(state, invoice.customer);
      attemptInvoicePayment(state, invoice, at, true);
      afterInvoicePaid(state, invoice, at);
      return clone(invoice);
    },
  };
}

