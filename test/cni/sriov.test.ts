// berth-sriov through the BUILT executable in a test "host" namespace, with a fake sysfs tree built
// here (PF 0000:3b:00.0 with virtfn0 -> VF 0000:3b:02.0 (iavf) and virtfn1 -> 0000:3b:02.1
// (vfio-pci)) whose VF netdevs are real veth links that really move into and out of pods.
//
// This kernel has no SR-IOV: the PF-side "ip link set PF vf N ..." requests are the one thing not
// sent. A TEST build of the plugin (test/helpers/berth-sriov-fake-pf.ts, never shipped) encodes each
// request exactly as it would send it and records it (ops.jsonl under BERTH_SRIOV_FAKE_PF) against
// a VF table file; the bytes are compared with iproute2's captures. The shipped binary is run too:
// BERTH_SRIOV_FAKE_PF has no effect on it.
// Everything else (sysfs parsing, netdev move, rename, MTU/MAC, addresses, state files, locks) is real.
import { mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectCniError } from "../helpers/cni-error";
import { addrsIn, hasLink, linkIn, useHostNamespace } from "../helpers/host";
import { startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { ipIn, ipJson, removeNetns, type TestNetns } from "../helpers/netns";
import { fakePfSriovPath, pluginPath, runCni, type CniCall } from "../helpers/plugins";
import { UNCONFIGURED_VF } from "../helpers/fake-pf";

const ROOT = join(import.meta.dirname, "../..");
const hx = useHostNamespace("sv");
let host: TestNetns;
const tmp = hx.tmp;
let exe: string;
let seq = 0;

beforeAll(() => {
  exe = fakePfSriovPath();
  host = hx.host;
}, 180_000);

const pod = () => hx.pod();

interface Rig {
  sysfs: string;
  fake: string;
  stateDir: string;
  pf: string;
  vf0: string;
  vf0Mac: string;
  ops(): { op: string; hex: string; settings: Record<string, unknown> }[];
  table(): any;
  clearOps(): void;
}

/** PF + VF netdevs as veths in the host namespace, the sysfs tree, the fake PF table. */
function rig(): Rig {
  const n = seq++;
  const dir = join(tmp, `rig${n}`);
  const sysfs = join(dir, "sys");
  const fake = join(dir, "pf");
  const stateDir = join(dir, "state");
  const pf = `pf${n}x`,
    vf0 = `vf${n}x0`;
  ipIn(host, "link", "add", pf, "type", "veth", "peer", "name", `${pf}p`);
  ipIn(host, "link", "add", vf0, "type", "veth", "peer", "name", `${vf0}p`);
  ipIn(host, "link", "set", `${vf0}p`, "up");
  ipIn(host, "link", "set", vf0, "mtu", "1500");
  const dev = (a: string) => join(sysfs, "bus/pci/devices", a);
  for (const d of ["iavf", "vfio-pci", "ice"]) mkdirSync(join(sysfs, "bus/pci/drivers", d), { recursive: true });
  mkdirSync(join(dev("0000:3b:00.0"), "net", pf), { recursive: true });
  mkdirSync(join(dev("0000:3b:02.0"), "net", vf0), { recursive: true });
  mkdirSync(dev("0000:3b:02.1"), { recursive: true });
  symlinkSync("../0000:3b:02.0", join(dev("0000:3b:00.0"), "virtfn0"));
  symlinkSync("../0000:3b:02.1", join(dev("0000:3b:00.0"), "virtfn1"));
  symlinkSync("../../../bus/pci/drivers/ice", join(dev("0000:3b:00.0"), "driver"));
  for (const vf of ["0000:3b:02.0", "0000:3b:02.1"]) symlinkSync("../0000:3b:00.0", join(dev(vf), "physfn"));
  symlinkSync("../../../bus/pci/drivers/iavf", join(dev("0000:3b:02.0"), "driver"));
  symlinkSync("../../../bus/pci/drivers/vfio-pci", join(dev("0000:3b:02.1"), "driver"));
  // class/net/<pf>/device -> the PF's PCI device (how pf + vf finds it)
  mkdirSync(join(sysfs, "class/net", pf), { recursive: true });
  symlinkSync("../../../bus/pci/devices/0000:3b:00.0", join(sysfs, "class/net", pf, "device"));
  mkdirSync(fake, { recursive: true });
  writeFileSync(
    join(fake, `${pf}.json`),
    JSON.stringify({
      vfs: [
        { vf: 0, ...UNCONFIGURED_VF },
        { vf: 1, ...UNCONFIGURED_VF },
      ],
    }),
  );
  const vf0Mac = ipJson<{ address: string }[]>(host, "link", "show", vf0)[0]!.address;
  return {
    sysfs,
    fake,
    stateDir,
    pf,
    vf0,
    vf0Mac,
    ops: () =>
      existsSync(join(fake, "ops.jsonl"))
        ? readFileSync(join(fake, "ops.jsonl"), "utf8")
            .trim()
            .split("\n")
            .filter(Boolean)
            .map((l) => JSON.parse(l))
        : [],
    table: () => JSON.parse(readFileSync(join(fake, `${pf}.json`), "utf8")),
    clearOps: () => rmSync(join(fake, "ops.jsonl"), { force: true }),
  };
}

function conf(r: Rig, extra: Record<string, unknown>) {
  return { cniVersion: "1.1.0", name: "sriov-net", type: "berth-sriov", stateDir: r.stateDir, sysfsRoot: r.sysfs, ...extra };
}

function run(
  r: Rig,
  command: CniCall["command"],
  p: TestNetns | string | undefined,
  config: unknown,
  containerId: string,
  cniArgs?: string,
) {
  return hx.run(exe, {
    command,
    config,
    containerId,
    ifName: "net1",
    env: { BERTH_SRIOV_FAKE_PF: r.fake },
    ...(p === undefined ? {} : { netns: typeof p === "string" ? p : p.path }),
    ...(cniArgs ? { cniArgs } : {}),
  });
}

/** iproute2's captured request with our sequence number (0) and the PF's ifindex. */
function fixtureHex(name: string, pfIndex: number): string {
  const fx = JSON.parse(readFileSync(join(ROOT, "test/fixtures/iproute2", `${name}.json`), "utf8"));
  const b = Buffer.from(fx.hex, "hex");
  b.writeUInt32LE(0, 8);
  b.writeInt32LE(pfIndex, 20);
  return b.toString("hex");
}
const ifindex = (name: string) => ipJson<{ ifindex: number }[]>(host, "link", "show", name)[0]!.ifindex;

const FULL = {
  deviceID: "0000:3b:02.0",
  vlan: 100,
  vlanQoS: 3,
  mac: "02:00:00:00:01:01",
  min_tx_rate: 100,
  max_tx_rate: 1000,
  spoofchk: "off",
  trust: "on",
  link_state: "enable",
  mtu: 1400,
};

describe("berth-sriov", () => {
  it("ADD applies every VF setting through the PF byte-exact as iproute2, moves the VF netdev in; DEL restores in reverse order", () => {
    const r = rig();
    const p = pod();
    const config = conf(r, FULL);
    const add = run(r, "ADD", p, config, "ctr-s1");
    expect(add.stderr).toBe("");
    expect(add.json).toEqual({
      cniVersion: "1.1.0",
      interfaces: [{ name: "net1", mac: "02:00:00:00:01:01", mtu: 1400, sandbox: p.path, pciID: "0000:3b:02.0" }],
      dns: {},
    });
    expect(hasLink(host, r.vf0)).toBe(false);
    expect(linkIn(p, "net1")).toMatchObject({ address: "02:00:00:00:01:01", mtu: 1400 });
    expect(linkIn(p, "net1").flags).toContain("UP");

    const applied = r.ops();
    expect(applied.map((o) => o.op)).toEqual([
      "vlan 100 qos 3 proto 802.1Q",
      "mac 02:00:00:00:01:01",
      "min_tx_rate 100 max_tx_rate 1000",
      "spoofchk off",
      "trust on",
      "state enable",
    ]);
    const pfIndex = ifindex(r.pf);
    expect(applied.map((o) => o.hex)).toEqual(
      ["vf-vlan", "vf-mac", "vf-rate", "vf-spoofchk-off", "vf-trust-on", "vf-state-enable"].map((f) => fixtureHex(f, pfIndex)),
    );

    const st = JSON.parse(readFileSync(join(r.stateDir, "ctr-s1@net1.json"), "utf8"));
    expect(st.extra.vf).toMatchObject({ vf: 0, ...UNCONFIGURED_VF });
    expect(st.original).toMatchObject({ name: r.vf0, mtu: 1500, mac: r.vf0Mac });
    expect(JSON.parse(readFileSync(join(r.stateDir, "vf-0000:3b:02.0.json"), "utf8"))).toMatchObject({
      containerId: "ctr-s1",
      ifName: "net1",
    });

    r.clearOps();
    const del = run(r, "DEL", p, config, "ctr-s1");
    expect(del.stdout + del.stderr).toBe("");
    expect(del.code).toBe(0);
    expect(r.ops().map((o) => o.op)).toEqual([
      "state auto",
      "trust off",
      "spoofchk on",
      "min_tx_rate 0 max_tx_rate 0",
      "mac 00:00:00:00:00:00",
      "vlan 0 qos 0 proto 802.1Q",
    ]);
    expect(r.ops()[5]!.hex).toBe(fixtureHex("vf-vlan-clear", pfIndex));
    expect(r.table().vfs[0]).toEqual({ vf: 0, ...UNCONFIGURED_VF });
    expect(hasLink(p, "net1")).toBe(false);
    const back = linkIn(host, r.vf0);
    expect(back.mtu).toBe(1500);
    expect(back.address).toBe(r.vf0Mac);
    expect(back.flags).not.toContain("UP");
    expect(readdirSync(r.stateDir).filter((f) => f.endsWith(".json"))).toEqual([]);

    r.clearOps();
    expect(run(r, "DEL", p, config, "ctr-s1").code).toBe(0);
    expect(r.ops()).toEqual([]);
  });

  it("selects the VF by pf + vf, uses 802.1ad, and CHECK compares with prevResult", () => {
    const r = rig();
    const p = pod();
    const config = conf(r, { pf: r.pf, vf: 0, vlan: 100, vlanQoS: 3, vlanProto: "802.1ad" });
    const add = run(r, "ADD", p, config, "ctr-s2");
    expect(add.stderr).toBe("");
    expect(add.json.interfaces[0]).toMatchObject({ name: "net1", pciID: "0000:3b:02.0" });
    expect(r.ops()[0]!.hex).toBe(fixtureHex("vf-vlan-8021ad", ifindex(r.pf)));
    const check = run(r, "CHECK", p, { ...config, prevResult: add.json }, "ctr-s2");
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);
    ipIn(p, "link", "set", "net1", "address", "0a:58:00:00:00:01");
    const bad = run(r, "CHECK", p, { ...config, prevResult: add.json }, "ctr-s2");
    expect(bad.json.code).toBe(120);
    expect(bad.json.msg).toMatch(/has MAC 0a:58:00:00:00:01, prevResult says/);
    expect(run(r, "DEL", p, config, "ctr-s2").code).toBe(0);
    expect(hasLink(host, r.vf0)).toBe(true);
  });

  it("validates every value before any change", () => {
    const r = rig();
    const p = pod();
    for (const [extra, text] of [
      [{ vlan: 4095 }, /vlan 4095 is out of range/],
      [{ vlan: 10, vlanQoS: 8 }, /vlanQoS 8 is out of range/],
      [{ vlanQoS: 2 }, /vlanQoS\/vlanProto need vlan/],
      [{ vlan: 10, vlanProto: "802.1x" }, /is not a VLAN protocol/],
      [{ spoofchk: "yes" }, /spoofchk "yes" is not "on" or "off"/],
      [{ trust: true }, /trust true is not/],
      [{ link_state: "up" }, /link_state "up" is not a VF link state/],
      [{ min_tx_rate: 500, max_tx_rate: 100 }, /min_tx_rate \(500\) is above max_tx_rate \(100\)/],
      [{ mac: "01:00:5e:00:00:01" }, /multicast/],
      [{ mtu: 10 }, /mtu 10 is not an MTU/],
      [{ pf: r.pf, vf: 0 }, /together with deviceID/],
      [{ deviceID: undefined }, /deviceID is missing/],
      [{ deviceID: "0000:3b:02.9" }, /not a PCI address/],
    ] as const) {
      const res = run(r, "ADD", p, conf(r, { deviceID: "0000:3b:02.0", ...extra }), "ctr-s3");
      expect(res.json?.code, JSON.stringify(extra)).toBe(7);
      expect(res.json.msg).toMatch(text);
    }
    const missing = run(r, "ADD", p, conf(r, { deviceID: "0000:3b:07.0" }), "ctr-s3");
    expect(missing.json.code).toBe(141);
    expect(r.ops()).toEqual([]);
    expect(hasLink(host, r.vf0)).toBe(true);
    expect(existsSync(r.stateDir) ? readdirSync(r.stateDir).filter((f) => f.endsWith(".json")) : []).toEqual([]);
  });

  it("a DPDK VF (vfio-pci) gets its PF settings but no netdev move and no MAC in the result", () => {
    const r = rig();
    const p = pod();
    const config = conf(r, { vlan: 200, runtimeConfig: { deviceID: "0000:3b:02.1" } });
    const add = run(r, "ADD", p, config, "ctr-s4");
    expect(add.stderr).toBe("");
    expect(add.json.interfaces).toEqual([{ name: "net1", sandbox: p.path, pciID: "0000:3b:02.1" }]);
    expect(r.ops().map((o) => o.op)).toEqual(["vlan 200 qos 0 proto 802.1Q"]);
    expect(r.table().vfs[1].vlan).toBe(200);
    expect(hasLink(p, "net1")).toBe(false);
    expect(run(r, "DEL", p, config, "ctr-s4").code).toBe(0);
    expect(r.table().vfs[1].vlan).toBe(0);
  });

  it("refuses a VF held by a live namespace (11), clears a stale holder, and an old pod's DEL never resets the new pod's VF", () => {
    const r = rig();
    const a = pod();
    const config = conf(r, { deviceID: "0000:3b:02.0", vlan: 100 });
    expect(run(r, "ADD", a, config, "ctr-old").code).toBe(0);
    const b = pod();
    const busy = run(r, "ADD", b, config, "ctr-new");
    expect(busy.json.code).toBe(11);
    expect(busy.json.msg).toMatch(/held by container ctr-old/);

    // The old pod's namespace dies without a DEL; the VF netdev comes back to the host (simulated).
    ipIn(a, "link", "set", "net1", "netns", host.name);
    removeNetns(a);
    const add = run(r, "ADD", b, conf(r, { deviceID: "0000:3b:02.0", vlan: 300 }), "ctr-new");
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    expect(hasLink(b, "net1")).toBe(true);
    expect(r.table().vfs[0].vlan).toBe(300);
    // the stale holder's original state was put back before the new pod took its snapshot
    const st = JSON.parse(readFileSync(join(r.stateDir, "ctr-new@net1.json"), "utf8"));
    expect(st.extra.vf.vlan).toBe(0);
    expect(st.original.name).toBe(r.vf0);

    r.clearOps();
    const oldDel = run(r, "DEL", a.path, config, "ctr-old");
    expect(oldDel.code).toBe(0);
    expect(r.ops()).toEqual([]);
    expect(hasLink(b, "net1")).toBe(true);
    expect(r.table().vfs[0].vlan).toBe(300);

    expect(run(r, "DEL", b, config, "ctr-new").code).toBe(0);
    expect(r.table().vfs[0]).toEqual({ vf: 0, ...UNCONFIGURED_VF });
    expect(hasLink(host, r.vf0)).toBe(true);
  });

  it("DEL after a reboot: records survive, namespace and VF state are gone; DEL succeeds and restores", () => {
    const r = rig();
    const p = pod();
    const config = conf(r, FULL);
    expect(run(r, "ADD", p, config, "ctr-s6").code).toBe(0);
    // Reboot: the namespace is gone, the driver re-creates the VF netdev under its boot name with
    // default settings, and the PF's VF table is reset.
    removeNetns(p);
    ipIn(host, "link", "add", r.vf0, "type", "veth", "peer", "name", `${r.vf0}q`);
    ipIn(host, "link", "set", r.vf0, "mtu", "1450");
    writeFileSync(
      join(r.fake, `${r.pf}.json`),
      JSON.stringify({
        vfs: [
          { vf: 0, ...UNCONFIGURED_VF },
          { vf: 1, ...UNCONFIGURED_VF },
        ],
      }),
    );
    r.clearOps();
    const del = run(r, "DEL", p.path, config, "ctr-s6");
    expect(del.stdout + del.stderr).toBe("");
    expect(del.code).toBe(0);
    expect(linkIn(host, r.vf0).mtu).toBe(1500);
    expect(r.ops()).toHaveLength(6);
    expect(readdirSync(r.stateDir).filter((f) => f.endsWith(".json"))).toEqual([]);
  });

  it("handles an altname of the VF netdev that the pod namespace already uses, and gives it back", () => {
    const r = rig();
    const p = pod();
    ipIn(host, "link", "property", "add", "dev", r.vf0, "altname", `alt${r.vf0}`);
    ipIn(p, "link", "add", `alt${r.vf0}`, "type", "veth", "peer", "name", "x0");
    const config = conf(r, { deviceID: "0000:3b:02.0" });
    const add = run(r, "ADD", p, config, "ctr-s7");
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    expect(run(r, "DEL", p, config, "ctr-s7").code).toBe(0);
    const l = ipJson<{ altnames?: string[] }[]>(host, "link", "show", "dev", r.vf0)[0]!;
    expect(l.altnames).toEqual([`alt${r.vf0}`]);
  });
});

