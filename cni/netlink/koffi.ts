import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type * as Koffi from "koffi";
declare const require: NodeJS.Require | undefined;

function loadKoffi(): typeof Koffi {
  // Under bun --compile the native addon is embedded only when required by a literal path.
  if (process.versions.bun && typeof require === "function") {
    return require("@koromix/koffi-linux-x64/linux_x64/koffi.node");
  }
  const nodeRequire = createRequire(import.meta.url);
  // The daemon's esbuild bundle (dist/ipamd/) ships the addon beside itself.
  const beside = fileURLToPath(new URL("./koffi.node", import.meta.url));
  return existsSync(beside) ? nodeRequire(beside) : nodeRequire("koffi");
}

export const koffi: typeof Koffi = loadKoffi();
