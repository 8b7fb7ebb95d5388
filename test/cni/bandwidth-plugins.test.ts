// The `bandwidth` capability through the BUILT plugins, run like a runtime runs them: berth-macvlan
// and berth-hostdev shape inside the pod (tbf on the interface, ifb for ingress), CHECK compares,
// DEL removes (also after the namespace vanished), bad values are refused with code 7; berth-sriov
// maps egressRate onto the VF's max_tx_rate and refuses ingress. And why chaining the reference
// bandwidth plugin after berth-macvlan cannot work.
import { execFileSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNetns, ipIn, ipJson, removeNetns, type TestNetns } from "../helpers/netns";
import { type CniCall, fakePfSriovPath, pluginPath, runCni } from "../helpers/plugins";
import { cni, destroyLab, macvlan, makeLab, newPod, podLink, type Lab } from "./macvlan-fixture";
import { iperfServer, measureBits } from "../helpers/iperf";
import { UNCONFIGURED_VF } from "../helpers/fake-pf";

const LIMIT = 10_000_000;
const BURST = 100_000;
const BOTH = { ingressRate: LIMIT, ingressBurst: BURST, egressRate: LIMIT, egressBurst: BURST };
const tmp = mkdtempSync(join(tmpdir(), "berth-bw-"));
let lab: Lab;
let seq = 0;
let server: ChildProcess | undefined;
const PORT = 6201 + (process.pid % 1000);
const measured: Record<string, number> = {};

const tcIn = (ns: TestNetns, ...args: string[]) => execFileSync("tc", ["-n", ns.name, ...args], { encoding: "utf8" });
const hasLink = (ns: TestNetns, name: string) => ipJson<{ ifname: string }[]>(ns, "link", "show").some((l) => l.ifname === name);

beforeAll(() => {
  lab = makeLab("bw");
  server = iperfServer(lab.lan.name, PORT);
}, 120_000);

afterAll(() => {
  server?.kill();
  destroyLab(lab);
  rmSync(tmp, { recursive: true, force: true });
  console.log("measured bit/s through berth-macvlan:", JSON.stringify(measured));
});

const mvConf = (extra: Record<string, unknown> = {}) => ({
  cniVersion: "1.0.0",
  name: "underlay",
  type: "berth-macvlan",
  master: "m0",
  stateDir: join(tmp, "mv"),
  ipam: { type: "static", addresses: [{ address: "10.77.0.5/24", gateway: "10.77.0.1" }] },
  ...extra,
});

function mvAttach(config: Record<string, unknown>) {
  const pod = newPod(lab);
  const call = { containerId: `bw-${process.pid}-${seq++}`, netns: pod.path, ifName: "eth0" };
  return { pod, call, add: cni(lab, macvlan(), { command: "ADD", config, ...call }) };
}

function measure(pod: TestNetns, reverse: boolean): number {
  return measureBits(pod.name, "10.77.0.1", PORT, reverse);
}

