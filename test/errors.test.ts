import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeStripe, type FakeStripe } from './support/fakeStripe.ts';
import { createAccount, defineFeature, definePlan } from './support/fixtures.ts';
import { startTestServer, type TestServer } from './support/server.ts';

/** Errors say what the client did wrong and nothing of the process (issue 15 item 9). */
const WEBHOOK_SECRET = 'whsec_errors';
let fake: FakeStripe;
let server: TestServer;
let accountId: string;

const codes = (response: { errors?: Array<{ extensions?: { code?: string } }> }) => response.errors?.map((error) => error.extensions?.code);

/** Makes the audit log's read fail as a lost database or a bug would, with secrets in the message. */
function breakAuditReads(target: TestServer): void {
  const prisma = target.app.database.prisma as unknown as { auditEvent: { findMany: () => Promise<never> } };
  prisma.auditEvent.findMany = async () => {
    throw new TypeError('cannot read secret of undefined at /srv/billing/internal/keys.ts:42 password=hunter2');
  };
}

beforeAll(async () => {
  fake = await startFakeStripe();
  // No NODE_ENV, as a newcomer's `pnpm start` runs.
  server = await startTestServer({ STRIPE_SECRET_KEY: 'sk_test_fake', STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, STRIPE_API_BASE: fake.url, JOBS_ENABLED: 'false' });
  const pool = `errors_${Date.now()}`;
  const feature = await defineFeature(server, { creditType: pool, unitCredits: 1 });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 10 }], featureKeys: [feature] }));
});
afterAll(async () => {
  await server?.stop();
  await fake?.close();
});

describe('internal errors are masked unless development is asked for', () => {
  it('without NODE_ENV an unexpected error is INTERNAL_SERVER_ERROR with no message, stack, path or cause', async () => {
    const plain = await startTestServer();
    try {
      breakAuditReads(plain);
      const response = await plain.gql(`{ auditEvents { edges { cursor } } }`);
      expect(codes(response)).toEqual(['INTERNAL_SERVER_ERROR']);
      expect(JSON.stringify(response)).not.toMatch(/hunter2|secret|keys\.ts|stack|originalError|TypeError/);
    } finally {
      await plain.stop();
    }
  });

  it('NODE_ENV=development, set explicitly, shows the cause to the developer', async () => {
    const development = await startTestServer({ NODE_ENV: 'development' });
    try {
      breakAuditReads(development);
      const response = await development.gql(`{ auditEvents { edges { cursor } } }`);
      expect(codes(response)).toEqual(['INTERNAL_SERVER_ERROR']);
      expect(JSON.stringify(response)).toMatch(/keys\.ts/);
    } finally {
      await development.stop();
    }
  });

  it('GraphiQL is served on a plain start, and GRAPHIQL=false or NODE_ENV=production turn it off', async () => {
    const page = (target: TestServer) => fetch(target.graphqlUrl, { headers: { accept: 'text/html', 'x-billing-client': 'browser' } }).then(async (response) => ({ status: response.status, html: /graphiql/i.test(await response.text()) }));
    expect(await page(server)).toEqual({ status: 200, html: true });
    for (const env of [{ GRAPHIQL: 'false' }, { NODE_ENV: 'production' }] as Array<Record<string, string>>) {
      const off = await startTestServer(env);
      try {
        expect((await page(off)).html, JSON.stringify(env)).toBe(false);
      } finally {
        await off.stop();
      }
    }
  });
});

describe('malformed cursors are INVALID_INPUT on every connection', () => {
  const connections: Record<string, string> = {
    ledger: `query($id: ID!, $after: String) { account(id: $id) { ledger(after: $after) { edges { cursor } } } }`,
    usageEvents: `query($id: ID!, $after: String) { account(id: $id) { usageEvents(after: $after) { edges { cursor } } } }`,
    grants: `query($id: ID!, $after: String) { account(id: $id) { grants(after: $after) { edges { cursor } } } }`,
    alerts: `query($id: ID!, $after: String) { account(id: $id) { alerts(after: $after) { edges { cursor } } } }`,
    topUps: `query($id: ID!, $after: String) { account(id: $id) { topUps(after: $after) { edges { cursor } } } }`,
    auditEvents: `query($id: ID, $after: String) { auditEvents(accountId: $id, after: $after) { edges { cursor } } }`,
  };
  const encode = (key: unknown) => Buffer.from(JSON.stringify(key)).toString('base64url');
  const malformed = [
    'WyJhYmMiXQ',
    encode(['abc']),
    encode(['abc', 'def']),
    encode(['2026-02-30T00:00:00.000Z', 'x']),
    encode(['2026-01-01T00:00:00.000Z', "x' OR 1=1"]),
    encode([-1]),
    encode(['99999999999999999999']),
    encode([1.5]),
    encode([{}, []]),
    'not base64 at all!',
    encode('x'.repeat(2_000)),
  ];

  it.each(Object.keys(connections))('%s', async (name) => {
    for (const after of malformed) {
      const response = await server.gql(connections[name]!, { id: accountId, after });
      expect(codes(response), `${name} after ${after.slice(0, 40)}`).toEqual(['INVALID_INPUT']);
    }
  });

  it('a cursor the connection issued still works', async () => {
    const first = await server.gql(`query($id: ID!) { account(id: $id) { grants(first: 1) { pageInfo { endCursor } } ledger(first: 1) { pageInfo { endCursor } } } }`, { id: accountId });
    const { grants, ledger } = first.data.account;
    const next = await server.gql(`query($id: ID!, $g: String, $l: String) { account(id: $id) { grants(after: $g) { edges { cursor } } ledger(after: $l) { edges { cursor } } } }`, {
      id: accountId,
      g: grants.pageInfo.endCursor,
      l: ledger.pageInfo.endCursor,
    });
    expect(next.errors).toBeUndefined();
  });
});

describe('hostile shapes are the client’s error (4xx), not the server’s', () => {
  it('variables nested 20,000 deep are a 400', async () => {
    // Written out by hand: JSON.stringify itself cannot nest this deep.
    const nested = `${'{"a":'.repeat(20_000)}"x"${'}'.repeat(20_000)}`;
    const response = await fetch(server.graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminKey}` },
      body: `{"query":"mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }","variables":{"input":{"accountId":"${accountId}","featureKey":"x","idempotencyKey":"deep","metadata":${nested}}}}`,
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]?.extensions.code).toBe('INVALID_INPUT');
    expect((await server.gql(`{ viewer { role } }`)).data).toEqual({ viewer: { role: 'ADMIN' } });
  });

  it('a validly signed webhook whose body is a JSON array (or not an event) is a 400', async () => {
    for (const body of [[{ id: 'evt_1', type: 'checkout.session.completed' }], { id: 'evt_2', type: 'checkout.session.completed', data: null }, { type: 'x', data: { object: {} } }]) {
      const { body: raw, signature } = fake.signedPayload(body as object, WEBHOOK_SECRET);
      const response = await fetch(`${server.url}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': signature }, body: raw });
      expect(response.status, raw).toBe(400);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('MALFORMED_EVENT');
    }
  });
});
