import { destination, pino } from 'pino';
import { generateSecret, hashSecret, prefixOf } from './auth/apiKeys.ts';
import { ConfigError, loadConfig, type AppConfig } from './config.ts';
import { openDatabase, type Database } from './db/database.ts';
import { applyMigrations } from './db/migrations.ts';
import { systemClock } from './domain/clock.ts';
import { parseInstant } from './graphql/builder.ts';
import { printSortedSchema } from './graphql/schema.ts';
import { financeSummary, financeSummaryCsv, isCurrencyCode } from './ledger/financeReports.ts';
import { DueWorkRunner } from './jobs/dueWorkRunner.ts';
import { verifyLedger } from './observability/verifyLedger.ts';

const USAGE = `usage: pnpm billing <command>

  create-operator-key [name]  issues an operator (ADMIN) key and prints its secret, once
  verify-ledger               checks every grant's remaining against its ledger entries, period usage totals
                              against events, events' cost against their DEBIT entries (draws), holds against reservations (exit 1 on a mismatch)
  run-due-jobs                one pass of the due-work runner now (renewals, expiries, hold timeouts)
  print-schema                prints the GraphQL schema (SDL)
  report --from <instant> --to <instant> [--currency USD] [--csv]
                              the finance reports over [from, to) per currency: deferred revenue at both ends,
                              issued, recognised, refunded, breakage, clawed back, adjusted (minor units and credits)

The database is the server's: DATABASE_URL, or the embedded one under DATA_DIR (stop the server
first: the embedded database has one user at a time).`;

class UsageError extends Error {}

/** `--name value` options and `--flag` switches; anything else is a usage error. */
function parseOptions(args: string[], valued: string[], switches: string[]): { values: Record<string, string>; flags: Set<string> } {
  const values: Record<string, string> = {};
  const flags = new Set<string>();
  for (let index = 0; index < args.length; index += 1) {
    const name = args[index]!.replace(/^--/, '');
    if (switches.includes(name)) flags.add(name);
    else if (valued.includes(name) && args[index + 1] !== undefined) values[name] = args[(index += 1)]!;
    else throw new UsageError(`unexpected argument: ${args[index]}`);
  }
  return { values, flags };
}

/** Opens the configured database with its migrations applied, runs `work`, and closes it. */
async function withDatabase<T>(config: AppConfig, work: (database: Database) => Promise<T>): Promise<T> {
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: 4 });
  try {
    await applyMigrations(database);
    return await work(database);
  } finally {
    await database.close();
  }
}

async function run(command: string | undefined, args: string[]): Promise<number> {
  switch (command) {
    case 'print-schema':
      process.stdout.write(printSortedSchema());
      return 0;
    case 'create-operator-key': {
      const name = args[0]?.trim() || 'operator key (CLI)';
      const secret = generateSecret();
      await withDatabase(loadConfig(), ({ prisma }) =>
        prisma.apiKey.create({ data: { role: 'ADMIN', name, prefix: prefixOf(secret), secretHash: hashSecret(secret), createdAt: systemClock.now() } }),
      );
      process.stdout.write(`${secret}\n`);
      process.stderr.write(`operator key "${name}" created; the secret above is shown only this once\n`);
      return 0;
    }
    case 'verify-ledger': {
      const result = await withDatabase(loadConfig(), ({ prisma }) => verifyLedger(prisma));
      for (const mismatch of result.mismatches) {
        process.stdout.write(`mismatch: grant ${mismatch.grantId} remaining ${mismatch.remaining}, ledger sum ${mismatch.ledgerSum}\n`);
      }
      process.stdout.write(`${result.grantsChecked} grants checked, ${result.mismatches.length} mismatches\n`);
      for (const found of result.inconsistencies) process.stdout.write(`inconsistent ${found.check}: ${found.subject}: ${found.detail}\n`);
      process.stdout.write(`${result.recordsChecked} usage events, holds and period totals checked, ${result.inconsistencies.length} inconsistencies\n`);
      return result.mismatches.length > 0 || result.inconsistencies.length > 0 ? 1 : 0;
    }
    case 'run-due-jobs': {
      const config = loadConfig();
      const logger = pino({ level: config.logLevel }, destination(2));
      const processed = await withDatabase(config, ({ prisma }) =>
        new DueWorkRunner({ prisma, clock: systemClock, logger, intervalMs: config.jobsIntervalMs, concurrency: 2 }).runOnce(),
      );
      process.stdout.write(`${processed} accounts processed\n`);
      return 0;
    }
    case 'report': {
      const options = parseOptions(args, ['from', 'to', 'currency'], ['csv']);
      const instant = (name: string) => {
        const text = options.values[name];
        const date = text === undefined ? null : parseInstant(text);
        if (!date) throw new UsageError(`--${name} must be an ISO-8601 instant with Z or an offset`);
        return date;
      };
      const from = instant('from');
      const to = instant('to');
      const currency = options.values.currency ?? null;
      // Checked before the database is opened: a wrong argument is a usage error, not a failed
      // connection (nor an embedded database started and migrated for nothing).
      if (!(to.getTime() > from.getTime())) throw new UsageError('--to must be after --from');
      if (currency !== null && !isCurrencyCode(currency)) throw new UsageError('--currency must be an ISO 4217 code such as USD');
      const rows = await withDatabase(loadConfig(), ({ prisma }) => financeSummary(prisma, from, to, currency));
      process.stdout.write(options.flags.has('csv') ? financeSummaryCsv(rows) : `${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    default:
      throw new UsageError(command ? `unknown command: ${command}` : 'no command given');
  }
}

const [command, ...args] = process.argv.slice(2);
run(command, args).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) process.stderr.write(`${error.message}\n\n${USAGE}\n`);
    else if (error instanceof ConfigError) process.stderr.write(`${error.message}\n`);
    else process.stderr.write(`${command} failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
