import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/server.ts';

/**
 * The SDK as a partner gets it: packed (`pnpm pack`), installed from the tarball into projects
 * outside the workspace, type-checked strictly with `skipLibCheck: false` as NodeNext ESM, Bundler
 * and CommonJS projects, and run against a real server. Installs come from the pnpm store (the
 * registry only for what it lacks).
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SDK = path.join(ROOT, 'packages/sdk');
const CONSUMER_SOURCES = path.join(ROOT, 'test/support/sdkConsumer');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const ESBUILD = path.join(ROOT, 'node_modules/esbuild/bin/esbuild');
const version = (name: string) => (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;

let server: TestServer;
let work: string;
let tarball: string;

const run = (command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) =>
  execFileSync(command, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** For a program that calls the server of this process: a blocking exec would keep it from answering. */
const runAsync = async (command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) =>
  (await promisify(execFile)(command, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8' })).stdout;

function strict(compilerOptions: Record<string, unknown>, include: string[]) {
  return JSON.stringify({ compilerOptions: { strict: true, skipLibCheck: false, target: 'ES2022', esModuleInterop: true, ...compilerOptions }, include }, null, 2);
}

/** A consumer project: its own package.json (module format), tsconfig and source, under the shared install. */
function project(name: string, type: 'module' | 'commonjs', tsconfig: string, source: string): string {
  const dir = path.join(work, 'consumer', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `consumer-${name}`, private: true, type }));
  writeFileSync(path.join(dir, 'tsconfig.json'), tsconfig);
  copyFileSync(path.join(CONSUMER_SOURCES, source), path.join(dir, source));
  return dir;
}

beforeAll(async () => {
  server = await startTestServer({ JOBS_ENABLED: 'false' });
  work = mkdtempSync(path.join(tmpdir(), 'sdk-package-'));
  run('pnpm', ['--filter', '@credit-billing/sdk', 'run', 'build'], ROOT);
  run('pnpm', ['pack', '--pack-destination', work], SDK);
  tarball = path.join(work, readdirSync(work).find((file) => file.endsWith('.tgz'))!);
  const consumer = path.join(work, 'consumer');
  mkdirSync(consumer);
  writeFileSync(
    path.join(consumer, 'package.json'),
    JSON.stringify({
      name: 'partner-app',
      private: true,
      dependencies: { '@credit-billing/sdk': `file:${tarball}`, ws: version('ws'), '@types/node': version('@types/node'), '@types/ws': version('@types/ws') },
    }),
  );
  run('pnpm', ['install', '--prefer-offline', '--ignore-workspace', '--reporter=silent'], consumer);
}, 300_000);
afterAll(async () => {
  await server?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the packed SDK', () => {
  it('ships its license, changelog, engines, declared dependencies, and source maps with their sources', () => {
    const files = run('tar', ['-tzf', tarball], work).split('\n').filter(Boolean);
    expect(files).toEqual(expect.arrayContaining(['package/LICENSE', 'package/CHANGELOG.md', 'package/README.md', 'package/dist/esm/index.js', 'package/dist/cjs/index.js', 'package/dist/cjs/index.d.ts']));
    expect(files.filter((file) => file.startsWith('package/src/'))).toEqual([]);
    const installed = path.join(work, 'consumer/node_modules/@credit-billing/sdk');
    const manifest = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8'));
    expect(manifest).toMatchObject({ version: '0.2.0', license: 'MIT', engines: { node: '>=20' } });
    expect(Object.keys(manifest.dependencies).sort()).toEqual(['@graphql-typed-document-node/core', 'graphql-ws']);
    for (const map of files.filter((file) => file.endsWith('.js.map'))) {
      const parsed = JSON.parse(readFileSync(path.join(installed, map.replace(/^package\//, '')), 'utf8')) as { sources: string[]; sourcesContent?: string[] };
      expect(parsed.sourcesContent?.length, map).toBe(parsed.sources.length);
      expect(parsed.sourcesContent?.every((content) => content.length > 0), map).toBe(true);
    }
  });

  it('type-checks strictly without skipLibCheck and runs the partner flows as NodeNext ESM and as CommonJS', async () => {
    const env = { BILLING_URL: server.graphqlUrl, ADMIN_KEY: server.adminKey };
    const expected = {
      plans: true,
      outcomes: ['recorded:90', 'recorded:90', 'insufficient:1000>90', 'unavailable:true', 'limit:15'],
      listed: 1,
      checkout: 'STRIPE_NOT_CONFIGURED',
      balance: 90,
      events: ['connected'],
      refused: { code: 'UNAUTHENTICATED', closeCode: 4403 },
      foreign: 'ACCOUNT_NOT_FOUND',
      viewer: { role: 'ACCOUNT', session: true },
      webhook: 'alert',
    };
    for (const [name, type, options] of [
      ['nodenext', 'module', { module: 'NodeNext', moduleResolution: 'NodeNext' }],
      ['commonjs', 'commonjs', { module: 'CommonJS', moduleResolution: 'Node10' }],
    ] as const) {
      const dir = project(name, type, strict({ ...options, outDir: 'out', lib: ['ES2022'], types: ['node'] }, ['partner.ts']), 'partner.ts');
      run(process.execPath, [TSC, '-p', 'tsconfig.json'], dir);
      const output = await runAsync(process.execPath, ['out/partner.js'], dir, env);
      expect(JSON.parse(output.trim()), name).toEqual(expected);
    }
    // CommonJS really loaded the require build.
    const loaded = run(process.execPath, ['-e', "console.log(require.resolve('@credit-billing/sdk'))"], path.join(work, 'consumer/commonjs'));
    expect(loaded.trim()).toMatch(/dist\/cjs\/index\.js$/);
  });

  it('type-checks as a Bundler project with the DOM library and bundles for the browser', () => {
    const dir = project('bundler', 'module', strict({ module: 'ESNext', moduleResolution: 'Bundler', noEmit: true, lib: ['ES2022', 'DOM'], types: [] }, ['browser.ts']), 'browser.ts');
    run(process.execPath, [TSC, '-p', 'tsconfig.json'], dir);
    run(ESBUILD, ['browser.ts', '--bundle', '--platform=browser', '--format=esm', '--outfile=out/browser.js', '--log-level=error'], dir);
    const bundle = readFileSync(path.join(dir, 'out/browser.js'), 'utf8');
    expect(bundle).toContain('createBillingClient');
    expect(bundle).not.toMatch(/require\(["'](ws|node:)/);
  });
});
