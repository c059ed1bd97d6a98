/**
 * A credits dashboard for one account, built only on the SDK. Open it with
 * `?api=<GraphQL URL>&account=<account id>#session=<session token>`: a short-lived token from
 * `createSessionToken` (a seat's reads; `canBuy` to buy), handed over in the fragment, which
 * browsers never send to a server, and taken out of the address at once. No API key is ever in the
 * URL. Balances and the usage chart follow `balanceUpdated`; alerts come from `creditAlerts` as a
 * banner and a toast.
 */
import {
  BillingApiError,
  createBillingClient,
  type AlertFieldsFragment,
  type BalanceFieldsFragment,
  type BillingClient,
  type CreditPackFieldsFragment,
  type LiveEvent,
  type LiveFeed,
  type UsageEventFieldsFragment,
} from '@credit-billing/sdk';
import { byId, formatDate, formatMoney, formatNumber, h, svg } from './dom.ts';
import { describe, type Problem } from './errors.ts';

const USAGE_PAGE_SIZE = 10;
const TOAST_MS = 8_000;
const DEFAULT_API = 'http://localhost:4000/graphql';

interface Settings {
  api: string;
  token: string;
  accountId: string | null;
}

/** Where the token is kept for this tab (reloads, the return from Checkout), never in the address. */
const TOKEN_STORAGE = 'credit-billing-dashboard-session';

/**
 * The session token comes in the fragment (`#session=…`): kept in this tab's sessionStorage and
 * removed from the address (and so from history) before anything else happens.
 */
function readSettings(): Settings | null {
  const params = new URLSearchParams(window.location.search);
  const handedOver = new URLSearchParams(window.location.hash.slice(1)).get('session')?.trim();
  if (handedOver) {
    sessionStorage.setItem(TOKEN_STORAGE, handedOver);
    history.replaceState(null, '', `${window.location.pathname}${window.location.search}`);
  }
  const token = sessionStorage.getItem(TOKEN_STORAGE);
  if (!token) return null;
  return { api: params.get('api')?.trim() || DEFAULT_API, token, accountId: params.get('account')?.trim() || null };
}

const app = byId('app');
const errors = byId('errors');
const banner = byId('alert-banner');
const toasts = byId('toasts');
const liveBadge = byId('live');

let billing: BillingClient;
let settings: Settings;
let accountId: string;
/** Invoices are the account's, not a seat's: a seat session gets no invoices panel. */
let showInvoices = false;
let stopped = false;

const balances = new Map<string, BalanceFieldsFragment>();
const usage = {
  filter: { featureKey: '', tag: '' },
  /** Cursor of each page visited so far (null: the first), so Previous needs no backwards paging. */
  pageStarts: [null] as Array<string | null>,
  page: 0,
};

// ---------------------------------------------------------------------------------------------
// Errors, alerts, toasts

function problemBox(problem: Problem, testId = 'error'): HTMLElement {
  return h(
    'div',
    { class: `problem${problem.fatal ? ' fatal' : ''}`, 'data-testid': testId, 'data-code': problem.code, role: 'alert' },
    h('strong', {}, problem.title),
    ' ',
    h('span', {}, problem.detail),
    ' ',
    h('code', {}, problem.code),
  );
}

/** Shows a failure once per code (a burst of refreshes failing alike shows one box), newest on top. */
function report(error: unknown, where: string): Problem {
  const problem = describe(error, settings?.api ?? DEFAULT_API);
  errors.querySelector(`[data-code="${CSS.escape(problem.code)}"]`)?.remove();
  const box = problemBox(problem);
  box.prepend(h('span', { class: 'where' }, `${where}: `));
  const dismiss = h('button', { class: 'link', type: 'button', 'aria-label': 'Dismiss' }, '×');
  dismiss.addEventListener('click', () => box.remove());
  box.append(dismiss);
  errors.prepend(box);
  if (problem.fatal) stop();
  return problem;
}

function clearProblem(code: string): void {
  errors.querySelector(`[data-code="${CSS.escape(code)}"]`)?.remove();
}

/** A refused key refuses everything: stop live updates instead of retrying forever. */
function stop(): void {
  if (stopped) return;
  stopped = true;
  setLive('off', 'stopped');
  void billing?.close();
}

function setLive(state: 'on' | 'off' | 'connecting', label: string): void {
  liveBadge.dataset.state = state;
  liveBadge.textContent = label;
}

