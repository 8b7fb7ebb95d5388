// The libc functions the FFI backends bind must exist in every glibc the plugins support (2.17 and
// later, as the compiled binary itself): Bun's dlopen fails the whole table when one is missing, and
// with it every ADD and DEL. Checked against the symbol versions of this machine's libc.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "../..");
const OLDEST = [2, 17];

/** Names each backend binds: bun.ts's dlopen table keys, koffi.ts's lib.func declarations. */
function boundSymbols(): Set<string> {
  const bun = readFileSync(join(root, "lib/ffi/bun.ts"), "utf8");
  const koffi = readFileSync(join(root, "lib/ffi/koffi.ts"), "utf8");
  const names = [...bun.matchAll(/^\s+(\w+): \{ args: /gm), ...koffi.matchAll(/lib\.func\("[^"(]*?\*?\s*(\w+)\(/g)].map((m) => m[1]!);
  return new Set(names);
}

/** The default version (GLIBC_x.y) of each dynamic symbol of libc.so.6: the one dlsym finds. */
function libcVersions(): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const line of execFileSync("objdump", ["-T", "/lib/x86_64-linux-gnu/libc.so.6"], { encoding: "utf8" }).split("\n")) {
    const m = /\s(GLIBC_[\d.]+)\s+(\w+)$/.exec(line); // "(GLIBC_x)" in parentheses is a hidden, older version
    if (m) out.set(m[2]!, m[1]!.slice("GLIBC_".length).split(".").map(Number));
  }
  return out;
}

const newer = (v: number[], than: number[]): boolean => {
  for (let i = 0; i < Math.max(v.length, than.length); i++) if ((v[i] ?? 0) !== (than[i] ?? 0)) return (v[i] ?? 0) > (than[i] ?? 0);
  return false;
};

describe.runIf(process.arch === "x64")("the FFI's libc functions", () => {
  it("are all in glibc 2.17", () => {
    const symbols = boundSymbols();
    expect(symbols.size).toBeGreaterThan(20);
    expect(symbols).toContain("syscall");
    const versions = libcVersions();
    const tooNew = [...symbols].filter((s) => {
      const v = versions.get(s);
      return v === undefined || newer(v, OLDEST);
    });
    expect(tooNew.map((s) => `${s} (GLIBC_${versions.get(s)?.join(".") ?? "absent"})`)).toEqual([]);
  });
});
