import { execFile } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './processServer.ts';

const run = promisify(execFile);

/**
 * A PostgreSQL cluster of the test's own (initdb, pg_ctl on a free port), so that it can be stopped
 * the hard way without disturbing the shared server. PostgreSQL refuses to run as root: then it runs
 * as the `postgres` user the package creates.
 */
export interface PostgresCluster {
  url: string;
  /** Starts (or restarts) the server and waits until it accepts connections. */
  start(): Promise<void>;
  /** `pg_ctl stop -m immediate`: every backend dies at once, no checkpoint (crash recovery on start). */
  stopImmediately(): Promise<void>;
  destroy(): Promise<void>;
}

export async function startPostgresCluster(bin: string): Promise<PostgresCluster> {
  const root = mkdtempSync(path.join(tmpdir(), 'faults-pg-'));
  const data = path.join(root, 'data');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: group } = await run('id', ['-g', 'postgres']);
    chownSync(root, Number(stdout.trim()), Number(group.trim()));
  }
  const pg = (program: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', path.join(bin, program), ...args]) : run(path.join(bin, program), args);
  await pg('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  // No fsync: the test crashes PostgreSQL, never the machine, and the page cache survives it.
  const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=100`;
  const cluster: PostgresCluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async start() {
      await pg('pg_ctl', ['-D', data, '-l', path.join(root, 'log'), '-o', options, '-w', '-t', '60', 'start']);
    },
    async stopImmediately() {
      await pg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    },
    async destroy() {
      await pg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {});
      rmSync(root, { recursive: true, force: true });
    },
  };
  await cluster.start();
  return cluster;
}
