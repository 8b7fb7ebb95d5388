// Runs inside the kernel lab guest (scripts/kernel-lab.sh): berth-hostdev (the BUILT executable)
// on real PCI NICs. The lab gives the guest three virtio-net PCI NICs, each alone on an empty qemu
// hub (no backend: nothing leaves the guest), MACs 52:54:00:be:00:01..03, named eth0..eth2 by the
// kernel (no udev). Unlike veth/macvlan, a physical NIC is not destroyed with a dying namespace:
// the kernel gives it back to init_net, which the host tests (test/cni/hostdev.test.ts) can only
// simulate.
//
// What the kernel (Debian 6.1) really does, checked here and by hand: when the pod namespace is
// deleted, default_device_exit moves the NIC back to init_net
//  - under its pod name (e.g. "net1") when init_net has no link of that name, else as
//    "dev<ifindex>" (e.g. pod "eth0" comes back as "dev4", the host having its own eth0);
//  - DOWN, with no addresses (the pod's were flushed with the move; the host's were flushed when
//    it left) and so none of its routes;
//  - keeping the MTU and MAC it had in the pod (the factory MAC is still its permaddr).
// It is back by the time `ip netns del` returns when nothing else holds the namespace, but the
// cleanup is asynchronous in general, so the test polls.
//   BERTH_DIST=$PWD/dist scripts/kernel-lab.sh node_modules/.bin/vitest run --config test/lab/vitest.config.ts test/lab/hostdev.test.ts
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { pluginDir, pluginPath, runCni, type CniCall, type PluginRun } from "../helpers/plugins";

const tag = process.pid.toString(36);
const nics = ["52:54:00:be:00:01", "52:54:00:be:00:02", "52:54:00:be:00:03"];
const stateDir = mkdtempSync(join(tmpdir(), "berth-lab-hostdev-"));
const netnsNames: string[] = [];

interface LinkJson {
  ifindex: number;
  ifname: string;
  address: string;
  permaddr?: string;
  mtu: number;
  flags: string[];
  operstate: string;
}
interface NicState {
  name: string;
  mac: string;
  mtu: number;
  up: boolean;
  addresses: string[];
  routes: string[];
}

function ip(...args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}
const ipJson = <T>(...args: string[]): T => JSON.parse(ip("-j", ...args)) as T;

function links(netns?: string): LinkJson[] {
  return ipJson<LinkJson[]>(...(netns ? ["-n", netns] : []), "link", "show");
}

/** The lab NIC whose factory MAC is `mac`, in init_net, whatever its name and current MAC. */
function hostNic(mac: string): LinkJson | undefined {
  return links().find((l) => l.address === mac || l.permaddr === mac);
}

function addresses(name: string, netns?: string): string[] {
  const [l] = ipJson<{ addr_info: { local: string; prefixlen: number; scope: string }[] }[]>(
    ...(netns ? ["-n", netns] : []),
    "addr",
    "show",
    "dev",
    name,
  );
  return l!.addr_info
    .filter((a) => a.scope === "global")
    .map((a) => `${a.local}/${a.prefixlen}`)
    .sort();
}

