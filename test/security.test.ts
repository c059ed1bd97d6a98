import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUERY_LIMITS } from '../packages/server/src/graphql/security.ts';
import { createAccount, createKey, defineFeature, definePlan, ok } from './support/fixtures.ts';
import { redisService, SHARED_REDIS_URL, skipUnless } from './support/optional.ts';
import { startTestServer, unique, type GraphQLResponse, type TestServer } from './support/server.ts';

const skipRedis = skipUnless("test/security.test.ts's shared rate limit test", [await redisService()]);

let server: TestServer;
let accountId: string;

beforeAll(async () => {
  server = await startTestServer();
  const pool = unique('credits');
  const feature = await defineFeature(server, { creditType: pool });
  accountId = await createAccount(server, await definePlan(server, { allocations: [{ creditType: pool, amount: 100 }], featureKeys: [feature] }));
});
afterAll(async () => {
  await server?.stop();
});

function codes(response: GraphQLResponse): Array<string | undefined> {
  return (response.errors ?? []).map((error) => error.extensions?.code);
}

async function post(url: string, body: string, headers: Record<string, string>) {
  const response = await fetch(`${url}/graphql`, { method: 'POST', headers, body });
  return { status: response.status, headers: response.headers, body: (await response.json()) as GraphQLResponse };
}

