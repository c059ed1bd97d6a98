import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { GqlTarget, GraphQLResponse } from './server.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** What `pnpm build` writes and `pnpm start` runs. */
export const BUNDLE = 'packages/server/dist/server/main.js';

/** The Node options `pnpm start` runs the bundle with (its script is the one place they are set). */
function startOptions(): string[] {
  const { scripts } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const options = new RegExp(`node ((?:--\\S+ )*)${BUNDLE}`).exec(scripts.start ?? '')?.[1];
  if (options === undefined) throw new Error(`package.json's start script does not run node on ${BUNDLE}`);
  return options.trim().split(' ').filter(Boolean);
}

export interface ServerProcess extends GqlTarget {
  adminKey: string;
  child: ChildProcess;
  /** Date.now() when the process was spawned (a CPU profile's samples count from about then). */
  spawnedAt: number;
  /** What the process wrote to stdout and stderr. */
  output: string[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * The server as a separate process, ready when /healthz answers: from its TypeScript sources, or as
 * `pnpm start` runs it, the bundle `pnpm build` writes (which the caller must have built).
 */
export async function startServerProcess(
  env: Record<string, string>,
  nodeArgs: readonly string[] = [],
  entry: 'source' | 'bundle' = 'source',
): Promise<ServerProcess> {
  const port = env.PORT ? Number(env.PORT) : await freePort();
  const adminKey = env.ADMIN_API_KEY ?? `proc-admin-${randomBytes(16).toString('hex')}`;
  const output: string[] = [];
  const entryArgs = entry === 'bundle' ? [...startOptions(), BUNDLE] : ['--import', 'tsx', 'packages/server/src/main.ts'];
  const spawnedAt = Date.now();
  const child = spawn(process.execPath, [...nodeArgs, ...entryArgs], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: String(port), ADMIN_API_KEY: adminKey, LOG_LEVEL: 'warn', ...env, ...(env.PORT ? {} : { PORT: String(port) }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server process exited with ${child.exitCode}: ${output.join('')}`);
    const healthy = await fetch(`${url}/healthz`).then((response) => response.ok, () => false);
    if (healthy) break;
    if (Date.now() > deadline) {
      // A process that never became healthy must not outlive the test that started it.
      child.kill('SIGKILL');
      throw new Error(`server process did not start: ${output.join('')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    adminKey,
    child,
    spawnedAt,
    output,
    async gql(query, variables = {}, apiKey = adminKey) {
      const response = await fetch(`${url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
        body: JSON.stringify({ query, variables }),
      });
      return { ...((await response.json()) as GraphQLResponse), status: response.status } as GraphQLResponse<any>;
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
