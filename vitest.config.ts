import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineConfig } from "vitest/config";
import { CodesLastSequencer } from "./test/helpers/cni-codes-sequencer";

// Where the test processes record the CNI error codes they see (test/helpers/cni-codes.ts).
const codesDir = (process.env.BERTH_CNI_CODES_DIR ??= mkdtempSync(join(tmpdir(), "berth-cni-codes-")));

// Tests enter network namespaces with setns(2) on the calling thread, so every
// test file runs in its own child process, never in a worker thread.
export default defineConfig({
  test: {
    pool: "forks",
    include: ["test/**/*.test.ts"],
    exclude: ["test/lab/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    env: { BERTH_CNI_CODES_DIR: codesDir },
    setupFiles: ["test/helpers/cni-codes-setup.ts"],
    globalSetup: ["test/helpers/cni-codes-global.ts"],
    sequence: { sequencer: CodesLastSequencer },
  },
});
