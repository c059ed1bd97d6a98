import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BillingApiError, type BillingClient } from '../packages/sdk/src/index.ts';
import { advanceClock, createKey, createTestClock, defineFeature, operator } from './support/fixtures.ts';
import { isolatedDatabase, startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Issue 20 item 2: a test-clock year of two accounts in two currencies (a monthly plan with a
 * rollover, a plan whose allocation has its own unit cost, paid and promotional grants, usage,
 * refunds, expiries) and the finance reports over several ranges, checked against (1) sums the test
 * computes itself from the ledger entries it reads through the API and (2) what the test knows it
 * issued: every period's plan credits at the plan price's share, every paid grant at its price.
 */
const START = Date.UTC(2025, 0, 1);
const DAY = 86_400_000;
const PRICE_A = 3000; // USD cents a month for 300 credits: 10 cents a credit.
const PRICE_B = 2000; // EUR cents a month; the allocation says 15 cents a credit.

let server: TestServer;
let database: { url: string | undefined; drop(): Promise<void> };
let admin: BillingClient;
let accountA: string;
let accountB: string;
let feature: string;
/** What the test granted as PAID outside the plans: [instant, credits, unit cost]. */
const paidGrants: Array<{ at: number; credits: number; unitCost: number }> = [];

/** A deterministic generator: the same year every run. */
function random(seed: number) {
  let state = seed;
  return (below: number) => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state % below;
  };
}

interface Entry {
  type: string;
  credits: number;
  createdAt: string;
  grant: { id: string; source: string; unitCost: number; funding: string; costCurrency: string | null };
}

async function ledgerOf(accountId: string): Promise<Entry[]> {
  const entries: Entry[] = [];
  let after: string | null = null;
  for (;;) {
    const response: { data?: { account: { ledger: { edges: Array<{ node: Entry }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } } } } } = await server.gql(
      `query($id: ID!, $after: String) { account(id: $id) { ledger(first: 500, after: $after) {
        edges { node { type credits createdAt grant { id source unitCost funding costCurrency } } } pageInfo { hasNextPage endCursor } } } }`,
      { id: accountId, after },
    );
    const ledger = response.data!.account.ledger;
    entries.push(...ledger.edges.map((edge) => edge.node));
    if (!ledger.pageInfo.hasNextPage) return entries;
    after = ledger.pageInfo.endCursor;
  }
}

type Totals = Record<'deferredAtStart' | 'deferredAtEnd' | 'issued' | 'recognised' | 'refunded' | 'breakage' | 'clawedBack' | 'adjusted', number>;

/** The reports computed here, entry by entry, from their definitions in the README. */
function expectedTotals(entries: Entry[], currency: string, from: number, to: number): Totals {
  const totals: Totals = { deferredAtStart: 0, deferredAtEnd: 0, issued: 0, recognised: 0, refunded: 0, breakage: 0, clawedBack: 0, adjusted: 0 };
  for (const entry of entries) {
    if (entry.grant.funding !== 'PAID' || entry.grant.costCurrency !== currency) continue;
    const at = Date.parse(entry.createdAt);
    const value = entry.credits * entry.grant.unitCost;
    const held = entry.type === 'RESERVE' || entry.type === 'RELEASE';
    if (!held && at < from) totals.deferredAtStart += value;
    if (!held && at < to) totals.deferredAtEnd += value;
    if (at < from || at >= to) continue;
    if (entry.type === 'GRANT' && entry.grant.source !== 'ROLLOVER') totals.issued += value;
    else if (entry.type === 'GRANT') totals.breakage -= value;
    else if (entry.type === 'DEBIT') totals.recognised -= value;
    else if (entry.type === 'REFUND') totals.refunded += value;
    else if (entry.type === 'EXPIRE') totals.breakage -= value;
    else if (entry.type === 'CLAWBACK') totals.clawedBack -= value;
    else if (!held) totals.adjusted += value;
  }
  return totals;
}

async function reportOf(from: number, to: number, currency: string): Promise<Totals> {
  const rows = await admin.financeReport({ from: new Date(from).toISOString(), to: new Date(to).toISOString(), currency });
  expect(rows.length).toBeLessThanOrEqual(1);
  const row = rows[0];
  const pick = (amount: { amount: number } | undefined) => amount?.amount ?? 0;
  return {
    deferredAtStart: pick(row?.deferredAtStart),
    deferredAtEnd: pick(row?.deferredAtEnd),
    issued: pick(row?.issued),
    recognised: pick(row?.recognised),
    refunded: pick(row?.refunded),
    breakage: pick(row?.breakage),
    clawedBack: pick(row?.clawedBack),
    adjusted: pick(row?.adjusted),
  };
}