function alertSeverity(alert: AlertFieldsFragment): 'danger' | 'warning' | 'info' {
  if (alert.kind === 'POOL_EXHAUSTED' || alert.kind === 'AUTO_TOP_UP_FAILED' || alert.kind === 'AUTO_TOP_UP_PAUSED' || alert.kind === 'PAYMENT_ACTION_REQUIRED' || alert.kind === 'SUBSCRIPTION_PAST_DUE' || (alert.threshold ?? 0) >= 90) return 'danger';
  if (alert.kind === 'AUTO_TOP_UP_SUCCEEDED') return 'info';
  return 'warning';
}

function alertTitle(alert: AlertFieldsFragment): string {
  switch (alert.kind) {
    case 'USAGE_THRESHOLD':
      return `${alert.threshold ?? '?'}% of ${alert.creditType ?? 'credits'} used`;
    case 'LOW_BALANCE':
      return `${alert.creditType ?? 'Credits'} running low`;
    case 'POOL_EXHAUSTED':
      return `${alert.creditType ?? 'Credits'} exhausted`;
    case 'EXPIRING_SOON':
      return 'Credits expiring soon';
    case 'SPEND_LIMIT_REACHED':
      return 'Spend limit reached';
    case 'AUTO_TOP_UP_SUCCEEDED':
      return 'Auto top-up bought credits';
    case 'AUTO_TOP_UP_FAILED':
      return 'Auto top-up failed';
    case 'AUTO_TOP_UP_PAUSED':
      return 'Auto top-up paused';
    case 'PAYMENT_ACTION_REQUIRED':
      return 'A payment needs your confirmation';
    case 'SUBSCRIPTION_PAST_DUE':
      return 'Subscription payment failed';
  }
}

function showBanner(alert: AlertFieldsFragment): void {
  const dismiss = h('button', { class: 'link', type: 'button', 'aria-label': 'Dismiss' }, 'Dismiss');
  dismiss.addEventListener('click', () => {
    banner.hidden = true;
  });
  banner.replaceChildren(
    h('strong', {}, alertTitle(alert)),
    h('span', { 'data-testid': 'alert-message' }, alert.message),
    h('time', { class: 'muted', datetime: alert.createdAt }, formatDate(alert.createdAt)),
    dismiss,
  );
  banner.dataset.severity = alertSeverity(alert);
  banner.dataset.kind = alert.kind;
  banner.dataset.threshold = String(alert.threshold ?? '');
  banner.hidden = false;
}

/** Alerts raised while nobody was looking: the newest one nobody acknowledged, this period. */
async function loadLatestAlert(periodStart: string | null): Promise<void> {
  const connection = await billing.alerts(accountId, { unacknowledgedOnly: true, first: 1 });
  const latest = connection.edges[0]?.node;
  if (!latest || (periodStart && Date.parse(latest.createdAt) < Date.parse(periodStart))) return;
  // A live alert that arrived meanwhile is newer: keep it.
  if (banner.hidden) showBanner(latest);
}

function toast(alert: AlertFieldsFragment): void {
  const item = h('div', { class: 'toast', 'data-testid': 'toast', 'data-severity': alertSeverity(alert) }, h('strong', {}, alertTitle(alert)), h('span', {}, alert.message));
  toasts.append(item);
  setTimeout(() => item.remove(), TOAST_MS);
}

// ---------------------------------------------------------------------------------------------
// Balances

