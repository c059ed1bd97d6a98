import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, defineFeature, definePlan, recordUsage } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

let server: TestServer;
let accountId: string;

beforeAll(async () => {
  server = await startTestServer();
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 4 });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
  await recordUsage(server, { accountId, featureKey: feature, quantity: 3 });
});
afterAll(async () => {
  await server?.stop();
});

describe('database-level invariants', () => {
  it('refuses UPDATE and DELETE on the ledger', async () => {
    const prisma = server.app.database.prisma;
    await expect(prisma.$executeRaw`UPDATE ledger_entries SET credits = credits + 1 WHERE account_id = ${accountId}`).rejects.toThrow(/append-only/);
    await expect(prisma.$executeRaw`DELETE FROM ledger_entries WHERE account_id = ${accountId}`).rejects.toThrow(/append-only/);
    const [row] = await prisma.$queryRaw<Array<{ count: bigint }>>`SELECT count(*) AS count FROM ledger_entries WHERE account_id = ${accountId}`;
    expect(Number(row!.count)).toBe(2);
  });

  it("refuses a grant's remaining below zero or above its amount", async () => {
    const prisma = server.app.database.prisma;
    await expect(prisma.$executeRaw`UPDATE grants SET remaining = -1 WHERE account_id = ${accountId}`).rejects.toThrow(/grants_remaining_non_negative/);
    await expect(prisma.$executeRaw`UPDATE grants SET remaining = amount + 1 WHERE account_id = ${accountId}`).rejects.toThrow(/grants_remaining_within_amount/);
  });

  it("keeps every grant's remaining equal to the sum of its ledger entries", async () => {
    const prisma = server.app.database.prisma;
    const mismatches = await prisma.$queryRaw<unknown[]>`
      SELECT g.id FROM grants g LEFT JOIN ledger_entries l ON l.grant_id = g.id
      GROUP BY g.id, g.remaining HAVING g.remaining <> coalesce(sum(l.credits), 0)`;
    expect(mismatches).toEqual([]);
  });
});
