import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findAccountState } from '../packages/server/src/accounts/lockAccount.ts';
import { fixedClock, type Clock } from '../packages/server/src/domain/clock.ts';
import { loadBalance, loadBalances, readAccountsWithBalances, readAccountWithBalances } from '../packages/server/src/ledger/balances.ts';
import { addSeat, createAccount, createKey, createTestClock, defineFeature, definePlan, grantCredits, ok, operator, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * `account(id)` reads the account and the balances its selection asks for in one prepared statement
 * (readAccountWithBalances); everything else reads them with findAccountState and loadBalance(s).
 * The two must agree on every kind of account, at any time, before or after a period ends.
 */
let server: TestServer;
let pool: string;
let other: string;
let feature: string;
const accounts: string[] = [];
const DAY = 86_400_000;

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  pool = unique('credits');
  other = unique('other');
  feature = await defineFeature(server, { creditType: pool, unitCredits: 2 });
  const plan = await definePlan(server, {
    allocations: [
      { creditType: pool, amount: 100 },
      { creditType: pool, amount: 10, perSeat: true },
    ],
    featureKeys: [feature],
  });
  const bare = await definePlan(server, { allocations: [], featureKeys: [] });

  // A plan account that spent, with a seat, a bonus expiring in 3 days and one not yet effective.
  const busy = await createAccount(server, plan);
  const seat = await addSeat(server, busy);
  await grantCredits(server, { accountId: busy, creditType: pool, amount: 40, expiresAt: new Date(Date.now() + 3 * DAY).toISOString() });
  await grantCredits(server, { accountId: busy, creditType: pool, amount: 25, effectiveAt: new Date(Date.now() + 2 * DAY).toISOString() });
  await grantCredits(server, { accountId: busy, creditType: other, amount: 7 });
  ok(await recordUsage(server, { accountId: busy, featureKey: feature, quantity: 3 }));
  ok(await recordUsage(server, { accountId: busy, featureKey: feature, quantity: 2, seatId: seat }));
  await operator(server).reserveCredits({ accountId: busy, featureKey: feature, credits: 9, idempotencyKey: unique('hold') });
  accounts.push(busy);

  // Nothing granted or allocated: every balance is zero, and `balances` is empty.
  accounts.push(await createAccount(server, bare));

  // Usage totals of a type the account has neither granted nor allocated must not show.
  const ghost = await createAccount(server, bare);
  const { currentPeriodStart } = (await findAccountState(server.app.database.prisma, fixedClock(new Date()), ghost))!;
  await server.app.database.statement(
    `INSERT INTO period_usage_totals (account_id, credit_type, period_start, used, overage) VALUES ($1, $2, $3::timestamp(3), 5, 5)`,
    [ghost, other, currentPeriodStart.toISOString()],
  );
  accounts.push(ghost);

  // On a test clock: its frozen time is the account's now, whatever the clock says.
  const testClock = await createTestClock(server, '2031-03-15T10:00:00.000Z');
  const clocked = await createAccount(server, plan, testClock);
  await grantCredits(server, { accountId: clocked, creditType: pool, amount: 12, expiresAt: '2031-03-20T00:00:00.000Z' });
  accounts.push(clocked);
});

afterAll(async () => {
  await server?.stop();
});

