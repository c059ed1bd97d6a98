import { randomUUID } from 'node:crypto';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseForm, startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';

let fake: FakeStripe;
let stripe: Stripe;

beforeAll(async () => {
  fake = await startFakeStripe();
  stripe = fake.client;
});
afterAll(async () => {
  await fake?.close();
});

/** The rejection of `promise`, which must reject. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

async function newCustomer(): Promise<Stripe.Customer> {
  return stripe.customers.create({ email: 'payer@example.com', metadata: { account_id: randomUUID() } });
}

describe('fake Stripe through the official client', () => {
  it('creates and retrieves customers, and 404s an unknown one in Stripe’s error shape', async () => {
    const created = await stripe.customers.create({ email: 'a@example.com', metadata: { account_id: 'acc_1' } });
    expect(created.id).toMatch(/^cus_[A-Za-z0-9]{24}$/);
    expect(created).toMatchObject({ object: 'customer', email: 'a@example.com', metadata: { account_id: 'acc_1' } });
    expect(created.invoice_settings.default_payment_method).toBeNull();

    fake.setDefaultPaymentMethod(created.id, 'pm_card_visa');
    const retrieved = await stripe.customers.retrieve(created.id);
    expect(retrieved).toMatchObject({ id: created.id, invoice_settings: { default_payment_method: 'pm_card_visa' } });

    const missing = await rejection(stripe.customers.retrieve('cus_unknown'));
    expect(missing).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(missing).toMatchObject({ statusCode: 404, code: 'resource_missing', rawType: 'invalid_request_error' });
  });

  it('creates a checkout session with its total and a reachable url, and completes it', async () => {
    const customer = await newCustomer();
    const session = await stripe.checkout.sessions.create({
      mode: 'payment',
      customer: customer.id,
      client_reference_id: 'acc_7',
      success_url: 'https://example.com/ok',
      cancel_url: 'https://example.com/cancel',
      metadata: { account_id: 'acc_7' },
      payment_intent_data: { metadata: { account_id: 'acc_7', credits: '5000' } },
      line_items: [
        { quantity: 2, price_data: { currency: 'usd', unit_amount: 1250, product_data: { name: 'Credits' } } },
        { quantity: 1, price_data: { currency: 'usd', unit_amount: 99, product_data: { name: 'Fee' } } },
      ],
    });
    expect(session.id).toMatch(/^cs_/);
    expect(session.url).toBe(`${fake.url}/checkout/${session.id}`);
    expect(session).toMatchObject({
      object: 'checkout.session',
      amount_total: 2599,
      currency: 'usd',
      customer: customer.id,
      payment_intent: null,
      payment_status: 'unpaid',
      status: 'open',
      client_reference_id: 'acc_7',
      success_url: 'https://example.com/ok',
    });
    expect(fake.checkoutPaymentIntentData.get(session.id)?.metadata).toEqual({ account_id: 'acc_7', credits: '5000' });
    expect((await fetch(session.url ?? '')).status).toBe(200);

    const { session: completed, paymentIntent } = fake.completeCheckout(session.id);
    expect(paymentIntent).toMatchObject({ status: 'succeeded', amount: 2599, customer: customer.id, metadata: { account_id: 'acc_7', credits: '5000' } });
    expect(completed).toMatchObject({ status: 'complete', payment_status: 'paid', payment_intent: paymentIntent.id });
    expect(await stripe.checkout.sessions.retrieve(session.id)).toMatchObject({ status: 'complete', payment_intent: paymentIntent.id });
    expect(await stripe.paymentIntents.retrieve(paymentIntent.id)).toMatchObject({ status: 'succeeded', amount: 2599 });
    expect(() => fake.completeCheckout(session.id)).toThrow(/complete/);
  });

  it('replays a PaymentIntent creation with the same idempotency key and rejects the key with other params', async () => {
    const customer = await newCustomer();
    const params: Stripe.PaymentIntentCreateParams = {
      amount: 1500,
      currency: 'usd',
      customer: customer.id,
      payment_method: 'pm_card_visa',
      confirm: true,
      off_session: true,
      metadata: { account_id: 'acc_9', top_up: 'auto' },
    };
    const idempotencyKey = `top-up-${randomUUID()}`;
    const intentsBefore = fake.paymentIntents.size;
    fake.reset();

    const first = await stripe.paymentIntents.create(params, { idempotencyKey });
    const second = await stripe.paymentIntents.create(params, { idempotencyKey });
    expect(first).toMatchObject({ object: 'payment_intent', status: 'succeeded', amount: 1500, customer: customer.id, metadata: params.metadata });
    expect(first.latest_charge).toMatch(/^ch_/);
    expect(second.id).toBe(first.id);
    expect(fake.paymentIntents.size).toBe(intentsBefore + 1);

    const posts = fake.requests.filter((request) => request.method === 'POST' && request.path === '/v1/payment_intents');
    expect(posts.map((request) => [request.idempotencyKey, request.replayed])).toEqual([
      [idempotencyKey, false],
      [idempotencyKey, true],
    ]);
    expect(posts[0]?.body).toMatchObject({ amount: '1500', confirm: 'true', off_session: 'true', metadata: { account_id: 'acc_9' } });

    const conflict = await rejection(stripe.paymentIntents.create({ ...params, amount: 1600 }, { idempotencyKey }));
    expect(conflict).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    await expect(stripe.customers.create({}, { idempotencyKey })).rejects.toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(fake.paymentIntents.size).toBe(intentsBefore + 1);
  });

  it('creates one intent for concurrent requests sharing a key', async () => {
    const customer = await newCustomer();
    const idempotencyKey = randomUUID();
    const params: Stripe.PaymentIntentCreateParams = { amount: 300, currency: 'usd', customer: customer.id, payment_method: 'pm_1', confirm: true };
    const intents = await Promise.all(Array.from({ length: 5 }, () => stripe.paymentIntents.create(params, { idempotencyKey })));
    expect(new Set(intents.map((intent) => intent.id)).size).toBe(1);
    expect([...fake.paymentIntents.values()].filter((intent) => intent.customer === customer.id)).toHaveLength(1);
  });

  it('declines armed payments with a StripeCardError carrying the failed intent', async () => {
    const customer = await newCustomer();
    const params: Stripe.PaymentIntentCreateParams = {
      amount: 700,
      currency: 'usd',
      customer: customer.id,
      payment_method: 'pm_card_visa',
      confirm: true,
      off_session: true,
    };

    fake.declineNextPayments(1);
    const declined = await rejection(stripe.paymentIntents.create(params));
    expect(declined).toBeInstanceOf(Stripe.errors.StripeCardError);
    if (!(declined instanceof Stripe.errors.StripeCardError)) return;
    expect(declined).toMatchObject({ statusCode: 402, code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.' });
    const failedId = declined.payment_intent?.id ?? '';
    expect(declined.payment_intent?.status).toBe('requires_payment_method');
    expect((await stripe.paymentIntents.retrieve(failedId)).last_payment_error?.code).toBe('card_declined');

    expect((await stripe.paymentIntents.create(params)).status).toBe('succeeded');

    fake.declineNextPayments(1);
    const idempotencyKey = randomUUID();
    const firstDecline = await rejection(stripe.paymentIntents.create(params, { idempotencyKey }));
    const replayedDecline = await rejection(stripe.paymentIntents.create(params, { idempotencyKey }));
    expect(replayedDecline).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(replayedDecline).toMatchObject({ payment_intent: { id: (firstDecline as Stripe.errors.StripeCardError).payment_intent?.id } });
    expect((await stripe.paymentIntents.create(params)).status).toBe('succeeded');

    fake.declineCustomer(customer.id, true);
    await expect(stripe.paymentIntents.create(params)).rejects.toBeInstanceOf(Stripe.errors.StripeCardError);
    await expect(stripe.paymentIntents.create(params)).rejects.toBeInstanceOf(Stripe.errors.StripeCardError);
    fake.declineCustomer(customer.id, false);
    expect((await stripe.paymentIntents.create(params)).status).toBe('succeeded');
  });

  it('signs events that constructEvent accepts, and rejects a tampered body', () => {
    const secret = 'whsec_test_secret';
    const event = fake.event('checkout.session.completed', { id: 'cs_test_1', object: 'checkout.session', amount_total: 500 });
    expect(event).toMatchObject({ object: 'event', type: 'checkout.session.completed', api_version: Stripe.API_VERSION, livemode: false });
    expect(event.id).toMatch(/^evt_/);

    const { body, signature } = fake.signedPayload(event, secret);
    const constructed = stripe.webhooks.constructEvent(body, signature, secret);
    expect(constructed.id).toBe(event.id);
    expect(constructed.data.object).toMatchObject({ id: 'cs_test_1', amount_total: 500 });

    const tampered = body.replace('"amount_total": 500', '"amount_total": 50000').replace('"amount_total":500', '"amount_total":50000');
    expect(tampered).not.toBe(body);
    expect(() => stripe.webhooks.constructEvent(tampered, signature, secret)).toThrow(Stripe.errors.StripeSignatureVerificationError);

    const old = fake.signedPayload(event, secret, Math.floor(Date.now() / 1000) - 3600);
    expect(() => stripe.webhooks.constructEvent(old.body, old.signature, secret)).toThrow(/tolerance/);
  });

  it('answers unknown routes and missing API keys in Stripe’s error shape', async () => {
    const unknown = await fetch(`${fake.url}/v1/refunds`, { headers: { authorization: 'Bearer sk_test_x' } });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { type: 'invalid_request_error' } });

    const anonymous = await fetch(`${fake.url}/v1/customers`, { method: 'POST' });
    expect(anonymous.status).toBe(401);
  });
});

describe('parseForm', () => {
  it('builds nested objects and arrays from bracket notation, keeping values as strings', () => {
    const body = parseForm(
      'mode=payment&metadata[account_id]=acc%201&line_items[0][price_data][unit_amount]=500&line_items[0][quantity]=2' +
        '&line_items[1][price_data][product_data][name]=A+%26+B&expand[0]=customer&empty=',
    );
    expect(body).toEqual({
      mode: 'payment',
      metadata: { account_id: 'acc 1' },
      line_items: [{ price_data: { unit_amount: '500' }, quantity: '2' }, { price_data: { product_data: { name: 'A & B' } } }],
      expand: ['customer'],
      empty: '',
    });
  });

  it('closes holes the client leaves for undefined elements', () => {
    expect(parseForm('a[0]=x&a[2]=y')).toEqual({ a: ['x', 'y'] });
  });

  it('rejects contradictory and dangerous keys', () => {
    expect(() => parseForm('a=1&a[b]=2')).toThrow();
    expect(() => parseForm('a[b]=2&a=1')).toThrow();
    expect(() => parseForm('a=1&a=2')).toThrow();
    expect(() => parseForm('__proto__[polluted]=1')).toThrow();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('fake Stripe: cards on file (fakeStripeCards.ts)', () => {
  it('setup-mode Checkout needs a currency or allowed payment method types, and completing it saves a card through a SetupIntent', async () => {
    const customer = await newCustomer();
    const missing = await rejection(stripe.checkout.sessions.create({ mode: 'setup', customer: customer.id, success_url: 'https://a.example' }));
    expect(missing).toMatchObject({ type: 'StripeInvalidRequestError', code: 'parameter_missing', param: 'currency', statusCode: 400 });
    const session = await stripe.checkout.sessions.create({ mode: 'setup', customer: customer.id, allowed_payment_method_types: ['card'], success_url: 'https://a.example', metadata: { account_id: 'acc' } });
    expect(session).toMatchObject({ mode: 'setup', status: 'open', setup_intent: null, customer: customer.id });
    const { setupIntent, paymentMethod } = fake.cards.completeSetup(session.id, 'mastercard');
    expect(await stripe.checkout.sessions.retrieve(session.id)).toMatchObject({ status: 'complete', setup_intent: setupIntent.id, url: null });
    expect(await stripe.setupIntents.retrieve(setupIntent.id)).toMatchObject({ status: 'succeeded', payment_method: paymentMethod.id, usage: 'off_session' });
    expect(await stripe.paymentMethods.retrieve(paymentMethod.id)).toMatchObject({ type: 'card', customer: customer.id, card: { brand: 'mastercard', last4: '4444' } });
  });

  it('a card needing authentication fails off session with authentication_required (402) and answers requires_action on session', async () => {
    const customer = await newCustomer();
    const card = fake.cards.addCard(customer.id, 'authenticationRequired');
    const offSession = await rejection(
      stripe.paymentIntents.create({ amount: 1_000, currency: 'usd', customer: customer.id, payment_method: card.id, off_session: true, confirm: true }),
    );
    expect(offSession).toMatchObject({ type: 'StripeCardError', code: 'authentication_required', statusCode: 402, payment_intent: { status: 'requires_payment_method' } });
    const onSession = await stripe.paymentIntents.create({ amount: 1_000, currency: 'usd', customer: customer.id, payment_method: card.id, confirm: true });
    expect(onSession.status).toBe('requires_action');
  });

  it('refuses a charge below the minimum, a card of another customer, and a detached card; detaching unsets the default', async () => {
    const customer = await newCustomer();
    const card = fake.cards.addCard(customer.id, 'visa');
    const tooSmall = await rejection(stripe.paymentIntents.create({ amount: 49, currency: 'usd', customer: customer.id, payment_method: card.id, confirm: true }));
    expect(tooSmall).toMatchObject({ type: 'StripeInvalidRequestError', code: 'amount_too_small', statusCode: 400 });
    const stranger = await newCustomer();
    const foreign = await rejection(stripe.paymentIntents.create({ amount: 500, currency: 'usd', customer: stranger.id, payment_method: card.id, confirm: true }));
    expect(foreign).toMatchObject({ type: 'StripeInvalidRequestError', statusCode: 400 });
    await stripe.customers.update(customer.id, { invoice_settings: { default_payment_method: card.id } });
    expect(await stripe.paymentMethods.detach(card.id)).toMatchObject({ id: card.id, customer: null });
    expect((await stripe.customers.retrieve(customer.id)) as Stripe.Customer).toMatchObject({ invoice_settings: { default_payment_method: null } });
    expect(await rejection(stripe.paymentMethods.detach(card.id))).toMatchObject({ statusCode: 400 });
  });

  it('creates Customer Portal sessions for known customers only', async () => {
    const customer = await newCustomer();
    const portal = await stripe.billingPortal.sessions.create({ customer: customer.id, return_url: 'https://a.example/back' });
    expect(portal).toMatchObject({ object: 'billing_portal.session', customer: customer.id, return_url: 'https://a.example/back' });
    expect(portal.url).toMatch(/\/billing_portal\/bps_/);
    expect(await rejection(stripe.billingPortal.sessions.create({ customer: 'cus_missing' }))).toMatchObject({ code: 'resource_missing', statusCode: 400 });
  });

  it('answers injected failures unexecuted (429, 5xx, a dropped connection), or executes and then drops the answer', async () => {
    const client = new Stripe('sk_test_fake', { host: '127.0.0.1', port: fake.port, protocol: 'http', maxNetworkRetries: 0 });
    const customer = await newCustomer();
    const card = fake.cards.addCard(customer.id, 'visa');
    const charge = (key: string) =>
      client.paymentIntents.create({ amount: 500, currency: 'usd', customer: customer.id, payment_method: card.id, confirm: true }, { idempotencyKey: key });
    fake.cards.failNextRequests(1, { status: 429, path: '/v1/payment_intents' });
    expect(await rejection(charge(randomUUID()))).toMatchObject({ type: 'StripeRateLimitError', statusCode: 429 });
    fake.cards.failNextRequests(1, { status: 503, path: '/v1/payment_intents' });
    expect(await rejection(charge(randomUUID()))).toMatchObject({ type: 'StripeAPIError', statusCode: 503 });
    // The client retries a closed connection once even with retries off: two drops.
    fake.cards.failNextRequests(2, { status: 0, path: '/v1/payment_intents' });
    expect(await rejection(charge(randomUUID()))).toMatchObject({ type: 'StripeConnectionError' });
    const intentsBefore = fake.paymentIntents.size;
    const key = randomUUID();
    fake.cards.failNextRequests(2, { status: 0, afterExecuting: true, path: '/v1/payment_intents' });
    expect(await rejection(charge(key))).toMatchObject({ type: 'StripeConnectionError' });
    expect(fake.paymentIntents.size).toBe(intentsBefore + 1);
    const replayed = await charge(key);
    expect(replayed.status).toBe('succeeded');
    expect(fake.paymentIntents.size).toBe(intentsBefore + 1);
  });
});
