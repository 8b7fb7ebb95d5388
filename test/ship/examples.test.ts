// Every example conflist in conf/cni/ against the example daemon config conf/ipamd.json: ADD, CHECK
// and DEL of each, the way libcni 1.1 (containerd 1.6/1.7, podman 4) runs a list: each plugin gets
// its entry with the list's name and "cniVersion" (1.0.0), CHECK and DEL the ADD's result as
// prevResult. The real ipamd serves conf/ipamd.json as shipped (only its socket, database and
// metrics address are moved to a temp dir); the plugins run in a test "host" namespace.
//
// What stands in for hardware this host lacks, per example (the only keys changed; everything else
// is asserted to be the shipped text):
//   10-berth, 10-berth-ipam-macvlan, 40-berth-macvlan-static: master -> a veth end
//   20-berth-ipam-bridge-dualstack: bridge -> a test-unique name (the reference bridge makes it)
//   30-berth-hostdev-eni: nothing: a veth carrying the example's MAC is the "ENI"
//   31-berth-hostdev-deviceid: runtimeConfig.deviceID (what Multus passes from the device plugin)
//     and sysfsRoot -> a sysfs tree whose PCI device's netdev is a veth
//   40-berth-sriov: runtimeConfig.deviceID + sysfsRoot -> a VF netdev (veth) in a sysfs tree; this
//     kernel has no SR-IOV, so the TEST build that records PF-side VF requests runs (test/cni/sriov.test.ts)
//   30-berth-macvlan-vlan: master bond0 -> a veth; its VLAN 101 sub-interface needs 802.1Q: it runs
//     where the kernel has it (the kernel lab, test/lab/examples.test.ts) and is skipped here otherwise.
// Berth plugins' logFile and stateDir move to the temp dir, ipam.socket to the daemon's.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { pluginConfigs, type ConfList } from "../helpers/libcni";
import { createNetns, ipIn, ipJson, removeNetns, type TestNetns } from "../helpers/netns";
import { ROOT, fakePfSriovPath, pluginDir, pluginPath, runCni, type CniCall } from "../helpers/plugins";
import { UNCONFIGURED_VF } from "../helpers/fake-pf";

const CONF_DIR = join(ROOT, "conf/cni");
const tmp = mkdtempSync(join(tmpdir(), "berth-examples-"));
let host: TestNetns;
let ipamd: DaemonHandle;
const pods: TestNetns[] = [];
let seq = 0;

function kernelHas8021q(): boolean {
  const ns = `berth-q-${process.pid}`;
  try {
    execFileSync("ip", ["netns", "add", ns], { stdio: "ignore" });
    execFileSync("ip", ["-n", ns, "link", "add", "q0", "type", "veth", "peer", "name", "q1"], { stdio: "ignore" });
    return spawnSync("ip", ["-n", ns, "link", "add", "link", "q0", "name", "q0.7", "type", "vlan", "id", "7"]).status === 0;
  } finally {
    spawnSync("ip", ["netns", "del", ns]);
  }
}

beforeAll(async () => {
  host = createNetns("exhost");
  const shipped = JSON.parse(readFileSync(join(ROOT, "conf/ipamd.json"), "utf8"));
  delete shipped.metricsAddress; // a fixed TCP port; the test daemon serves its socket only
  ipamd = await startIpamd({ config: shipped });
}, 120_000);

afterAll(async () => {
  for (const p of pods) removeNetns(p);
  removeNetns(host);
  await cleanupIpamdTest();
  rmSync(tmp, { recursive: true, force: true });
});

function pod(): TestNetns {
  const p = createNetns("expod");
  pods.push(p);
  return p;
}

function veth(prefix: string, mac?: string, mtu?: number): string {
  const name = `${prefix}${seq++}`;
  ipIn(host, "link", "add", name, "type", "veth", "peer", "name", `${name}p`);
  if (mac) ipIn(host, "link", "set", name, "address", mac);
  if (mtu) for (const end of [name, `${name}p`]) ipIn(host, "link", "set", end, "mtu", String(mtu));
  ipIn(host, "link", "set", `${name}p`, "up");
  ipIn(host, "link", "set", name, "up");
  return name;
}

