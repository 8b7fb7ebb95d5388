// The `bandwidth` capability through libcni itself, the library containerd and CRI-O call: cnitool
// built from Debian's libcni (test/helpers/cnitool.ts) runs AddNetworkList / CheckNetworkList /
// DelNetworkList on a conflist whose Berth plugin declares "capabilities": {"bandwidth": true},
// with RuntimeConf.CapabilityArgs["bandwidth"] from CAP_ARGS. libcni injects runtimeConfig.bandwidth,
// caches the result and hands it back as prevResult for CHECK and DEL. berth-macvlan takes its
// address from a real ipamd through berth-ipam; the traffic is real (iperf3 to the lan namespace).
import { type ChildProcess, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { destroyLab, type Lab, makeLab, newPod, podLink } from "../cni/macvlan-fixture";
import { type CnitoolCall, runCnitool } from "../helpers/cnitool";
import { type DaemonHandle, startIpamd } from "../helpers/ipamd";
import { createNetns, ipIn, ipJson, removeNetns, type TestNetns } from "../helpers/netns";
import { iperfServer, measureBits } from "../helpers/iperf";

const LIMIT = 10_000_000; // bit/s
const BURST = 100_000; // bits
const BOTH = { ingressRate: LIMIT, ingressBurst: BURST, egressRate: LIMIT, egressBurst: BURST };
const tmp = mkdtempSync(join(tmpdir(), "berth-libcni-bw-"));
const netconf = join(tmp, "net.d");
const cacheDir = join(tmp, "cache");
const PORT = 7201 + (process.pid % 1000);
let lab: Lab;
let daemon: DaemonHandle;
let server: ChildProcess | undefined;
let seq = 0;
const measured: Record<string, number> = {};

interface Qdisc {
  kind: string;
  handle: string;
  root?: boolean;
  parent?: string;
  options: { rate?: number; burst?: number; lat?: number };
}
const qdiscs = (ns: TestNetns, dev: string): Qdisc[] =>
  JSON.parse(execFileSync("tc", ["-n", ns.name, "-j", "qdisc", "show", "dev", dev], { encoding: "utf8" }));
const linkNames = (ns: TestNetns) => ipJson<{ ifname: string }[]>(ns, "link", "show").map((l) => l.ifname);

function writeConflist(name: string, plugin: Record<string, unknown>): string {
  mkdirSync(netconf, { recursive: true });
  writeFileSync(join(netconf, `${name}.conflist`), JSON.stringify({ cniVersion: "1.0.0", name, plugins: [plugin] }));
  return name;
}

async function attached(): Promise<string[]> {
  const r = await daemon.client.reservations({});
  return r.reservations.filter((x) => x.state === "attached").map((x) => x.ip);
}

beforeAll(async () => {
  lab = makeLab("lcb", ["10.76.0.1/24"]);
  daemon = await startIpamd({
    config: {
      pools: [
        {
          name: "lan",
          subnet: "10.76.0.0/24",
          gateway: "10.76.0.1",
          ranges: [{ start: "10.76.0.10", end: "10.76.0.99" }],
          networks: ["underlay"],
        },
      ],
      cooldownSeconds: 0,
    },
  });
  const macvlan = { type: "berth-macvlan", master: "m0", stateDir: join(tmp, "mv"), ipam: { type: "berth-ipam", socket: daemon.socket } };
  writeConflist("underlay", { ...macvlan, capabilities: { bandwidth: true } });
  writeConflist("nocap", { ...macvlan, ipam: { type: "static", addresses: [{ address: "10.76.0.200/24" }] } });
  server = iperfServer(lab.lan.name, PORT);
}, 120_000);

afterAll(async () => {
  server?.kill();
  destroyLab(lab);
  await daemon?.stop();
  if (daemon) rmSync(daemon.dir, { recursive: true, force: true });
  rmSync(tmp, { recursive: true, force: true });
  console.log("measured bit/s through libcni + berth-macvlan:", JSON.stringify(measured));
});

/** libcni in the lab's host namespace (where the master NIC is) for one pod. */
function libcni(command: CnitoolCall["command"], pod: TestNetns, containerId: string, network = "underlay", capArgs?: unknown) {
  return runCnitool({
    command,
    network,
    netns: pod.path,
    containerId,
    netconfPath: netconf,
    cniPath: lab.path,
    cacheDir,
    ...(capArgs === undefined ? {} : { capArgs: { bandwidth: capArgs } }),
    via: ["ip", "netns", "exec", lab.host.name],
  });
}

function measure(pod: TestNetns, reverse: boolean): number {
  return measureBits(pod.name, "10.76.0.1", PORT, reverse);
}

describe("berth-macvlan + berth-ipam through libcni with the bandwidth capability", () => {
  it("ADD shapes both ways (iperf3 at the limit); CHECK passes, fails on a changed limit; DEL removes ifb, qdiscs, link, IP", async () => {
    const pod = newPod(lab);
    const id = `lcb-${process.pid}-${seq++}`;
    const add = libcni("add", pod, id, "underlay", BOTH);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.json).toMatchObject({ cniVersion: "1.0.0", interfaces: [{ name: "eth0", sandbox: pod.path }] });
    const ip = add.json.ips[0].address.split("/")[0];
    expect(await attached()).toContain(ip);
    expect(existsSync(join(cacheDir, "results", `underlay-${id}-eth0`))).toBe(true);

    // rate and burst in bytes: 10 Mbit/s = 1250000 B/s, 100000 bits = 12500 B
    const shaped = { kind: "tbf", handle: "1:", root: true, options: expect.objectContaining({ rate: LIMIT / 8, burst: BURST / 8 }) };
    expect(qdiscs(pod, "eth0")).toEqual(
      expect.arrayContaining([expect.objectContaining(shaped), expect.objectContaining({ kind: "ingress", handle: "ffff:" })]),
    );
    expect(qdiscs(pod, "ifb-eth0")).toEqual([expect.objectContaining(shaped)]);
    const filters = execFileSync("tc", ["-n", pod.name, "filter", "show", "dev", "eth0", "ingress"], { encoding: "utf8" });
    expect(filters).toContain("mirred (Egress Redirect to device ifb-eth0)");

    measured.egress = measure(pod, false);
    measured.ingress = measure(pod, true);
    expect(measured.egress).toBeGreaterThan(0.8 * LIMIT);
    expect(measured.egress).toBeLessThan(1.2 * LIMIT);
    expect(measured.ingress).toBeGreaterThan(0.8 * LIMIT);
    expect(measured.ingress).toBeLessThan(1.2 * LIMIT);

    const check = libcni("check", pod, id, "underlay", BOTH);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    // CHECK gets the capability args of this call (the runtime's current view), prevResult from libcni's cache
    const slower = libcni("check", pod, id, "underlay", { ...BOTH, egressRate: LIMIT / 2 });
    expect(slower.code).toBe(1);
    expect(slower.json).toMatchObject({ code: 120 });
    expect(slower.json.msg).toContain("egress limit: tbf on eth0 has rate 10000000 bit/s, the config says 5000000 bit/s");

    const del = libcni("del", pod, id, "underlay", BOTH);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(linkNames(pod)).toEqual(["lo"]); // ifb-eth0 and eth0 (with their qdiscs) are gone
    expect(podLink(pod)).toBeUndefined();
    expect(await attached()).not.toContain(ip);
    expect(existsSync(join(cacheDir, "results", `underlay-${id}-eth0`))).toBe(false);
    expect(libcni("del", pod, id, "underlay", BOTH).code).toBe(0); // DEL again is fine
  }, 120_000);

  it("containerd's form, all four keys with 0 for the direction without annotation: only egress is shaped, no ifb", () => {
    const pod = newPod(lab);
    const id = `lcb-${process.pid}-${seq++}`;
    const bw = { ingressRate: 0, ingressBurst: 0, egressRate: LIMIT, egressBurst: BURST };
    const add = libcni("add", pod, id, "underlay", bw);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(qdiscs(pod, "eth0")).toEqual([
      expect.objectContaining({ kind: "tbf", root: true, options: expect.objectContaining({ rate: LIMIT / 8 }) }),
    ]);
    expect(linkNames(pod)).not.toContain("ifb-eth0");
    expect(libcni("check", pod, id, "underlay", bw).code).toBe(0);
    expect(libcni("del", pod, id, "underlay", bw).code).toBe(0);
  });

  it("a plugin that does not declare the capability gets no runtimeConfig.bandwidth from libcni, so nothing is shaped", () => {
    const pod = newPod(lab);
    const id = `lcb-${process.pid}-${seq++}`;
    const add = libcni("add", pod, id, "nocap", BOTH);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(qdiscs(pod, "eth0").map((q) => q.kind)).not.toContain("tbf");
    expect(linkNames(pod)).not.toContain("ifb-eth0");
    expect(libcni("check", pod, id, "nocap", BOTH).code).toBe(0);
    expect(libcni("del", pod, id, "nocap", BOTH).code).toBe(0);
  });

  it("DEL after the pod's namespace vanished succeeds and gives the address back", async () => {
    const pod = newPod(lab);
    const id = `lcb-${process.pid}-${seq++}`;
    const add = libcni("add", pod, id, "underlay", BOTH);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const ip = add.json.ips[0].address.split("/")[0];
    removeNetns(pod);
    const del = libcni("del", pod, id, "underlay", BOTH);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(await attached()).not.toContain(ip);
  });

  const bad: [string, Record<string, number>, string][] = [
    [
      "a zero rate with a nonzero burst",
      { ingressRate: 0, ingressBurst: BURST, egressRate: LIMIT, egressBurst: BURST },
      "runtimeConfig.bandwidth.ingressRate is 0 but",
    ],
    [
      "a rate over 2^32-1 bytes/s",
      { ingressRate: 0, ingressBurst: 0, egressRate: 40_000_000_000, egressBurst: BURST },
      "runtimeConfig.bandwidth.egressRate 40000000000 bit/s is over 2^32-1 bytes/s",
    ],
  ];
  for (const [what, bw, msg] of bad) {
    it(`${what} is refused: libcni reports the plugin's code 7; nothing in the pod, no address held`, async () => {
      const pod = newPod(lab);
      const before = await attached();
      const add = libcni("add", pod, `lcb-${process.pid}-${seq++}`, "underlay", bw);
      expect(add.code).toBe(1);
      expect(add.json).toMatchObject({ code: 7 });
      expect(add.json.msg).toContain(msg);
      expect(linkNames(pod)).toEqual(["lo"]);
      expect(await attached()).toEqual(before);
    });
  }
});

