import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// Tests that need kernel features this host lacks (802.1Q, dummy, ipvlan).
// They run inside the qemu guest: scripts/kernel-lab.sh npx vitest run --config test/lab/vitest.config.ts
// Software emulation is several times slower than the host, hence the long timeouts.
export default defineConfig({
  root: fileURLToPath(new URL("../..", import.meta.url)),
  test: {
    pool: "forks",
    include: ["test/lab/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