/** A sysfs tree with PCI device `pci` whose netdev is `netdev` (and, for a VF, the PF whose netdev is `pf`). */
function sysfsWith(pci: string, netdev: string, pf?: string): string {
  const sysfs = join(tmp, `sys${seq++}`);
  const dev = (a: string) => join(sysfs, "bus/pci/devices", a);
  mkdirSync(join(dev(pci), "net", netdev), { recursive: true });
  if (pf) {
    mkdirSync(join(sysfs, "bus/pci/drivers/iavf"), { recursive: true });
    mkdirSync(join(sysfs, "bus/pci/drivers/ice"), { recursive: true });
    mkdirSync(join(dev("0000:3b:00.0"), "net", pf), { recursive: true });
    symlinkSync(`../${pci}`, join(dev("0000:3b:00.0"), "virtfn0"));
    symlinkSync("../0000:3b:00.0", join(dev(pci), "physfn"));
    symlinkSync("../../../bus/pci/drivers/ice", join(dev("0000:3b:00.0"), "driver"));
    symlinkSync("../../../bus/pci/drivers/iavf", join(dev(pci), "driver"));
  }
  return sysfs;
}

interface Rig {
  /** Keys of the plugin entry replaced (or added) for this host. */
  replace: Record<string, unknown>;
  executable?: string;
  env?: Record<string, string>;
  ifName?: string;
}

/** The shipped list with only `replace` (+ logFile, stateDir, ipam.socket) changed; asserts nothing else differs. */
function shipped(file: string, rig: Rig): { list: ConfList; logFile: string } {
  const original = JSON.parse(readFileSync(join(CONF_DIR, file), "utf8")) as ConfList;
  const list = structuredClone(original);
  const logFile = join(tmp, `log${seq++}`, "berth", "cni.log"); // the directory does not exist yet
  const plugin = list.plugins[0]!;
  const berth = String(plugin.type).startsWith("berth-");
  Object.assign(plugin, rig.replace);
  if (berth) plugin.stateDir = join(tmp, `state${seq++}`);
  if (berth && plugin.logFile) plugin.logFile = logFile;
  const ipam = plugin.ipam as Record<string, unknown> | undefined;
  if (ipam?.type === "berth-ipam") ipam.socket = ipamd.socket;
  const moved = new Set([...Object.keys(rig.replace), "stateDir", "logFile"]);
  const strip = (l: ConfList) =>
    l.plugins.map((p) => ({
      ...Object.fromEntries(Object.entries(p).filter(([k]) => !moved.has(k))),
      ipam: p.ipam ? { ...(p.ipam as object), socket: undefined } : undefined,
    }));
  expect(strip(list)).toEqual(strip(original));
  return { list, logFile };
}

interface Outcome {
  add: any;
  addresses: string[];
  podLinks: string[];
  afterDel: string[];
  logFile: string;
}

/** ADD, CHECK, DEL of a one-plugin list, as libcni 1.1 runs it; asserts each succeeds. */
function addCheckDel(file: string, rig: Rig, inspect: (p: TestNetns, add: any) => void = () => {}): Outcome {
  const { list, logFile } = shipped(file, rig);
  expect(list.plugins).toHaveLength(1);
  const [conf] = pluginConfigs(list, "1.1");
  const p = pod();
  const type = String(conf!.type);
  const executable = rig.executable ?? (type.startsWith("berth-") ? pluginPath(type) : `/usr/lib/cni/${type}`);
  const call = (command: CniCall["command"], config: unknown) =>
    runCni(executable, {
      command,
      config,
      containerId: `ex-${file}-${seq}`,
      netns: p.path,
      ifName: rig.ifName ?? "eth0",
      cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=example",
      path: [pluginDir(), "/usr/lib/cni"],
      via: ["ip", "netns", "exec", host.name],
      ...(rig.env ? { env: rig.env } : {}),
    });
  const add = call("ADD", conf);
  expect(add.code, `${file} ADD: ${add.stdout}${add.stderr}`).toBe(0);
  const addresses = ipJson<{ ifname: string; addr_info: { local: string; prefixlen: number; scope: string }[] }[]>(p, "addr", "show")
    .filter((l) => l.ifname !== "lo")
    .flatMap((l) => l.addr_info.filter((a) => a.scope === "global").map((a) => `${a.local}/${a.prefixlen}`));
  const podLinks = ipJson<{ ifname: string }[]>(p, "link", "show").map((l) => l.ifname);
  inspect(p, add.json);
  const check = call("CHECK", { ...conf, prevResult: add.json });
  expect(check.code, `${file} CHECK: ${check.stdout}${check.stderr}`).toBe(0);
  const del = call("DEL", { ...conf, prevResult: add.json });
  expect(del.code, `${file} DEL: ${del.stdout}${del.stderr}`).toBe(0);
  const afterDel = ipJson<{ ifname: string }[]>(p, "link", "show").map((l) => l.ifname);
  return { add: add.json, addresses, podLinks, afterDel, logFile };
}

