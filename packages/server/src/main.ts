import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { ConfigError, loadConfig } from './config.ts';

const DATABASE_PROBE_TIMEOUT_MS = 10_000;

/**
 * A well-formed DATABASE_URL that leads nowhere should say so in one line at once, not after the
 * pool's patient minute of retries, and never with the password.
 */
async function assertDatabaseReachable(databaseUrl: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: DATABASE_PROBE_TIMEOUT_MS });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (error) {
    const url = new URL(databaseUrl);
    const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new ConfigError(`configuration error: DATABASE_URL ${url.hostname}:${url.port || 5432}${url.pathname} cannot be reached: ${reason}`);
  } finally {
    await client.end().catch(() => {});
  }
}

async function main(): Promise<void> {
  const config = loadConfig();
  if (config.databaseUrl) await assertDatabaseReachable(config.databaseUrl);
  // Loaded only once the configuration holds, so that a wrong one is reported in a moment.
  const [{ buildApp }, { issueFirstOperatorKey }, { seedDemo }, { systemClock }] = await Promise.all([
    import('./app.ts'),
    import('./auth/apiKeys.ts'),
    import('./demo/seedDemo.ts'),
    import('./domain/clock.ts'),
  ]);
  const app = await buildApp(config);
  const { logger } = app;

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
