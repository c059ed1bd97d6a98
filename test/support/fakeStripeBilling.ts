/**
 * Invoices and invoice items for the fake Stripe server (fakeStripe.ts), following Stripe Billing's
 * documented lifecycle: an invoice is created as a `draft` (items attached with `invoice`, or left
 * pending for the customer's next invoice), `finalize` gives it a number and a hosted page and makes
 * it `open`, `pay` charges the customer's default payment method (`paid`, or a 402 decline / a 400
 * without a payment method, leaving it `open` with `attempt_count` + 1), and `void` ends an open one.
 *
 * Endpoints:
 * - `POST /v1/invoiceitems`, `GET /v1/invoiceitems` (`customer`, `invoice`, `pending`, `created[gte]`), `GET /v1/invoiceitems/:id`
 * - `POST /v1/invoices`, `GET /v1/invoices` (`customer`, `status`, `created[gte]`), `GET /v1/invoices/:id`
 * - `POST /v1/invoices/:id/finalize`, `POST /v1/invoices/:id/pay`, `POST /v1/invoices/:id/void`
 *
 * This module is loaded by fakeStripe.ts (which owns the HTTP server and the shared state) and uses
 * its helpers only when a request is handled, so the two can import each other.
 */
import {
  ApiError,
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
  type FakeState,
  type Metadata,
  type Reply,
  type Route,
  type RouteContext,
} from './fakeStripe.ts';

export interface FakeInvoiceItem {
  id: string;
  object: 'invoiceitem';
  amount: number;
  currency: string;
  customer: string;
  date: number;
  description: string | null;
  /** Null while pending (it goes on the customer's next invoice). */
  invoice: string | null;
  livemode: false;
  metadata: Metadata;
  period: { start: number; end: number };
  proration: boolean;
  quantity: number;
  parent: { type: 'subscription_details'; subscription_details: { subscription: string } } | null;
}

export interface FakeInvoiceLine {
  id: string;
  object: 'line_item';
  amount: number;
  currency: string;
  description: string | null;
  invoice: string;
  livemode: false;
  metadata: Metadata;
  period: { start: number; end: number };
  quantity: number;
  subtotal: number;
  parent: {
    type: 'invoice_item_details' | 'subscription_item_details';
    invoice_item_details: { invoice_item: string; proration: boolean; proration_details: { credited_items: null }; subscription: string | null } | null;
    subscription_item_details: { invoice_item: string | null; proration: boolean; proration_details: { credited_items: null }; subscription: string | null; subscription_item: string } | null;
  };
}

export type FakeInvoiceStatus = 'draft' | 'open' | 'paid' | 'uncollectible' | 'void';

export interface FakeInvoice {
  id: string;
  object: 'invoice';
  created: number;
  livemode: false;
  customer: string;
  status: FakeInvoiceStatus;
  number: string | null;
  currency: string;
  description: string | null;
  collection_method: 'charge_automatically' | 'send_invoice';
  auto_advance: boolean;
  billing_reason: string;
  metadata: Metadata;
  subtotal: number;
  total: number;
  amount_due: number;
  amount_paid: number;
  amount_remaining: number;
  attempt_count: number;
  attempted: boolean;
  next_payment_attempt: number | null;
  hosted_invoice_url: string | null;
  invoice_pdf: string | null;
  period_start: number;
  period_end: number;
  parent: { type: 'subscription_details'; subscription_details: { subscription: string; metadata: Metadata } } | null;
  payment_intent_id: string | null;
  status_transitions: { finalized_at: number | null; paid_at: number | null; voided_at: number | null };
  lines: { object: 'list'; data: FakeInvoiceLine[]; has_more: boolean; total_count: number; url: string };
}

export class FakeBillingState {
  readonly invoices = new Map<string, FakeInvoice>();
  readonly invoiceItems = new Map<string, FakeInvoiceItem>();
  invoiceNumber = 0;
  /** Armed failures: the next `left` requests whose route contains `match` answer 500. */
  readonly faults: Array<{ match: string; left: number }> = [];
}