function monthStart(index: number): number {
  return Date.UTC(2025, index, 1);
}

beforeAll(async () => {
  database = await isolatedDatabase();
  server = await startTestServer({ JOBS_ENABLED: 'false', ...(database.url ? { DATABASE_URL: database.url } : {}) });
  admin = operator(server);
  const pool = unique('credits');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  const planA = unique('plan');
  await admin.upsertPlan({
    code: planA,
    name: planA,
    interval: 'MONTH',
    price: { amount: PRICE_A, currency: 'USD' },
    allocations: [{ creditType: pool, amount: 300, rollover: 'PERCENT', rolloverValue: 50 }],
    featureKeys: [feature],
  });
  const planB = unique('plan');
  await admin.upsertPlan({
    code: planB,
    name: planB,
    interval: 'MONTH',
    price: { amount: PRICE_B, currency: 'EUR' },
    allocations: [{ creditType: pool, amount: 100, unitCost: 15 }],
    featureKeys: [feature],
  });
  const clock = await createTestClock(server, new Date(START).toISOString());
  accountA = (await admin.createAccount({ name: 'A', planCode: planA, testClockId: clock })).id;
  accountB = (await admin.createAccount({ name: 'B', planCode: planB, testClockId: clock })).id;
  const keyA = await createKey(server, 'ACCOUNT', accountA);
  const next = random(20);

  for (let month = 0; month < 12; month += 1) {
    const base = monthStart(month);
    // Mid-month: usage in a few events, now and then a paid grant that expires within 40 days, a bonus, a refund.
    await advanceClock(server, clock, new Date(base + (10 + next(5)) * DAY));
    if (next(3) === 0) {
      const credits = 50 + next(100);
      const now = Date.parse((await admin.testClock(clock))!.frozenTime);
      await admin.grantCredits({
        accountId: accountA,
        creditType: pool,
        amount: credits,
        source: 'ADJUSTMENT',
        expiresAt: new Date(now + 40 * DAY).toISOString(),
        costBasis: { unitCost: 7, currency: 'USD', funding: 'PAID' },
      });
      paidGrants.push({ at: now, credits, unitCost: 7 });
    }
    if (next(2) === 0) await admin.grantCredits({ accountId: accountA, creditType: pool, amount: 20 + next(30), source: 'BONUS' });
    const events: string[] = [];
    for (let event = 0; event < 4; event += 1) {
      const a = await admin.recordUsage({ accountId: accountA, featureKey: feature, quantity: 1 + next(120) }, { idempotencyKey: unique('a') });
      if (a.__typename === 'UsageRecorded') events.push(a.usageEvent.id);
      await admin.recordUsage({ accountId: accountB, featureKey: feature, quantity: 1 + next(40) }, { idempotencyKey: unique('b') });
    }
    if (events.length && next(2) === 0) {
      const backEnd = operator({ ...server, adminKey: keyA });
      await backEnd.refundUsage({ usageEventId: events[0]!, credits: 1 });
    }
    await advanceClock(server, clock, new Date(monthStart(month + 1)));
  }
  await advanceClock(server, clock, new Date(monthStart(12) + 45 * DAY));
});

afterAll(async () => {
  await server?.stop();
  await database?.drop();
});