function routes(name: string, netns?: string): string[] {
  const ns = netns ? ["-n", netns] : [];
  return [
    ...ipJson<{ dst: string; gateway?: string; protocol?: string }[]>(...ns, "-4", "route", "show", "dev", name),
    ...ipJson<{ dst: string; gateway?: string; protocol?: string }[]>(...ns, "-6", "route", "show", "dev", name),
  ]
    .filter((r) => r.protocol !== "kernel" && !r.dst.startsWith("fe80:") && !r.dst.startsWith("ff00:"))
    .map((r) => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ""}`)
    .sort();
}

/** The NIC's PCI address, from /sys/class/net/<dev>/device (virtioN, a child of the PCI function). */
function pciOf(name: string): string {
  const device = `/sys/class/net/${name}/device`;
  expect(basename(readlinkSync(device))).toMatch(/^virtio\d+$/);
  const pci = basename(dirname(realpathSync(device)));
  expect(pci).toMatch(/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/);
  return pci;
}

/**
 * Gives lab NIC n (1-3) a host configuration worth restoring: name ethN-1 (it may be back from a
 * dead pod under another name), MTU 1400, its factory MAC, addresses 10.203.0.1N/24 and
 * fd00:203::1N/64, up or down, routes 10.203.10N.0/24 via 10.203.0.1 and fd00:203:10N::/64 via fd00:203::1.
 */
function prepareNic(n: number, up = true): NicState {
  const mac = nics[n - 1]!;
  const name = `eth${n - 1}`;
  const l = hostNic(mac);
  if (!l)
    throw new Error(
      `lab NIC ${mac} is not in the host namespace: is this the kernel lab (scripts/kernel-lab.sh) with its virtio-net NICs?`,
    );
  ip("link", "set", "dev", l.ifname, "down");
  if (l.ifname !== name) ip("link", "set", "dev", l.ifname, "name", name);
  ip("addr", "flush", "dev", name);
  ip("link", "set", "dev", name, "address", mac, "mtu", "1400");
  ip("addr", "add", `10.203.0.1${n}/24`, "dev", name);
  ip("addr", "add", `fd00:203::1${n}/64`, "dev", name, "nodad");
  ip("link", "set", "dev", name, "up"); // routes via a gateway need the link up
  ip("route", "add", `10.203.10${n}.0/24`, "via", "10.203.0.1", "dev", name);
  ip("-6", "route", "add", `fd00:203:10${n}::/64`, "via", "fd00:203::1", "dev", name);
  if (!up) ip("link", "set", "dev", name, "down");
  const state = nicState(name);
  expect(state).toEqual({
    name,
    mac,
    mtu: 1400,
    up,
    // Down: the kernel drops the routes through the link, and its IPv6 addresses (keep_addr_on_down=0).
    addresses: up ? [`10.203.0.1${n}/24`, `fd00:203::1${n}/64`] : [`10.203.0.1${n}/24`],
    routes: up ? [`10.203.10${n}.0/24 via 10.203.0.1`, `fd00:203:10${n}::/64 via fd00:203::1`].sort() : [],
  });
  return state;
}

function nicState(name: string): NicState {
  const [l] = ipJson<LinkJson[]>("link", "show", "dev", name);
  return { name: l!.ifname, mac: l!.address, mtu: l!.mtu, up: l!.flags.includes("UP"), addresses: addresses(name), routes: routes(name) };
}

/** Each host attribute of the NIC is as prepareNic left it, checked one by one. */
function expectRestored(want: NicState, mac: string) {
  const l = hostNic(mac);
  expect(l, `NIC ${mac} back in the host namespace`).toBeDefined();
  const got = nicState(l!.ifname);
  expect(got.name, "name").toBe(want.name);
  expect(got.mtu, "mtu").toBe(want.mtu);
  expect(got.mac, "mac").toBe(want.mac);
  expect(got.up, "up/down").toBe(want.up);
  expect(got.addresses, "addresses").toEqual(want.addresses);
  expect(got.routes, "routes").toEqual(want.routes);
}

function newNetns(label: string): string {
  const name = `hd-${tag}-${label}`;
  ip("netns", "add", name);
  netnsNames.push(name);
  return name;
}

function conf(extra: Record<string, unknown>, address = "10.203.1.2/24") {
  return {
    cniVersion: "1.0.0",
    name: "lab-eni",
    type: "berth-hostdev",
    stateDir,
    mtu: 1450,
    ipam: { type: "static", addresses: [{ address, gateway: "10.203.1.1" }], routes: [{ dst: "10.203.200.0/24", gw: "10.203.1.1" }] },
    ...extra,
  };
}

function call(command: CniCall["command"], netns: string, config: unknown, ifName = "net1"): PluginRun {
  return runCni(pluginPath("berth-hostdev"), {
    command,
    config,
    containerId: `ctr-${netns}`,
    netns: `/run/netns/${netns}`,
    ifName,
    path: [pluginDir(), "/usr/lib/cni"],
  });
}

/** ADD succeeded and the pod has the NIC under ifName, configured; returns the result. */
function expectAdded(r: PluginRun, netns: string, mac: string, ifName = "net1", address = "10.203.1.2/24"): any {
  expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
  expect(r.json.interfaces[0]).toMatchObject({ name: ifName, mac, sandbox: `/run/netns/${netns}` }); // CNI 1.0: no mtu field
  expect(r.json.ips).toEqual([{ address, gateway: "10.203.1.1", interface: 0 }]);
  expect(
    links().some((l) => l.address === mac || l.permaddr === mac),
    "NIC left the host",
  ).toBe(false);
  const [inPod] = ipJson<LinkJson[]>("-n", netns, "link", "show", "dev", ifName);
  expect(inPod!.address).toBe(mac);
  expect(inPod!.mtu).toBe(1450);
  expect(inPod!.flags).toContain("UP");
  expect(addresses(ifName, netns)).toEqual([address]);
  expect(routes(ifName, netns)).toContain("10.203.200.0/24 via 10.203.1.1");
  return r.json;
}

/** The attachment's record; pciID is in the result only from CNI 1.1, which the static IPAM plugin does not speak. */
function savedState(netns: string, ifName = "net1"): any {
  return JSON.parse(readFileSync(join(stateDir, `ctr-${netns}@${ifName}.json`), "utf8"));
}

function stateFiles(): string[] {
  return readdirSync(stateDir).filter((f) => f.endsWith(".json"));
}

/** Deletes the namespace without DEL, then waits for the kernel to hand the NIC back to init_net. */
function killPodNetns(netns: string | undefined, mac: string): LinkJson {
  if (netns) ip("netns", "del", netns);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const l = hostNic(mac);
    if (l) return l;
    if (Date.now() > deadline) throw new Error(`NIC ${mac} did not come back to the host namespace within 10 s of deleting ${netns}`);
    spawnSync("sleep", ["0.1"]);
  }
}

describe("kernel lab: berth-hostdev on real PCI NICs (virtio-net)", () => {
  beforeAll(() => {
    for (const mac of nics) {
      if (!hostNic(mac)) {
        throw new Error(
          `lab NIC ${mac} not found; test/lab runs only inside the kernel lab: scripts/kernel-lab.sh, which adds three virtio-net NICs`,
        );
      }
    }
    pluginPath("berth-hostdev");
  });

  // A failed case must not strand a NIC in a pod: deleting the namespaces hands them back.
  afterEach(() => {
    for (const n of netnsNames.splice(0)) spawnSync("ip", ["netns", "del", n]);
    for (const mac of nics) if (!hostNic(mac)) killPodNetns(undefined, mac);
    for (const f of stateFiles()) rmSync(join(stateDir, f));
  });

  afterAll(() => {
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("ADD by device name with static IPAM, CHECK, DEL: the NIC is back with its name, MTU, MAC, up, addresses and routes", () => {
    const want = prepareNic(2);
    const ns = newNetns("a");
    const config = conf({ device: "eth1" });
    const pci = pciOf("eth1");
    const add = expectAdded(call("ADD", ns, config), ns, want.mac);
    expect(savedState(ns).pciAddress).toBe(pci);
    const check = call("CHECK", ns, { ...config, prevResult: add });
    expect(check.code, `${check.stdout}${check.stderr}`).toBe(0);
    const del = call("DEL", ns, config);
    expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
    expectRestored(want, want.mac);
    expect(links(ns).map((l) => l.ifname)).toEqual(["lo"]);
    expect(stateFiles()).toEqual([]);
  });

  it("ADD by pciBusID and by runtimeConfig.deviceID (the real PCI address): DEL restores the NIC, also when it was down", () => {
    for (const [i, selector] of (["pciBusID", "deviceID"] as const).entries()) {
      const want = prepareNic(3, i === 1);
      const pci = pciOf("eth2");
      const ns = newNetns(`b${i}`);
      const config = conf(selector === "pciBusID" ? { pciBusID: pci } : { runtimeConfig: { deviceID: pci } });
      expectAdded(call("ADD", ns, config), ns, want.mac);
      expect(savedState(ns)).toMatchObject({ pciAddress: pci, original: { name: "eth2", up: i === 1 } });
      expect(existsSync(`/sys/bus/pci/devices/${pci}`)).toBe(true);
      const del = call("DEL", ns, config);
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
      expectRestored(want, want.mac);
    }
  });

  it(
    "the pod namespace dies without DEL: the kernel returns the NIC under its pod name, DOWN, bare; DEL restores it, " +
      "DEL again succeeds",
    () => {
      const want = prepareNic(2);
      const ns = newNetns("c1");
      const podMac = "52:54:00:be:aa:02";
      const config = conf({ device: "eth1", mac: podMac });
      expectAdded(call("ADD", ns, config), ns, podMac);
      const back = killPodNetns(ns, want.mac);
      // Real kernel: "net1" is free in init_net, so the NIC keeps its pod name; it is down, has no
      // addresses or routes, keeps the pod's MTU and MAC; the factory MAC is its permaddr.
      expect(back.ifname).toBe("net1");
      expect(back.flags).not.toContain("UP");
      expect(back.mtu).toBe(1450);
      expect(back.address).toBe(podMac);
      expect(back.permaddr).toBe(want.mac);
      expect(addresses("net1")).toEqual([]);
      expect(routes("net1")).toEqual([]);
      const del = call("DEL", ns, config);
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
      expectRestored(want, want.mac);
      expect(stateFiles()).toEqual([]);
      const again = call("DEL", ns, config);
      expect(again.code, `${again.stdout}${again.stderr}`).toBe(0);
      expectRestored(want, want.mac);
    },
  );

  it(
    "the pod namespace dies without DEL and the pod name is taken on the host: the NIC comes back as dev<ifindex>; " +
      "DEL (by PCI) restores it",
    () => {
      const want = prepareNic(3);
      const pci = pciOf("eth2");
      const ns = newNetns("c2");
      const config = conf({ pciBusID: pci });
      expectAdded(call("ADD", ns, config, "eth0"), ns, want.mac, "eth0"); // the host has its own eth0
      const back = killPodNetns(ns, want.mac);
      // Real kernel: init_net already has an "eth0", so the NIC comes back as "dev" + its ifindex.
      expect(back.ifname).toBe(`dev${back.ifindex}`);
      expect(back.flags).not.toContain("UP");
      expect(back.mtu).toBe(1450);
      expect(back.address).toBe(want.mac);
      expect(addresses(back.ifname)).toEqual([]);
      expect(pciOf(back.ifname)).toBe(pci);
      const del = call("DEL", ns, config, "eth0");
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
      expectRestored(want, want.mac);
      expect(call("DEL", ns, config, "eth0").code).toBe(0);
      expectRestored(want, want.mac);
    },
  );

  it(
    "the pod dies without DEL and its replacement ADDs the same NIC (by PCI): the stale record is restored first, " +
      "the new DEL restores the host's state",
    () => {
      const want = prepareNic(3);
      const pci = pciOf("eth2");
      const dead = newNetns("f1");
      expectAdded(call("ADD", dead, conf({ pciBusID: pci, mac: "52:54:00:be:aa:03" })), dead, "52:54:00:be:aa:03");
      killPodNetns(dead, want.mac);
      const ns = newNetns("f2");
      const config = conf({ pciBusID: pci }, "10.203.1.3/24");
      expectAdded(call("ADD", ns, config), ns, want.mac, "net1", "10.203.1.3/24");
      expect(stateFiles()).toEqual([`ctr-${ns}@net1.json`]);
      expect(savedState(ns).original).toMatchObject({ name: "eth2", mtu: 1400, mac: want.mac, up: true });
      const del = call("DEL", ns, config);
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
      expectRestored(want, want.mac);
    },
  );

  it("DEL twice: the second DEL succeeds and changes nothing", () => {
    const want = prepareNic(1);
    const ns = newNetns("d");
    const config = conf({ device: "eth0" });
    expectAdded(call("ADD", ns, config), ns, want.mac);
    for (const _ of [1, 2]) {
      const del = call("DEL", ns, config);
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
      expectRestored(want, want.mac);
    }
    expect(stateFiles()).toEqual([]);
  });

  it("after the NIC was renamed and given another MAC inside the pod, DEL finds it and restores it", () => {
    const want = prepareNic(2);
    const ns = newNetns("e");
    const config = conf({ device: "eth1" });
    expectAdded(call("ADD", ns, config), ns, want.mac);
    ip("-n", ns, "link", "set", "dev", "net1", "down"); // a running netdev cannot be renamed
    ip("-n", ns, "link", "set", "dev", "net1", "name", "renamed0", "address", "52:54:00:be:bb:02", "mtu", "1300");
    ip("-n", ns, "link", "set", "dev", "renamed0", "up");
    const del = call("DEL", ns, config);
    expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
    expectRestored(want, want.mac);
    expect(links(ns).map((l) => l.ifname)).toEqual(["lo"]);
  });

  it("renamed with another MAC inside the pod, then the namespace dies: DEL finds the returned NIC by its permanent MAC", () => {
    const want = prepareNic(2);
    const ns = newNetns("e2");
    const config = conf({ device: "eth1" });
    expectAdded(call("ADD", ns, config), ns, want.mac);
    ip("-n", ns, "link", "set", "dev", "net1", "down"); // a running netdev cannot be renamed
    ip("-n", ns, "link", "set", "dev", "net1", "name", "renamed1", "address", "52:54:00:be:cc:02");
    const back = killPodNetns(ns, want.mac);
    expect(back.ifname).toBe("renamed1");
    expect(back.address).toBe("52:54:00:be:cc:02");
    const del = call("DEL", ns, config);
    expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
    expectRestored(want, want.mac);
  });
});

describe("kernel lab: berth-hostdev on dummy devices (ENI stand-ins without a PCI device)", () => {
  const dummy = `dum${tag}`.slice(0, 15);

  afterEach(() => {
    for (const n of netnsNames.splice(0)) spawnSync("ip", ["netns", "del", n]);
    spawnSync("ip", ["link", "del", dummy]);
    for (const f of stateFiles()) rmSync(join(stateDir, f));
  });

  function prepareDummy(): NicState {
    ip("link", "add", dummy, "type", "dummy");
    ip("link", "set", "dev", dummy, "mtu", "1400", "address", "0a:58:0a:cb:00:63", "up");
    ip("addr", "add", "10.203.99.1/24", "dev", dummy);
    ip("route", "add", "10.203.98.0/24", "via", "10.203.99.254", "dev", dummy);
    return nicState(dummy);
  }

  it("ADD by name and by MAC, DEL: name, MTU, MAC, up, address and route come back", () => {
    for (const [i, selector] of (["device", "hwaddr"] as const).entries()) {
      const want = prepareDummy();
      const ns = newNetns(`dm${i}`);
      const config = conf(selector === "device" ? { device: dummy } : { hwaddr: want.mac });
      expectAdded(call("ADD", ns, config), ns, want.mac);
      expect(links().some((l) => l.ifname === dummy)).toBe(false);
      const del = call("DEL", ns, config);
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
      expectRestored(want, want.mac);
      expect(stateFiles()).toEqual([]);
      ip("link", "del", dummy);
    }
  });

  it("a dummy dies with its namespace (unlike a NIC): DEL succeeds, drops the record, and DEL again succeeds", () => {
    const want = prepareDummy();
    const ns = newNetns("dm2");
    const config = conf({ device: dummy });
    expectAdded(call("ADD", ns, config), ns, want.mac);
    ip("netns", "del", ns);
    for (const _ of [1, 2]) {
      const del = call("DEL", ns, config);
      expect(del.code, `${del.stdout}${del.stderr}`).toBe(0);
    }
    expect(links().some((l) => l.address === want.mac)).toBe(false);
    expect(stateFiles()).toEqual([]);
  });
});
