/**
 * A partner's back end, compiled against the packed SDK from a project outside the workspace (as
 * NodeNext ESM and as CommonJS) by test/sdkPackage.test.ts, then run against a real server. It
 * prints one JSON line of what it saw; any failure exits non-zero.
 */
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { BillingApiError, createBillingClient, verifyWebhook, type BillingClient, type ErrorCode, type LiveEvent } from '@credit-billing/sdk';

const url = process.env.BILLING_URL!;
const admin = createBillingClient({ url, apiKey: process.env.ADMIN_KEY! });
const suffix = Math.random().toString(36).slice(2, 10);

async function codeOf(call: Promise<unknown>): Promise<ErrorCode | 'ok'> {
  try {
    await call;
    return 'ok';
  } catch (error) {
    if (error instanceof BillingApiError) return error.code;
    throw error;
  }
}

function waitFor<T>(start: (done: (value: T) => void) => void, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 15_000);
    start((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

async function main(): Promise<void> {
  const pool = `credits_${suffix}`;
  const cheap = (await admin.upsertFeature({ key: `cheap_${suffix}`, name: 'cheap', creditType: pool, pricing: 'PER_UNIT', unitCredits: 1 })).key;
  const other = (await admin.upsertFeature({ key: `other_${suffix}`, name: 'other', creditType: pool, pricing: 'PER_UNIT', unitCredits: 1 })).key;
  const plan = await admin.upsertPlan({
    code: `plan_${suffix}`,
    name: 'Partner plan',
    interval: 'MONTH',
    price: { amount: 1_000, currency: 'USD' },
    allocations: [{ creditType: pool, amount: 100 }],
    featureKeys: [cheap],
  });
  const account = await admin.createAccount({ name: 'Partner customer', planCode: plan.code });
  const accountKey = (await admin.createApiKey({ role: 'ACCOUNT', accountId: account.id })).secret;
  const backEnd: BillingClient = createBillingClient({ url, apiKey: accountKey, webSocketImpl: WebSocket, timeout: 10_000 });

  const plans = await backEnd.plans();
  const outcomes: string[] = [];
  const describe = async (input: Parameters<BillingClient['recordUsage']>[0]) => {
    const result = await backEnd.recordUsage(input);
    switch (result.__typename) {
      case 'UsageRecorded':
        return `recorded:${result.balance.available}`;
      case 'InsufficientCredits':
        return `insufficient:${result.required}>${result.available}`;
      case 'SpendLimitExceeded':
        return `limit:${result.spendLimit.limit}`;
      case 'FeatureNotAvailable':
        return `unavailable:${result.featureKey === other}`;
    }
  };
  outcomes.push(await describe({ accountId: account.id, featureKey: cheap, quantity: 10, idempotencyKey: `run-${suffix}` }));
  outcomes.push(await describe({ accountId: account.id, featureKey: cheap, quantity: 10, idempotencyKey: `run-${suffix}` }));
  outcomes.push(await describe({ accountId: account.id, featureKey: cheap, quantity: 1_000 }));
  outcomes.push(await describe({ accountId: account.id, featureKey: other }));
  await backEnd.setSpendLimit({ accountId: account.id, scope: 'ACCOUNT', limit: 15, period: 'BILLING_PERIOD' });
  outcomes.push(await describe({ accountId: account.id, featureKey: cheap, quantity: 10 }));

  let listed = 0;
  for await (const _event of backEnd.usageEvents.list(account.id, { first: 1 })) listed += 1;
  const checkout = await codeOf(backEnd.purchaseCreditPack({ accountId: account.id, packCode: 'none', successUrl: 'https://partner.example/ok', cancelUrl: 'https://partner.example/no' }));

  const events: LiveEvent['type'][] = [];
  const balance = await waitFor<number>(
    (done) => backEnd.subscribeToBalance(account.id, { onData: (update) => update.creditType === pool && done(update.available), onLiveEvent: (event) => events.push(event.type) }),
    'the balance snapshot',
  );
  const refused = await waitFor<BillingApiError>(
    (done) => createBillingClient({ url, apiKey: 'cbk_not_a_key', webSocketImpl: WebSocket }).subscribeToAlerts(account.id, { onData: () => {}, onError: done }),
    'the refusal',
  );
  let foreign: unknown = null;
  try {
    for await (const _alert of backEnd.subscribeToAlerts('not-my-account')) break;
  } catch (error) {
    foreign = error;
  }

  const session = await backEnd.createSessionToken({ accountId: account.id, ttlMinutes: 10 });
  const browser = createBillingClient({ url, apiKey: session.token });
  const viewer = await browser.viewer();

  const body = JSON.stringify({ type: 'alert', alert: { id: 'a1' } });
  const timestamp = Math.floor(Date.now() / 1000);
  const signature = `t=${timestamp},v1=${createHmac('sha256', 'whsec_test').update(`${timestamp}.${body}`).digest('hex')}`;
  const webhook = await verifyWebhook({ payload: body, signature, secret: 'whsec_test' });

  await backEnd.close();
  process.stdout.write(
    `${JSON.stringify({
      plans: plans.some((candidate) => candidate.code === plan.code),
      outcomes,
      listed,
      checkout,
      balance,
      events,
      refused: { code: refused.code, closeCode: refused.closeCode },
      foreign: foreign instanceof BillingApiError ? foreign.code : String(foreign),
      viewer: { role: viewer.role, session: viewer.sessionExpiresAt !== null },
      webhook: webhook.type,
    })}\n`,
  );
}

process.on('unhandledRejection', (reason) => {
  process.stderr.write(`unhandled rejection: ${String(reason)}\n`);
  process.exit(3);
});
main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