describe("berth-macvlan with the bandwidth capability", () => {
  it("ADD shapes both directions in the pod, traffic runs at the limit; CHECK passes, then tells changed limits; " +
    "DEL removes the ifb and the pod interface", () => {
    const config = mvConf({ capabilities: { bandwidth: true }, runtimeConfig: { bandwidth: BOTH } });
    const { pod, call, add } = mvAttach(config);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(tcIn(pod, "qdisc", "show", "dev", "eth0")).toMatch(/qdisc tbf 1: root .*rate 10Mbit/);
    expect(tcIn(pod, "qdisc", "show", "dev", "eth0")).toContain("qdisc ingress ffff:");
    expect(tcIn(pod, "qdisc", "show", "dev", "ifb-eth0")).toMatch(/qdisc tbf 1: root .*rate 10Mbit/);
    expect(tcIn(pod, "filter", "show", "dev", "eth0", "ingress")).toContain("mirred (Egress Redirect to device ifb-eth0)");
    expect(ipJson<{ ifalias?: string; flags: string[] }[]>(pod, "link", "show", "ifb-eth0")[0]).toMatchObject({
      ifalias: "berth: ingress of eth0",
    });

    measured.egress = measure(pod, false);
    measured.ingress = measure(pod, true);
    expect(measured.egress).toBeGreaterThan(0.8 * LIMIT);
    expect(measured.egress).toBeLessThan(1.2 * LIMIT);
    expect(measured.ingress).toBeGreaterThan(0.8 * LIMIT);
    expect(measured.ingress).toBeLessThan(1.2 * LIMIT);

    const check = (bw: unknown) =>
      cni(lab, macvlan(), { command: "CHECK", config: { ...config, runtimeConfig: { bandwidth: bw }, prevResult: add.json }, ...call });
    expect(check(BOTH).code, check(BOTH).stdout).toBe(0);
    const slower = check({ ...BOTH, egressRate: 5_000_000 });
    expect(slower.json).toMatchObject({ code: 120 });
    expect(slower.json.msg).toContain("egress limit: tbf on eth0 has rate 10000000 bit/s, the config says 5000000 bit/s");
    const noIngress = check({ egressRate: LIMIT, egressBurst: BURST });
    expect(noIngress.json.msg).toContain("the pod has ifb ifb-eth0 shaping eth0's ingress, but the config asks for no ingress limit");

    const del = cni(lab, macvlan(), { command: "DEL", config, ...call });
    expect(del.code, del.stdout).toBe(0);
    expect(hasLink(pod, "ifb-eth0")).toBe(false);
    expect(podLink(pod)).toBeUndefined();
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
  }, 90_000);

  it(
    "the config's own keys win over the capability; " +
      "all four keys with 0 for one direction (as containerd sends them) shape only the other",
    () => {
      const config = mvConf({
        egressRate: 20_000_000,
        egressBurst: 200_000,
        ingressRate: 0,
        ingressBurst: 0,
        runtimeConfig: { bandwidth: BOTH },
      });
      const { pod, call, add } = mvAttach(config);
      expect(add.code, add.stdout).toBe(0);
      expect(tcIn(pod, "qdisc", "show", "dev", "eth0")).toMatch(/tbf 1: root .*rate 20Mbit/);
      expect(hasLink(pod, "ifb-eth0")).toBe(false);
      expect(cni(lab, macvlan(), { command: "CHECK", config: { ...config, prevResult: add.json }, ...call }).code).toBe(0);
      expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
    },
  );

  it("DEL after the pod's namespace vanished succeeds", () => {
    const config = mvConf({ runtimeConfig: { bandwidth: BOTH } });
    const { pod, call, add } = mvAttach(config);
    expect(add.code, add.stdout).toBe(0);
    removeNetns(pod);
    const del = cni(lab, macvlan(), { command: "DEL", config, ...call });
    expect(del.code, del.stdout).toBe(0);
    expect(del.stdout).toBe("");
  });

  const bad: [string, Record<string, unknown>, string, string][] = [
    [
      "a rate without a burst",
      { egressRate: LIMIT },
      "runtimeConfig.bandwidth.egressBurst is missing but runtimeConfig.bandwidth.egressRate is 10000000: a rate needs a burst",
      "at least one full packet",
    ],
    [
      "a burst without a rate",
      { ingressBurst: BURST },
      "runtimeConfig.bandwidth.ingressRate is missing but runtimeConfig.bandwidth.ingressBurst is 100000: a burst needs a rate",
      "leave out both",
    ],
    ["a zero rate with a burst", { ingressRate: 0, ingressBurst: BURST }, "runtimeConfig.bandwidth.ingressRate is 0 but", "> 0"],
    [
      "a burst too small for the MTU",
      { egressRate: LIMIT, egressBurst: 8000 },
      "runtimeConfig.bandwidth.egressBurst 8000 bits (1000 bytes) is smaller than " +
        "one full-size packet on eth0 (MTU 1500 + 14 bytes Ethernet header = 1514 bytes)",
      "use at least 12112 bits",
    ],
    [
      "a rate over 2^32-1 bytes/s",
      { egressRate: 40_000_000_000, egressBurst: BURST },
      "runtimeConfig.bandwidth.egressRate 40000000000 bit/s is over 2^32-1 bytes/s",
      "at most 34359738360 bit/s",
    ],
    [
      "a negative value",
      { egressRate: -1, egressBurst: BURST },
      "runtimeConfig.bandwidth.egressRate -1 is not a non-negative integer",
      "bits per second",
    ],
  ];
  for (const [what, bw, msg, fix] of bad) {
    it(`refuses ${what} with code 7 naming the field and the fix; nothing is left in the pod`, () => {
      const { pod, add } = mvAttach(mvConf({ runtimeConfig: { bandwidth: bw } }));
      expect(add.json).toMatchObject({ code: 7 });
      expect(add.json.msg).toContain(msg);
      expect(add.json.details).toContain(fix);
      expect(ipJson<{ ifname: string }[]>(pod, "link", "show").map((l) => l.ifname)).toEqual(["lo"]);
    });
  }

  it("the reference bandwidth plugin chained after berth-macvlan fails: it shapes a host-side veth, and a macvlan has none", () => {
    const config = mvConf();
    const { pod, call, add } = mvAttach(config);
    expect(add.code, add.stdout).toBe(0);
    const ref = cni(lab, "/usr/lib/cni/bandwidth", {
      command: "ADD",
      ...call,
      config: { cniVersion: "1.0.0", name: "underlay", type: "bandwidth", runtimeConfig: { bandwidth: BOTH }, prevResult: add.json },
    });
    expect(ref.code).not.toBe(0);
    expect(ref.json.msg).toContain("container interface eth0 has no veth peer");
    expect(tcIn(pod, "qdisc", "show", "dev", "eth0")).not.toContain("tbf"); // nothing shaped
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
  });
});

