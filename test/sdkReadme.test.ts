import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addSeat, createAccount, createKey, defineFeature, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Every TypeScript block of the SDK's README, compiled strictly as a NodeNext module importing the
 * built package by its name (`@credit-billing/sdk`, self-referenced from inside the package), then
 * run against a real server with the keys and ids the blocks read from the environment.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SDK = path.join(ROOT, 'packages/sdk');
const WORK = path.join(SDK, '.readme');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const exec = promisify(execFile);

const blocks = [...readFileSync(path.join(SDK, 'README.md'), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!);

let server: TestServer;
let env: Record<string, string>;

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false', ALERT_WEBHOOK_ALLOW_PRIVATE: 'true' });
  await defineFeature(server, { key: 'ai_workflow.action', creditType: 'credits', unitCredits: 10 });
  await operator(server).upsertFeature({ key: 'ai.agent_task', name: 'AI agent task', creditType: 'credits', pricing: 'DYNAMIC', maxCreditsPerEvent: 50 });
  const plan = unique('readme');
  await operator(server).upsertPlan({
    code: plan,
    name: 'README plan',
    interval: 'MONTH',
    price: { amount: 1_000, currency: 'USD' },
    allocations: [{ creditType: 'credits', amount: 1_000 }],
    featureKeys: ['ai_workflow.action', 'ai.agent_task'],
  });
  const accountId = await createAccount(server, plan);
  const seatId = await addSeat(server, accountId);
  env = {
    BILLING_URL: server.graphqlUrl,
    BILLING_API_KEY: await createKey(server, 'ACCOUNT', accountId),
    ACCOUNT_ID: accountId,
    SEAT_ID: seatId,
    WEBHOOK_URL: 'http://127.0.0.1:9/billing-alerts',
  };
  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });
  blocks.forEach((code, index) => writeFileSync(path.join(WORK, `block${index}.ts`), code));
  writeFileSync(
    path.join(WORK, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { strict: true, target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', 'DOM'], types: ['node'], outDir: 'out', rootDir: '.', skipLibCheck: false },
      include: ['*.ts'],
    }),
  );
});
afterAll(async () => {
  await server?.stop();
  rmSync(WORK, { recursive: true, force: true });
});

describe('the SDK README', () => {
  it('has its examples as TypeScript blocks', () => {
    expect(blocks.length).toBeGreaterThanOrEqual(5);
  });

  it('every block compiles (strict, NodeNext, no skipLibCheck) and runs against a real server', async () => {
    await exec(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: WORK }).catch((error: { stdout?: string }) => {
      throw new Error(`the README's examples do not compile:\n${error.stdout ?? String(error)}`);
    });
    const outputs: string[] = [];
    for (const [index] of blocks.entries()) {
      const { stdout } = await exec(process.execPath, [path.join(WORK, 'out', `block${index}.js`)], { cwd: WORK, env: { ...process.env, ...env }, timeout: 60_000 }).catch(
        (error: { stderr?: string }) => {
          throw new Error(`README block ${index} failed:\n${error.stderr ?? String(error)}\n${blocks[index]}`);
        },
      );
      outputs.push(stdout);
    }
    const all = outputs.join('\n');
    expect(all).toContain('ACCOUNT\n');
    expect(all).toContain('left after run 42: 970');
    expect(all).toContain('retried, charged once: 970');
    expect(all).toMatch(/credits: 10000000 credits needed, 970 left/);
    expect(all).toMatch(/ACCOUNT_NOT_FOUND [0-9a-f-]{36}/);
    expect(all).toMatch(/[1-9] features used/);
    expect(all).toContain('live: connected');
    expect(all).toContain('live balance: 953');
    expect(all).toContain('not bought: STRIPE_NOT_CONFIGURED');
  });
});
