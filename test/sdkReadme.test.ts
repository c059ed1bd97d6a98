import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { addSeat, createAccount, createKey, defineFeature, operator } from './support/fixtures.ts';
import { startTestServer, unique, type TestServer } from './support/server.ts';

/**
 * Every TypeScript block of the SDK's README, compiled strictly as a NodeNext module importing the
 * built package by its name (`@credit-billing/sdk`, self-referenced from inside the package), then
 * run against a real server with the keys and ids the blocks read from the environment. Stripe is
 * the project's fake Stripe server; while the blocks run, a customer completes every setup-mode
 * Checkout page they open (a Visa card) and Stripe's signed confirmation is delivered.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SDK = path.join(ROOT, 'packages/sdk');
const WORK = path.join(SDK, '.readme');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const exec = promisify(execFile);

const blocks = [...readFileSync(path.join(SDK, 'README.md'), 'utf8').matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1]!);

const WEBHOOK_SECRET = 'whsec_readme';
let fake: FakeStripe;
let server: TestServer;
let env: Record<string, string>;
let customerAtWork = true;
let customer: Promise<void> = Promise.resolve();

/** What a customer and Stripe do while the README's partner waits: fill in the setup page, then the webhook. */
async function customerSavesCards(): Promise<void> {
  while (customerAtWork) {
    for (const session of [...fake.checkoutSessions.values()]) {
      if (session.mode !== 'setup' || session.status !== 'open') continue;
      const { session: completed } = fake.cards.completeSetup(session.id, 'visa');
      const { body, signature } = fake.signedPayload(fake.event('checkout.session.completed', completed), WEBHOOK_SECRET);
      const response = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'stripe-signature': signature }, body });
      if (response.status !== 200) throw new Error(`the webhook answered ${response.status}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

beforeAll(async () => {
  fake = await startFakeStripe();
  server = await startTestServer({
    JOBS_ENABLED: 'false',
    ALERT_WEBHOOK_ALLOW_PRIVATE: 'true',
    STRIPE_SECRET_KEY: 'sk_test_readme',
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    STRIPE_API_BASE: fake.url,
  });
  for (const credits of [1_000, 10_000]) {
    await operator(server).upsertCreditPack({ code: `credits_${credits}`, name: `${credits} credits`, creditType: 'credits', credits, price: { amount: credits, currency: 'USD' } });
  }
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
    BILLING_ADMIN_KEY: server.adminKey,
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
  customerAtWork = false;
  await customer;
  await server?.stop();
  await fake?.close();
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
    customer = customerSavesCards();
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
    // The partner flow: a card saved on Stripe's page, an off-session purchase watched until it completed.
    expect(all).toMatch(/send the customer to http:\/\/127\.0\.0\.1:\d+\/checkout\/cs_test_/);
    expect(all).toContain(`card on file: visa ending 4242, expires 12/${new Date().getUTCFullYear() + 3}`);
    expect(all).toContain('purchase COMPLETED: 10000 credits');
    expect(all).not.toContain('not bought');
    expect(all).toMatch(/redirect to http:\/\/127\.0\.0\.1:\d+\/checkout\/cs_test_/);
    expect(all).toMatch(/manage cards at http:\/\/127\.0\.0\.1:\d+\/billing_portal\/bps_/);
    const [purchase] = await operator(server).topUps(env.ACCOUNT_ID!).then((page) => page.edges.map((edge) => edge.node).filter((node) => node.credits === 10_000));
    expect(purchase).toMatchObject({ status: 'COMPLETED', grant: { remaining: 10_000 } });
  });
});
