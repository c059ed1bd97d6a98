/**
 * `pnpm bench:profile [scenario]`: one load scenario against the server started with `--cpu-prof`,
 * then the functions with the most self time. Scenarios: trivial, spread (recordUsage across
 * 10,000 accounts, the default), hot, balance, batch. The .cpuprofile lands in bench/results/profiles
 * (open it in Chrome DevTools or speedscope for the call tree).
 *
 * Environment: BENCH_POSTGRES_URL, BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 32).
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { load, log, setUpBench } from './support.ts';

const SCENARIO = process.argv[2] ?? 'spread';
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const POSTGRES = process.env.BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const PROFILE_DIR = path.resolve('bench/results/profiles');

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function (samples × their intervals), heaviest first. */
function summarize(profile: CpuProfile, top: number): string[] {
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfMicros = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((nodeId, index) => {
    const node = byNode.get(nodeId);
    const delta = profile.timeDeltas[index] ?? 0;
    if (!node) return;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? `${url.replace(/^file:\/\//, '').replace(process.cwd() + '/', '').replace(/.*node_modules\/\.pnpm\/[^/]+\/node_modules\//, '')}:${lineNumber + 1}` : '';
    const key = `${functionName || '(anonymous)'} ${where}`.trim();
    selfMicros.set(key, (selfMicros.get(key) ?? 0) + delta);
    total += delta;
  });
  return [...selfMicros]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, micros]) => `${((100 * micros) / total).toFixed(1).padStart(5)} %  ${name}`);
}

/** Self time per package (or our own source), to see where the CPU goes at a glance. */
function byPackage(profile: CpuProfile): string[] {
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]));
  const micros = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((nodeId, index) => {
    const url = byNode.get(nodeId)?.callFrame.url ?? '';
    const delta = profile.timeDeltas[index] ?? 0;
    const pkg = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? (url.includes('/packages/') ? 'our code' : url.startsWith('node:') ? 'node core' : url ? 'other' : '(native, gc, idle)');
    micros.set(pkg, (micros.get(pkg) ?? 0) + delta);
    total += delta;
  });
  return [...micros].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([name, value]) => `${((100 * value) / total).toFixed(1).padStart(5)} %  ${name}`);
}

async function main() {
  rmSync(PROFILE_DIR, { recursive: true, force: true });
  mkdirSync(PROFILE_DIR, { recursive: true });
  const bench = await setUpBench(POSTGRES, {}, ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`]);
  const options = { apiKey: bench.server.adminKey, connections: CONNECTIONS, seconds: SECONDS };
  const bodies: Record<string, () => string> = {
    trivial: () => '{"query":"mutation { __typename }"}',
    spread: () => bench.usage(bench.account()),
    hot: () => bench.usage('hot-1'),
    balance: () =>
      JSON.stringify({ query: 'query($id: ID!) { account(id: $id) { balance(creditType: "credits") { available periodUsed } } }', variables: { id: bench.account() } }),
    batch: () =>
      JSON.stringify({
        query: 'mutation($inputs: [RecordUsageInput!]!) { recordUsageBatch(inputs: $inputs) { __typename } }',
        variables: { inputs: Array.from({ length: 1_000 }, () => ({ accountId: bench.account(), featureKey: bench.featureKey, quantity: 1, idempotencyKey: crypto.randomUUID() })) },
      }),
  };
  const body = bodies[SCENARIO];
  if (!body) throw new Error(`unknown scenario ${SCENARIO}; one of ${Object.keys(bodies).join(', ')}`);
  let result;
  try {
    log(`profiling ${SCENARIO} for ${SECONDS} s with ${CONNECTIONS} connections`);
    result = await load(bench.server, body, SCENARIO === 'batch' ? { ...options, connections: 4 } : options);
  } finally {
    await bench.close();
  }
  const file = readdirSync(PROFILE_DIR).find((name) => name.endsWith('.cpuprofile'));
  if (!file) throw new Error('the server wrote no profile');
  const profile = JSON.parse(readFileSync(path.join(PROFILE_DIR, file), 'utf8')) as CpuProfile;
  process.stdout.write(
    [
      `${SCENARIO}: ${result.rps.toFixed(0)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms, errors ${result.errors + result.non2xx}`,
      `profile: ${path.join('bench/results/profiles', file)}`,
      '',
      'self time by package:',
      ...byPackage(profile),
      '',
      'self time by function:',
      ...summarize(profile, 40),
      '',
    ].join('\n'),
  );
  process.exit(0);
}

main().catch((error: unknown) => {
  process.stderr.write(`profile failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
