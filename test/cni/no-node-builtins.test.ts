// The plugins' ADD, CHECK and DEL load no node: module (issue 12: Bun's node:fs costs every
// plugin start ~1.2-1.5 ms, node:path ~0.5 ms); their file work goes through libc (lib/fileio.ts).
// How it is seen: the same split bundle as dist/bin/berth (bun build --splitting, minus --compile
// and --bytecode), run by Bun with BUN_JSC_dumpModuleLoadingState=1, makes the module loader
// print "Loader [fetch] node:fs" for every built-in module a chunk imports. (Inside the compiled
// executable the loader does not report built-ins, so the executable itself cannot show it.)
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ipIn } from "../helpers/netns";
import { startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { ROOT, runCni, type CniCall } from "../helpers/plugins";
import { destroyLab, makeLab, newPod, type Lab } from "./macvlan-fixture";

const tmp = mkdtempSync(join(tmpdir(), "berth-builtins-"));
const bin = join(tmp, "bin");
const dump = join(tmp, "loader.log");
let lab: Lab;
let daemon: DaemonHandle;
let seq = 0;

beforeAll(async () => {
  const out = spawnSync(
    join(ROOT, "node_modules/.bin/bun"),
    ["build", "--minify", "--format=esm", "--splitting", "--target=bun", "cni/main.ts", "--outdir", join(tmp, "bundle")],
    { cwd: ROOT, encoding: "utf8" },
  );
  if (out.status !== 0) throw new Error(`bun build failed:\n${out.stdout}${out.stderr}`);
  spawnSync("mkdir", ["-p", bin]);
  for (const name of ["berth-macvlan", "berth-ipam", "berth-hostdev", "ipamctl"]) {
    const script = join(bin, name);
    const bun = join(ROOT, "node_modules/.bin/bun");
    writeFileSync(
      script,
      `#!/bin/sh\nBUN_JSC_dumpModuleLoadingState=1 exec "${bun}" "${join(tmp, "bundle/main.js")}" ${name} "$@" 2>>"${dump}"\n`,
    );
    chmodSync(script, 0o755);
  }
  lab = makeLab("bi");
  lab.path = [bin, "/usr/lib/cni"];
  daemon = await startIpamd({
    config: {
      pools: [{ name: "lan", subnet: "10.77.0.0/24", gateway: "10.77.0.1", ranges: [{ start: "10.77.0.10", end: "10.77.0.50" }] }],
    },
  });
}, 120_000);

afterAll(async () => {
  await daemon?.stop();
  destroyLab(lab);
  rmSync(tmp, { recursive: true, force: true });
});

/** Runs `plugin` in the lab's host namespace; returns its result and the built-in modules it loaded. */
function run(plugin: string, call: CniCall): { code: number | null; json: any; builtins: string[] } {
  writeFileSync(dump, "");
  const r = runCni(join(bin, plugin), { path: lab.path, via: ["ip", "netns", "exec", lab.host.name], ...call });
  const builtins = readFileSync(dump, "utf8")
    .split("\n")
    .map((l) => /^Loader \[fetch\] ((?:node|bun):[\w:/]+|[a-z_]+)$/.exec(l)?.[1])
    .filter((m): m is string => m !== undefined && m !== "bun:main");
  return { code: r.code, json: r.json, builtins: [...new Set(builtins)] };
}

/** ADD, CHECK, DEL of one attachment; the built-ins each verb loaded. */
function lifecycle(plugin: string, config: Record<string, unknown>, expectAdd = 0) {
  const pod = newPod(lab, "bi");
  const call = { containerId: `bi${seq++}`, netns: pod.path, ifName: "eth0" };
  const add = run(plugin, { ...call, command: "ADD", config });
  expect(add.code, JSON.stringify(add.json)).toBe(expectAdd);
  const check = add.code === 0 ? run(plugin, { ...call, command: "CHECK", config: { ...config, prevResult: add.json } }) : undefined;
  if (check) expect(check.code, JSON.stringify(check.json)).toBe(0);
  const del = run(plugin, { ...call, command: "DEL", config });
  expect(del.code, JSON.stringify(del.json)).toBe(0);
  return { ADD: add.builtins, ...(check ? { CHECK: check.builtins } : {}), DEL: del.builtins };
}

const ffiOnly = (verbs: Record<string, string[]>) => Object.fromEntries(Object.keys(verbs).map((v) => [v, ["bun:ffi"]]));

describe("no node: module in a plugin's ADD, CHECK and DEL", () => {
  const base = () => ({ cniVersion: "1.1.0", name: "underlay", master: lab.master, stateDir: join(tmp, "state") });
  const ipam = () => ({ type: "berth-ipam", socket: daemon.socket });

  it("the check sees built-ins: ipamctl (which keeps node:fs) shows node:fs", () => {
    writeFileSync(dump, "");
    spawnSync(join(bin, "ipamctl"), ["--socket", join(tmp, "none.sock"), "status"], { encoding: "utf8" });
    expect(readFileSync(dump, "utf8")).toContain("Loader [fetch] node:fs");
  });

  it("berth-macvlan with berth-ipam (ipamd)", () => {
    const verbs = lifecycle("berth-macvlan", { ...base(), type: "berth-macvlan", ipam: ipam() });
    expect(verbs).toEqual(ffiOnly(verbs));
  });

  it("berth-macvlan with logFile (a new log directory) and delegated IPAM (static)", () => {
    const logFile = join(tmp, "log", "new", "plugin.log");
    // cniVersion 1.0.0: the reference static plugin speaks no 1.1.0.
    const config = {
      ...base(),
      cniVersion: "1.0.0",
      type: "berth-macvlan",
      logFile,
      logLevel: "debug",
      ipam: { type: "static", addresses: [{ address: "10.77.0.200/24" }] },
    };
    const verbs = lifecycle("berth-macvlan", config);
    expect(verbs).toEqual(ffiOnly(verbs));
    expect(readFileSync(logFile, "utf8")).toContain('"msg":"ADD done"');
  });

  it("berth-macvlan with a VLAN (its records and lock; ADD fails where the kernel has no 8021q)", () => {
    const config = { ...base(), type: "berth-macvlan", vlan: 101, logFile: join(tmp, "vlan.log"), ipam: ipam() };
    const has8021q = spawnSync("ip", ["link", "add", "link", "lo", "name", "bi8021q", "type", "vlan", "id", "9"]).status === 0;
    if (has8021q) spawnSync("ip", ["link", "del", "bi8021q"]);
    const verbs = lifecycle("berth-macvlan", config, has8021q ? 0 : 1);
    expect(verbs).toEqual(ffiOnly(verbs));
  });

  it("berth-ipam on its own", () => {
    const verbs = lifecycle("berth-ipam", { ...base(), type: "berth-macvlan", ipam: ipam() });
    expect(verbs).toEqual(ffiOnly(verbs));
  });

  it("berth-hostdev (state file, sysfs-free selection by name)", () => {
    const eni = `bieni${seq}`;
    ipIn(lab.host, "link", "add", eni, "type", "veth", "peer", "name", `${eni}p`);
    const config = { cniVersion: "1.1.0", name: "eni", type: "berth-hostdev", device: eni, stateDir: join(tmp, "hostdev") };
    const verbs = lifecycle("berth-hostdev", config);
    expect(verbs).toEqual(ffiOnly(verbs));
  });
});
