// cnitool built from Debian's libcni sources (golang-github-appc-cni-dev, golang-go; see
// scripts/packages.txt), offline: GOPATH mode against /usr/share/gocode, no module proxy. The
// binary is cached under node_modules/.cache/berth-cnitool, keyed by the hash of main.go and the
// Go version, so only the first run pays for the build (a few seconds).
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { join, resolve } from "node:path";
import { recordCniCode } from "./cni-codes";
import type { PluginRun } from "./plugins";

const ROOT = resolve(import.meta.dirname, "../..");
const SOURCE = join(import.meta.dirname, "cnitool/main.go");
const GOPATH = "/usr/share/gocode";
const LIBCNI = join(GOPATH, "src/github.com/containernetworking/cni/libcni");
const CACHE = join(ROOT, "node_modules/.cache/berth-cnitool");

const goEnv = () => ({
  ...process.env,
  GO111MODULE: "off",
  GOPATH,
  GOPROXY: "off",
  GOFLAGS: "",
  GOCACHE: join(CACHE, "go-build"),
  CGO_ENABLED: "0",
});

let built: string | undefined;

/** The path of the cnitool binary, built on first use. */
export function cnitool(): string {
  if (built) return built;
  const go = spawnSync("go", ["version"], { encoding: "utf8", env: goEnv() });
  if (go.error || go.status !== 0 || !existsSync(LIBCNI))
    throw new Error("cnitool needs Go and libcni's sources: apt-get install golang-go golang-github-appc-cni-dev (scripts/packages.txt)");
  const key = createHash("sha256").update(readFileSync(SOURCE)).update(go.stdout).digest("hex").slice(0, 16);
  const out = join(CACHE, `cnitool-${key}`);
  if (!existsSync(out)) {
    mkdirSync(CACHE, { recursive: true });
    const partial = `${out}.${process.pid}`;
    const b = spawnSync("go", ["build", "-o", partial, SOURCE], { encoding: "utf8", env: goEnv() });
    if (b.status !== 0) throw new Error(`go build of ${SOURCE} against ${LIBCNI} failed:\n${b.stdout}${b.stderr}`);
    renameSync(partial, out); // atomic: test processes building at once each rename a complete binary
  }
  built = out;
  return out;
}

export interface CnitoolCall {
  command: "add" | "check" | "del";
  /** The network's name; its conflist is in netconfPath. */
  network: string;
  netns: string;
  netconfPath: string;
  cniPath: string[];
  /** libcni's result cache (prevResult for CHECK and DEL). */
  cacheDir: string;
  containerId: string;
  ifName?: string;
  /** RuntimeConf.CapabilityArgs, e.g. { bandwidth: {...} }. */
  capArgs?: Record<string, unknown>;
  cniArgs?: string;
  /** Command prefix, e.g. ["ip", "netns", "exec", "hostns"]: where libcni and so the plugins run. */
  via?: string[];
}

/** Runs libcni's AddNetworkList / CheckNetworkList / DelNetworkList through cnitool. */
export function runCnitool(call: CnitoolCall): PluginRun {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    NETCONFPATH: call.netconfPath,
    CNI_PATH: call.cniPath.join(":"),
    CNI_CACHE_DIR: call.cacheDir,
    CNI_CONTAINERID: call.containerId,
    CNI_IFNAME: call.ifName ?? "eth0",
  };
  if (call.capArgs) env.CAP_ARGS = JSON.stringify(call.capArgs);
  if (call.cniArgs) env.CNI_ARGS = call.cniArgs;
  const [cmd, ...pre] = [...(call.via ?? []), cnitool()];
  const r = spawnSync(cmd, [...pre, call.command, call.network, call.netns], { encoding: "utf8", env, timeout: 60_000 });
  let json: any;
  try {
    json = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  } catch {
    json = undefined;
  }
  if (r.status !== 0) recordCniCode(json?.code);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json };
}