describe("berth-hostdev with the bandwidth capability", () => {
  let host: TestNetns;
  beforeAll(() => {
    host = createNetns("bwhd");
  });
  afterAll(() => removeNetns(host));
  const run = (command: CniCall["command"], netns: string, config: unknown, containerId: string) =>
    runCni(pluginPath("berth-hostdev"), { command, config, containerId, netns, ifName: "eth1", via: ["ip", "netns", "exec", host.name] });

  it(
    "ADD shapes the moved device in the pod, CHECK compares, DEL removes the ifb and gives the device back unshaped; " +
      "DEL after the netns vanished works",
    () => {
      ipIn(host, "link", "add", "eni0", "type", "veth", "peer", "name", "eni0p");
      const pod = createNetns("bwhdp");
      try {
        const config = {
          cniVersion: "1.1.0",
          name: "eni-net",
          type: "berth-hostdev",
          device: "eni0",
          stateDir: join(tmp, "hd"),
          runtimeConfig: { bandwidth: BOTH },
        };
        const add = run("ADD", pod.path, config, "hd1");
        expect(add.code, add.stdout + add.stderr).toBe(0);
        expect(tcIn(pod, "qdisc", "show", "dev", "eth1")).toMatch(/tbf 1: root .*rate 10Mbit/);
        expect(tcIn(pod, "filter", "show", "dev", "eth1", "ingress")).toContain("Egress Redirect to device ifb-eth1");
        expect(run("CHECK", pod.path, { ...config, prevResult: add.json }, "hd1").code).toBe(0);
        const changed = run(
          "CHECK",
          pod.path,
          { ...config, runtimeConfig: { bandwidth: { ...BOTH, ingressBurst: 2 * BURST } }, prevResult: add.json },
          "hd1",
        );
        expect(changed.json).toMatchObject({ code: 120 });
        expect(changed.json.msg).toContain("ingress limit: tbf on ifb-eth1 has burst 100000 bits, the config says 200000 bits");
        const del = run("DEL", pod.path, config, "hd1");
        expect(del.code, del.stdout).toBe(0);
        expect(hasLink(pod, "ifb-eth1")).toBe(false);
        expect(hasLink(host, "eni0")).toBe(true);
        expect(tcIn(host, "qdisc", "show", "dev", "eni0")).not.toMatch(/tbf|ingress/);

        const again = run("ADD", pod.path, config, "hd2");
        expect(again.code, again.stdout).toBe(0);
        // the kernel hands a NIC back when its namespace goes; a veth is destroyed, so move it back as the kernel would
        ipIn(pod, "link", "set", "eth1", "netns", host.name);
        removeNetns(pod);
        const gone = run("DEL", pod.path, config, "hd2");
        expect(gone.code, gone.stdout).toBe(0);
      } finally {
        removeNetns(pod);
      }
    },
  );

  it("a burst smaller than the device's MTU is refused with code 7 and the device goes back", () => {
    ipIn(host, "link", "add", "eni1", "type", "veth", "peer", "name", "eni1p");
    ipIn(host, "link", "set", "eni1", "mtu", "9000");
    const pod = createNetns("bwhdq");
    try {
      const config = {
        cniVersion: "1.1.0",
        name: "eni-net",
        type: "berth-hostdev",
        device: "eni1",
        stateDir: join(tmp, "hd"),
        runtimeConfig: { bandwidth: { egressRate: LIMIT, egressBurst: 5000 * 8 } },
      }; // enough for MTU 1500, not for 9000
      const add = run("ADD", pod.path, config, "hd3");
      expect(add.json).toMatchObject({ code: 7 });
      expect(add.json.msg).toContain(
        "egressBurst 40000 bits (5000 bytes) is smaller than one full-size packet on eth1 (MTU 9000 + 14 bytes",
      );
      expect(add.json.details).toContain("use at least 72112 bits");
      expect(hasLink(host, "eni1")).toBe(true);
      expect(ipJson<{ ifname: string }[]>(pod, "link", "show").map((l) => l.ifname)).toEqual(["lo"]);
    } finally {
      removeNetns(pod);
    }
  });
});

