// Runs inside the kernel lab guest (scripts/kernel-lab.sh), which has 802.1Q and dummy:
// berth-macvlan (the BUILT executable) on VLAN sub-interfaces of one dummy master.
//   scripts/kernel-lab.sh node_modules/.bin/vitest run --config test/lab/vitest.config.ts test/lab/macvlan.test.ts
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pluginDir, pluginPath, runCni, type CniCall, type PluginRun } from "../helpers/plugins";

const tag = process.pid.toString(36);
const master = `dm${tag}`;
const netnsNames: string[] = [];
// The plugin's own record of which pods use each sub-interface: <stateDir>/<subif>.json
const stateDir = `/tmp/berth-lab-macvlan-${tag}`;
const recordFile = (vlan: number) => `${stateDir}/${master}.${vlan}.json`;
const attachments = (vlan: number): string[] => JSON.parse(readFileSync(recordFile(vlan), "utf8")).attachments;
const keyOf = (netns: string) => `lab/ctr-${netns}/eth0`;

function ip(...args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function link(name: string, netns?: string): any | undefined {
  const r = spawnSync("ip", [...(netns ? ["-n", netns] : []), "-d", "-j", "link", "show", "dev", name], { encoding: "utf8" });
  return r.status === 0 ? JSON.parse(r.stdout)[0] : undefined;
}

function newNetns(label: string): string {
  const name = `mv-${tag}-${label}`;
  ip("netns", "add", name);
  netnsNames.push(name);
  return name;
}

function conf(vlan: number, address: string) {
  return {
    cniVersion: "1.0.0",
    name: "lab",
    type: "berth-macvlan",
    master,
    vlan,
    stateDir,
    ipam: { type: "static", addresses: [{ address }] },
  };
}

function call(command: CniCall["command"], netns: string, config: unknown): PluginRun {
  return runCni(pluginPath("berth-macvlan"), {
    command,
    config,
    containerId: `ctr-${netns}`,
    netns: `/run/netns/${netns}`,
    ifName: "eth0",
    path: [pluginDir(), "/usr/lib/cni"],
  });
}

function callAsync(command: CniCall["command"], netns: string, config: unknown): Promise<number | null> {
  return new Promise((resolve) => {
    const p = spawn(pluginPath("berth-macvlan"), [], {
      env: {
        PATH: process.env.PATH,
        CNI_COMMAND: command,
        CNI_CONTAINERID: `ctr-${netns}`,
        CNI_NETNS: `/run/netns/${netns}`,
        CNI_IFNAME: "eth0",
        CNI_PATH: `${pluginDir()}:/usr/lib/cni`,
      },
      stdio: ["pipe", "ignore", "ignore"],
    });
    p.on("exit", (code) => resolve(code));
    p.stdin.end(JSON.stringify(config));
  });
}

function ping(from: string, to: string): { ok: boolean; output: string } {
  const r = spawnSync("ip", ["netns", "exec", from, "ping", "-c", "1", "-W", "2", to], { encoding: "utf8" });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

const pods = {
  a: { vlan: 101, address: "10.101.0.2/24" },
  b: { vlan: 101, address: "10.101.0.3/24" },
  c: { vlan: 102, address: "10.102.0.2/24" },
  d: { vlan: 103, address: "10.103.0.2/24" }, // on the pre-existing sub-interface
};
const ns: Record<string, string> = {};

describe("kernel lab: berth-macvlan on 802.1Q sub-interfaces", () => {
  beforeAll(() => {
    ip("link", "add", master, "type", "dummy");
    ip("link", "set", master, "up");
    // An operator's sub-interface: reused, never deleted.
    ip("link", "add", "link", master, "name", `${master}.103`, "type", "vlan", "id", "103");
    ip("link", "set", `${master}.103`, "up");
    for (const name of Object.keys(pods)) ns[name] = newNetns(name);
  });

  afterAll(() => {
    for (const n of netnsNames) spawnSync("ip", ["netns", "del", n]);
    spawnSync("ip", ["link", "del", master]);
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("ADD creates master.101 and master.102 (right IDs, berth alias, up) and reuses master.103", () => {
    for (const [name, pod] of Object.entries(pods)) {
      const r = call("ADD", ns[name]!, conf(pod.vlan, pod.address));
      expect(r.code, r.stdout).toBe(0);
    }
    for (const vlan of [101, 102]) {
      const sub = link(`${master}.${vlan}`);
      expect(sub.linkinfo.info_kind).toBe("vlan");
      expect(sub.linkinfo.info_data).toMatchObject({ protocol: "802.1Q", id: vlan });
      expect(sub.ifalias).toBe("berth:created");
      expect(sub.flags).toContain("UP");
    }
    expect(link(`${master}.103`).ifalias).toBeUndefined();
    expect(attachments(101).sort()).toEqual([keyOf(ns.a!), keyOf(ns.b!)].sort());
    expect(attachments(103)).toEqual([keyOf(ns.d!)]);
    const eth0 = link("eth0", ns.a);
    expect(eth0.linkinfo).toMatchObject({ info_kind: "macvlan", info_data: { mode: "bridge" } });
    expect(eth0.link_netnsid).toBeDefined();
  });

  it("two pods on the same VLAN reach each other; CHECK verifies the parent VLAN", () => {
    const ab = ping(ns.a!, "10.101.0.3");
    expect(ab.ok, ab.output).toBe(true);
    const add = JSON.parse(ip("-n", ns.a!, "-j", "link", "show", "eth0"))[0];
    const prevResult = {
      cniVersion: "1.0.0",
      interfaces: [{ name: "eth0", mac: add.address, sandbox: `/run/netns/${ns.a}` }],
      ips: [{ interface: 0, address: pods.a.address }],
    };
    expect(call("CHECK", ns.a!, { ...conf(101, pods.a.address), prevResult }).code).toBe(0);
    const wrong = call("CHECK", ns.a!, { ...conf(102, pods.a.address), prevResult });
    expect(wrong.json.code).toBe(120);
    expect(wrong.json.msg).toContain("not on VLAN 102");
  });

  it("DEL keeps a sub-interface while a pod uses it, removes the one Berth created with its last pod, never the pre-existing one", () => {
    expect(call("DEL", ns.a!, conf(101, pods.a.address)).code).toBe(0);
    expect(link(`${master}.101`)).toBeDefined(); // b still on it
    expect(link("eth0", ns.b)).toBeDefined();
    expect(attachments(101)).toEqual([keyOf(ns.b!)]);
    expect(call("DEL", ns.b!, conf(101, pods.b.address)).code).toBe(0);
    expect(link(`${master}.101`)).toBeUndefined();
    expect(existsSync(recordFile(101))).toBe(false); // the record goes with its last attachment
    expect(call("DEL", ns.c!, conf(102, pods.c.address)).code).toBe(0);
    expect(link(`${master}.102`)).toBeUndefined();
    expect(existsSync(recordFile(102))).toBe(false);
    expect(call("DEL", ns.d!, conf(103, pods.d.address)).code).toBe(0);
    expect(link(`${master}.103`)).toBeDefined();
    expect(existsSync(recordFile(103))).toBe(false); // kept sub-interface, but no pod left to record
    // A repeated DEL finds no record and changes nothing.
    expect(call("DEL", ns.b!, conf(101, pods.b.address)).code).toBe(0);
    expect(existsSync(recordFile(101))).toBe(false);
  });

  it("parallel ADDs and DELs on a new VLAN: one sub-interface, every pod attached, removed after the last DEL", async () => {
    const names = [1, 2, 3, 4].map((i) => newNetns(`par${i}`));
    const adds = await Promise.all(names.map((n, i) => callAsync("ADD", n, conf(104, `10.104.0.${i + 2}/24`))));
    expect(adds).toEqual([0, 0, 0, 0]);
    for (const n of names) expect(link("eth0", n)?.linkinfo.info_kind).toBe("macvlan");
    expect(link(`${master}.104`).ifalias).toBe("berth:created");
    expect(attachments(104).sort()).toEqual(names.map(keyOf).sort());
    const dels = await Promise.all(names.map((n, i) => callAsync("DEL", n, conf(104, `10.104.0.${i + 2}/24`))));
    expect(dels).toEqual([0, 0, 0, 0]);
    expect(link(`${master}.104`)).toBeUndefined();
    expect(existsSync(recordFile(104))).toBe(false);
  });

  it("a same-named link that is not that VLAN is an error naming it", () => {
    ip("link", "add", `${master}.105`, "type", "dummy");
    const n = newNetns("clash");
    const r = call("ADD", n, conf(105, "10.105.0.2/24"));
    expect(r.json.code).toBe(7);
    expect(r.json.msg).toContain(`"${master}.105" exists but is a dummy link`);
    expect(link("eth0", n)).toBeUndefined();
    ip("link", "del", `${master}.105`);
  });
});
