import { createRequire } from "node:module";
import type * as Koffi from "koffi";
declare const require: NodeJS.Require | undefined;
// Under bun --compile the native addon is embedded only when required by a literal path.
export const koffi: typeof Koffi = process.versions.bun && typeof require === "function"
  ? require("@koromix/koffi-linux-x64/linux_x64/koffi.node")
  : createRequire(import.meta.url)("koffi");
