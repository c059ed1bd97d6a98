import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildApp } from './app.ts';
import { issueFirstOperatorKey } from './auth/apiKeys.ts';
import { ConfigError, loadConfig } from './config.ts';
import { seedDemo } from './demo/seedDemo.ts';
import { systemClock } from './domain/clock.ts';

async function main(): Promise<void> {
  const config = loadConfig();
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
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await app.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
  } else {
    process.stderr.write(`failed to start: ${error instanceof Error ? error.message || error.stack : String(error)}\n`);
  }
  process.exit(1);
});
