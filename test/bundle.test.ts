import { execSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from './support/processServer.ts';
import { isolatedDatabase } from './support/server.ts';

let server: ServerProcess | undefined;
const dataDir = mkdtempSync(path.join(tmpdir(), 'bundle-'));
const database = await isolatedDatabase();
afterAll(async () => {
  await server?.stop();
  await database.drop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('the bundle `pnpm start` runs', () => {
  it('builds, starts on the database, and serves the API end to end', async () => {
    execSync('pnpm -s build', { stdio: 'pipe' });
    server = await startServerProcess({ DATA_DIR: dataDir, JOBS_ENABLED: 'false', ...(database.url ? { DATABASE_URL: database.url } : {}) }, [], 'bundle');
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
    const feature = await server.gql(`mutation { upsertFeature(input: { key: "bundle.f", name: "f", creditType: "credits", pricing: PER_UNIT, unitCredits: 2 }) { key } }`);
    expect(feature.errors).toBeUndefined();
    const plan = await server.gql(`mutation { upsertPlan(input: { code: "bundle", name: "b", interval: MONTH, price: { amount: 0, currency: "USD" },
      allocations: [{ creditType: "credits", amount: 10 }], featureKeys: ["bundle.f"] }) { code } }`);
    expect(plan.errors).toBeUndefined();
    const account = await server.gql<any>(`mutation { createAccount(input: { name: "a", planCode: "bundle" }) { id } }`);
    expect(account.errors).toBeUndefined();
    const usage = await server.gql<any>(
      `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename ... on UsageRecorded { balance { available } } } }`,
      { input: { accountId: account.data.createAccount.id, featureKey: 'bundle.f', quantity: 3, idempotencyKey: 'bundle-1' } },
    );
    expect(usage.data?.recordUsage).toEqual({ __typename: 'UsageRecorded', balance: { available: 4 } });
  });
});