export interface FakeBilling {
  /** Stored objects by id (live). */
  readonly invoices: ReadonlyMap<string, Readonly<FakeInvoice>>;
  readonly invoiceItems: ReadonlyMap<string, Readonly<FakeInvoiceItem>>;
  /** Does what a customer paying on the hosted invoice page would. Returns a snapshot. Throws unless the invoice is open. */
  payOnHostedPage(invoiceId: string): FakeInvoice;
  /** A snapshot of an invoice, e.g. to build a webhook event from. */
  snapshot(invoiceId: string): FakeInvoice;
  /**
   * The next `n` billing requests whose route (e.g. `POST /v1/invoices/:id/finalize`) contains `match`
   * answer 500 without doing anything. The client retries a 500 (twice with the product's settings).
   */
  failNext(match: string, n: number): void;
  /** Forgets every idempotency key, as Stripe does after 24 hours. */
  forgetIdempotencyKeys(): void;
}

export function billingControls(state: FakeState): FakeBilling {
  const billing = state.billing;
  return {
    invoices: billing.invoices,
    invoiceItems: billing.invoiceItems,
    payOnHostedPage(invoiceId) {
      const invoice = billing.invoices.get(invoiceId);
      if (!invoice || invoice.status !== 'open') throw new Error(`fakeStripe: invoice ${invoiceId} is not open`);
      markPaid(state, invoice, newId('pm'));
      return structuredClone(invoice);
    },
    snapshot(invoiceId) {
      const invoice = billing.invoices.get(invoiceId);
      if (!invoice) throw new Error(`fakeStripe: no such invoice ${invoiceId}`);
      return structuredClone(invoice);
    },
    failNext(match, n) {
      billing.faults.push({ match, left: n });
    },
    forgetIdempotencyKeys() {
      state.idempotency.clear();
    },
  };
}

/** A route that first answers any failure armed for it with failNext. */
function route(method: string, pattern: RegExp, label: string, handler: Route['handler']): Route {
  return {
    method,
    pattern,
    handler: (context) => {
      const fault = context.state.billing.faults.find((candidate) => candidate.left > 0 && `${method} ${label}`.includes(candidate.match));
      if (fault) {
        fault.left -= 1;
        throw new ApiError(500, { type: 'api_error', message: `fakeStripe: failure armed for ${method} ${label}` });
      }
      return handler(context);
    },
  };
}

const ID = '([A-Za-z0-9_]+)';

export const billingRoutes: Route[] = [
  route('POST', /^\/v1\/invoiceitems$/, '/v1/invoiceitems', createInvoiceItem),
  route('GET', /^\/v1\/invoiceitems$/, '/v1/invoiceitems', listInvoiceItems),
  route('GET', new RegExp(`^/v1/invoiceitems/${ID}$`), '/v1/invoiceitems/:id', ({ state, params }) => ok(lookup(state.billing.invoiceItems, 'invoiceitem', params[0]))),
  route('POST', /^\/v1\/invoices$/, '/v1/invoices', createInvoice),
  route('GET', /^\/v1\/invoices$/, '/v1/invoices', listInvoices),
  route('GET', new RegExp(`^/v1/invoices/${ID}$`), '/v1/invoices/:id', ({ state, params }) => ok(lookup(state.billing.invoices, 'invoice', params[0]))),
  route('POST', new RegExp(`^/v1/invoices/${ID}/finalize$`), '/v1/invoices/:id/finalize', finalizeInvoice),
  route('POST', new RegExp(`^/v1/invoices/${ID}/pay$`), '/v1/invoices/:id/pay', payInvoice),
  route('POST', new RegExp(`^/v1/invoices/${ID}/void$`), '/v1/invoices/:id/void', voidInvoice),
];