const inSubnet = (prefix: string) => expect.stringMatching(new RegExp(`^${prefix.replace(/\./g, "\\.")}`));
const heldBy = async (file: string) => (await ipamd.client.reservations({})).reservations.filter((r) => r.containerID?.includes(file));

describe("conf/cni examples against conf/ipamd.json", () => {
  it("the directory holds exactly the examples below", () => {
    expect(readdirSync(CONF_DIR).sort()).toEqual([
      "10-berth-ipam-macvlan.conflist",
      "10-berth.conflist",
      "20-berth-ipam-bridge-dualstack.conflist",
      "30-berth-hostdev-eni.conflist",
      "30-berth-macvlan-vlan.conflist",
      "31-berth-hostdev-deviceid.conflist",
      "40-berth-macvlan-static.conflist",
      "40-berth-sriov.conflist",
    ]);
  });

  it("10-berth: berth-macvlan + berth-ipam, dual-stack from rack1-v4/rack1-v6; the log directory is created", async () => {
    const o = addCheckDel("10-berth.conflist", { replace: { master: veth("exm") } });
    expect(o.add.ips.map((i: any) => i.address)).toEqual([inSubnet("10.10."), inSubnet("fd00:10::")]);
    expect(o.addresses.sort()).toEqual(o.add.ips.map((i: any) => i.address).sort());
    expect(o.afterDel).toEqual(["lo"]);
    expect(readFileSync(o.logFile, "utf8")).toMatch(/"msg":"ADD done"/);
    expect(await heldBy("10-berth.conflist")).toEqual([]);
  });

  it("10-berth-ipam-macvlan: the reference macvlan with berth-ipam from rack1-v4", async () => {
    const o = addCheckDel("10-berth-ipam-macvlan.conflist", { replace: { master: veth("exm") } });
    expect(o.add.ips.map((i: any) => i.address)).toEqual([inSubnet("10.10.")]);
    expect(o.addresses).toEqual([o.add.ips[0].address]);
    expect(o.afterDel).toEqual(["lo"]);
    expect(await heldBy("10-berth-ipam-macvlan")).toEqual([]);
  });

  it("20-berth-ipam-bridge-dualstack: the reference bridge with berth-ipam from lab-v4 and lab-v6", async () => {
    const bridge = `exbr${seq++}`;
    const o = addCheckDel("20-berth-ipam-bridge-dualstack.conflist", { replace: { bridge } });
    expect(o.add.ips.map((i: any) => i.address)).toEqual([inSubnet("10.40.0."), inSubnet("fd00:40::")]);
    expect(o.afterDel).toEqual(["lo"]);
    expect(await heldBy("20-berth-ipam-bridge")).toEqual([]);
  });

  it("30-berth-hostdev-eni: the ENI (by hwaddr) with its static address moves in and comes back", () => {
    const eni = veth("exeni", "0a:1b:2c:3d:4e:5f");
    const o = addCheckDel("30-berth-hostdev-eni.conflist", { replace: {} });
    expect(o.addresses).toEqual(["172.31.20.17/20"]);
    expect(o.afterDel).toEqual(["lo"]);
    expect(ipJson<{ ifname: string }[]>(host, "link", "show", "dev", eni)[0]!.ifname).toBe(eni);
    ipIn(host, "link", "del", eni);
  });

  it("30-berth-macvlan-vlan: berth-macvlan on VLAN 101 of the master, from rack1-vlan101-v4/v6", async (t) => {
    if (!kernelHas8021q()) t.skip("this kernel has no 802.1Q: runs in the kernel lab (test/lab/examples.test.ts)");
    const master = veth("exv", undefined, 9000); // the example's jumbo-frame trunk (its mtu is 9000)
    const o = addCheckDel("30-berth-macvlan-vlan.conflist", { replace: { master } }, (_p, add) => {
      expect(ipJson<{ ifname: string }[]>(host, "link", "show").map((l) => l.ifname)).toContain(`${master}.101`);
      expect(add.dns.nameservers).toEqual(["10.101.0.53"]);
    });
    expect(o.add.ips.map((i: any) => i.address)).toEqual([inSubnet("10.20."), inSubnet("fd00:20::")]);
    expect(o.afterDel).toEqual(["lo"]);
    expect(ipJson<{ ifname: string }[]>(host, "link", "show").map((l) => l.ifname)).not.toContain(`${master}.101`);
    expect(await heldBy("30-berth-macvlan-vlan")).toEqual([]);
  });

  it("31-berth-hostdev-deviceid: the device the device plugin chose (deviceID), addressed from eni-v4", async () => {
    const eni = veth("exdev");
    const sysfs = sysfsWith("0000:00:07.0", eni);
    const o = addCheckDel(
      "31-berth-hostdev-deviceid.conflist",
      { replace: { runtimeConfig: { deviceID: "0000:00:07.0" }, sysfsRoot: sysfs }, ifName: "net1" },
      (p) => expect(ipJson<{ mtu: number }[]>(p, "link", "show", "dev", "net1")[0]!.mtu).toBe(9001),
    );
    expect(o.add.ips.map((i: any) => i.address)).toEqual([inSubnet("172.31.")]);
    expect(o.addresses).toEqual([o.add.ips[0].address]);
    expect(o.afterDel).toEqual(["lo"]);
    expect(ipJson<{ ifname: string }[]>(host, "link", "show", "dev", eni)).toHaveLength(1);
    expect(await heldBy("31-berth-hostdev")).toEqual([]);
  });

  it("40-berth-macvlan-static: berth-macvlan with the reference static IPAM and a fixed MAC", () => {
    const o = addCheckDel("40-berth-macvlan-static.conflist", { replace: { master: veth("exs") } }, (p) =>
      expect(ipJson<{ address: string }[]>(p, "link", "show", "dev", "eth0")[0]!.address).toBe("0a:00:00:00:10:05"),
    );
    expect(o.addresses).toEqual(["192.168.10.5/24"]);
    expect(o.afterDel).toEqual(["lo"]);
  });

  it("40-berth-sriov: a VF (fake PF) on VLAN 300 of sriov-lowlat-v4, spoofchk on, 10 Gbit/s", async () => {
    const vf = veth("exvf");
    const pf = veth("expf");
    const sysfs = sysfsWith("0000:3b:02.0", vf, pf);
    const fake = join(tmp, `pf${seq++}`);
    mkdirSync(fake);
    const original = { ...UNCONFIGURED_VF, spoofChk: false };
    writeFileSync(join(fake, `${pf}.json`), JSON.stringify({ vfs: [{ vf: 0, ...original }] }));
    let during: any;
    const o = addCheckDel(
      "40-berth-sriov.conflist",
      {
        replace: { runtimeConfig: { deviceID: "0000:3b:02.0" }, sysfsRoot: sysfs },
        ifName: "net1",
        executable: fakePfSriovPath(),
        env: { BERTH_SRIOV_FAKE_PF: fake },
      },
      () => {
        during = JSON.parse(readFileSync(join(fake, `${pf}.json`), "utf8")).vfs[0];
      },
    );
    expect(during).toMatchObject({ vlan: 300, qos: 5, spoofChk: true, trust: false, linkState: "auto", maxTxRate: 10000 });
    expect(o.add.ips.map((i: any) => i.address)).toEqual([inSubnet("10.30.0.")]);
    expect(o.addresses).toEqual([o.add.ips[0].address]);
    expect(JSON.parse(readFileSync(join(fake, `${pf}.json`), "utf8")).vfs[0]).toMatchObject(original);
    expect(await heldBy("40-berth-sriov")).toEqual([]);
    expect(existsSync(fake)).toBe(true);
  });
});
