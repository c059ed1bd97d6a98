/**
 * The credits dashboard (examples/dashboard) end to end: the API in process, the dashboard built by
 * Vite and served by Vite's preview server on another port (so every call is cross-origin, as in
 * production), driven in Debian's Chromium through playwright-core. Usage is recorded from here with
 * the operator's key; the page must follow it live, without a reload.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { build, preview, type PreviewServer } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBillingClient } from '../packages/sdk/src/index.ts';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { createKey, defineFeature, operator } from './support/fixtures.ts';
import { chromium as chromiumNeed, skipUnless } from './support/optional.ts';
import { freePort } from './support/processServer.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DASHBOARD = path.join(ROOT, 'examples/dashboard');
const ARTIFACTS = path.join(DASHBOARD, 'test-artifacts');
const browser = chromiumNeed();
const CHROMIUM = browser.path ?? '';
const skip = skipUnless('the dashboard test (test/dashboard.test.ts)', [browser]);
const WEBHOOK_SECRET = 'whsec_dashboard_test';

let server: TestServer;
let fakeStripe: FakeStripe;
let site: PreviewServer;
let siteUrl: string;
let context: BrowserContext;
let outDir: string;
let userDataDir: string;
/** What the pages logged as errors: printed when an assertion fails, the quickest way to the cause. */
const pageErrors: string[] = [];

let accountId: string;
let seatId: string;
let seatSession: string;
let buyerSession: string;
let packCode: string;
const features = { summarize: '', search: '' };

async function buildAndServeDashboard(): Promise<void> {
  outDir = mkdtempSync(path.join(tmpdir(), 'dashboard-dist-'));
  const configFile = path.join(DASHBOARD, 'vite.config.ts');
  // A production build (not the dev server): no dependency pre-bundling that reloads the page
  // mid-test, and it proves the documented build works.
  await build({ configFile, mode: 'production', logLevel: 'warn', build: { outDir, emptyOutDir: true } });
  site = await preview({ configFile, logLevel: 'warn', build: { outDir }, preview: { host: '127.0.0.1', port: await freePort(), strictPort: true } });
  const url = site.resolvedUrls?.local[0];
  if (!url) throw new Error('the preview server did not report its address');
  siteUrl = url;
}

async function seed(): Promise<void> {
  const admin = operator(server);
  // Readable names: the run's screenshot is the README's picture. The feature keys are this file's
  // own (features are global, and under TEST_DB=postgres the test files share one database).
  features.summarize = await defineFeature(server, { key: 'assistant.summarize', creditType: 'credits', unitCredits: 10 });
  features.search = await defineFeature(server, { key: 'assistant.search', creditType: 'credits', unitCredits: 5 });
  const plan = unique('pro');
  await admin.upsertPlan({
    code: plan,
    name: 'Pro',
    interval: 'MONTH',
    price: { amount: 4_900, currency: 'USD' },
    allocations: [{ creditType: 'credits', amount: 1_000 }],
    featureKeys: [features.summarize, features.search],
  });
  accountId = (await admin.createAccount({ name: 'Acme Analytics', planCode: plan })).id;
  seatId = (await admin.addSeat({ accountId, name: 'Ada Lovelace' })).id;
  // The partner's back end hands the browser short-lived session tokens, never its keys.
  const backEnd = createBillingClient({ url: `${server.url}/graphql`, apiKey: await createKey(server, 'ACCOUNT', accountId) });
  seatSession = (await backEnd.createSessionToken({ accountId, seatId })).token;
  buyerSession = (await backEnd.createSessionToken({ accountId, canBuy: true })).token;
  packCode = unique('credits_1000');
  await admin.upsertCreditPack({ code: packCode, name: '1,000 credits', creditType: 'credits', credits: 1_000, price: { amount: 1_000, currency: 'USD' }, expiresAfterDays: 365 });
}

/** The address the page keeps: the token is taken out of it (and never reaches Stripe's return URLs). */
function dashboardUrl(): string {
  const params = new URLSearchParams({ api: `${server.url}/graphql`, account: accountId });
  return `${siteUrl}?${params}`;
}

async function openDashboard(token: string): Promise<Page> {
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(`console: ${message.text()}`);
  });
  await page.goto(`${dashboardUrl()}#session=${token}`);
  return page;
}

const card = (creditType: string) => `[data-testid="balance-card"][data-credit-type="${creditType}"]`;
const available = (creditType: string, value: number) => `${card(creditType)} [data-testid="available"][data-value="${value}"]`;
const featureBar = (feature: string, credits: number) => `[data-testid="feature-bar"][data-feature="${feature}"][data-credits="${credits}"]`;

async function use(featureKey: string, quantity: number, tags: string[] = []): Promise<void> {
  const result = await operator(server).recordUsage({ accountId, featureKey, quantity, seatId, tags });
  expect(result.__typename).toBe('UsageRecorded');
}

/**
 * graphql-ws does not say when the server has registered a subscription, so grant a probe pool
 * (voice minutes) until its card shows up live: from then on no change is missed.
 */