function percentBar(percent: number, testId: string, label: string): HTMLElement {
  const clamped = Math.max(0, Math.min(100, percent));
  const level = percent >= 90 ? 'danger' : percent >= 75 ? 'warning' : 'ok';
  return h(
    'div',
    { class: 'bar', role: 'meter', 'aria-label': label, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': clamped, 'data-testid': testId },
    h('div', { class: `fill ${level}`, style: `width: ${clamped}%` }),
  );
}

function balanceCard(balance: BalanceFieldsFragment): HTMLElement {
  const hasAllocation = balance.periodAllocation > 0;
  // What is left splits into credits lost at the period end and credits that stay (purchases, bonuses).
  const expiring = Math.min(balance.expiringAtPeriodEnd, balance.available);
  const expiringShare = balance.available > 0 ? (expiring / balance.available) * 100 : 0;
  return h(
    'article',
    { class: 'card balance', 'data-testid': 'balance-card', 'data-credit-type': balance.creditType },
    h('h3', {}, balance.creditType),
    h(
      'p',
      { class: 'available' },
      h('span', { class: 'big', 'data-testid': 'available', 'data-value': balance.available }, formatNumber(balance.available)),
      ' available',
    ),
    hasAllocation
      ? h(
          'div',
          {},
          percentBar(balance.percentUsed, 'percent-used', `${balance.creditType}: percent of the period's allocation used`),
          h(
            'p',
            { class: 'muted' },
            h('span', { 'data-testid': 'percent-value', 'data-value': balance.percentUsed }, `${balance.percentUsed}%`),
            ` used: ${formatNumber(balance.periodUsed)} of ${formatNumber(balance.periodAllocation)} this period`,
          ),
        )
      : h('p', { class: 'muted' }, `${formatNumber(balance.periodUsed)} used this period (no plan allocation)`),
    h(
      'div',
      { class: 'bar split', title: 'Available: expiring at the period end / kept' },
      h('div', { class: 'fill expiring', style: `width: ${expiringShare}%` }),
    ),
    h(
      'p',
      { class: 'muted' },
      h('span', { 'data-testid': 'expiring', 'data-value': expiring }, formatNumber(expiring)),
      ' expire at the period end',
      balance.nextExpiry ? ` (next expiry ${formatDate(balance.nextExpiry)})` : '',
    ),
    balance.reserved > 0 ? h('p', { class: 'muted' }, `${formatNumber(balance.reserved)} held by running tasks`) : null,
    balance.overageUsed > 0 ? h('p', { class: 'muted' }, `${formatNumber(balance.overageUsed)} used as overage`) : null,
    h('p', { class: 'forecast muted', 'data-testid': 'forecast', 'data-credit-type': balance.creditType }, 'Forecast…'),
  );
}

const balancesSection = h('div', { class: 'cards', id: 'balances' });

function renderBalances(): void {
  const forecasts = new Map([...balancesSection.querySelectorAll<HTMLElement>('[data-testid="forecast"]')].map((node) => [node.dataset.creditType, node]));
  const cards = [...balances.values()].sort((a, b) => a.creditType.localeCompare(b.creditType)).map((balance) => {
    const card = balanceCard(balance);
    // Keep the last forecast until the refresh replaces it, instead of flashing "Forecast…".
    const previous = forecasts.get(balance.creditType);
    if (previous) card.querySelector('[data-testid="forecast"]')?.replaceWith(previous);
    return card;
  });
  balancesSection.replaceChildren(...(cards.length ? cards : [h('p', { class: 'muted' }, 'No credits yet.')]));
}

async function loadForecasts(): Promise<void> {
  await Promise.all(
    [...balances.keys()].map(async (creditType) => {
      const forecast = await billing.forecast(accountId, creditType);
      const node = balancesSection.querySelector<HTMLElement>(`[data-testid="forecast"][data-credit-type="${CSS.escape(creditType)}"]`);
      if (!node) return;
      node.dataset.burnRate = String(forecast.burnRatePerDay);
      node.dataset.depletesAt = forecast.depletesAt ?? '';
      node.textContent =
        forecast.depletesAt === null || forecast.depletesAt === undefined
          ? forecast.burnRatePerDay > 0
            ? `Burning ${formatNumber(Math.round(forecast.burnRatePerDay))}/day; lasts past the foreseeable future`
            : 'Not being spent: no depletion forecast'
          : `At ${formatNumber(Math.round(forecast.burnRatePerDay))}/day, runs out ${formatDate(forecast.depletesAt)}`;
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Usage by feature (this period)

const chart = h('div', { class: 'chart', 'data-testid': 'usage-chart' });

async function loadSummary(): Promise<void> {
  const rows = await billing.usageSummary(accountId, { groupBy: 'FEATURE' });
  if (rows.length === 0) {
    chart.replaceChildren(h('p', { class: 'muted' }, 'No usage this period yet.'));
    return;
  }
  const width = 640;
  const labelWidth = 220;
  const valueWidth = 90;
  const rowHeight = 30;
  const max = Math.max(...rows.map((row) => row.credits), 1);
  const height = rows.length * rowHeight;
  const graphic = svg('svg', { viewBox: `0 0 ${width} ${height}`, width: '100%', role: 'img', 'aria-label': 'Credits used per feature this period' });
  rows.forEach((row, index) => {
    const y = index * rowHeight;
    const barWidth = Math.max(2, ((width - labelWidth - valueWidth) * Math.max(row.credits, 0)) / max);
    graphic.append(
      svg(
        'g',
        { 'data-testid': 'feature-bar', 'data-feature': row.key, 'data-credits': row.credits, 'data-events': row.events },
        svg('title', {}, `${row.key}: ${row.credits} credits in ${row.events} events`),
        svg('text', { x: labelWidth - 8, y: y + rowHeight / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'label' }, row.key),
        svg('rect', { x: labelWidth, y: y + 5, width: barWidth, height: rowHeight - 10, rx: 3, class: 'bar-rect' }),
        svg('text', { x: labelWidth + barWidth + 6, y: y + rowHeight / 2, 'dominant-baseline': 'middle', class: 'value' }, formatNumber(row.credits)),
      ),
    );
  });
  chart.replaceChildren(graphic);
}

// ---------------------------------------------------------------------------------------------
// Usage log

const featureSelect = h('select', { id: 'filter-feature', name: 'feature' }, h('option', { value: '' }, 'All features'));
const tagInput = h('input', { id: 'filter-tag', name: 'tag', type: 'search', placeholder: 'tag, e.g. workbook:42' });
const usageBody = h('tbody', {});
const previousButton = h('button', { id: 'page-prev', type: 'button' }, '← Newer');
const nextButton = h('button', { id: 'page-next', type: 'button' }, 'Older →');
const pageLabel = h('span', { class: 'muted', 'data-testid': 'page' });

function usageRow(event: UsageEventFieldsFragment): HTMLElement {
  return h(
    'tr',
    { 'data-testid': 'usage-row', 'data-id': event.id, 'data-feature': event.featureKey },
    h('td', {}, h('time', { datetime: event.occurredAt }, formatDate(event.occurredAt))),
    h('td', {}, h('code', {}, event.featureKey)),
    h('td', { class: 'num' }, formatNumber(event.quantity)),
    h(
      'td',
      { class: 'num' },
      formatNumber(event.credits),
      event.refundedCredits > 0 ? h('span', { class: 'muted' }, ` (−${formatNumber(event.refundedCredits)} refunded)`) : null,
    ),
    h('td', {}, event.seat?.name ?? '—'),
    h('td', {}, ...event.tags.map((tag) => h('span', { class: 'tag' }, tag))),
  );
}

async function loadUsage(): Promise<void> {
  const filter = {
    ...(usage.filter.featureKey ? { featureKey: usage.filter.featureKey } : {}),
    ...(usage.filter.tag ? { tag: usage.filter.tag } : {}),
  };
  const connection = await billing.usageEvents(accountId, { filter, first: USAGE_PAGE_SIZE, after: usage.pageStarts[usage.page] ?? null });
  usageBody.replaceChildren(
    ...(connection.edges.length
      ? connection.edges.map((edge) => usageRow(edge.node))
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No usage matches.'))]),
  );
  if (connection.pageInfo.hasNextPage && connection.pageInfo.endCursor) usage.pageStarts[usage.page + 1] = connection.pageInfo.endCursor;
  else usage.pageStarts.length = usage.page + 1;
  nextButton.disabled = !connection.pageInfo.hasNextPage;
  previousButton.disabled = usage.page === 0;
  pageLabel.textContent = `Page ${usage.page + 1}`;
}

function filterChanged(): void {
  usage.filter = { featureKey: featureSelect.value, tag: tagInput.value.trim() };
  usage.pageStarts = [null];
  usage.page = 0;
  void run('Usage log', loadUsage);
}

featureSelect.addEventListener('change', filterChanged);
let tagTimer: ReturnType<typeof setTimeout> | undefined;
tagInput.addEventListener('input', () => {
  clearTimeout(tagTimer);
  tagTimer = setTimeout(filterChanged, 300);
});
tagInput.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter') return;
  clearTimeout(tagTimer);
  filterChanged();
});
nextButton.addEventListener('click', () => {
  if (usage.pageStarts[usage.page + 1] === undefined) return;
  usage.page += 1;
  void run('Usage log', loadUsage);
});
previousButton.addEventListener('click', () => {
  if (usage.page === 0) return;
  usage.page -= 1;
  void run('Usage log', loadUsage);
});

// ---------------------------------------------------------------------------------------------
// Top-ups and buying credits

const topUpBody = h('tbody', {});
const packSelect = h('select', { id: 'buy-pack', name: 'pack' });
const buyButton = h('button', { id: 'buy-button', type: 'button', class: 'primary' }, 'Buy credits');
const buyStatus = h('div', { id: 'buy-status', 'aria-live': 'polite' });

async function loadTopUps(): Promise<void> {
  const connection = await billing.topUps(accountId, { first: 20 });
  topUpBody.replaceChildren(
    ...(connection.edges.length
      ? connection.edges.map(({ node }) =>
          h(
            'tr',
            { 'data-testid': 'topup-row', 'data-status': node.status },
            h('td', {}, formatDate(node.createdAt)),
            h('td', {}, node.quantity > 1 ? `${node.quantity} × ${node.pack.name}` : node.pack.name),
            h('td', { class: 'num' }, formatNumber(node.credits)),
            h('td', { class: 'num' }, formatMoney(node.amount)),
            h('td', {}, h('span', { class: `status ${node.status.toLowerCase()}` }, node.status), node.failureCode ? h('span', { class: 'muted' }, ` ${node.failureCode}`) : null),
            h('td', {}, node.source === 'AUTO_TOP_UP' ? 'auto' : 'manual'),
          ),
        )
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No purchases yet.'))]),
  );
}

// ---------------------------------------------------------------------------------------------
// Invoices (what Stripe billed: plan, proration and overage lines)

const invoiceBody = h('tbody', {});
const LINE_KINDS = { PLAN: 'plan', PRORATION: 'proration', OVERAGE: 'overage', OTHER: 'other' } as const;

async function loadInvoices(): Promise<void> {
  if (!showInvoices) return;
  const connection = await billing.invoices(accountId, { first: 12 });
  invoiceBody.replaceChildren(
    ...(connection.edges.length
      ? connection.edges.map(({ node }) =>
          h(
            'tr',
            { 'data-testid': 'invoice-row', 'data-status': node.status, 'data-invoice': node.id },
            h('td', {}, formatDate(node.createdAt, false)),
            h('td', {}, node.number ?? 'draft'),
            h('td', {}, [...new Set(node.lines.map((line) => LINE_KINDS[line.kind]))].join(', ') || '—'),
            h('td', { class: 'num' }, formatMoney(node.total)),
            h('td', {}, h('span', { class: `status ${node.status.toLowerCase()}` }, node.status), node.status === 'OPEN' && node.attemptCount > 0 ? h('span', { class: 'muted' }, ' payment failed') : null),
            // Stripe's hosted page: where the customer sees the invoice and pays an open one.
            h('td', {}, node.hostedInvoiceUrl ? h('a', { href: node.hostedInvoiceUrl, target: '_blank', rel: 'noopener noreferrer', 'data-testid': 'invoice-link' }, node.status === 'OPEN' ? 'Pay' : 'View') : null),
          ),
        )
      : [h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No invoices yet.'))]),
  );
}

async function loadPacks(): Promise<void> {
  const packs: CreditPackFieldsFragment[] = await billing.creditPacks();
  packSelect.replaceChildren(
    ...packs.map((pack) => h('option', { value: pack.code }, `${pack.name} (${formatNumber(pack.credits)} ${pack.creditType}) — ${formatMoney(pack.price)}`)),
  );
  buyButton.disabled = packs.length === 0;
  if (packs.length === 0) buyStatus.replaceChildren(h('p', { class: 'muted' }, 'No credit packs are on sale.'));
}

/**
 * One idempotency key per purchase intent (this pack, until it is bought): a second click after an
 * error or a lost answer, or a double click, sends the same key, so the server starts one purchase.
 * Choosing another pack is another intent.
 */
let purchaseIntent: { packCode: string; key: string } | null = null;
packSelect.addEventListener('change', () => {
  purchaseIntent = null;
});

function newPurchaseKey(): string {
  // randomUUID exists only in secure contexts (https, localhost); a dashboard on a LAN address is not one.
  if (typeof crypto.randomUUID === 'function') return `dashboard-${crypto.randomUUID()}`;
  return `dashboard-${Array.from(crypto.getRandomValues(new Uint8Array(16)), (byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

buyButton.addEventListener('click', () => {
  const packCode = packSelect.value;
  if (!packCode) return;
  buyButton.disabled = true;
  buyStatus.replaceChildren(h('p', { class: 'muted' }, 'Starting checkout…'));
  void (async () => {
    try {
      const here = window.location.href;
      if (purchaseIntent?.packCode !== packCode) purchaseIntent = { packCode, key: newPurchaseKey() };
      const purchase = await billing.purchaseCreditPack({ accountId, packCode, successUrl: here, cancelUrl: here, idempotencyKey: purchaseIntent.key });
      purchaseIntent = null;
      if (purchase.checkoutUrl) {
        buyStatus.replaceChildren(h('p', { class: 'muted' }, 'Redirecting to checkout…'));
        window.location.assign(purchase.checkoutUrl);
        return;
      }
      buyStatus.replaceChildren(h('p', { class: 'muted' }, `Purchase ${purchase.status.toLowerCase()}.`));
      await run('Top-ups', loadTopUps);
    } catch (error) {
      const problem = describe(error, settings.api);
      if (problem.code === 'FORBIDDEN') {
        problem.title = 'This session cannot buy credits';
        problem.detail = 'It may only read. Buying needs a session issued with canBuy: ask your account’s administrator.';
      }
      buyStatus.replaceChildren(problemBox(problem, 'buy-error'));
    } finally {
      buyButton.disabled = false;
    }
  })();
});

// ---------------------------------------------------------------------------------------------
// Live updates

let refreshTimer: ReturnType<typeof setTimeout> | undefined;

/** A burst of usage sends a burst of balance events: refetch the derived views once it settles. */
function scheduleRefresh(): void {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    void run('Usage by feature', loadSummary);
    void run('Forecast', loadForecasts);
    void run('Top-ups', loadTopUps);
    // Later pages would shift under the reader; only the newest page follows along.
    if (usage.page === 0) void run('Usage log', loadUsage);
  }, 150);
}

/** The badge follows the connection: reconnecting after a drop, live again once resubscribed. */
function onLiveEvent(event: LiveEvent): void {
  if (stopped) return;
  if (event.type === 'reconnecting') setLive('connecting', 'reconnecting…');
  else setLive('on', 'live');
}

async function follow<T>(feed: LiveFeed<T>, where: string, onEvent: (event: T) => void): Promise<void> {
  try {
    for await (const event of feed) {
      setLive('on', 'live');
      onEvent(event);
    }
  } catch (error) {
    if (!stopped) setLive('off', 'live updates stopped');
    report(error, where);
  }
}

function startLive(): void {
  setLive('connecting', 'connecting…');
  void follow(billing.subscribeToBalance(accountId, { onLiveEvent }), 'Live balance', (balance) => {
    balances.set(balance.creditType, balance);
    renderBalances();
    scheduleRefresh();
  });
  void follow(billing.subscribeToAlerts(accountId), 'Live alerts', (alert) => {
    showBanner(alert);
    toast(alert);
  });
  // Nothing arrives until something changes, so "live" means "subscribed" until the first event.
  setLive('on', 'live');
}

// ---------------------------------------------------------------------------------------------
// Page

/** Runs one section's load; a failure is shown and leaves the other sections working. */
async function run(where: string, load: () => Promise<void>): Promise<void> {
  if (stopped) return;
  try {
    await load();
    clearProblem('NETWORK');
  } catch (error) {
    report(error, where);
  }
}

function section(title: string, testId: string, ...children: HTMLElement[]): HTMLElement {
  return h('section', { class: 'panel', 'data-testid': testId }, h('h2', {}, title), ...children);
}

function renderLayout(period: { start: string; end: string } | null): void {
  app.replaceChildren(
    section('Balances', 'balances', balancesSection),
    h(
      'div',
      { class: 'columns' },
      section(period ? `Usage by feature, ${formatDate(period.start, false)} – ${formatDate(period.end, false)}` : 'Usage by feature, this period', 'usage-by-feature', chart),
      section('Buy credits', 'buy', h('div', { class: 'row' }, packSelect, buyButton), buyStatus),
    ),
    section(
      'Usage log',
      'usage-log',
      h('div', { class: 'row filters' }, h('label', {}, 'Feature ', featureSelect), h('label', {}, 'Tag ', tagInput)),
      h(
        'table',
        {},
        h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Feature'), h('th', { class: 'num' }, 'Qty'), h('th', { class: 'num' }, 'Credits'), h('th', {}, 'Seat'), h('th', {}, 'Tags'))),
        usageBody,
      ),
      h('div', { class: 'row pager' }, previousButton, pageLabel, nextButton),
    ),
    section(
      'Top-up history',
      'top-ups',
      h(
        'table',
        {},
        h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'Pack'), h('th', { class: 'num' }, 'Credits'), h('th', { class: 'num' }, 'Paid'), h('th', {}, 'Status'), h('th', {}, 'How'))),
        topUpBody,
      ),
    ),
    showInvoices
      ? section(
          'Invoices',
          'invoices',
          h(
            'table',
            {},
            h('thead', {}, h('tr', {}, h('th', {}, 'Date'), h('th', {}, 'Number'), h('th', {}, 'For'), h('th', { class: 'num' }, 'Total'), h('th', {}, 'Status'), h('th', {}, ''))),
            invoiceBody,
          ),
        )
      : '',
  );
}

function renderSetupForm(): void {
  byId('who').textContent = 'Not connected';
  const field = (name: string, label: string, placeholder: string, value = '') =>
    h('label', { class: 'field' }, label, h('input', { name, placeholder, value, required: name === 'session', autocomplete: 'off' }));
  const form = h(
    'form',
    { class: 'panel setup' },
    h('h2', {}, 'Connect'),
    h(
      'p',
      { class: 'muted' },
      'Open this page with ?api=…&account=…#session=<session token> or fill these in (`pnpm seed` prints a link; a back end issues tokens with createSessionToken).',
    ),
    field('api', 'GraphQL endpoint', DEFAULT_API, DEFAULT_API),
    field('session', 'Session token', 'cbs_…'),
    field('account', 'Account id (optional: the token’s own account)', 'acc_…'),
    h('button', { type: 'submit', class: 'primary' }, 'Open dashboard'),
  );
  // Submitted by script, not as a GET: the token must not end up in the address.
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = new FormData(form);
    sessionStorage.setItem(TOKEN_STORAGE, String(values.get('session') ?? '').trim());
    const params = new URLSearchParams({ api: String(values.get('api') ?? DEFAULT_API).trim() });
    const account = String(values.get('account') ?? '').trim();
    if (account) params.set('account', account);
    window.location.assign(`${window.location.pathname}?${params}`);
  });
  app.replaceChildren(form);
}

async function main(): Promise<void> {
  const found = readSettings();
  if (!found) return renderSetupForm();
  settings = found;
  billing = createBillingClient({ url: settings.api, apiKey: settings.token });
  let periodStart: string | null = null;
  try {
    const viewer = await billing.viewer();
    const id = settings.accountId ?? viewer.account?.id;
    if (!id) throw new Error('This session is not tied to an account: add &account=<account id> to the address.');
    accountId = id;
    const account = await billing.account(accountId);
    if (!account) throw new BillingApiError(`account ${accountId} not found`, 'ACCOUNT_NOT_FOUND', [], 200);
    const who = viewer.seat ? `${viewer.seat.name} (${viewer.sessionExpiresAt ? 'seat session' : `${viewer.role} key`})` : viewer.sessionExpiresAt ? 'account session' : `${viewer.role} key`;
    showInvoices = viewer.seat === null;
    byId('who').textContent = `${account.name} · ${account.subscription?.plan.name ?? 'no plan'} · ${who}`;
    for (const balance of account.balances) balances.set(balance.creditType, balance);
    periodStart = account.subscription?.currentPeriod.start ?? null;
    renderLayout(account.subscription?.currentPeriod ?? null);
    renderBalances();
    const featureKeys = account.subscription?.plan.featureKeys ?? [];
    featureSelect.append(...featureKeys.map((key) => h('option', { value: key }, key)));
  } catch (error) {
    byId('who').textContent = 'Not connected';
    report(error, 'Connecting');
    return;
  }
  startLive();
  await Promise.all([
    run('Usage by feature', loadSummary),
    run('Forecast', loadForecasts),
    run('Usage log', loadUsage),
    run('Top-ups', loadTopUps),
    run('Invoices', loadInvoices),
    run('Credit packs', loadPacks),
    run('Alerts', () => loadLatestAlert(periodStart)),
  ]);
  document.body.dataset.ready = 'true';
}

void main();
