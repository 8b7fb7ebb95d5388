// The CNI error codes the other plugin tests rarely meet, each produced by a BUILT plugin the way
// a runtime runs it: so that every code in docs/ERRORS.md is seen by a test (test/ship/errors-doc.test.ts).
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recordCniCode } from "../helpers/cni-codes";
import { expectCniError } from "../helpers/cni-error";
import { startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { createNetns, removeNetns, type TestNetns } from "../helpers/netns";
import { cleanupPlugins, pluginDir, pluginPath, runCni } from "../helpers/plugins";

const tmp = mkdtempSync(join(tmpdir(), "berth-errors-test-"));
let pod: TestNetns;
let daemon: DaemonHandle | undefined;

beforeAll(async () => {
  pod = createNetns("err");
  daemon = await startIpamd({
    config: {
      cooldownSeconds: 0,
      pools: [{ name: "e-v4", subnet: "10.252.0.0/24", ranges: [{ start: "10.252.0.10", end: "10.252.0.20" }] }],
    },
  });
}, 120_000);

afterAll(async () => {
  removeNetns(pod);
  await daemon?.stop();
  if (daemon) rmSync(daemon.dir, { recursive: true, force: true });
  rmSync(tmp, { recursive: true, force: true });
  cleanupPlugins();
});

const attachment = (id: string) => ({ containerId: id, netns: pod.path, ifName: "net1" });
const berthIpam = (extra: Record<string, unknown> = {}) => ({
  cniVersion: "1.1.0",
  name: "errs",
  type: "berth-ipam",
  ipam: { type: "berth-ipam", socket: daemon!.socket },
  ...extra,
});

/** An IPAM plugin script in its own CNI_PATH directory. */
function fakeIpam(name: string, body: string): string {
  const dir = mkdtempSync(join(tmp, "ipam-"));
  writeFileSync(join(dir, name), `#!/bin/sh\ncat >/dev/null\n${body}\n`, { mode: 0o755 });
  return dir;
}

describe("CNI codes a built plugin answers with", () => {
  it("5: stdin cannot be read", () => {
    const dirFd = openSync(tmp, "r"); // a directory as stdin: read(2) fails with EISDIR
    try {
      const r = spawnSync(pluginPath("berth-ipam"), [], {
        stdio: [dirFd, "pipe", "pipe"],
        encoding: "utf8",
        env: {
          PATH: "/usr/bin:/bin",
          CNI_COMMAND: "ADD",
          CNI_CONTAINERID: "ctr-5",
          CNI_NETNS: pod.path,
          CNI_IFNAME: "net1",
          CNI_PATH: pluginDir(),
        },
      });
      const json = JSON.parse(r.stdout);
      recordCniCode(json.code);
      expect(r.status).toBe(1);
      expect(json).toMatchObject({ code: 5, msg: expect.stringContaining("cannot read the network config from stdin") });
    } finally {
      closeSync(dirFd);
    }
  });

  it("101: a delegated IPAM plugin crashes without a CNI error, its stderr in details; 108: it answers something unreadable", () => {
    const crash = fakeIpam("crashy", 'echo "crashy: out of cheese" >&2\nexit 3');
    const r = runCni(pluginPath("berth-macvlan"), {
      command: "ADD",
      config: { cniVersion: "1.0.0", name: "errs", type: "berth-macvlan", master: "lo", ipam: { type: "crashy" } },
      ...attachment("ctr-101"),
      path: [crash, pluginDir()],
    });
    const e = expectCniError(r, 101, "IPAM plugin crashy ADD failed (exit status 3)");
    expect(e.details).toContain("crashy: out of cheese");
    const garbage = fakeIpam("garbage", "echo 'this is not a result'");
    const g = runCni(pluginPath("berth-macvlan"), {
      command: "ADD",
      config: { cniVersion: "1.0.0", name: "errs", type: "berth-macvlan", master: "lo", ipam: { type: "garbage" } },
      ...attachment("ctr-108"),
      path: [garbage, pluginDir()],
    });
    expectCniError(g, 108, "IPAM plugin garbage returned a result that is not JSON");
  });

  it("105: ipamd refuses a caller that is not root", () => {
    for (let p = dirname(daemon!.socket); p !== "/" && p.startsWith(dirname(daemon!.dir)); p = dirname(p)) chmodSync(p, 0o755);
    chmodSync(daemon!.socket, 0o666);
    const r = runCni(pluginPath("berth-ipam"), {
      command: "ADD",
      config: berthIpam(),
      ...attachment("ctr-105"),
      via: ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    });
    expectCniError(r, 105, "only root may change IP allocations");
  });

  it("106: ipamd rejects the request for another reason, and says why", () => {
    const r = runCni(pluginPath("berth-ipam"), {
      command: "ADD",
      config: berthIpam(),
      ...attachment("ctr-106"),
      cniArgs: `IgnoreUnknown=1;K8S_POD_NAME=${"p".repeat(300)}`,
    });
    expectCniError(r, 106, "podName");
  });

  it("121: CHECK without prevResult", () => {
    const config = { cniVersion: "1.1.0", name: "errs", type: "berth-macvlan", master: "lo" };
    expectCniError(
      runCni(pluginPath("berth-macvlan"), { command: "CHECK", config, ...attachment("ctr-121") }),
      121,
      "required prevResult missing",
    );
  });

  it("143: CNI_NETNS is a namespace file but not a network namespace", () => {
    const r = runCni(pluginPath("berth-macvlan"), {
      command: "ADD",
      config: { cniVersion: "1.1.0", name: "errs", type: "berth-macvlan", master: "lo" },
      containerId: "ctr-143",
      netns: "/proc/self/ns/uts",
      ifName: "net1",
    });
    expectCniError(r, 143, "not a network namespace");
  });
});