async function waitUntilLive(page: Page): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (let first = true; ; first = false) {
    await operator(server).grantCredits({ accountId, creditType: 'voice_minutes', amount: first ? 60 : 1, source: 'BONUS' });
    const shown = await page.waitForSelector(card('voice_minutes'), { timeout: 2_000 }).then(
      () => true,
      () => false,
    );
    if (shown) return;
    if (Date.now() > deadline) throw new Error(`the dashboard never went live: ${pageErrors.join('\n')}`);
  }
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium is needed (apt-get install -y chromium, or set CHROMIUM_PATH)`);
  fakeStripe = await startFakeStripe();
  userDataDir = mkdtempSync(path.join(tmpdir(), 'dashboard-chromium-'));
  const [started] = await Promise.all([
    startTestServer({ JOBS_ENABLED: 'false', STRIPE_SECRET_KEY: 'sk_test_fake', STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_API_BASE: fakeStripe.url }),
    buildAndServeDashboard(),
    chromium
      .launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
        viewport: { width: 1280, height: 900 },
        locale: 'en-US',
        timezoneId: 'UTC',
      })
      .then((launched) => {
        context = launched;
        context.setDefaultTimeout(20_000);
      }),
  ]);
  server = started;
  await seed();
});

afterAll(async () => {
  await context?.close();
  await site?.close();
  await server?.stop();
  await fakeStripe?.close();
  for (const dir of [outDir, userDataDir]) if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(skip)('credits dashboard (examples/dashboard) in Chromium', () => {
  it('shows the balance, follows usage live (balance, chart, 75 % alert), filters and pages the log, buys through Checkout', async () => {
    const page = await openDashboard(seatSession);
    await page.waitForURL((url) => url.href === dashboardUrl());
    try {
      await page.waitForSelector(available('credits', 1_000));
      await page.waitForSelector('body[data-ready="true"]');
      expect(await page.textContent(`${card('credits')} [data-testid="percent-value"]`)).toBe('0%');
      expect(await page.textContent('[data-testid="usage-chart"]')).toContain('No usage this period yet');
      await waitUntilLive(page);

      // Usage elsewhere: the balance and the chart move without a reload.
      await use(features.summarize, 10, ['workbook:42']);
      await page.waitForSelector(available('credits', 900));
      await page.waitForSelector(featureBar(features.summarize, 100));
      await use(features.search, 40, ['report']);
      await page.waitForSelector(available('credits', 700));
      await page.waitForSelector(featureBar(features.search, 200));
      await page.waitForSelector(`${card('credits')} [data-testid="percent-value"][data-value="30"]`);
      for (let batch = 0; batch < 9; batch += 1) await use(features.search, 1, ['batch']);
      await page.waitForSelector(available('credits', 655));
      expect(await page.isHidden('[data-testid="alert-banner"]')).toBe(true);

      // 800 + 45 of 1,000: the 75 % threshold is crossed, and only that one.
      await use(features.summarize, 50);
      await page.waitForSelector(available('credits', 155));
      await page.waitForSelector(featureBar(features.summarize, 600));
      const banner = await page.waitForSelector('[data-testid="alert-banner"][data-kind="USAGE_THRESHOLD"][data-threshold="75"]', { state: 'visible' });
      expect(await banner.textContent()).toContain('75%');
      expect(await page.textContent('[data-testid="toast"]')).toContain('75%');
      await page.waitForSelector(`${card('credits')} [data-testid="forecast"][data-depletes-at]:not([data-depletes-at=""])`);
      expect(await page.getAttribute(`${card('credits')} [data-testid="percent-used"]`, 'aria-valuenow')).toBe('84.5');

      // The usage log: newest first, 10 a page; filters by feature and by tag.
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="usage-row"]').length === 10);
      expect(await page.isEnabled('#page-next')).toBe(true);
      await page.click('#page-next');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="usage-row"]').length === 2);
      expect(await page.textContent('[data-testid="page"]')).toBe('Page 2');
      await page.click('#page-prev');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="usage-row"]').length === 10);
      await page.selectOption('#filter-feature', features.summarize);
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="usage-row"]').length === 2);
      expect(await page.$$eval('[data-testid="usage-row"]', (rows) => rows.map((row) => (row as HTMLElement).dataset.feature))).toEqual([
        features.summarize,
        features.summarize,
      ]);
      await page.fill('#filter-tag', 'workbook:42');
      await page.press('#filter-tag', 'Enter');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="usage-row"]').length === 1);
      await page.selectOption('#filter-feature', '');
      await page.fill('#filter-tag', '');
      await page.press('#filter-tag', 'Enter');
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="usage-row"]').length === 10);

      // A seat session without canBuy may not buy: the refusal is shown as such.
      await page.waitForSelector(`#buy-pack option[value="${packCode}"]`, { state: 'attached' });
      await page.selectOption('#buy-pack', packCode);
      await page.click('#buy-button');
      const refusal = await page.waitForSelector('[data-testid="buy-error"][data-code="FORBIDDEN"]');
      expect(await refusal.textContent()).toContain('canBuy');

      // A session with canBuy buys through Checkout and comes back to this very page.
      const buyer = await openDashboard(buyerSession);
      await buyer.waitForSelector(`#buy-pack option[value="${packCode}"]`, { state: 'attached' });
      await buyer.selectOption('#buy-pack', packCode);
      await buyer.click('#buy-button');
      await buyer.waitForURL((url) => url.href.startsWith(`${fakeStripe.url}/checkout/`));
      const session = [...fakeStripe.checkoutSessions.values()].find((candidate) => buyer.url().endsWith(candidate.id));
      expect(session?.success_url).toBe(dashboardUrl());
      expect(session?.cancel_url).toBe(dashboardUrl());
      await buyer.close();

      // Stripe reports the payment: the seat's page shows the credits and the purchase live.
      const { session: paid } = fakeStripe.completeCheckout(session!.id);
      const { body, signature } = fakeStripe.signedPayload(fakeStripe.event('checkout.session.completed', paid), WEBHOOK_SECRET);
      const delivered = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
      expect(delivered.status).toBe(200);
      await page.waitForSelector(available('credits', 1_155));
      await page.waitForSelector('[data-testid="topup-row"][data-status="COMPLETED"]');

      mkdirSync(ARTIFACTS, { recursive: true });
      const screenshot = path.join(ARTIFACTS, 'dashboard.png');
      await page.screenshot({ path: screenshot, fullPage: true });
      mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
      copyFileSync(screenshot, path.join(ROOT, 'docs/dashboard.png'));

      // Opened later, the page shows the alert raised while nobody was looking (stored, unacknowledged).
      await page.reload();
      await page.waitForSelector('body[data-ready="true"]');
      await page.waitForSelector('[data-testid="alert-banner"][data-threshold="75"]', { state: 'visible' });
      expect(await page.$('[data-testid="toast"]')).toBeNull();
    } catch (error) {
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-failure.png'), fullPage: true }).catch(() => {});
      if (pageErrors.length) console.error(`errors in the dashboard:\n${pageErrors.join('\n')}`);
      throw error;
    } finally {
      await page.close();
    }
  });

  it('an account session shows the invoices Stripe billed (number, what for, total, status, hosted page); a seat session has no invoices panel', async () => {
    // A Checkout purchase gives the account its Stripe customer; then Stripe bills an overage invoice.
    await operator(server).purchaseCreditPack({ accountId, packCode, idempotencyKey: unique('buy'), successUrl: dashboardUrl(), cancelUrl: dashboardUrl() });
    const customer = [...fakeStripe.customers.values()].find((candidate) => candidate.metadata.account_id === accountId)!;
    const draft = await fakeStripe.client.invoices.create({ customer: customer.id, auto_advance: false, currency: 'usd' });
    await fakeStripe.client.invoiceItems.create({ customer: customer.id, invoice: draft.id, amount: 1_250, currency: 'usd', description: 'Overage: 500 credits', metadata: { kind: 'overage' } });
    await fakeStripe.client.invoices.finalizeInvoice(draft.id);
    const finalized = fakeStripe.billing.snapshot(draft.id);
    const { body, signature } = fakeStripe.signedPayload(fakeStripe.event('invoice.finalized', finalized), WEBHOOK_SECRET);
    const delivered = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body });
    expect(delivered.status).toBe(200);

    const page = await openDashboard(buyerSession);
    try {
      const row = await page.waitForSelector(`[data-testid="invoice-row"][data-invoice="${draft.id}"][data-status="OPEN"]`);
      const text = await row.textContent();
      expect(text).toContain(finalized.number!);
      expect(text).toContain('overage');
      expect(text).toContain('$12.50');
      expect(await row.$eval('[data-testid="invoice-link"]', (link) => (link as HTMLAnchorElement).href)).toBe(finalized.hosted_invoice_url);
      const seatPage = await openDashboard(seatSession);
      await seatPage.waitForSelector('body[data-ready="true"]');
      expect(await seatPage.$('[data-testid="invoices"]')).toBeNull();
      await seatPage.close();
    } catch (error) {
      if (pageErrors.length) console.error(`errors in the dashboard:\n${pageErrors.join('\n')}`);
      throw error;
    } finally {
      await page.close();
    }
  });

  it('says plainly when the session was revoked (UNAUTHENTICATED)', async () => {
    const admin = operator(server);
    const issued = await admin.createSessionToken({ accountId, seatId });
    await admin.revokeSessionToken(issued.session.id);
    const page = await openDashboard(issued.token);
    try {
      const error = await page.waitForSelector('[data-testid="error"][data-code="UNAUTHENTICATED"]');
      expect(await error.textContent()).toMatch(/expired or been revoked/);
      expect(await page.$('[data-testid="balance-card"]')).toBeNull();
    } finally {
      await page.close();
    }
  });
});
