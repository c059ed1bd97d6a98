import { defineConfig } from 'vitest/config';

export default defineConfig({
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
