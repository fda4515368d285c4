import { defineConfig } from 'vitest/config';

// unit: pure logic and in-memory twins, runs anywhere.
// e2e: real runsc, nats-server, wireguard-go, dockerd; needs root; one file at a time since they share the host.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/**/*.test.ts'], testTimeout: 20_000 } },
      {
        test: {
          name: 'e2e',
          include: ['e2e/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