function requireCustomer(state: FakeState, body: Record<string, unknown>): string {
  const customer = optionalString(body, 'customer');
  if (customer === null) throw invalidRequest('Missing required param: customer.', { code: 'parameter_missing', param: 'customer' });
  if (!state.customers.has(customer)) throw missingResource('customer', customer, 400, 'customer');
  return customer;
}

function createInvoiceItem({ state, body }: RouteContext): Reply {
  const customer = requireCustomer(state, body);
  const amount = requiredInteger(body, 'amount', 'amount');
  const currency = optionalString(body, 'currency')?.toLowerCase();
  if (!currency) throw invalidRequest('Missing required param: currency.', { code: 'parameter_missing', param: 'currency' });
  const invoiceId = optionalString(body, 'invoice');
  const invoice = invoiceId === null ? null : lookup(state.billing.invoices, 'invoice', invoiceId);
  if (invoice && invoice.status !== 'draft') throw invalidRequest(`You can only add invoice items to draft invoices; ${invoice.id} is ${invoice.status}.`, { param: 'invoice' });
  if (invoice && invoice.customer !== customer) throw invalidRequest('The invoice belongs to another customer.', { param: 'invoice' });
  if (invoice && invoice.currency !== currency) throw invalidRequest(`The invoice is in ${invoice.currency}, not ${currency}.`, { param: 'currency' });
  const subscription = optionalString(body, 'subscription');
  if (subscription !== null) {
    const found = state.subscriptions.subscriptions.get(subscription);
    if (!found) throw missingResource('subscription', subscription, 400, 'subscription');
    if (found.customer !== customer) throw invalidRequest('The subscription belongs to another customer.', { param: 'subscription' });
    if (found.status === 'canceled') {
      throw invalidRequest(`You cannot add invoice items to a subscription that is ${found.status}.`, { param: 'subscription' });
    }
  }
  const period = asObject(body.period, 'period');
  const date = nowSeconds();
  const item: FakeInvoiceItem = {
    id: newId('ii'),
    object: 'invoiceitem',
    amount,
    currency,
    customer,
    date,
    description: optionalString(body, 'description'),
    invoice: invoice?.id ?? null,
    livemode: false,
    metadata: mergeMetadata({}, body.metadata),
    period: 'start' in period ? { start: requiredInteger(period, 'start', 'period[start]'), end: requiredInteger(period, 'end', 'period[end]') } : { start: date, end: date },
    proration: false,
    quantity: 1,
    parent: subscription === null ? null : { type: 'subscription_details', subscription_details: { subscription } },
  };
  state.billing.invoiceItems.set(item.id, item);
  if (invoice) {
    invoice.lines.data.push(lineOf(item, invoice.id));
    recompute(invoice);
  }
  return ok(item);
}

function lineOf(item: FakeInvoiceItem, invoiceId: string): FakeInvoiceLine {
  const subscription = item.parent?.subscription_details.subscription ?? null;
  return {
    id: newId('il'),
    object: 'line_item',
    amount: item.amount,
    currency: item.currency,
    description: item.description,
    invoice: invoiceId,
    livemode: false,
    metadata: { ...item.metadata },
    period: { ...item.period },
    quantity: item.quantity,
    subtotal: item.amount,
    parent: {
      type: 'invoice_item_details',
      invoice_item_details: { invoice_item: item.id, proration: item.proration, proration_details: { credited_items: null }, subscription },
      subscription_item_details: null,
    },
  };
}

function recompute(invoice: FakeInvoice): void {
  const total = invoice.lines.data.reduce((sum, line) => sum + line.amount, 0);
  invoice.subtotal = total;
  invoice.total = total;
  invoice.amount_due = total;
  invoice.amount_remaining = total - invoice.amount_paid;
  invoice.lines.total_count = invoice.lines.data.length;
}

