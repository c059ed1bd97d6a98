import { randomBytes, randomUUID } from 'node:crypto';
import { inject } from 'vitest';
import { buildApp, type App, type AppOptions } from '../../packages/server/src/app.ts';
import { loadConfig } from '../../packages/server/src/config.ts';

export interface GraphQLResponse<Data = Record<string, unknown>> {
  status: number;
  data?: Data;
  errors?: Array<{ message: string; extensions?: { code?: string; [key: string]: unknown } }>;
}

/** Anything that answers GraphQL over HTTP: a server in this process or another. */
export type GqlTarget = Pick<TestServer, 'gql' | 'url' | 'adminKey'>;

export interface TestServer {
  url: string;
  graphqlUrl: string;
  adminKey: string;
  app: App;
  /** Posts a GraphQL operation over real HTTP with the given key (the operator's by default). */
  // Untyped GraphQL JSON: tests that want types use the SDK.
  gql<Data = any>(query: string, variables?: Record<string, unknown>, apiKey?: string | null): Promise<GraphQLResponse<Data>>;
  stop(): Promise<void>;
}

/** The database the suite runs on: the real PostgreSQL under TEST_DB=postgres, else embedded. */
export function testDatabaseUrl(): string | undefined {
  return inject('databaseUrl') || undefined;
}

/**
 * A test server. Its job runner is off unless the test asks for it, and it may run only on a
 * database of the test's own (`isolatedDatabase`): a job runner works on every account it finds, so
 * on the database the test files share it would renew, expire and release the accounts other files
 * are in the middle of checking (a period a test had just ended was renewed under it by another
 * file's runner, between two of its reads).
 */
export async function startTestServer(env: Record<string, string> = {}, options: AppOptions = {}): Promise<TestServer> {
  const adminKey = env.ADMIN_API_KEY ?? `test-admin-${randomBytes(16).toString('hex')}`;
  const shared = testDatabaseUrl();
  const databaseUrl = env.DATABASE_URL ?? shared;
  if (env.JOBS_ENABLED === 'true' && shared !== undefined && databaseUrl === shared) {
    throw new Error('a job runner needs a database of its own: pass DATABASE_URL from isolatedDatabase()');
  }
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: 'memory://',
    ADMIN_API_KEY: adminKey,
    LOG_LEVEL: 'silent',
    JOBS_ENABLED: 'false',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    ...env,
  });
  const app = await buildApp(config, options);
  const url = await app.start();
  const graphqlUrl = `${url}/graphql`;
  return {
    url,
    graphqlUrl,
    adminKey,
    app,
    async gql(query, variables = {}, apiKey = adminKey) {
      const response = await fetch(graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as GraphQLResponse;
      return { ...body, status: response.status } as GraphQLResponse<any>;
    },
    stop: () => app.stop(),
  };
}

/** A unique suffix, so that tests sharing one database never collide on codes or keys. */
export function unique(prefix: string): string {
  return `${prefix}_${randomUUID().slice(0, 8)}`;
}

/**
 * A database of its own for a test that must see only its own accounts (a job runner processes
 * every account it finds). Embedded: each server has its own anyway, so none is made.
 */
export async function isolatedDatabase(): Promise<{ url: string | undefined; drop(): Promise<void> }> {
  const shared = testDatabaseUrl();
  if (!shared) return { url: undefined, drop: async () => {} };
  return createPostgresDatabase(shared);
}

/** A fresh database on the PostgreSQL server of `sibling` (a URL of another database there). */
export async function createPostgresDatabase(sibling: string): Promise<{ url: string; drop(): Promise<void> }> {
  const shared = sibling;
  const { default: pg } = await import('pg');
  const admin = new URL(shared);
  admin.pathname = '/postgres';
  const name = `${new URL(shared).pathname.slice(1)}_${randomBytes(3).toString('hex')}`;
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  await client.query(`CREATE DATABASE ${name}`);
  await client.end();
  const url = new URL(shared);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const dropper = new pg.Client({ connectionString: admin.toString() });
      await dropper.connect();
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await dropper.end();
    },
  };
}
