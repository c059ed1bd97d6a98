// The SDK's build: tsc writes the ESM build with declarations (dist/esm); esbuild converts each
// module to CommonJS (dist/cjs, marked by its own package.json), and the declarations are copied
// beside it, so that `require` resolves types and code of the same shape. Source maps embed the
// sources: the package needs no src/ to be debugged.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(root, 'dist');
// Built beside dist and swapped in at the end, so that a reader (a test compiling against the
// package while another rebuilds it) never finds dist half written or missing.
const staging = path.join(root, `.dist-${process.pid}`);
rmSync(staging, { recursive: true, force: true });
const esm = path.join(staging, 'esm');
const cjs = path.join(staging, 'cjs');
execFileSync('tsc', ['-p', path.join(root, 'tsconfig.build.json'), '--outDir', esm], { stdio: 'inherit' });

const files = readdirSync(esm, { recursive: true, encoding: 'utf8' });
await build({
  entryPoints: files.filter((file) => file.endsWith('.js')).map((file) => path.join(esm, file)),
  outdir: cjs,
  outbase: esm,
  format: 'cjs',
  platform: 'neutral',
  target: 'es2022',
  sourcemap: true,
  logLevel: 'warning',
});
for (const file of files.filter((name) => name.endsWith('.d.ts'))) cpSync(path.join(esm, file), path.join(cjs, file));
writeFileSync(path.join(cjs, 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
const previous = `${dist}-old-${process.pid}`;
if (existsSync(dist)) renameSync(dist, previous);
renameSync(staging, dist);
rmSync(previous, { recursive: true, force: true });
