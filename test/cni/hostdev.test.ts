// berth-hostdev through the BUILT executable, run inside a test-created "host" namespace with
// `ip netns exec` (as a runtime would run it on the node). The ENIs are veth ends in that host
// namespace carrying an address, a route, an alias and a changed MTU.
//
// Kernel facts checked on this kernel (6.18): when a namespace is deleted, veth, macvlan, vxlan,
// tap and ifb devices in it are destroyed, not returned (only devices without rtnl_link_ops, i.e.
// physical NICs, and netns_refund kinds such as vcan go back to init_net; dummy and vcan are not
// built here, bridges cannot change namespace). So "the kernel returns the ENI" is simulated by
// moving the device back to the host under its pod ifname before deleting the namespace.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectCniError } from "../helpers/cni-error";
import { addrsIn, hasLink, linkIn, routesIn, useHostNamespace } from "../helpers/host";
import { startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { ipIn, ipJson, removeNetns, type TestNetns } from "../helpers/netns";
import { pluginPath, type CniCall } from "../helpers/plugins";

const hx = useHostNamespace("hd");
let host: TestNetns;
const tmp = hx.tmp;
const stateDir = join(tmp, "state");
let exe: string;
let seq = 0;

beforeAll(() => {
  exe = pluginPath("berth-hostdev");
  host = hx.host;
}, 180_000);

const pod = () => hx.pod();

interface Eni {
  name: string;
  mac: string;
}

/** A veth end standing in for an ENI: MTU 1400, 10.77.N.5/24, route 10.78.N.0/24 via .1, alias, up. */
function makeEni(n: number): Eni {
  const name = `eni${n}x${seq++}`;
  ipIn(host, "link", "add", name, "type", "veth", "peer", "name", `${name}p`);
  ipIn(host, "link", "set", `${name}p`, "up");
  ipIn(host, "link", "set", name, "mtu", "1400");
  ipIn(host, "link", "set", name, "alias", "cloud-eni-0a1b");
  ipIn(host, "addr", "add", `10.77.${n}.5/24`, "dev", name);
  ipIn(host, "link", "set", name, "up");
  ipIn(host, "route", "add", `10.78.${n}.0/24`, "via", `10.77.${n}.1`, "dev", name);
  const mac = ipJson<{ address: string }[]>(host, "link", "show", name)[0]!.address;
  return { name, mac };
}

function conf(extra: Record<string, unknown>) {
  return { cniVersion: "1.1.0", name: "eni-net", type: "berth-hostdev", stateDir, ...extra };
}

function run(
  command: CniCall["command"],
  p: TestNetns | string | undefined,
  config: unknown,
  containerId: string,
  ifName = "eth1",
  cniArgs?: string,
) {
  return hx.run(exe, {
    command,
    config,
    containerId,
    ifName,
    ...(p === undefined ? {} : { netns: typeof p === "string" ? p : p.path }),
    ...(cniArgs ? { cniArgs } : {}),
  });
}

/** Every host-side attribute of the ENI is exactly as makeEni left it, checked one by one. */
function expectRestored(eni: Eni, n: number) {
  expect(hasLink(host, eni.name), "name").toBe(true);
  const l = linkIn(host, eni.name);
  expect(l.mtu, "mtu").toBe(1400);
  expect(l.address, "mac").toBe(eni.mac);
  expect(l.flags, "up").toContain("UP");
  expect(l.ifalias, "alias").toBe("cloud-eni-0a1b");
  expect(addrsIn(host, eni.name), "addresses").toEqual([`10.77.${n}.5/24`]);
  expect(routesIn(host, eni.name), "routes").toContain(`10.78.${n}.0/24 via 10.77.${n}.1`);
}

describe("berth-hostdev ADD and DEL", () => {
  it("moves the ENI in with its static address, MTU and MAC, records the original state 0600, and DEL restores every attribute", () => {
    const eni = makeEni(1);
    const p = pod();
    const config = conf({
      device: eni.name,
      mtu: 1300,
      mac: "0a:58:0a:4d:01:64",
      addresses: { [eni.mac.toUpperCase()]: ["10.77.1.100/24"] },
    });
    const add = run("ADD", p, config, "ctr-a1");
    expect(add.stderr).toBe("");
    expect(add.json).toEqual({
      cniVersion: "1.1.0",
      interfaces: [{ name: "eth1", mac: "0a:58:0a:4d:01:64", mtu: 1300, sandbox: p.path }],
      ips: [{ address: "10.77.1.100/24", interface: 0 }],
      dns: {},
    });
    expect(add.code).toBe(0);
    expect(hasLink(host, eni.name)).toBe(false);
    const inPod = linkIn(p, "eth1");
    expect(inPod).toMatchObject({ mtu: 1300, address: "0a:58:0a:4d:01:64" });
    expect(inPod.flags).toContain("UP");
    expect(addrsIn(p, "eth1")).toEqual(["10.77.1.100/24"]);
    expect(readFileSync(`/proc/sys/net/ipv4/conf/all/arp_notify`, "utf8")).toBeDefined();
    expect(
      execFileSync("ip", ["netns", "exec", p.name, "cat", "/proc/sys/net/ipv4/conf/eth1/arp_notify"], { encoding: "utf8" }).trim(),
    ).toBe("1");

    const file = join(stateDir, "ctr-a1@eth1.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const st = JSON.parse(readFileSync(file, "utf8"));
    expect(st.original).toMatchObject({
      name: eni.name,
      mtu: 1400,
      mac: eni.mac,
      up: true,
      alias: "cloud-eni-0a1b",
      kind: "veth",
      addresses: [{ cidr: "10.77.1.5/24" }],
    });
    expect(st.original.routes).toContainEqual(expect.objectContaining({ dst: "10.78.1.0/24", gateway: "10.77.1.1" }));

    const check = run("CHECK", p, { ...config, prevResult: add.json }, "ctr-a1");
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);

    const del = run("DEL", p, config, "ctr-a1");
    expect(del.stdout + del.stderr).toBe("");
    expect(del.code).toBe(0);
    expect(hasLink(p, "eth1")).toBe(false);
    expectRestored(eni, 1);
    expect(readdirSync(stateDir).filter((f) => f.startsWith("ctr-a1"))).toEqual([]);

    // DEL again (the runtime retries): succeeds and changes nothing.
    const again = run("DEL", p, config, "ctr-a1");
    expect(again.code).toBe(0);
    expectRestored(eni, 1);
  });

  it("DEL after the device was renamed and given another MAC inside the pod finds it (pod ifindex) and restores it", () => {
    const eni = makeEni(2);
    const p = pod();
    const config = conf({ hwaddr: eni.mac });
    expect(run("ADD", p, config, "ctr-a2").code).toBe(0);
    ipIn(p, "link", "set", "eth1", "down");
    ipIn(p, "link", "set", "eth1", "name", "renamed0");
    ipIn(p, "link", "set", "renamed0", "mtu", "9000");
    ipIn(p, "link", "set", "renamed0", "address", "0a:58:0a:00:00:99");
    const del = run("DEL", p, config, "ctr-a2");
    expect(del.stdout + del.stderr).toBe("");
    expect(del.code).toBe(0);
    expect(hasLink(p, "renamed0")).toBe(false);
    expectRestored(eni, 2);
  });

  it("DEL after the MAC was changed inside the pod finds the device by its pod name", () => {
    const eni = makeEni(13);
    const p = pod();
    const config = conf({ device: eni.name });
    expect(run("ADD", p, config, "ctr-a13").code).toBe(0);
    ipIn(p, "link", "set", "eth1", "address", "0a:58:0a:00:00:98");
    const del = run("DEL", p, config, "ctr-a13");
    expect(del.stdout + del.stderr).toBe("");
    expect(hasLink(p, "eth1")).toBe(false);
    expectRestored(eni, 13);
  });

  it("DEL when the namespace is gone restores the device the kernel returned under the pod's ifname (simulated)", () => {
    const eni = makeEni(3);
    const p = pod();
    const config = conf({ device: eni.name, mtu: 1280 });
    expect(run("ADD", p, config, "ctr-a3").code).toBe(0);
    // What the kernel does to a physical NIC when its namespace dies: it goes back to the host
    // namespace, keeping its pod name when free. veth would be destroyed instead, so move it by hand.
    ipIn(p, "link", "set", "eth1", "netns", host.name);
    removeNetns(p);
    expect(hasLink(host, "eth1")).toBe(true);
    const del = run("DEL", p.path, config, "ctr-a3");
    expect(del.stdout + del.stderr).toBe("");
    expect(del.code).toBe(0);
    expect(hasLink(host, "eth1")).toBe(false);
    expectRestored(eni, 3);
    expect(run("DEL", undefined, config, "ctr-a3").code).toBe(0);
  });

  it("DEL when the namespace and a virtual device died with it succeeds and drops the record", () => {
    const eni = makeEni(4);
    const p = pod();
    const config = conf({ device: eni.name });
    expect(run("ADD", p, config, "ctr-a4").code).toBe(0);
    removeNetns(p); // the veth is destroyed with the namespace
    const del = run("DEL", p.path, config, "ctr-a4");
    expect(del.stdout + del.stderr).toBe("");
    expect(del.code).toBe(0);
    expect(readdirSync(stateDir).filter((f) => f.startsWith("ctr-a4"))).toEqual([]);
    expect(run("DEL", "", config, "ctr-a4").code).toBe(0);
  });

  it("selects the device by pciBusID and by runtimeConfig.deviceID through a sysfs tree", () => {
    const eni = makeEni(5);
    const sysfs = join(tmp, "sysfs5");
    mkdirSync(join(sysfs, "bus/pci/devices/0000:00:05.0/net", eni.name), { recursive: true });
    // The last: Multus v4 injects the device plugin's deviceID next to the NAD's pciBusID (same device, short form).
    const selections = [
      ["pciBusID", { pciBusID: "0000:00:05.0" }],
      ["runtimeConfig", { runtimeConfig: { deviceID: "0000:00:05.0" } }],
      ["both", { pciBusID: "00:05.0", runtimeConfig: { deviceID: "0000:00:05.0" } }],
    ] as const;
    for (const [key, selection] of selections) {
      const p = pod();
      const config = conf({ ...selection, sysfsRoot: sysfs });
      const add = run("ADD", p, config, `ctr-a5-${key}`);
      expect(add.stderr).toBe("");
      expect(add.json.interfaces[0]).toMatchObject({ name: "eth1", pciID: "0000:00:05.0" });
      expect(hasLink(p, "eth1")).toBe(true);
      expect(run("DEL", p, config, `ctr-a5-${key}`).code).toBe(0);
      expectRestored(eni, 5);
    }
  });

  it("refuses a missing, ambiguous or unknown device selection before any change", () => {
    const eni = makeEni(6);
    const p = pod();
    for (const [extra, code, text] of [
      [{}, 7, /device selection is missing/],
      [{ device: eni.name, hwaddr: eni.mac }, 7, /ambiguous \(device and hwaddr/],
      [{ device: eni.name, runtimeConfig: { deviceID: "0000:00:05.0" } }, 7, /ambiguous/],
      [{ pciBusID: "3b:00" }, 7, /pciBusID "3b:00" is not a PCI address/],
      [
        { pciBusID: "0000:00:06.0", runtimeConfig: { deviceID: "0000:00:05.0" } },
        7,
        /pciBusID 0000:00:06\.0 and runtimeConfig\.deviceID 0000:00:05\.0 name different devices/,
      ],
      [{ device: eni.name, mtu: 20 }, 7, /mtu 20 is not an MTU/],
      [{ device: eni.name, addresses: { x: ["10.0.0.1"] } }, 7, /addresses\["x"\]/],
      [{ device: "nosuch0" }, 141, /device "nosuch0" not found/],
    ] as const) {
      const r = run("ADD", p, conf(extra), "ctr-a6");
      expect(r.code).toBe(1);
      expect(r.json.code).toBe(code);
      expect(r.json.msg).toMatch(text);
    }
    expectRestored(eni, 6);
    expect(readdirSync(stateDir).filter((f) => f.startsWith("ctr-a6"))).toEqual([]);
  });

  it("refuses when CNI_IFNAME exists in the pod (142) and leaves the ENI alone", () => {
    const eni = makeEni(7);
    const p = pod();
    ipIn(p, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p");
    const r = run("ADD", p, conf({ device: eni.name }), "ctr-a7");
    expect(r.json.code).toBe(142);
    expectRestored(eni, 7);
  });

  it("handles a pod namespace that already uses the ENI's name: temporary names avoid the collision", () => {
    const eni = makeEni(8);
    const p = pod();
    ipIn(p, "link", "add", eni.name, "type", "veth", "peer", "name", "other0");
    const config = conf({ device: eni.name });
    const add = run("ADD", p, config, "ctr-a8");
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    expect(hasLink(p, "eth1")).toBe(true);
    expect(run("DEL", p, config, "ctr-a8").code).toBe(0);
    expectRestored(eni, 8);
    expect(hasLink(p, eni.name)).toBe(true);
  });

  it("a failure after the move (IPv6 DAD finds the address taken) gives the ENI back as it was and leaves no record", () => {
    const eni = makeEni(11);
    const p = pod();
    ipIn(host, "addr", "add", "fd00:77:11::100/64", "dev", `${eni.name}p`, "nodad");
    const config = conf({ device: eni.name, mtu: 1300, ipv6DAD: "wait", addresses: { [eni.name]: ["fd00:77:11::100/64"] } });
    const r = run("ADD", p, config, "ctr-a11");
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(104);
    expect(r.json.msg).toMatch(/duplicate address detection failed/);
    expect(hasLink(p, "eth1")).toBe(false);
    expectRestored(eni, 11);
    expect(readdirSync(stateDir).filter((f) => f.startsWith("ctr-a11"))).toEqual([]);
  });

  it(
    "a pod that died without DEL: the next ADD restores the returned device from the stale record, " +
      "and the old DEL leaves the new pod alone",
    () => {
      const eni = makeEni(12);
      const config = conf({ device: eni.name, mtu: 1280 });
      const a = pod();
      expect(run("ADD", a, config, "ctr-old").code).toBe(0);
      const b = pod();
      const busy = run("ADD", b, config, "ctr-new");
      expect(busy.json.code).toBe(142);
      expect(busy.json.msg).toMatch(/recorded as attached to container ctr-old/);
      // the kernel returns the NIC under the pod's ifname when the namespace dies (simulated)
      ipIn(a, "link", "set", "eth1", "netns", host.name);
      removeNetns(a);
      const add = run("ADD", b, config, "ctr-new");
      expect(add.stderr).toBe("");
      expect(add.code).toBe(0);
      const st = JSON.parse(readFileSync(join(stateDir, "ctr-new@eth1.json"), "utf8"));
      expect(st.original).toMatchObject({ name: eni.name, mtu: 1400, alias: "cloud-eni-0a1b", addresses: [{ cidr: "10.77.12.5/24" }] });
      expect(readdirSync(stateDir).filter((f) => f.startsWith("ctr-old"))).toEqual([]);
      expect(run("DEL", a.path, config, "ctr-old").code).toBe(0);
      expect(linkIn(b, "eth1").mtu).toBe(1280);
      expect(run("DEL", b, config, "ctr-new").code).toBe(0);
      expectRestored(eni, 12);
    },
  );

  it("CHECK fails with 120 when an address from prevResult is gone", () => {
    const eni = makeEni(9);
    const p = pod();
    const config = conf({ device: eni.name, addresses: { [eni.name]: ["10.77.9.100/24"] } });
    const add = run("ADD", p, config, "ctr-a9");
    expect(add.code).toBe(0);
    ipIn(p, "addr", "del", "10.77.9.100/24", "dev", "eth1");
    const check = run("CHECK", p, { ...config, prevResult: add.json }, "ctr-a9");
    expect(check.json.code).toBe(120);
    expect(check.json.msg).toMatch(/lacks address 10\.77\.9\.100\/24/);
    expect(run("DEL", p, config, "ctr-a9").code).toBe(0);
    expectRestored(eni, 9);
  });
});

describe("berth-hostdev with berth-ipam", () => {
  let daemon: DaemonHandle | undefined;
  beforeAll(async () => {
    daemon = await startIpamd({
      config: {
        statefulSets: [{ namespace: "db", name: "redis" }],
        cooldownSeconds: 0,
        pools: [
          {
            name: "eni-v4",
            subnet: "10.79.0.0/24",
            gateway: "10.79.0.1",
            ranges: [{ start: "10.79.0.10", end: "10.79.0.50" }],
            routes: [{ dst: "10.80.0.0/16" }],
          },
        ],
      },
    });
  }, 120_000);
  afterAll(async () => {
    await daemon?.stop();
    if (daemon) rmSync(daemon.dir, { recursive: true, force: true });
  });

  it("a StatefulSet pod gets the same IP on the ENI after delete and re-create (sticky round trip)", () => {
    const eni = makeEni(10);
    const config = conf({ device: eni.name, ipam: { type: "berth-ipam", socket: daemon!.socket } });
    const args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=redis-0;K8S_POD_UID=u1";
    const p1 = pod();
    const first = run("ADD", p1, config, "ctr-r1", "eth1", args);
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    const ip = first.json.ips[0].address as string;
    expect(ip).toMatch(/^10\.79\.0\.\d+\/24$/);
    expect(first.json.routes).toEqual([{ dst: "10.80.0.0/16", gw: "10.79.0.1" }]);
    expect(addrsIn(p1, "eth1")).toEqual([ip]);
    expect(routesIn(p1, "eth1")).toContain("10.80.0.0/16 via 10.79.0.1");
    expect(run("DEL", p1, config, "ctr-r1", "eth1", args).code).toBe(0);
    expectRestored(eni, 10);

    const p2 = pod();
    const second = run("ADD", p2, config, "ctr-r2", "eth1", args.replace("u1", "u2"));
    expect(second.code).toBe(0);
    expect(second.json.ips[0].address).toBe(ip);
    expect(addrsIn(p2, "eth1")).toEqual([ip]);
    expect(run("DEL", p2, config, "ctr-r2", "eth1", args).code).toBe(0);
    expectRestored(eni, 10);
  });
});

describe("berth-hostdev: every verb as the CNI spec means it", () => {
  it("ADD passes prevResult through; CHECK passes after tuning changed the MTU", () => {
    const eni = makeEni(20);
    const p = pod();
    const prevResult = {
      cniVersion: "1.0.0",
      interfaces: [{ name: "up0" }],
      ips: [{ interface: 0, address: "192.0.2.9/32" }],
      dns: { nameservers: ["192.0.2.53"] },
    };
    const config = { ...conf({ device: eni.name, mtu: 1350, addresses: { [eni.name]: ["10.77.20.100/24"] } }), cniVersion: "1.0.0" };
    const add = run("ADD", p, { ...config, prevResult }, "ctr-chain");
    expect(add.code, add.stdout).toBe(0);
    expect(add.json.interfaces).toEqual([{ name: "up0" }, { name: "eth1", mac: linkIn(p, "eth1").address, sandbox: p.path }]);
    expect(add.json.ips).toEqual([
      { interface: 0, address: "192.0.2.9/32" },
      { interface: 1, address: "10.77.20.100/24" },
    ]);
    expect(add.json.dns).toEqual({ nameservers: ["192.0.2.53"] });
    const tuning = hx.run("/usr/lib/cni/tuning", {
      command: "ADD",
      containerId: "ctr-chain",
      netns: p.path,
      ifName: "eth1",
      config: { cniVersion: "1.0.0", name: "eni-net", type: "tuning", mtu: 1300, prevResult: add.json },
    });
    expect(tuning.code, tuning.stdout + tuning.stderr).toBe(0);
    expect(linkIn(p, "eth1").mtu).toBe(1300);
    const chk = run("CHECK", p, { ...config, prevResult: tuning.json }, "ctr-chain");
    expect(chk.code, chk.stdout).toBe(0);
    expect(run("DEL", p, config, "ctr-chain").code).toBe(0);
    expectRestored(eni, 20);
  });

  it("a PCI device bound to a userspace driver (vfio-pci) is accepted: nothing moves, IPAM's result and the PCI address come back", () => {
    const sysfs = join(tmp, "sys-userspace");
    const dev = join(sysfs, "bus/pci/devices/0000:3b:05.0");
    mkdirSync(dev, { recursive: true });
    mkdirSync(join(sysfs, "bus/pci/drivers/vfio-pci"), { recursive: true });
    symlinkSync("../../../bus/pci/drivers/vfio-pci", join(dev, "driver"));
    const p = pod();
    const ipam = { type: "static", addresses: [{ address: "10.77.21.5/24" }] };
    const config = conf({ pciBusID: "0000:3b:05.0", sysfsRoot: sysfs, ipam });
    const before = ipJson<{ ifname: string }[]>(p, "link", "show").map((l) => l.ifname);
    const add = run("ADD", p, { ...config, cniVersion: "1.0.0" }, "ctr-dpdk");
    expect(add.code, add.stdout).toBe(0);
    expect(add.json).toEqual({
      cniVersion: "1.0.0",
      interfaces: [{ name: "eth1", sandbox: p.path }],
      ips: [{ interface: 0, address: "10.77.21.5/24" }],
      dns: {},
    });
    const p11 = pod();
    const v11 = run("ADD", p11, { ...config, ipam: undefined }, "ctr-dpdk-11");
    expect(v11.json.interfaces).toEqual([{ name: "eth1", sandbox: p11.path, pciID: "0000:3b:05.0" }]);
    expect(ipJson<{ ifname: string }[]>(p, "link", "show").map((l) => l.ifname)).toEqual(before);
    // (static's own CHECK looks for an interface in the pod, so CHECK runs without IPAM here)
    const chk = run("CHECK", p11, { ...config, ipam: undefined, prevResult: v11.json }, "ctr-dpdk-11");
    expect(chk.code, chk.stdout).toBe(0);
    expect(run("DEL", p, { ...config, cniVersion: "1.0.0" }, "ctr-dpdk").code).toBe(0);
    expect(run("DEL", p11, { ...config, ipam: undefined }, "ctr-dpdk-11").code).toBe(0);
    expect(readdirSync(stateDir).filter((f) => f.startsWith("ctr-dpdk"))).toEqual([]);
  });

  it("state files are unambiguous: container a + ifname x-eth0 and container a-x + eth0 are two attachments", () => {
    const e1 = makeEni(22),
      e2 = makeEni(23);
    const p1 = pod(),
      p2 = pod();
    expect(run("ADD", p1, conf({ device: e1.name }), "a", "x-eth0").code).toBe(0);
    const second = run("ADD", p2, conf({ device: e2.name }), "a-x", "eth0");
    expect(second.code, second.stdout).toBe(0);
    expect(run("DEL", p2, conf({ device: e2.name }), "a-x", "eth0").code).toBe(0);
    expectRestored(e2, 23);
    expect(hasLink(p1, "x-eth0")).toBe(true); // the other pod keeps its NIC
    expect(run("DEL", p1, conf({ device: e1.name }), "a", "x-eth0").code).toBe(0);
    expectRestored(e1, 22);
  });

  it("DEL of another network with the same container and ifname never takes this attachment's device", () => {
    const eni = makeEni(24);
    const p = pod();
    expect(run("ADD", p, conf({ device: eni.name }), "ctr-own").code).toBe(0);
    const other = { ...conf({ device: eni.name }), name: "other-net" };
    expect(run("DEL", p, other, "ctr-own").code).toBe(0);
    expect(hasLink(p, "eth1")).toBe(true);
    expect(run("DEL", p, conf({ device: eni.name }), "ctr-own").code).toBe(0);
    expectRestored(eni, 24);
  });

  it("GC gives back the devices of attachments the runtime no longer lists, and keeps the listed ones", () => {
    const gone = makeEni(25),
      kept = makeEni(26);
    const pg = pod(),
      pk = pod();
    expect(run("ADD", pg, conf({ device: gone.name }), "ctr-gc-gone").code).toBe(0);
    expect(run("ADD", pk, conf({ device: kept.name }), "ctr-gc-kept").code).toBe(0);
    const valid = [{ containerID: "ctr-gc-kept", ifname: "eth1" }];
    const gc = hx.run(exe, { command: "GC", config: { ...conf({}), device: kept.name, "cni.dev/valid-attachments": valid } });
    expect(gc.code, gc.stdout).toBe(0);
    expectRestored(gone, 25);
    expect(hasLink(pk, "eth1")).toBe(true);
    expect(readdirSync(stateDir).filter((f) => f.startsWith("ctr-gc-"))).toEqual(["ctr-gc-kept@eth1.json"]);
    expect(run("DEL", pk, conf({ device: kept.name }), "ctr-gc-kept").code).toBe(0);
  });

  it("STATUS: ready when the device is on the host or held by one of its pods, 50 when it is nowhere", () => {
    const eni = makeEni(27);
    const status = (device: string) => hx.run(exe, { command: "STATUS", config: conf({ device }) });
    expect(status(eni.name).code).toBe(0);
    const p = pod();
    expect(run("ADD", p, conf({ device: eni.name }), "ctr-st").code).toBe(0);
    expect(status(eni.name).code).toBe(0);
    expectCniError(status("nosuch0"), 50, 'device "nosuch0" does not exist on this node');
    expect(run("DEL", p, conf({ device: eni.name }), "ctr-st").code).toBe(0);
  });

  it("CNI_NETNS naming the host namespace is refused (4) and the device stays", () => {
    const eni = makeEni(28);
    expectCniError(run("ADD", host.path, conf({ device: eni.name }), "ctr-hostns"), 4, "is the plugin's own (host) network namespace");
    expectRestored(eni, 28);
  });

  it("announces the addresses once the NIC has carrier, also when carrier comes after admin-up", async () => {
    const lan = pod(); // the switch side of the cable
    const name = `eni29x${seq++}`;
    ipIn(host, "link", "add", name, "type", "veth", "peer", "name", `${name}p`, "netns", lan.name);
    ipIn(lan, "addr", "add", "10.77.29.1/24", "dev", `${name}p`);
    ipIn(lan, "netns", "exec", lan.name, "sysctl", "-qw", `net.ipv4.conf.${name}p.arp_accept=1`);
    const p = pod();
    const config = conf({ device: name, carrierWaitMs: 5000, addresses: { [name]: ["10.77.29.5/24"] } });
    const adding = runAsync(exe, { command: "ADD", config, containerId: "ctr-carrier", netns: p.path, ifName: "eth1" });
    await new Promise((r) => setTimeout(r, 400)); // admin-up happened without carrier: that announcement was lost
    ipIn(lan, "link", "set", `${name}p`, "up");
    const add = await adding;
    expect(add.code, add.stdout).toBe(0);
    const neigh = ipJson<{ dst: string; lladdr?: string }[]>(lan, "neigh", "show", "dev", `${name}p`);
    expect(neigh).toContainEqual(expect.objectContaining({ dst: "10.77.29.5", lladdr: linkIn(p, "eth1").address }));
    expect(run("DEL", p, config, "ctr-carrier").code).toBe(0);
  });
});

/** A built plugin run in the host namespace without blocking this process (for a concurrent change). */
function runAsync(executable: string, call: CniCall): Promise<{ code: number | null; stdout: string; json: any }> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    CNI_COMMAND: call.command,
    CNI_PATH: "/usr/lib/cni",
    CNI_CONTAINERID: call.containerId!,
    CNI_NETNS: call.netns!,
    CNI_IFNAME: call.ifName!,
  };
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", host.name, executable], { env, stdio: ["pipe", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      let json: any;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, json });
    });
    child.stdin.end(JSON.stringify(call.config));
  });
}
