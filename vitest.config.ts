import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // Node loads graphql's CommonJS build for every library (the package has no "exports"); Vite
    // would give our own modules its ESM build, and graphql refuses types from "another realm".
    alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }],
  },
  test: {
    include: ['test/**/*.test.ts', 'packages/*/test/**/*.test.ts'],
    globalSetup: ['test/support/globalSetup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Each file starts its own server (and, embedded, its own in-memory PostgreSQL of ~1 GB):
    // two at a time fits the 2-core machines this runs on.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
