import { defineConfig } from "vitest/config";

// Tests enter network namespaces with setns(2) on the calling thread, so every
// test file runs in its own child process, never in a worker thread.
export default defineConfig({
  test: {
    pool: "forks",
    include: ["test/**/*.test.ts"],
    exclude: ["test/lab/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
