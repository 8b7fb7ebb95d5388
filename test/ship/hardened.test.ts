// The shipped plugins on a hardened node: ADD, CHECK and DEL of berth-macvlan (with berth-ipam and a
// real ipamd) and berth-hostdev (veth "ENIs") succeed with TMPDIR on a noexec tmpfs, with /tmp
// itself a noexec tmpfs, and with every filesystem read-only apart from the plugins' state dir; and
// the binary creates nothing under TMPDIR (an empty tmpfs stays empty, and strace of every
// path-creating system call names no path under it).
// Each plugin call runs in a private mount namespace (unshare -m) set up by a small shell script,
// inside the lab's host network namespace, so the real host's mounts are never changed.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { ipIn, ipJson, type TestNetns } from "../helpers/netns";
import { ROOT, pluginPath, runCni, type CniCall, type PluginRun } from "../helpers/plugins";
import { addresses, destroyLab, makeLab, newPod, podLink, type Lab } from "../cni/macvlan-fixture";

// tmpdir-traced: TMPDIR an empty tmpfs that allows exec (so nothing fails for that reason) under strace.
type Mode = "tmpdir-traced" | "tmpdir-noexec" | "tmp-noexec" | "read-only-root";
const MODES: Mode[] = ["tmpdir-traced", "tmpdir-noexec", "tmp-noexec", "read-only-root"];

// Not under /tmp: the tmp-noexec mode mounts over it.
const root = mkdtempSync("/run/berth-hardened-");
const bin = join(root, "bin");
const state = join(root, "state");
const tmpdirPath = join(root, "tmpdir");
let lab: Lab;
let daemon: DaemonHandle;
let seq = 0;

// $1 is the mode, the rest the plugin command. Mounts made here vanish with the namespace.
const SETUP = String.raw`
mode=$1; shift
case "$mode" in
  tmpdir-noexec)
    mount -t tmpfs -o noexec,nosuid,nodev,size=16m berth-tmpdir "$TMPDIR"
    "$@"; rc=$?
    find "$TMPDIR" -mindepth 1 > "$BERTH_STATE/listing"
    exit $rc ;;
  tmpdir-traced)
    mount -t tmpfs -o size=16m berth-tmpdir "$TMPDIR"
    strace -f -qq -o "$BERTH_STATE/trace" \
      -e trace=open,openat,openat2,creat,mkdir,mkdirat,mknod,mknodat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,truncate \
      "$@"
    rc=$?
    find "$TMPDIR" -mindepth 1 > "$BERTH_STATE/listing"
    exit $rc ;;
  tmp-noexec)
    mount -t tmpfs -o noexec,nosuid,nodev,size=16m berth-tmp /tmp
    "$@"; rc=$?
    find /tmp -mindepth 1 > "$BERTH_STATE/listing"
    exit $rc ;;
  read-only-root)
    mount --bind "$BERTH_STATE" "$BERTH_STATE"
    findmnt -rn -o TARGET | while read -r m; do
      case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$BERTH_STATE") ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
    done
    for probe in /berth-ro-probe /tmp/berth-ro-probe /run/berth-ro-probe /var/berth-ro-probe; do
      if (: > "$probe") 2>/dev/null; then echo "$probe is still writable: the read-only set-up failed" >&2; exit 90; fi
    done
    exec "$@" ;;
esac
echo "unknown mode $mode" >&2; exit 91
`;

beforeAll(async () => {
  // The plugins run from a copy beside the state (a build in /tmp would be hidden by the tmpfs).
  mkdirSync(bin);
  copyFileSync(pluginPath("berth"), join(bin, "berth"));
  for (const name of ["berth-macvlan", "berth-hostdev", "berth-ipam"]) symlinkSync("berth", join(bin, name));
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell script: ${TMPDIR:-/tmp} is for sh
  writeFileSync(join(bin, "noexec-probe"), '#!/bin/sh\nt=${TMPDIR:-/tmp}\ncp /bin/true "$t/probe" && exec "$t/probe"\n', { mode: 0o755 });
  mkdirSync(tmpdirPath);
  mkdirSync(join(root, "ipamd"));
  lab = makeLab("hard", ["10.81.0.1/24"]);
  daemon = await startIpamd({
    dir: join(root, "ipamd"),
    config: { pools: [{ name: "hard", subnet: "10.81.0.0/24", gateway: "10.81.0.1", routes: [{ dst: "0.0.0.0/0" }] }], cooldownSeconds: 0 },
  });
}, 120_000);

afterAll(async () => {
  destroyLab(lab);
  await daemon?.stop();
  rmSync(root, { recursive: true, force: true });
});

/** Runs a plugin in the lab's host namespace inside a fresh mount namespace set up for `mode`. */
function hardened(mode: Mode, plugin: string, call: CniCall, stateDir: string): PluginRun {
  rmSync(join(stateDir, "listing"), { force: true });
  rmSync(join(stateDir, "trace"), { force: true });
  const env: Record<string, string> = { BERTH_STATE: stateDir, ...(mode.startsWith("tmpdir-") ? { TMPDIR: tmpdirPath } : {}) };
  return runCni(join(bin, plugin), {
    path: [bin],
    ...call,
    env: { ...env, ...call.env },
    via: ["ip", "netns", "exec", lab.host.name, "unshare", "-m", "--propagation", "private", "sh", "-c", SETUP, "sh", mode],
  });
}

