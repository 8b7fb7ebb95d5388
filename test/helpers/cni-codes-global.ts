// vitest globalSetup: removes this run's CNI code records (cni-codes.ts) when the run is over.
import { rmSync } from "node:fs";

export default function setup(): () => void {
  return () => {
    const dir = process.env.BERTH_CNI_CODES_DIR;
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
}