describe("berth-sriov with berth-ipam", () => {
  let daemon: DaemonHandle | undefined;
  beforeAll(async () => {
    daemon = await startIpamd({
      config: {
        statefulSets: [{ namespace: "db", name: "kafka" }],
        cooldownSeconds: 0,
        pools: [
          {
            name: "sriov-v4",
            subnet: "10.81.0.0/24",
            gateway: "10.81.0.1",
            vlan: 310,
            ranges: [{ start: "10.81.0.10", end: "10.81.0.50" }],
          },
        ],
      },
    });
  }, 120_000);
  afterAll(async () => {
    await daemon?.stop();
    if (daemon) rmSync(daemon.dir, { recursive: true, force: true });
  });

  it("uses the pool's VLAN and keeps a StatefulSet pod's IP across delete and re-create", () => {
    const r = rig();
    const config = conf(r, { deviceID: "0000:3b:02.0", ipam: { type: "berth-ipam", socket: daemon!.socket } });
    const args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=kafka-1";
    const p1 = pod();
    const first = run(r, "ADD", p1, config, "ctr-k1", args);
    expect(first.stderr).toBe("");
    const ip = first.json.ips[0].address;
    expect(ip).toMatch(/^10\.81\.0\.\d+\/24$/);
    expect(addrsIn(p1, "net1")).toEqual([ip]);
    expect(r.ops()[0]!.op).toBe("vlan 310 qos 0 proto 802.1Q");
    expect(run(r, "DEL", p1, config, "ctr-k1", args).code).toBe(0);
    const p2 = pod();
    const second = run(r, "ADD", p2, config, "ctr-k2", args);
    expect(second.json.ips[0].address).toBe(ip);
    expect(addrsIn(p2, "net1")).toEqual([ip]);
    expect(run(r, "DEL", p2, config, "ctr-k2", args).code).toBe(0);
    expect(r.table().vfs[0]).toEqual({ vf: 0, ...UNCONFIGURED_VF });
  });

  it("a repeated ADD of a live DPDK VF attachment is refused (142) after IPAM and the pod keeps its address", async () => {
    const r = rig();
    const ipam = { type: "berth-ipam", socket: daemon!.socket };
    const config = conf(r, { deviceID: "0000:3b:02.1", ipam });
    const p = pod();
    const first = run(r, "ADD", p, config, "ctr-dpdk");
    expect(first.stderr).toBe("");
    const ip = first.json.ips[0].address.split("/")[0];
    // A DPDK VF puts nothing into the pod, so only the VF record (checked after IPAM) sees the repeat.
    expectCniError(run(r, "ADD", p, config, "ctr-dpdk"), 142, "already attached to this container");
    const held = (await daemon!.client.reservations({ ip })).reservations;
    expect(held).toMatchObject([{ ip, state: "attached", containerID: "ctr-dpdk", ifName: "net1" }]);
    const other = run(r, "ADD", pod(), conf(r, { deviceID: "0000:3b:02.0", ipam }), "ctr-thief", `IgnoreUnknown=1;IP=${ip}`);
    expectCniError(other, 104, "in use by container ctr-dpdk");
    expect(run(r, "DEL", p, config, "ctr-dpdk").code).toBe(0);
    expect((await daemon!.client.reservations({ ip })).reservations).toEqual([]);
  });
});