function createInvoice({ state, body }: RouteContext): Reply {
  const customer = requireCustomer(state, body);
  const collection = optionalString(body, 'collection_method') ?? 'charge_automatically';
  if (collection !== 'charge_automatically' && collection !== 'send_invoice') throw invalidRequest(`Invalid collection_method: ${collection}.`, { param: 'collection_method' });
  const behaviour = optionalString(body, 'pending_invoice_items_behavior') ?? 'exclude';
  const currency = optionalString(body, 'currency')?.toLowerCase() ?? 'usd';
  const created = nowSeconds();
  const id = newId('in');
  const invoice: FakeInvoice = {
    id,
    object: 'invoice',
    created,
    livemode: false,
    customer,
    status: 'draft',
    number: null,
    currency,
    description: optionalString(body, 'description'),
    collection_method: collection,
    auto_advance: body.auto_advance !== 'false',
    billing_reason: 'manual',
    metadata: mergeMetadata({}, body.metadata),
    subtotal: 0,
    total: 0,
    amount_due: 0,
    amount_paid: 0,
    amount_remaining: 0,
    attempt_count: 0,
    attempted: false,
    next_payment_attempt: null,
    hosted_invoice_url: null,
    invoice_pdf: null,
    period_start: created,
    period_end: created,
    parent: null,
    payment_intent_id: null,
    status_transitions: { finalized_at: null, paid_at: null, voided_at: null },
    lines: { object: 'list', data: [], has_more: false, total_count: 0, url: `/v1/invoices/${id}/lines` },
  };
  state.billing.invoices.set(id, invoice);
  if (behaviour === 'include') {
    for (const item of state.billing.invoiceItems.values()) {
      if (item.customer === customer && item.invoice === null && item.currency === currency) {
        item.invoice = id;
        invoice.lines.data.push(lineOf(item, id));
      }
    }
    recompute(invoice);
  }
  return ok(invoice);
}

function finalizeInvoice({ state, params, body }: RouteContext): Reply {
  const invoice = lookup(state.billing.invoices, 'invoice', params[0]);
  if (invoice.status !== 'draft') throw invalidRequest(`This invoice is already finalized, you can't re-finalize a non-draft invoice.`, { code: 'invoice_not_editable' });
  if ('auto_advance' in body) invoice.auto_advance = body.auto_advance === 'true';
  state.billing.invoiceNumber += 1;
  invoice.number = `FAKE-${String(state.billing.invoiceNumber).padStart(4, '0')}`;
  invoice.status = 'open';
  invoice.status_transitions.finalized_at = nowSeconds();
  invoice.hosted_invoice_url = `${state.baseUrl}/invoice/${invoice.id}`;
  invoice.invoice_pdf = `${state.baseUrl}/invoice/${invoice.id}/pdf`;
  // As on Stripe, an invoice with nothing to pay is paid as it is finalized.
  if (invoice.amount_due === 0) markPaid(state, invoice, null);
  return ok(invoice);
}

function markPaid(state: FakeState, invoice: FakeInvoice, paymentMethod: string | null): void {
  if (invoice.amount_remaining > 0) {
    const intent = state.storeIntent(
      { amount: invoice.amount_remaining, currency: invoice.currency, customer: invoice.customer, payment_method: paymentMethod, description: `Invoice ${invoice.number}`, metadata: {} },
      succeeded(invoice.amount_remaining),
    );
    invoice.payment_intent_id = intent.id;
  }
  invoice.status = 'paid';
  invoice.amount_paid = invoice.amount_due;
  invoice.amount_remaining = 0;
  invoice.next_payment_attempt = null;
  invoice.status_transitions.paid_at = nowSeconds();
}

