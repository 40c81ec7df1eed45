import { defineConfig } from 'vitest/config';

// Unit tests live beside the code; tests that drive external programs and real devices live
// under test/ and e2e/. They share one run, but the slow ones must not run in parallel with
// each other on a 2-core CI machine, so each file runs in its own fork and files run one at a
// time when they start real daemons.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['engine/**/*.test.ts', 'csi/**/*.test.ts', 'cli/**/*.test.ts', 'hack/**/*.test.ts'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts', 'e2e/**/*.test.ts'],
          testTimeout: 300_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