describe('finance reports over a test-clock year', () => {
  const ranges: Array<[string, number, number]> = [
    ['the year', START, monthStart(12)],
    ['the first quarter', START, monthStart(3)],
    ['mid-March to mid-August', Date.UTC(2025, 2, 15, 12), Date.UTC(2025, 7, 14, 3)],
    ['after the year', monthStart(12), monthStart(12) + 50 * DAY],
  ];

  it.each(ranges)('%s: every report equals the sums of the ledger computed here, in each currency, and they add up', async (_name, from, to) => {
    const entries = [...(await ledgerOf(accountA)), ...(await ledgerOf(accountB))];
    for (const currency of ['USD', 'EUR']) {
      const report = await reportOf(from, to, currency);
      const expected = expectedTotals(entries, currency, from, to);
      for (const key of Object.keys(expected) as Array<keyof Totals>) expect(report[key], `${currency} ${key}`).toBeCloseTo(expected[key], 4);
      expect(report.deferredAtEnd - report.deferredAtStart).toBeCloseTo(
        report.issued - report.recognised + report.refunded - report.breakage - report.clawedBack + report.adjusted,
        4,
      );
    }
  });

  it('issued is what the test knows it sold: each period at the plan price (its allocation unit cost for B) and each paid grant at its price', async () => {
    const year = await reportOf(START, monthStart(12), 'USD');
    const paid = paidGrants.reduce((sum, grant) => sum + grant.credits * grant.unitCost, 0);
    expect(paidGrants.length).toBeGreaterThan(0);
    expect(year.issued).toBeCloseTo(12 * PRICE_A + paid, 6);
    expect((await reportOf(START, monthStart(12), 'EUR')).issued).toBeCloseTo(12 * 100 * 15, 6);
    // The year's activity happened: something was spent, something expired, a refund gave credits back.
    expect(year.recognised).toBeGreaterThan(0);
    expect(year.breakage).toBeGreaterThan(0);
    expect(year.refunded).toBeGreaterThan(0);
    // Promotional credits are in no report: the whole of the ledger's paid value is explained.
    expect(year.deferredAtStart).toBe(0);
  });

  it('grants show their cost basis; bonus credits are promotional at zero', async () => {
    const grants = (await admin.grants(accountA, { includeExpired: true, first: 500 })).edges.map((edge) => edge.node);
    const plan = grants.find((grant) => grant.source === 'PLAN')!;
    expect(plan).toMatchObject({ unitCost: 10, costCurrency: 'USD', funding: 'PAID' });
    const bonus = grants.find((grant) => grant.source === 'BONUS')!;
    expect(bonus).toMatchObject({ unitCost: 0, funding: 'PROMOTIONAL' });
    const rollover = grants.find((grant) => grant.source === 'ROLLOVER');
    expect(rollover).toMatchObject({ unitCost: 10, costCurrency: 'USD', funding: 'PAID' });
    const planB = (await admin.grants(accountB, { first: 1 })).edges[0]!.node;
    expect(planB).toMatchObject({ unitCost: 15, costCurrency: 'EUR', funding: 'PAID' });
  });

  it('is for ADMIN keys only, refuses a bad range or currency, and pnpm billing report --csv prints the same figures', async () => {
    const key = await createKey(server, 'ACCOUNT', accountA);
    const account = operator({ ...server, adminKey: key });
    const codeOf = (promise: Promise<unknown>) => promise.then(() => undefined, (error: BillingApiError) => error.code);
    expect(await codeOf(account.financeReport({ from: '2025-01-01T00:00:00Z', to: '2026-01-01T00:00:00Z' }))).toBe('FORBIDDEN');
    expect(await codeOf(admin.financeReport({ from: '2026-01-01T00:00:00Z', to: '2025-01-01T00:00:00Z' }))).toBe('INVALID_INPUT');
    expect(await codeOf(admin.deferredRevenue({ at: '2026-01-01T00:00:00Z', currency: 'dollars' }))).toBe('INVALID_INPUT');
    const flow = await admin.financeFlow({ kind: 'BREAKAGE', from: '2025-01-01T00:00:00Z', to: '2026-01-01T00:00:00Z', currency: 'USD' });
    expect(flow[0]?.amount).toBeCloseTo((await reportOf(START, monthStart(12), 'USD')).breakage, 6);

    if (!database.url) return; // The CLI opens the configured database; the embedded one lives in this process.
    const { stdout } = await promisify(execFile)('pnpm', ['-s', 'billing', 'report', '--from', '2025-01-01T00:00:00Z', '--to', '2026-01-01T00:00:00Z', '--csv'], {
      env: { ...process.env, DATABASE_URL: database.url, LOG_LEVEL: 'silent' },
    });
    const [header, ...lines] = stdout.trim().split('\n');
    expect(header).toBe(
      'currency,deferredAtStart_amount,deferredAtStart_credits,issued_amount,issued_credits,recognised_amount,recognised_credits,refunded_amount,refunded_credits,breakage_amount,breakage_credits,clawedBack_amount,clawedBack_credits,adjusted_amount,adjusted_credits,deferredAtEnd_amount,deferredAtEnd_credits',
    );
    const usd = lines.find((line) => line.startsWith('USD,'))!.split(',');
    const report = await reportOf(START, monthStart(12), 'USD');
    expect(Number(usd[3])).toBeCloseTo(report.issued, 6);
    expect(Number(usd[5])).toBeCloseTo(report.recognised, 6);
    expect(Number(usd[9])).toBeCloseTo(report.breakage, 6);
    expect(Number(usd[15])).toBeCloseTo(report.deferredAtEnd, 6);
    expect(lines.some((line) => line.startsWith('EUR,'))).toBe(true);
  });
});