describe("the shipped berth-sriov", () => {
  it(
    "has no fake-PF code path: BERTH_SRIOV_FAKE_PF changes nothing, " +
      "the real kernel is asked and the missing VF is a device error (141)",
    () => {
      const shipped = pluginPath("berth-sriov");
      const binary = readFileSync(realpathSync(shipped));
      expect(binary.includes("BERTH_SRIOV_FAKE_PF")).toBe(false);
      expect(binary.includes("RecordingPfOps")).toBe(false);
      const r = rig();
      const p = pod();
      const add = runCni(shipped, {
        command: "ADD",
        config: conf(r, FULL),
        containerId: "ctr-shipped",
        ifName: "net1",
        netns: p.path,
        via: ["ip", "netns", "exec", host.name],
        env: { BERTH_SRIOV_FAKE_PF: r.fake },
      });
      expect(add.code).toBe(1);
      expect(add.json).toMatchObject({ code: 141 });
      expect(add.json.msg).toContain(`VF 0 not found on "${r.pf}" (it has 0 VFs)`);
      expect(add.json.details.length).toBeGreaterThan(10);
      expect(r.ops()).toEqual([]);
      expect(hasLink(host, r.vf0)).toBe(true);
      expect(readdirSync(r.stateDir).filter((f) => f.endsWith(".json"))).toEqual([]);
    },
  );
});