describe('hostile operations are refused before they run', () => {
  it(`nesting deeper than ${QUERY_LIMITS.maxDepth} is QUERY_TOO_DEEP`, async () => {
    const deep = `${'{ a '.repeat(QUERY_LIMITS.maxDepth + 2)}${'}'.repeat(QUERY_LIMITS.maxDepth + 2)}`;
    const response = await server.gql(deep);
    expect(codes(response)).toContain('QUERY_TOO_DEEP');
    expect(response.data).toBeUndefined();
  });

  it(`more than ${QUERY_LIMITS.maxAliases} aliases is TOO_MANY_ALIASES`, async () => {
    const aliases = Array.from({ length: QUERY_LIMITS.maxAliases + 1 }, (_, index) => `v${index}: viewer { role }`).join(' ');
    expect(codes(await server.gql(`{ ${aliases} }`))).toContain('TOO_MANY_ALIASES');
    const allowed = Array.from({ length: QUERY_LIMITS.maxAliases }, (_, index) => `v${index}: viewer { role }`).join(' ');
    ok(await server.gql(`{ ${allowed} }`));
  });

  it(`more than ${QUERY_LIMITS.maxDirectives} directives is TOO_MANY_DIRECTIVES`, async () => {
    const directives = ' @include(if: true)'.repeat(QUERY_LIMITS.maxDirectives + 1);
    expect(codes(await server.gql(`{ viewer${directives} { role } }`))).toContain('TOO_MANY_DIRECTIVES');
  });

  it(`a document of more than ${QUERY_LIMITS.maxTokens} tokens is TOO_MANY_TOKENS`, async () => {
    const response = await server.gql(`{ viewer { ${'role '.repeat(QUERY_LIMITS.maxTokens)} } }`);
    expect(codes(response)).toContain('TOO_MANY_TOKENS');
  });

  it(`an operation costing more than ${QUERY_LIMITS.maxCost} is QUERY_TOO_COSTLY`, async () => {
    const usage = `usageEvents(first: 500) { edges { node { id credits quantity draws { credits grant { id amount remaining seat { id name } } } } } }`;
    const accounts = Array.from({ length: 12 }, (_, index) => `a${index}: account(id: $id) { ${usage} }`).join(' ');
    const response = await server.gql(`query($id: ID!) { ${accounts} }`, { id: accountId });
    expect(codes(response)).toContain('QUERY_TOO_COSTLY');
  });

  it('text PostgreSQL cannot store (NUL, unpaired surrogates) is INVALID_INPUT, in variables or literals', async () => {
    const usage = `mutation($input: RecordUsageInput!) { recordUsage(input: $input) { __typename } }`;
    for (const input of [{ idempotencyKey: 'a\u0000b' }, { idempotencyKey: 'ok', metadata: { note: '\uD800' } }, { idempotencyKey: 'ok', tags: ['\uDC00x'] }]) {
      const response = await server.gql(usage, { input: { accountId, featureKey: 'f', ...input } });
      expect(codes(response), JSON.stringify(input)).toEqual(['INVALID_INPUT']);
    }
    expect(codes(await server.gql(`{ plan(code: "a\\u0000") { code } }`))).toEqual(['INVALID_INPUT']);
    ok(await server.gql(`{ plan(code: "caf\u00e9 💳") { code } }`));
  });

  it('a page larger than 500 is refused, not truncated', async () => {
    const response = await server.gql(`query($id: ID!, $first: Int) { account(id: $id) { grants(first: $first) { edges { cursor } } } }`, { id: accountId, first: 501 });
    expect(codes(response)).toContain('INVALID_INPUT');
  });

  it('a body over the limit is 413 PAYLOAD_TOO_LARGE, declared or streamed without a length', async () => {
    const huge = JSON.stringify({ query: '{ viewer { role } }', variables: { pad: 'x'.repeat(600 * 1024) } });
    const declared = await post(server.url, huge, { 'content-type': 'application/json', authorization: `Bearer ${server.adminKey}` });
    expect(declared.status).toBe(413);
    expect(codes(declared.body)).toEqual(['PAYLOAD_TOO_LARGE']);

    const streamed = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const request = httpRequest(`${server.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked', authorization: `Bearer ${server.adminKey}` },
      });
      request.on('response', (response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      });
      request.on('error', reject);
      for (let offset = 0; offset < huge.length; offset += 64 * 1024) request.write(huge.slice(offset, offset + 64 * 1024));
      request.end();
    });
    expect(streamed.status).toBe(413);
    expect(JSON.parse(streamed.body).errors[0].extensions.code).toBe('PAYLOAD_TOO_LARGE');
  });
});

describe('browsers cannot be used for cross-site requests', () => {
  it('a GET or a form-encoded POST without the x-billing-client header is 403 CSRF_HEADER_REQUIRED', async () => {
    const query = encodeURIComponent('{ viewer { role } }');
    const bare = await fetch(`${server.url}/graphql?query=${query}`, { headers: { authorization: `Bearer ${server.adminKey}`, accept: 'application/json' } });
    expect(bare.status).toBe(403);
    expect(((await bare.json()) as GraphQLResponse).errors?.[0]?.extensions?.code).toBe('CSRF_HEADER_REQUIRED');
    const form = await post(server.url, JSON.stringify({ query: '{ viewer { role } }' }), { 'content-type': 'text/plain', authorization: `Bearer ${server.adminKey}` });
    expect(form.status).toBe(403);

    const marked = await fetch(`${server.url}/graphql?query=${query}`, {
      headers: { authorization: `Bearer ${server.adminKey}`, accept: 'application/json', 'x-billing-client': 'test' },
    });
    expect(marked.status).toBe(200);
    expect(((await marked.json()) as GraphQLResponse<any>).data.viewer.role).toBe('ADMIN');
  });
});

describe('introspection and production errors', () => {
  it('introspection answers by default and is refused with GRAPHQL_INTROSPECTION=false', async () => {
    expect(ok(await server.gql(`{ __schema { queryType { name } } }`)).__schema.queryType.name).toBe('Query');
    const closed = await startTestServer({ GRAPHQL_INTROSPECTION: 'false' });
    try {
      expect(codes(await closed.gql(`{ __schema { queryType { name } } }`))).toContain('INTROSPECTION_DISABLED');
      expect(codes(await closed.gql(`{ __type(name: "Account") { name } }`))).toContain('INTROSPECTION_DISABLED');
      expect(ok(await closed.gql(`{ viewer { role } }`)).viewer.role).toBe('ADMIN');
    } finally {
      await closed.stop();
    }
  });

  it('in production an unexpected error is INTERNAL_SERVER_ERROR with no message, stack or cause', async () => {
    const production = await startTestServer({ NODE_ENV: 'production' });
    try {
      const prisma = production.app.database.prisma as unknown as { auditEvent: { findMany: () => Promise<never> } };
      const delegate = prisma.auditEvent;
      delegate.findMany = async () => {
        throw new Error('connection to 10.0.0.7 refused: password=hunter2');
      };
      const response = await production.gql(`{ auditEvents { edges { cursor } } }`);
      expect(codes(response)).toEqual(['INTERNAL_SERVER_ERROR']);
      const text = JSON.stringify(response);
      expect(text).not.toMatch(/hunter2|10\.0\.0\.7|stack|originalError|at .*\.ts/);
      expect(codes(await production.gql(`{ __schema { queryType { name } } }`))).toContain('INTROSPECTION_DISABLED');
    } finally {
      await production.stop();
    }
  });
});

describe('rate limits per API key', () => {
  const query = `{ viewer { role } }`;

  it('a burst beyond the limit is 429 RATE_LIMITED with Retry-After; another key is unaffected', async () => {
    const limited = await startTestServer({}, { security: { rateLimit: { perSecond: 5, burst: 2, burstWindowSeconds: 60, keyPrefix: unique('rate') } } });
    try {
      const pool = unique('credits');
      const feature = await defineFeature(limited, { creditType: pool });
      const account = await createAccount(limited, await definePlan(limited, { allocations: [{ creditType: pool, amount: 1 }], featureKeys: [feature] }));
      const accountKey = await createKey(limited, 'ACCOUNT', account);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${accountKey}` };
      const answers = await Promise.all(Array.from({ length: 20 }, () => post(limited.url, JSON.stringify({ query }), headers)));
      const refused = answers.filter((answer) => answer.status === 429);
      expect(answers.filter((answer) => answer.status === 200).length).toBeLessThanOrEqual(5 * 2 + 2);
      expect(refused.length).toBeGreaterThan(0);
      for (const answer of refused) {
        const error = answer.body.errors?.[0];
        expect(error?.extensions?.code).toBe('RATE_LIMITED');
        expect(error?.extensions?.retryAfter).toBeGreaterThanOrEqual(1);
        expect(Number(answer.headers.get('retry-after'))).toBe(error?.extensions?.retryAfter);
      }
      ok(await limited.gql(query));
    } finally {
      await limited.stop();
    }
  });

  it.skipIf(skipRedis)('(needs Redis) with Redis the limit holds across instances for the same key', async () => {
    const adminKey = `shared-admin-${unique('key')}-0123456789`;
    const rateLimit = { perSecond: 2, burst: 1, burstWindowSeconds: 60, keyPrefix: unique('rate') };
    const env = { REDIS_URL: SHARED_REDIS_URL, ADMIN_API_KEY: adminKey };
    const [first, second] = await Promise.all([startTestServer(env, { security: { rateLimit } }), startTestServer(env, { security: { rateLimit } })]);
    try {
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${adminKey}` };
      const answers = await Promise.all(
        Array.from({ length: 12 }, (_, index) => post(index % 2 === 0 ? first.url : second.url, JSON.stringify({ query }), headers)),
      );
      // Two instances counting alone would accept at least 3 each; shared, at most 2 per second plus 1.
      expect(answers.filter((answer) => answer.status === 200).length).toBeLessThanOrEqual(2 * 2 + 1);
      expect(answers.filter((answer) => answer.status === 429).length).toBeGreaterThanOrEqual(7);
    } finally {
      await Promise.all([first.stop(), second.stop()]);
    }
  });
});
