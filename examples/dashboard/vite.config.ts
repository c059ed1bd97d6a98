import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

export default defineConfig({
  // The root script runs Vite from the repository root; the app lives here.
  root: here('.'),
  resolve: {
    // The SDK straight from source: no `pnpm generate` build of dist/ needed, and edits to the SDK
    // show up at once (only its generated types in src/generated must exist).
    alias: { '@credit-billing/sdk': here('../../packages/sdk/src/index.ts') },
  },
  server: { port: 5173 },
  build: { outDir: here('dist'), emptyOutDir: true, target: 'es2022' },
});
