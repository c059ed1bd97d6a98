import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaClient } from '../generated/prisma/client.ts';

/** A session on which multi-statement SQL scripts (migrations) can run, on either database. */
export interface ScriptSession {
  runScript(sql: string): Promise<void>;
  query<Row>(sql: string, params?: unknown[]): Promise<Row[]>;
}

export interface Database {
  kind: 'embedded' | 'postgres';
  prisma: PrismaClient;
  /**
   * One statement in a transaction of its own, outside Prisma: the hot path's single round trip.
   * A `name` makes it a prepared statement on each pooled connection (parsed and planned once).
   */
  statement<Row>(sql: string, params: readonly unknown[], name?: string): Promise<Row[]>;
  /** Runs `work` on one dedicated connection (advisory locks and scripts need one session). */
  withSession<T>(work: (session: ScriptSession) => Promise<T>): Promise<T>;
  /** Answers whether the database is reachable right now (for readiness). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl?: string;
  dataDir: string;
  poolSize: number;
}

/**
 * Opens the database the configuration names: a real PostgreSQL through `@prisma/adapter-pg` when
 * there is a URL, otherwise the embedded PGlite under `dataDir` (zero set-up; `memory://` keeps
 * nothing, which the tests use). Both speak PostgreSQL, so one schema and one set of SQL serve both.
 */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  return options.databaseUrl ? openPostgres(options.databaseUrl, options.poolSize) : openEmbedded(options.dataDir);
}

function openPostgres(databaseUrl: string, poolSize: number): Database {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: poolSize,
    // Timestamps are stored without a zone and always mean UTC, whatever the server's default.
    options: '-c timezone=UTC',
    // Waiting for a pooled connection is how load queues up: give it time before failing a request.
    connectionTimeoutMillis: 60_000,
  });
  // An idle client losing its connection (database restart) must not crash the process.
  pool.on('error', () => {});
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    kind: 'postgres',
    prisma,
    async statement<Row>(sql: string, params: readonly unknown[], name?: string) {
      return (await pool.query({ text: sql, values: [...params], ...(name ? { name } : {}) })).rows as Row[];
    },
    async withSession(work) {
      const client = await pool.connect();
      try {
        return await work({
          runScript: async (sql) => {
            await client.query(sql);
          },
          query: async <Row>(sql: string, params?: unknown[]) => (await client.query(sql, params)).rows as Row[],
        });
      } finally {
        client.release();
      }
    },
    async ping() {
      try {
        await pool.query('SELECT 1');
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      await prisma.$disconnect();
      await pool.end().catch(() => {});
    },
  };
}

async function openEmbedded(dataDir: string): Promise<Database> {
  // Loaded only for the embedded database: a server on PostgreSQL never needs PGlite's runtime
  // (tens of megabytes resident once loaded).
  const [{ PGlite }, { PrismaPGlite }] = await Promise.all([import('@electric-sql/pglite'), import('pglite-prisma-adapter')]);
  let location: string | undefined;
  if (dataDir !== 'memory://') {
    location = path.resolve(dataDir, 'pglite');
    mkdirSync(location, { recursive: true });
  }
  const pglite = location ? new PGlite(location) : new PGlite();
  await pglite.waitReady;
  await pglite.exec(`SET TIME ZONE 'UTC'`);
  const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) });
  return {
    kind: 'embedded',
    prisma,
    // PGlite runs a query only between transactions (Prisma's included), never inside one.
    async statement<Row>(sql: string, params: readonly unknown[]) {
      return (await pglite.query<Row>(sql, [...params])).rows;
    },
    async withSession(work) {
      return work({
        runScript: async (sql) => {
          await pglite.exec(sql);
        },
        query: async <Row>(sql: string, params?: unknown[]) => (await pglite.query<Row>(sql, params)).rows,
      });
    },
    async ping() {
      return !pglite.closed;
    },
    async close() {
      await prisma.$disconnect();
      if (!pglite.closed) await pglite.close();
    },
  };
}
