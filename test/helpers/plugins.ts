// Locates the built plugin executables the way a runtime would run them. Uses dist/bin/<name>
// (make build) when BERTH_DIST is set or dist/bin/berth exists; otherwise compiles cni/main.ts
// with bun once per test process into a temp dir and links the plugin names to it.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { recordCniCode } from "./cni-codes";

export const ROOT = resolve(import.meta.dirname, "../..");
const NAMES = ["berth-macvlan", "berth-hostdev", "berth-sriov", "berth-ipam", "ipamctl"];

let binDir: string | undefined;
let builtDir: string | undefined;

function distDir(): string | undefined {
  const dist = process.env.BERTH_DIST ? resolve(process.env.BERTH_DIST) : join(ROOT, "dist");
  const bin = join(dist, "bin");
  if (process.env.BERTH_DIST) {
    if (!existsSync(join(bin, "berth")))
      throw new Error(`BERTH_DIST=${process.env.BERTH_DIST}: ${bin}/berth does not exist; run make build`);
    return bin;
  }
  return existsSync(join(bin, "berth")) ? bin : undefined;
}

function buildOnce(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-bin-"));
  builtDir = dir;
  process.on("exit", cleanupPlugins);
  const out = spawnSync("npx", ["--no-install", "bun", "build", "--compile", "cni/main.ts", "--outfile", join(dir, "berth")], {
    cwd: ROOT,
    encoding: "utf8",
  });
  if (out.status !== 0) throw new Error(`bun build --compile cni/main.ts failed:\n${out.stdout}\n${out.stderr}`);
  for (const name of NAMES) symlinkSync("berth", join(dir, name));
  return dir;
}

/** Directory holding berth and its plugin links (use it in CNI_PATH). */
export function pluginDir(): string {
  binDir ??= distDir() ?? buildOnce();
  return binDir;
}

/** Removes a temp build (call from afterAll; a dist/ build is left alone). */
export function cleanupPlugins(): void {
  if (builtDir) rmSync(builtDir, { recursive: true, force: true });
  if (builtDir && binDir === builtDir) binDir = undefined;
  builtDir = undefined;
}

/** Absolute path of the executable `name` ("berth", "berth-ipam", ...). */
export function pluginPath(name: string): string {
  return join(pluginDir(), name);
}

export interface PluginRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, undefined when empty. */
  json: any;
}

export interface CniCall {
  command: "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" | "VERSION";
  config: unknown;
  containerId?: string;
  netns?: string;
  ifName?: string;
  cniArgs?: string;
  path?: string[];
  env?: Record<string, string>;
  /** Command prefix, e.g. ["ip", "netns", "exec", "hostns"] to run the plugin in another netns. */
  via?: string[];
}

/** Runs a CNI plugin executable exactly as a runtime does: CNI_* env, config on stdin. */
export function runCni(executable: string, call: CniCall): PluginRun {
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: call.command };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifName !== undefined) env.CNI_IFNAME = call.ifName;
  if (call.cniArgs !== undefined) env.CNI_ARGS = call.cniArgs;
  env.CNI_PATH = (call.path ?? [pluginDir(), "/usr/lib/cni"]).join(":");
  Object.assign(env, call.env);
  const input = typeof call.config === "string" ? call.config : JSON.stringify(call.config);
  const [file, ...args] = [...(call.via ?? []), executable];
  const r = spawnSync(file!, args, { input, env, encoding: "utf8", timeout: 30_000 });
  if (r.error) throw r.error;
  const stdout = r.stdout ?? "";
  let json: any;
  if (stdout.trim() !== "") {
    try {
      json = JSON.parse(stdout);
    } catch {
      json = undefined;
    }
  }
  if (r.status !== 0) recordCniCode(json?.code);
  return { code: r.status, stdout, stderr: r.stderr ?? "", json };
}

let fakePfBuild: string | undefined;

/**
 * A TEST build of berth-sriov (test/helpers/berth-sriov-fake-pf.ts) whose PF-side VF requests are
 * recorded under BERTH_SRIOV_FAKE_PF instead of sent: this kernel has no SR-IOV. Compiled here once
 * per test process; it is never part of dist/ or `make install`.
 */
export function fakePfSriovPath(): string {
  if (fakePfBuild) return join(fakePfBuild, "berth-sriov");
  const dir = mkdtempSync(join(tmpdir(), "berth-fakepf-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  const out = spawnSync(
    "npx",
    ["--no-install", "bun", "build", "--compile", "test/helpers/berth-sriov-fake-pf.ts", "--outfile", join(dir, "berth-sriov")],
    { cwd: ROOT, encoding: "utf8" },
  );
  if (out.status !== 0) throw new Error(`bun build --compile test/helpers/berth-sriov-fake-pf.ts failed:\n${out.stdout}\n${out.stderr}`);
  fakePfBuild = dir;
  return join(dir, "berth-sriov");
}
