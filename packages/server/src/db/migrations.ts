import { createHash, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Database } from './database.ts';

export const migrationsDirectory = fileURLToPath(new URL('../../../../prisma/migrations', import.meta.url));

/** Any constant shared by every instance: whoever holds it applies migrations, the others wait. */
const MIGRATION_LOCK_KEY = 727_100_001;

export interface MigrationFile {
  name: string;
  sql: string;
  checksum: string;
}

export function readMigrations(directory = migrationsDirectory): MigrationFile[] {
  if (!existsSync(directory)) return [];
  return readdirSync(directory, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(path.join(directory, entry.name, 'migration.sql')))
    .map((entry) => entry.name)
    .sort()
    .map((name) => {
      const sql = readFileSync(path.join(directory, name, 'migration.sql'), 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    });
}

/**
 * Applies the committed migrations that the database has not seen, each in its own transaction,
 * recording them in Prisma's `_prisma_migrations` table with Prisma's checksum, so that the native
 * `prisma migrate deploy` stays compatible wherever it can run. Prisma's own engine is not used here
 * because it cannot run offline on this stack (see STACK-NOTES.md); scripts/migrate.ts uses its WASM
 * build to create migrations and detect drift.
 */
export async function applyMigrations(database: Database, directory = migrationsDirectory): Promise<string[]> {
  const migrations = readMigrations(directory);
  return database.withSession(async (session) => {
    if (database.kind === 'postgres') await session.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      await session.runScript(`
        CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
          "id" VARCHAR(36) PRIMARY KEY NOT NULL,
          "checksum" VARCHAR(64) NOT NULL,
          "finished_at" TIMESTAMPTZ,
          "migration_name" VARCHAR(255) NOT NULL,
          "logs" TEXT,
          "rolled_back_at" TIMESTAMPTZ,
          "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
          "applied_steps_count" INTEGER NOT NULL DEFAULT 0
        );`);
      const applied = await session.query<{ migration_name: string; checksum: string }>(
        'SELECT migration_name, checksum FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL',
      );
      const appliedByName = new Map(applied.map((row) => [row.migration_name, row.checksum]));
      const newlyApplied: string[] = [];
      for (const migration of migrations) {
        const appliedChecksum = appliedByName.get(migration.name);
        if (appliedChecksum !== undefined) {
          if (appliedChecksum !== migration.checksum) {
            throw new Error(`migration ${migration.name} was changed after it was applied (checksum differs)`);
          }
          continue;
        }
        await session.runScript('BEGIN');
        try {
          await session.runScript(migration.sql);
          await session.query(
            `INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, applied_steps_count)
             VALUES ($1, $2, now(), $3, 1)`,
            [randomUUID(), migration.checksum, migration.name],
          );
          await session.runScript('COMMIT');
        } catch (error) {
          await session.runScript('ROLLBACK');
          throw new Error(`migration ${migration.name} failed: ${(error as Error).message}`);
        }
        newlyApplied.push(migration.name);
      }
      return newlyApplied;
    } finally {
      if (database.kind === 'postgres') await session.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  });
}

/** True when every committed migration is applied (for readiness). */
export async function migrationsAreApplied(database: Database): Promise<boolean> {
  const expected = readMigrations().map((migration) => migration.name);
  const rows = await database.withSession((session) =>
    session.query<{ migration_name: string }>(
      'SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL',
    ),
  );
  const applied = new Set(rows.map((row) => row.migration_name));
  return expected.every((name) => applied.has(name));
}
