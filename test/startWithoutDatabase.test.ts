/**
 * An instance started while PostgreSQL is away listens at once (alive, unready) and waits for it
 * with backoff instead of exiting into a crash loop (issue 16.4).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DependencyProxy } from './support/dependencyProxy.ts';
import { ok } from './support/fixtures.ts';
import { postgresService, SHARED_POSTGRES_URL, skipUnless } from './support/optional.ts';
import { startServerProcess, type ServerProcess } from './support/processServer.ts';
import { createPostgresDatabase, testDatabaseUrl } from './support/server.ts';

const POSTGRES = testDatabaseUrl() ?? SHARED_POSTGRES_URL;
const skip = skipUnless('test/startWithoutDatabase.test.ts', [await postgresService(POSTGRES)]);

describe.skipIf(skip)('starting while the database is away (needs PostgreSQL whatever TEST_DB says)', () => {
  let database: { url: string; drop(): Promise<void> };
  let proxy: DependencyProxy;
  let server: ServerProcess | null = null;

  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES);
    proxy = await DependencyProxy.start(new URL(database.url), 5432);
  });
  afterAll(async () => {
    await server?.stop('SIGKILL');
    await proxy?.close();
    await database?.drop();
  });

  it('/healthz is 200 and /readyz 503 while it waits; once the database is there it serves, without a restart', async () => {
    proxy.cut();
    // startServerProcess returns once /healthz answers: with the database away that must happen too.
    server = await startServerProcess({ DATABASE_URL: proxy.through(database.url), JOBS_ENABLED: 'false', LOG_LEVEL: 'warn' });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/readyz`)).status).toBe(503);
    const early = await fetch(`${server.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(early.status).toBe(503);
    expect(((await early.json()) as { errors: Array<{ extensions: unknown }> }).errors[0]!.extensions).toEqual({ code: 'UNAVAILABLE', retryable: true });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(server.child.exitCode).toBeNull();

    proxy.restore();
    const deadline = Date.now() + 60_000;
    while ((await fetch(`${server.url}/readyz`).then((response) => response.status, () => 0)) !== 200) {
      if (Date.now() > deadline) throw new Error(`never became ready: ${server.output.join('')}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(ok(await server.gql(`{ viewer { role } }`)).viewer.role).toBe('ADMIN');
    expect(server.output.join('')).toContain('the database is not reachable yet');
  });
});
