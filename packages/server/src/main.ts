import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createServer } from 'node:http';
import pg from 'pg';
import { ConfigError, loadConfig } from './config.ts';
import { isDatabaseUnavailable } from './db/unavailable.ts';
import { createLogger } from './observability/logger.ts';

const DATABASE_PROBE_TIMEOUT_MS = 10_000;
const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 5_000;

function unreachable(databaseUrl: string, error: unknown): ConfigError {
  const url = new URL(databaseUrl);
  const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
  return new ConfigError(`configuration error: DATABASE_URL ${url.hostname}:${url.port || 5432}${url.pathname} cannot be reached: ${reason}`);
}

async function probe(databaseUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: DATABASE_PROBE_TIMEOUT_MS });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * A database that is away at start (an orchestrator starting everything at once, a database
 * restarting) is waited for with backoff, up to DATABASE_CONNECT_TIMEOUT_MS, instead of exiting into
 * a crash loop; one that refuses for good (wrong password, no such database) stops the start at
 * once. Either way the failure is one line, never with the password.
 */
async function waitForDatabase(databaseUrl: string, timeoutMs: number, onRetry: (reason: string, attempt: number) => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 1, delay = FIRST_RETRY_MS; ; attempt += 1, delay = Math.min(delay * 2, MAX_RETRY_MS)) {
    try {
      return await probe(databaseUrl);
    } catch (error) {
      if (!isDatabaseUnavailable(error) || Date.now() + delay > deadline) throw unreachable(databaseUrl, error);
      onRetry(error instanceof Error ? error.message.split('\n')[0]! : String(error), attempt);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/**
 * While the database is awaited the port already answers: /healthz 200 (alive: do not restart it),
 * /readyz 503 (send nothing yet), anything else 503 UNAVAILABLE, retryable.
 */
async function listenWhileStarting(host: string, port: number): Promise<{ close(): Promise<void> }> {
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      response.writeHead(200, { 'content-type': 'application/json' });
      return void response.end(JSON.stringify({ status: 'ok' }));
    }
    response.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1', connection: 'close' });
    if (path === '/readyz') return void response.end(JSON.stringify({ status: 'starting', checks: { database: false } }));
    response.end(JSON.stringify({ errors: [{ message: 'the server is starting: the database is not reachable yet', extensions: { code: 'UNAVAILABLE', retryable: true } }] }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function main(): Promise<void> {
  const config = loadConfig();
  let starting: { close(): Promise<void> } | null = null;
  if (config.databaseUrl) {
    const startupLog = createLogger({ level: config.logLevel, development: config.development });
    try {
      await probe(config.databaseUrl);
    } catch (error) {
      if (!isDatabaseUnavailable(error) || config.databaseConnectTimeoutMs === 0) throw unreachable(config.databaseUrl, error);
      starting = await listenWhileStarting(config.host, config.port);
      startupLog.warn({ timeoutMs: config.databaseConnectTimeoutMs }, 'the database is not reachable yet: listening (unready) and retrying');
      let lastLog = 0;
      await waitForDatabase(config.databaseUrl, config.databaseConnectTimeoutMs, (reason, attempt) => {
        if (Date.now() - lastLog < 30_000) return;
        lastLog = Date.now();
        startupLog.warn({ attempt, reason }, 'still waiting for the database');
      });
      startupLog.info('the database is reachable: starting');
    }
  }
  // Loaded only once the configuration holds, so that a wrong one is reported in a moment.
  const [{ buildApp }, { issueFirstOperatorKey }, { seedDemo }, { systemClock }] = await Promise.all([
    import('./app.ts'),
    import('./auth/apiKeys.ts'),
    import('./demo/seedDemo.ts'),
    import('./domain/clock.ts'),
  ]);
  const app = await buildApp(config);
  const { logger } = app;
  await starting?.close();

  if (!config.adminApiKey) {
    const secret = await issueFirstOperatorKey(app.database.prisma, systemClock.now());
    if (secret) {
      if (config.dataDir !== 'memory://') writeFileSync(path.resolve(config.dataDir, 'admin-key.txt'), `${secret}\n`, { mode: 0o600 });
      logger.warn(`first start: an operator (ADMIN) key was issued; it is shown once here and kept in ${config.dataDir}/admin-key.txt: ${secret}`);
    }
  }
  if (process.argv.includes('--demo')) {
    const created = await seedDemo(app.database.prisma, systemClock);
    logger.info({ demo: created }, 'demo catalogue loaded (plans, features, packs; accounts on the first run)');
  }

  const url = await app.start();
  logger.info({ url: `${url}/graphql`, database: app.database.kind }, 'credit billing API listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'shutting down: draining requests, WebSockets and the current job');
    setTimeout(() => {
      logger.error({ timeoutMs: config.shutdownTimeoutMs }, 'shutdown deadline passed; exiting anyway');
      process.exit(1);
    }, config.shutdownTimeoutMs).unref();
    app.stop().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
  } else {
    const message = error instanceof Error ? error.message || String(error) : String(error);
    process.stderr.write(`failed to start: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  }
  process.exit(1);
});