describe("berth-hostdev through libcni with the bandwidth capability", () => {
  let host: TestNetns;
  beforeAll(() => {
    host = createNetns("lcbhd");
    writeConflist("eni", { type: "berth-hostdev", device: "eni0", stateDir: join(tmp, "hd"), capabilities: { bandwidth: true } });
  });
  afterAll(() => removeNetns(host));

  it("ADD shapes the moved device in the pod, CHECK passes, DEL removes the ifb and gives the device back without qdiscs", () => {
    ipIn(host, "link", "add", "eni0", "type", "veth", "peer", "name", "eni0p");
    const pod = createNetns("lcbhdp");
    try {
      const call = (command: CnitoolCall["command"]) =>
        runCnitool({
          command,
          network: "eni",
          netns: pod.path,
          containerId: `lcbhd-${process.pid}`,
          ifName: "eth1",
          netconfPath: netconf,
          cniPath: lab.path,
          cacheDir,
          capArgs: { bandwidth: BOTH },
          via: ["ip", "netns", "exec", host.name],
        });
      const add = call("add");
      expect(add.code, add.stdout + add.stderr).toBe(0);
      expect(
        qdiscs(pod, "eth1")
          .map((q) => q.kind)
          .sort(),
      ).toEqual(["ingress", "tbf"]);
      expect(qdiscs(pod, "ifb-eth1")).toEqual([
        expect.objectContaining({ kind: "tbf", options: expect.objectContaining({ rate: LIMIT / 8 }) }),
      ]);
      const check = call("check");
      expect(check.code, check.stdout + check.stderr).toBe(0);
      const del = call("del");
      expect(del.code, del.stdout + del.stderr).toBe(0);
      expect(linkNames(pod)).toEqual(["lo"]);
      expect(linkNames(host)).toContain("eni0");
      expect(qdiscs(host, "eni0").map((q) => q.kind)).not.toContain("tbf");
      expect(qdiscs(host, "eni0").map((q) => q.kind)).not.toContain("ingress");
    } finally {
      removeNetns(pod);
    }
  });
});