describe("berth-sriov with the bandwidth capability", () => {
  let host: TestNetns;
  beforeAll(() => {
    host = createNetns("bwsv");
  });
  afterAll(() => removeNetns(host));

  /** A PF and a VF netdev (veths), the sysfs tree that links them, the fake PF's VF table (see sriov.test.ts). */
  function rig(n: number) {
    const dir = join(tmp, `sv${n}`),
      sysfs = join(dir, "sys"),
      fake = join(dir, "pf"),
      pf = `bwpf${n}`,
      vf = `bwvf${n}`;
    ipIn(host, "link", "add", pf, "type", "veth", "peer", "name", `${pf}p`);
    ipIn(host, "link", "add", vf, "type", "veth", "peer", "name", `${vf}p`);
    const dev = (a: string) => join(sysfs, "bus/pci/devices", a);
    for (const d of ["iavf", "ice"]) mkdirSync(join(sysfs, "bus/pci/drivers", d), { recursive: true });
    mkdirSync(join(dev("0000:3b:00.0"), "net", pf), { recursive: true });
    mkdirSync(join(dev("0000:3b:02.0"), "net", vf), { recursive: true });
    symlinkSync("../0000:3b:02.0", join(dev("0000:3b:00.0"), "virtfn0"));
    symlinkSync("../../../bus/pci/drivers/ice", join(dev("0000:3b:00.0"), "driver"));
    symlinkSync("../0000:3b:00.0", join(dev("0000:3b:02.0"), "physfn"));
    symlinkSync("../../../bus/pci/drivers/iavf", join(dev("0000:3b:02.0"), "driver"));
    mkdirSync(fake, { recursive: true });
    const orig = { vf: 0, ...UNCONFIGURED_VF };
    writeFileSync(join(fake, `${pf}.json`), JSON.stringify({ vfs: [orig] }));
    const ops = () =>
      existsSync(join(fake, "ops.jsonl"))
        ? readFileSync(join(fake, "ops.jsonl"), "utf8")
            .trim()
            .split("\n")
            .map((l) => JSON.parse(l).op as string)
        : [];
    const conf = (extra: Record<string, unknown>) => ({
      cniVersion: "1.1.0",
      name: "sriov-net",
      type: "berth-sriov",
      deviceID: "0000:3b:02.0",
      stateDir: join(dir, "state"),
      sysfsRoot: sysfs,
      ...extra,
    });
    const run = (command: CniCall["command"], pod: TestNetns, config: unknown) =>
      runCni(fakePfSriovPath(), {
        command,
        config,
        containerId: `sv${n}`,
        netns: pod.path,
        ifName: "net1",
        via: ["ip", "netns", "exec", host.name],
        env: { BERTH_SRIOV_FAKE_PF: fake },
      });
    return { ops, conf, run };
  }

  it("egressRate becomes the VF's max_tx_rate in Mbit/s (DEL restores it); no tc in the pod", () => {
    const r = rig(0);
    const pod = createNetns("bwsvp");
    try {
      const config = r.conf({
        runtimeConfig: { bandwidth: { egressRate: 25_000_000, egressBurst: BURST, ingressRate: 0, ingressBurst: 0 } },
      });
      const add = r.run("ADD", pod, config);
      expect(add.code, add.stdout + add.stderr).toBe(0);
      expect(r.ops()).toContain("min_tx_rate 0 max_tx_rate 25");
      expect(tcIn(pod, "qdisc", "show", "dev", "net1")).not.toContain("tbf");
      expect(r.run("DEL", pod, config).code).toBe(0);
      expect(r.ops()).toContain("min_tx_rate 0 max_tx_rate 0");
    } finally {
      removeNetns(pod);
    }
  });

  it("an ingress limit is refused (code 2): a VF cannot shape what it receives; rates in the config win over the capability", () => {
    const r = rig(1);
    const pod = createNetns("bwsvq");
    try {
      const refused = r.run("ADD", pod, r.conf({ runtimeConfig: { bandwidth: BOTH } }));
      expect(refused.json).toMatchObject({ code: 2 });
      expect(refused.json.msg).toContain(
        "runtimeConfig.bandwidth.ingressRate 10000000 is not supported by berth-sriov: a VF cannot shape the traffic it receives",
      );
      expect(r.ops()).toEqual([]);
      const config = r.conf({ max_tx_rate: 300, runtimeConfig: { bandwidth: BOTH } });
      const add = r.run("ADD", pod, config);
      expect(add.code, add.stdout).toBe(0);
      expect(r.ops()).toContain("min_tx_rate 0 max_tx_rate 300");
      expect(r.run("DEL", pod, config).code).toBe(0);
    } finally {
      removeNetns(pod);
    }
  });
});