describe("berth-sriov: every verb as the CNI spec means it", () => {
  const setTable = (r: Rig, vf: Record<string, unknown>) => {
    const t = r.table();
    Object.assign(t.vfs[0], vf);
    writeFileSync(join(r.fake, `${r.pf}.json`), JSON.stringify(t));
  };

  it("CHECK sees the PF-side VF settings: a VF reset to VLAN 0 or spoofchk off behind the pod's back is 120", () => {
    const r = rig();
    const p = pod();
    const config = conf(r, { deviceID: "0000:3b:02.0", vlan: 100, spoofchk: "on", trust: "off" });
    const add = run(r, "ADD", p, config, "ctr-chk");
    expect(add.code, add.stdout).toBe(0);
    expect(run(r, "CHECK", p, { ...config, prevResult: add.json }, "ctr-chk").code).toBe(0);
    setTable(r, { vlan: 0 });
    expectCniError(run(r, "CHECK", p, { ...config, prevResult: add.json }, "ctr-chk"), 120, "vlan 0 (ADD set 100)");
    setTable(r, { vlan: 100, spoofChk: false });
    expectCniError(run(r, "CHECK", p, { ...config, prevResult: add.json }, "ctr-chk"), 120, "spoofchk off (ADD set on)");
    setTable(r, { spoofChk: true });
    expect(run(r, "CHECK", p, { ...config, prevResult: add.json }, "ctr-chk").code).toBe(0);
    expect(run(r, "DEL", p, config, "ctr-chk").code).toBe(0);
  });

  it("ADD passes prevResult through; CHECK passes after tuning changed the MTU", () => {
    const r = rig();
    const p = pod();
    const config = { ...conf(r, { deviceID: "0000:3b:02.0", mtu: 1450 }), cniVersion: "1.0.0" };
    const prevResult = { cniVersion: "1.0.0", interfaces: [{ name: "up0" }], ips: [{ interface: 0, address: "192.0.2.9/32" }] };
    const add = run(r, "ADD", p, { ...config, prevResult }, "ctr-tune");
    expect(add.code, add.stdout).toBe(0);
    expect(add.json.interfaces).toEqual([{ name: "up0" }, { name: "net1", mac: r.vf0Mac, sandbox: p.path }]);
    expect(add.json.ips).toEqual([{ interface: 0, address: "192.0.2.9/32" }]);
    const tuning = hx.run("/usr/lib/cni/tuning", {
      command: "ADD",
      containerId: "ctr-tune",
      netns: p.path,
      ifName: "net1",
      config: { cniVersion: "1.0.0", name: "sriov-net", type: "tuning", mtu: 1300, prevResult: add.json },
    });
    expect(tuning.code, tuning.stdout + tuning.stderr).toBe(0);
    expect(linkIn(p, "net1").mtu).toBe(1300);
    const chk = run(r, "CHECK", p, { ...config, prevResult: tuning.json }, "ctr-tune");
    expect(chk.code, chk.stdout).toBe(0);
    expect(run(r, "DEL", p, config, "ctr-tune").code).toBe(0);
  });

  it("GC gives back a VF whose pod vanished without DEL: PF-side settings restored, netdev back on the host, records gone", () => {
    const r = rig();
    const p = pod();
    const config = conf(r, FULL);
    expect(run(r, "ADD", p, config, "ctr-gc").code).toBe(0);
    const gc = hx.run(exe, { command: "GC", config: { ...config, "cni.dev/valid-attachments": [] }, env: { BERTH_SRIOV_FAKE_PF: r.fake } });
    expect(gc.code, gc.stdout).toBe(0);
    expect(r.table().vfs[0]).toEqual({ vf: 0, ...UNCONFIGURED_VF });
    expect(hasLink(host, r.vf0)).toBe(true);
    expect(readdirSync(r.stateDir).filter((f) => f.endsWith(".json"))).toEqual([]);
  });

  it("DEL with a lost state file: the VF goes to a known neutral state, its netdev back, the log says so; the next pod gets it", () => {
    const r = rig();
    const p = pod();
    const logFile = join(r.stateDir, "..", "cni.log");
    const config = conf(r, { ...FULL, logFile });
    expect(run(r, "ADD", p, config, "ctr-lost").code).toBe(0);
    rmSync(join(r.stateDir, "ctr-lost@net1.json"));
    const del = run(r, "DEL", p, config, "ctr-lost");
    expect(del.code, del.stdout).toBe(0);
    expect(r.table().vfs[0]).toEqual({ vf: 0, ...UNCONFIGURED_VF }); // VLAN 0, spoofchk on, trust off, rates 0, MAC zero, state auto
    expect(hasLink(p, "net1")).toBe(false);
    expect(linkIn(host, r.vf0).mtu).toBe(linkIn(host, r.pf).mtu);
    expect(readFileSync(logFile, "utf8")).toContain("the attachment's state file is lost: resetting the VF to a neutral state");
    expect(readdirSync(r.stateDir).filter((f) => f.endsWith(".json"))).toEqual([]);
    const next = pod();
    const add = run(r, "ADD", next, conf(r, { deviceID: "0000:3b:02.0" }), "ctr-next");
    expect(add.code, add.stdout).toBe(0); // no "held by container ctr-lost"
    expect(run(r, "DEL", next, conf(r, { deviceID: "0000:3b:02.0" }), "ctr-next").code).toBe(0);
  });
});
