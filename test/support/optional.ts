import { existsSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';

/**
 * What a test needs beyond `pnpm install`: a system package (Chromium, PostgreSQL's server binaries,
 * redis-server) or a running service (PostgreSQL, Redis). On a developer's machine a test whose
 * need is unmet is skipped with one line saying what to install or start, so that a newcomer's
 * first `pnpm test` is green; under CI=true it runs regardless and fails loudly, since `.ci/run`
 * installs and starts all of them.
 */
export interface Need {
  /** What is needed, as the skip line names it. */
  name: string;
  met: boolean;
  /** How to meet it. */
  hint: string;
}

const CI = process.env.CI === 'true';

/** The PostgreSQL and Redis servers the tests that need them use whatever TEST_DB says. */
export const SHARED_POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const SHARED_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** An executable from a system package: the first of `candidates` that exists. */
export function program(name: string, candidates: readonly string[], hint: string): Need & { path?: string } {
  const found = candidates.find((candidate) => existsSync(candidate));
  return { name, met: found !== undefined, hint, ...(found ? { path: found } : {}) };
}

export function chromium(): Need & { path?: string } {
  const configured = process.env.CHROMIUM_PATH;
  return program(
    'Chromium',
    configured ? [configured] : ['/usr/bin/chromium', '/usr/bin/chromium-browser'],
    'apt-get install -y chromium, or set CHROMIUM_PATH',
  );
}

/** PostgreSQL's server binaries (initdb, pg_ctl), for a test that runs a cluster of its own. */
export function postgresServerBinaries(): Need & { bin?: string } {
  const roots = process.env.POSTGRES_BIN
    ? [process.env.POSTGRES_BIN]
    : existsSync('/usr/lib/postgresql')
      ? readdirSync('/usr/lib/postgresql')
          .sort((a, b) => Number(b) - Number(a))
          .map((version) => `/usr/lib/postgresql/${version}/bin`)
      : [];
  const bin = roots.find((root) => existsSync(path.join(root, 'initdb')) && existsSync(path.join(root, 'pg_ctl')));
  return { name: 'PostgreSQL server binaries (initdb, pg_ctl)', met: bin !== undefined, hint: 'apt-get install -y postgresql, or set POSTGRES_BIN', ...(bin ? { bin } : {}) };
}

export function redisServer(): Need & { path?: string } {
  return program('redis-server', [process.env.REDIS_SERVER ?? '/usr/bin/redis-server'], 'apt-get install -y redis-server, or set REDIS_SERVER');
}

/** Whether something accepts TCP connections at the URL's host and port (within a second). */
async function listening(url: URL, defaultPort: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(Number(url.port || defaultPort), url.hostname);
    const done = (up: boolean) => {
      socket.destroy();
      resolve(up);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export async function postgresService(url = SHARED_POSTGRES_URL): Promise<Need> {
  const parsed = new URL(url);
  return {
    name: `PostgreSQL at ${parsed.hostname}:${parsed.port || 5432}`,
    met: await listening(parsed, 5432),
    hint: 'start it, or set TEST_POSTGRES_URL',
  };
}

export async function redisService(url = SHARED_REDIS_URL): Promise<Need> {
  const parsed = new URL(url);
  return { name: `Redis at ${parsed.hostname}:${parsed.port || 6379}`, met: await listening(parsed, 6379), hint: 'start it, or set TEST_REDIS_URL' };
}

/**
 * True when `what` must be skipped here: some need is unmet and this is not CI. Says so in one
 * line on stderr (which vitest shows above the file's result).
 */
export function skipUnless(what: string, needs: readonly Need[]): boolean {
  const unmet = needs.filter((need) => !need.met);
  if (unmet.length === 0 || CI) return false;
  process.stderr.write(`skipped: ${what} needs ${unmet.map((need) => `${need.name} (${need.hint})`).join(' and ')}\n`);
  return true;
}