/** What the plugin left in TMPDIR (or /tmp) and, under strace, every system call that named a path under TMPDIR. */
function expectNothingWritten(mode: Mode, stateDir: string): void {
  if (mode === "read-only-root") return; // nothing could be written: the probes above prove it
  expect(readFileSync(join(stateDir, "listing"), "utf8"), "files left in the temp dir").toBe("");
  if (mode === "tmpdir-traced") {
    const trace = readFileSync(join(stateDir, "trace"), "utf8");
    expect(trace.length, "strace wrote a trace").toBeGreaterThan(0);
    expect(
      trace.split("\n").filter((l) => l.includes(tmpdirPath)),
      "system calls on paths under TMPDIR",
    ).toEqual([]);
  }
}

function expectOk(r: PluginRun, what: string): void {
  expect(r.stderr, `${what} stderr`).toBe("");
  expect(r.code, `${what}: ${r.stdout}`).toBe(0);
}

describe.each(MODES)("hardened node: %s", (mode) => {
  it("berth-macvlan + berth-ipam: ADD, CHECK and DEL succeed and write nothing to the temp dir", () => {
    const stateDir = join(state, `mv-${mode}`);
    mkdirSync(stateDir, { recursive: true });
    const pod = newPod(lab);
    const config = {
      cniVersion: "1.1.0",
      name: "hard",
      type: "berth-macvlan",
      master: lab.master,
      stateDir,
      ipam: { type: "berth-ipam", socket: daemon.socket },
    };
    const cniArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=hard";
    const call = { containerId: `hard-${seq++}`, netns: pod.path, ifName: "eth0", cniArgs };

    const add = hardened(mode, "berth-macvlan", { command: "ADD", config, ...call }, stateDir);
    expectOk(add, "ADD");
    expectNothingWritten(mode, stateDir);
    const ip = add.json.ips[0].address as string;
    expect(ip).toMatch(/^10\.81\.0\.\d+\/24$/);
    expect(podLink(pod)?.linkinfo?.info_kind).toBe("macvlan");
    expect(addresses(pod)).toEqual([ip]);

    const check = hardened(mode, "berth-macvlan", { command: "CHECK", config: { ...config, prevResult: add.json }, ...call }, stateDir);
    expectOk(check, "CHECK");
    expect(check.stdout).toBe("");
    expectNothingWritten(mode, stateDir);

    const del = hardened(mode, "berth-macvlan", { command: "DEL", config, ...call }, stateDir);
    expectOk(del, "DEL");
    expectNothingWritten(mode, stateDir);
    expect(podLink(pod)).toBeUndefined();
  });

  it("berth-hostdev on a veth: ADD, CHECK and DEL succeed, the device comes back, nothing is written to the temp dir", () => {
    const stateDir = join(state, `hd-${mode}`);
    mkdirSync(stateDir, { recursive: true });
    const eni = `hde${seq++}`;
    ipIn(lab.host, "link", "add", eni, "type", "veth", "peer", "name", `${eni}p`);
    ipIn(lab.host, "addr", "add", "10.82.0.5/24", "dev", eni);
    ipIn(lab.host, "link", "set", eni, "up");
    const pod = newPod(lab);
    const config = { cniVersion: "1.1.0", name: "hard-eni", type: "berth-hostdev", device: eni, stateDir };
    const call = { containerId: `hard-${seq++}`, netns: pod.path, ifName: "eth1" };

    const add = hardened(mode, "berth-hostdev", { command: "ADD", config, ...call }, stateDir);
    expectOk(add, "ADD");
    expectNothingWritten(mode, stateDir);
    expect(add.json.interfaces).toEqual([expect.objectContaining({ name: "eth1", sandbox: pod.path })]);
    expect(linkNames(pod)).toContain("eth1");

    const check = hardened(mode, "berth-hostdev", { command: "CHECK", config: { ...config, prevResult: add.json }, ...call }, stateDir);
    expectOk(check, "CHECK");
    expectNothingWritten(mode, stateDir);

    const del = hardened(mode, "berth-hostdev", { command: "DEL", config, ...call }, stateDir);
    expectOk(del, "DEL");
    expectNothingWritten(mode, stateDir);
    expect(linkNames(pod)).not.toContain("eth1");
    expect(linkNames(lab.host)).toContain(eni);
    expect(ipJson<{ addr_info: { local: string }[] }[]>(lab.host, "addr", "show", "dev", eni)[0]!.addr_info.map((a) => a.local)).toContain(
      "10.82.0.5",
    );
  });
});

describe("the hardened set-up itself", () => {
  it.each(["tmpdir-noexec", "tmp-noexec"] as const)("%s: a program copied into the temp dir cannot be run (what broke koffi)", (mode) => {
    const stateDir = join(state, `probe-${mode}`);
    mkdirSync(stateDir, { recursive: true });
    const r = hardened(mode, "noexec-probe", { command: "VERSION", config: "{}" }, stateDir);
    expect(r.code).toBe(126);
    expect(r.stderr).toMatch(/Permission denied/);
  });
});

function linkNames(ns: TestNetns): string[] {
  return ipJson<{ ifname: string }[]>(ns, "link", "show").map((l) => l.ifname);
}

describe("one libc binding, two backends", () => {
  it("the plugin binary carries no koffi (its libc is bun:ffi) and the ipamd bundle no bun:ffi (its libc is koffi)", () => {
    const berth = readFileSync(pluginPath("berth"));
    expect(berth.includes("koffi"), "koffi in dist/bin/berth").toBe(false);
    expect(berth.includes("__errno_location"), "the bun:ffi symbol table in dist/bin/berth").toBe(true);
    const ipamd = readFileSync(join(process.env.BERTH_DIST ?? join(ROOT, "dist"), "ipamd/ipamd.mjs"), "utf8");
    expect(ipamd.includes("bun:ffi"), "bun:ffi in the ipamd bundle").toBe(false);
    expect(ipamd).toContain("getsockopt");
  });
});
