import { defineConfig } from 'vitest/config';

/**
 * The fast unit tests of the pure domain modules alone: no database, no server, no global setup.
 * `pnpm test:unit` runs them in a second or two; `pnpm test:mutation` (Stryker) runs them once per mutant.
 */
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    reporters: ['default'],
  },
});