function payInvoice({ state, params }: RouteContext): Reply {
  const invoice = lookup(state.billing.invoices, 'invoice', params[0]);
  if (invoice.status === 'paid') throw invalidRequest('Invoice is already paid.', { code: 'invoice_already_paid' });
  if (invoice.status !== 'open') throw invalidRequest(`You can only pay an open invoice; ${invoice.id} is ${invoice.status}.`, { code: 'invoice_not_open' });
  const customer = state.customers.get(invoice.customer);
  const paymentMethod = customer?.invoice_settings.default_payment_method ?? null;
  invoice.attempted = true;
  invoice.attempt_count += 1;
  if (paymentMethod === null) {
    throw new ApiError(400, { type: 'invalid_request_error', message: 'This customer has no attached payment source or default payment method.' });
  }
  const fields = { amount: invoice.amount_remaining, currency: invoice.currency, customer: invoice.customer, payment_method: paymentMethod, description: `Invoice ${invoice.number}`, metadata: {} };
  const declined = state.decliningCustomers.has(invoice.customer) || state.pendingDeclines > 0;
  if (declined) {
    if (!state.decliningCustomers.has(invoice.customer)) state.pendingDeclines -= 1;
    // Stripe's Smart Retries try again later (auto_advance); the customer may pay on the hosted page.
    invoice.next_payment_attempt = invoice.auto_advance ? nowSeconds() + 3 * 86_400 : null;
    return decline(state, fields);
  }
  markPaid(state, invoice, paymentMethod);
  return ok(invoice);
}

function voidInvoice({ state, params }: RouteContext): Reply {
  const invoice = lookup(state.billing.invoices, 'invoice', params[0]);
  if (invoice.status !== 'open' && invoice.status !== 'uncollectible') throw invalidRequest(`You can only void an open invoice; ${invoice.id} is ${invoice.status}.`);
  invoice.status = 'void';
  invoice.next_payment_attempt = null;
  invoice.status_transitions.voided_at = nowSeconds();
  return ok(invoice);
}

/** Stripe's list envelope over objects newest first, with `limit` and `starting_after`. */
function listOf<T extends { id: string }>(items: T[], body: Record<string, unknown>, url: string): Reply {
  const limit = body.limit === undefined ? 10 : requiredInteger(body, 'limit', 'limit');
  if (limit < 1 || limit > 100) throw invalidRequest('limit must be from 1 to 100.', { param: 'limit' });
  const after = optionalString(body, 'starting_after');
  const start = after === null ? 0 : items.findIndex((item) => item.id === after) + 1;
  const page = items.slice(start, start + limit);
  return ok({ object: 'list', data: page, has_more: start + limit < items.length, url });
}

function createdSince(body: Record<string, unknown>): number {
  const created = asObject(body.created, 'created');
  return 'gte' in created ? requiredInteger(created, 'gte', 'created[gte]') : 0;
}

/** Newest first, as Stripe lists; the id breaks ties of the same second stably. */
function newestFirst<T extends { id: string }>(items: T[], createdOf: (item: T) => number): T[] {
  const order = new Map(items.map((item, index) => [item.id, index]));
  return [...items].sort((a, b) => createdOf(b) - createdOf(a) || (order.get(b.id) ?? 0) - (order.get(a.id) ?? 0));
}

function listInvoiceItems({ state, body }: RouteContext): Reply {
  const customer = optionalString(body, 'customer');
  const invoice = optionalString(body, 'invoice');
  const pending = optionalString(body, 'pending');
  const since = createdSince(body);
  const items = [...state.billing.invoiceItems.values()].filter(
    (item) =>
      (customer === null || item.customer === customer) &&
      (invoice === null || item.invoice === invoice) &&
      (pending === null || (pending === 'true') === (item.invoice === null)) &&
      item.date >= since,
  );
  return listOf(newestFirst(items, (item) => item.date), body, '/v1/invoiceitems');
}

function listInvoices({ state, body }: RouteContext): Reply {
  const customer = optionalString(body, 'customer');
  const status = optionalString(body, 'status');
  const since = createdSince(body);
  const invoices = [...state.billing.invoices.values()].filter(
    (invoice) => (customer === null || invoice.customer === customer) && (status === null || invoice.status === status) && invoice.created >= since,
  );
  return listOf(newestFirst(invoices, (invoice) => invoice.created), body, '/v1/invoices');
}
