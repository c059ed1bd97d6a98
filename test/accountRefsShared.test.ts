import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineFeature, definePlan, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

// Accounts' first calls on an instance resolve their references together (two statements in
// flight, the rest waiting and sharing the next): each call must still get its own account, and a
// value naming no account must stay unresolved beside ones that do.
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
});
afterAll(async () => {
  await server?.stop();
});

describe('account references resolved by concurrent first calls', () => {
  it('give every call its own account, external ids and ids alike, in one burst', async () => {
    const admin = operator(server);
    const pool = unique('credits');
    const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
    const plan = await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] });
    const accounts = await Promise.all(
      Array.from({ length: 12 }, async (_, index) => {
        const externalId = unique(`cus${index}`);
        const created = await admin.createAccount({ name: `shared ${index}`, planCode: plan, externalId });
        return { id: created.id, externalId };
      }),
    );
    // Creating an account resolves no reference: every call below looks its own up, all at once.
    const fresh = admin;
    const [reads, usages, missing] = await Promise.all([
      Promise.all(accounts.map((account) => fresh.account(account.externalId))),
      Promise.all(accounts.map((account, index) => fresh.recordUsage({ accountId: index % 2 ? account.externalId : account.id, featureKey: feature, quantity: index + 1 }))),
      fresh.account(unique('nobody')),
    ]);
    expect(reads.map((read) => read?.id)).toEqual(accounts.map((account) => account.id));
    expect(usages.map((usage) => usage.__typename)).toEqual(accounts.map(() => 'UsageRecorded'));
    expect(missing).toBeNull();
    // Each usage was charged to its own account: the quantities differ by account.
    const balances = await Promise.all(accounts.map((account) => fresh.balance(account.externalId, pool)));
    expect(balances.map((balance) => balance?.available)).toEqual(accounts.map((_, index) => 100 - (index + 1)));
  });
});
