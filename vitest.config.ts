// Two vitest projects: `unit` runs anywhere (with the fuzz properties of test/fuzz/ at a small
// count, NODEMESH_FUZZ_RUNS); `privileged` needs root (netns, eBPF, cgroups) and runs one file
// at a time because its suites share the host's kernel state.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The default reporter, then a digest of the failures at the very end (test/reporters/digest.ts).
    reporters: ['default', './test/reporters/digest.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'test/fuzz/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'privileged',
          include: ['test/privileged/**/*.test.ts'],
          // Checks the machine once and says what is missing (test/helpers/preflight.ts).
          globalSetup: ['./test/helpers/preflight.ts'],
          fileParallelism: false,
          pool: 'forks',
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