describe('readAccountWithBalances', () => {
  // Now; past the bonus's expiry; past the period end (no renewal has run: reads never renew).
  const clocks: Array<[string, Clock]> = [
    ['now', fixedClock(new Date())],
    ['in 4 days', fixedClock(new Date(Date.now() + 4 * DAY))],
    ['in 90 days', fixedClock(new Date(Date.now() + 90 * DAY))],
  ];

  it.each(clocks)('agrees with findAccountState and loadBalance(s) %s', async (_label, clock) => {
    const { prisma } = server.app.database;
    for (const accountId of accounts) {
      const state = await findAccountState(prisma, clock, accountId);
      expect(state).not.toBeNull();
      const scope = { ...state!, accountId };
      for (const creditType of [pool, other, 'never-heard-of']) {
        const read = await readAccountWithBalances(server.app.database, clock, accountId, creditType);
        expect(read?.account).toEqual(state);
        expect(read?.balances.get(creditType)).toEqual(await loadBalance(prisma, scope, creditType));
        expect(read?.all).toBeNull();
      }
      const all = await readAccountWithBalances(server.app.database, clock, accountId, null, true);
      expect(all?.account).toEqual(state);
      expect(all?.all).toEqual(await loadBalances(prisma, scope));
      const none = await readAccountWithBalances(server.app.database, clock, accountId, null);
      expect(none?.account).toEqual(state);
      expect(none?.balances.size).toBe(0);
    }
  });

  it('answers null for an unknown account', async () => {
    expect(await readAccountWithBalances(server.app.database, fixedClock(new Date()), unique('missing'), pool, true)).toBeNull();
  });

  it.each(clocks)('for many accounts in one statement (coalesced reads), answers each as it does alone %s', async (_label, clock) => {
    // Every account with every type (and none), an unknown account among them, some asked twice.
    const reads = [...accounts, unique('missing'), accounts[0]!].flatMap((accountId) =>
      [pool, other, 'never-heard-of', null, pool].map((creditType) => ({ accountId, creditType })),
    );
    const together = await readAccountsWithBalances(server.app.database, clock, reads);
    expect(together).toHaveLength(reads.length);
    expect(together.filter((read) => read === null)).toHaveLength(5);
    for (const [index, { accountId, creditType }] of reads.entries()) {
      expect(together[index]).toEqual(await readAccountWithBalances(server.app.database, clock, accountId, creditType));
    }
  });
});

describe('account(id) with its balances in one read', () => {
  const BALANCE = 'creditType available reserved periodAllocation periodUsed percentUsed expiringAtPeriodEnd overageUsed nextExpiry';

  it('answers what balance(creditType) and balances answer alone, through variables, aliases and fragments', async () => {
    const accountId = accounts[0]!;
    const together = ok(
      await server.gql(
        `query($id: ID!, $type: String!) { account(id: $id) { id
           main: balance(creditType: $type) { ${BALANCE} }
           ...Other
           ... on Account { again: balance(creditType: $type) { available } missing: balance(creditType: "never-heard-of") { available periodUsed } }
           balances { ${BALANCE} }
         } }
         fragment Other on Account { other: balance(creditType: "${other}") { ${BALANCE} } }`,
        { id: accountId, type: pool },
      ),
    ).account;
    const alone = async (field: string) => ok(await server.gql(`query($id: ID!) { account(id: $id) { ${field} } }`, { id: accountId })).account;
    expect(together.main).toEqual((await alone(`balance(creditType: "${pool}") { ${BALANCE} }`)).balance);
    expect(together.other).toEqual((await alone(`balance(creditType: "${other}") { ${BALANCE} }`)).balance);
    expect(together.again.available).toBe(together.main.available);
    expect(together.missing).toEqual({ available: 0, periodUsed: 0 });
    expect(together.balances).toEqual((await alone(`balances { ${BALANCE} }`)).balances);
    expect(together.balances.map((balance: { creditType: string }) => balance.creditType)).toEqual([pool, other].sort());
    expect(together.main).toMatchObject({ reserved: 9, periodUsed: 10, periodAllocation: 110 });
  });

  it('concurrent requests (whose reads share statements) each get their own account and balance', async () => {
    const query = `query($id: ID!, $type: String!) { account(id: $id) { id balance(creditType: $type) { ${BALANCE} } } }`;
    const asks = Array.from({ length: 120 }, (_, n) => ({ id: n % 11 === 0 ? unique('missing') : accounts[n % accounts.length]!, type: [pool, other, 'never-heard-of'][n % 3]! }));
    const together = await Promise.all(asks.map(async (variables) => ok(await server.gql(query, variables)).account));
    for (const [index, variables] of asks.entries()) expect(together[index]).toEqual(ok(await server.gql(query, variables)).account);
  });

  it('keeps another tenant out exactly as before', async () => {
    const key = await createKey(server, 'ACCOUNT', accounts[1]!);
    const query = `query($id: ID!) { account(id: $id) { id balance(creditType: "${pool}") { available } balances { available } } }`;
    expect(ok(await server.gql(query, { id: accounts[0]! }, key)).account).toBeNull();
    expect(ok(await server.gql(query, { id: unique('missing') })).account).toBeNull();
    expect(ok(await server.gql(query, { id: accounts[1]! }, key)).account).toEqual({ id: accounts[1], balance: { available: 0 }, balances: [] });
    const viewer = ok(await server.gql(`{ viewer { account { id balance(creditType: "${pool}") { available } } } }`, {}, key));
    expect(viewer.viewer.account).toEqual({ id: accounts[1], balance: { available: 0 } });
  });
});
