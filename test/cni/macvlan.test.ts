// berth-macvlan through the BUILT executable, run like a runtime runs it, on real namespaces and
// links: every config form, CHECK/DEL, failures that must leave nothing behind.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ownership } from "../../cni/plugins/macvlan";
import { expectCniError } from "../helpers/cni-error";
import { ipIn, ipJson, removeNetns } from "../helpers/netns";
import {
  addresses,
  cni,
  destroyLab,
  links,
  macvlan,
  macvlans,
  makeLab,
  newPod,
  podLink,
  routes,
  stateFiles,
  type Lab,
} from "./macvlan-fixture";

let lab: Lab;
const stateDir = mkdtempSync(join(tmpdir(), "berth-macvlan-state-"));
let seq = 0;

const staticIpam = (addrs = [{ address: "10.77.0.5/24", gateway: "10.77.0.1" }], routesList: unknown[] = [{ dst: "0.0.0.0/0" }]) => ({
  type: "static",
  addresses: addrs,
  routes: routesList,
});

function conf(extra: Record<string, unknown> = {}, version = "1.0.0") {
  return { cniVersion: version, name: "underlay", type: "berth-macvlan", master: "m0", stateDir, ipam: staticIpam(), ...extra };
}

function attach(config: unknown, opts: { cniArgs?: string; ifName?: string } = {}) {
  const pod = newPod(lab);
  const call = {
    containerId: `ctr-${process.pid}-${seq++}`,
    netns: pod.path,
    ifName: opts.ifName ?? "eth0",
    ...(opts.cniArgs ? { cniArgs: opts.cniArgs } : {}),
  };
  const add = cni(lab, macvlan(), { command: "ADD", config, ...call });
  return { pod, call, add };
}

function withPrev(config: Record<string, unknown>, prevResult: unknown) {
  return { ...config, prevResult };
}

beforeAll(() => {
  lab = makeLab("mv");
}, 120_000);

afterAll(() => {
  destroyLab(lab);
  rmSync(stateDir, { recursive: true, force: true });
});

describe("berth-macvlan ADD / CHECK / DEL", () => {
  it("VERSION lists the supported versions", () => {
    const r = cni(lab, macvlan(), { command: "VERSION", config: "{}" });
    expect(r.json).toEqual({ cniVersion: "1.1.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] });
  });

  it("untagged bridge-mode macvlan with static IPAM: interface, addresses, routes, result; CHECK; DEL twice", () => {
    const config = conf({ dns: { nameservers: ["10.77.0.53"], search: ["svc.example"] } });
    const { pod, call, add } = attach(config);
    expect(add.stderr).toBe("");
    expect(add.code, add.stdout).toBe(0);
    const eth0 = podLink(pod)!;
    expect(eth0.linkinfo?.info_kind).toBe("macvlan");
    expect(eth0.linkinfo?.info_data?.mode).toBe("bridge");
    expect(eth0.mtu).toBe(1500);
    expect(eth0.operstate).toBe("UP");
    expect(addresses(pod)).toEqual(["10.77.0.5/24"]);
    expect(routes(pod)).toEqual([
      { dst: "10.77.0.0/24", dev: "eth0", scope: "link", flags: [] },
      { dst: "default", gateway: "10.77.0.1", dev: "eth0", flags: [] },
    ]);
    expect(add.json).toEqual({
      cniVersion: "1.0.0",
      interfaces: [{ name: "eth0", mac: eth0.address, sandbox: pod.path }],
      ips: [{ interface: 0, address: "10.77.0.5/24", gateway: "10.77.0.1" }],
      routes: [{ dst: "0.0.0.0/0" }],
      dns: { nameservers: ["10.77.0.53"], search: ["svc.example"] },
    });
    expect(ipIn(pod, "netns", "exec", pod.name, "sysctl", "-n", "net.ipv4.conf.eth0.arp_notify").trim()).toBe("1");
    // The gateway answers: the pod is really on the master's L2.
    expect(ipIn(pod, "netns", "exec", pod.name, "ping", "-c1", "-W2", "10.77.0.1")).toContain("1 received");

    const chk = cni(lab, macvlan(), { command: "CHECK", config: withPrev(config, add.json), ...call });
    expect(chk.code, chk.stdout).toBe(0);

    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
    expect(podLink(pod)).toBeUndefined();
    const again = cni(lab, macvlan(), { command: "DEL", config, ...call });
    expect(again.code, again.stdout).toBe(0);
    expect(again.stdout).toBe("");
  });

  it("CHECK reports a changed MAC, a missing address and a missing route with code 120", () => {
    const config = conf();
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    const wrongMac = { ...add.json, interfaces: [{ ...add.json.interfaces[0], mac: "0a:00:00:00:00:01" }] };
    let r = cni(lab, macvlan(), { command: "CHECK", config: withPrev(config, wrongMac), ...call });
    expect(r.json).toMatchObject({ code: 120 });
    expect(r.json.msg).toContain("MAC");
    ipIn(pod, "addr", "del", "10.77.0.5/24", "dev", "eth0");
    r = cni(lab, macvlan(), { command: "CHECK", config: withPrev(config, add.json), ...call });
    expect(r.json).toMatchObject({ code: 120 });
    expect(r.json.msg).toContain("10.77.0.5/24");
    r = cni(lab, macvlan(), { command: "CHECK", config: withPrev(conf({ mode: "private" }), add.json), ...call });
    expect(r.json.code).toBe(120);
    expect(r.json.msg).toContain("mode");
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
  });

  for (const mode of ["bridge", "private", "vepa", "passthru"]) {
    it(`mode ${mode}: ADD, CHECK, DEL`, () => {
      const config = conf({ mode });
      const { pod, call, add } = attach(config);
      expect(add.code, add.stdout).toBe(0);
      expect(podLink(pod)?.linkinfo?.info_data?.mode).toBe(mode);
      expect(cni(lab, macvlan(), { command: "CHECK", config: withPrev(config, add.json), ...call }).code).toBe(0);
      expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
      expect(podLink(pod)).toBeUndefined();
    });
  }

  it("mtu sets the pod's MTU; larger than the master's is refused with code 7 before anything changes", () => {
    const { pod, call, add } = attach(conf({ mtu: 1400 }));
    expect(add.code, add.stdout).toBe(0);
    expect(podLink(pod)?.mtu).toBe(1400);
    expect(cni(lab, macvlan(), { command: "DEL", config: conf({ mtu: 1400 }), ...call }).code).toBe(0);

    const big = attach(conf({ mtu: 9000 }));
    expect(big.add.json).toMatchObject({ code: 7 });
    expect(big.add.json.msg).toContain("mtu 9000 is larger than the MTU of master m0 (1500)");
    expect(links(big.pod).map((l) => l.ifname)).toEqual(["lo"]);
  });

  it("MAC: runtimeConfig.mac > CNI_ARGS MAC > config mac", () => {
    const cases = [
      {
        config: conf({ mac: "0a:00:00:00:00:03", runtimeConfig: { mac: "0a:00:00:00:00:01" } }),
        cniArgs: "IgnoreUnknown=1;MAC=0a:00:00:00:00:02",
        want: "0a:00:00:00:00:01",
      },
      { config: conf({ mac: "0a:00:00:00:00:03" }), cniArgs: "IgnoreUnknown=1;MAC=0a:00:00:00:00:02", want: "0a:00:00:00:00:02" },
      { config: conf({ mac: "0A:00:00:00:00:03" }), cniArgs: undefined, want: "0a:00:00:00:00:03" },
    ];
    for (const c of cases) {
      const { pod, call, add } = attach(c.config, { cniArgs: c.cniArgs });
      expect(add.code, add.stdout).toBe(0);
      expect(podLink(pod)?.address).toBe(c.want);
      expect(add.json.interfaces[0].mac).toBe(c.want);
      expect(cni(lab, macvlan(), { command: "CHECK", config: withPrev(c.config, add.json), ...call }).code).toBe(0);
      expect(cni(lab, macvlan(), { command: "DEL", config: c.config, ...call }).code).toBe(0);
    }
  });

  it("macFromIP derives 0a:58:<IPv4 bytes>; an explicit MAC still wins", () => {
    const config = conf({ macFromIP: true, ipam: staticIpam([{ address: "10.77.0.9/24", gateway: "10.77.0.1" }]) });
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    expect(podLink(pod)?.address).toBe("0a:58:0a:4d:00:09");
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
    const explicit = attach({ ...config, mac: "0a:00:00:00:00:07" });
    expect(podLink(explicit.pod)?.address).toBe("0a:00:00:00:00:07");
    expect(cni(lab, macvlan(), { command: "DEL", config, ...explicit.call }).code).toBe(0);
  });

  it("host-local IPAM through delegation: ADD, CHECK, DEL gives the address back", () => {
    const dataDir = mkdtempSync(join(tmpdir(), "berth-hl-"));
    try {
      const config = conf({
        ipam: {
          type: "host-local",
          dataDir,
          ranges: [[{ subnet: "10.77.0.0/24", rangeStart: "10.77.0.100", rangeEnd: "10.77.0.110", gateway: "10.77.0.1" }]],
          routes: [{ dst: "0.0.0.0/0" }],
        },
      });
      const a = attach(config);
      expect(a.add.code, a.add.stdout).toBe(0);
      expect(addresses(a.pod)).toEqual(["10.77.0.100/24"]);
      expect(cni(lab, macvlan(), { command: "CHECK", config: withPrev(config, a.add.json), ...a.call }).code).toBe(0);
      expect(cni(lab, macvlan(), { command: "DEL", config, ...a.call }).code).toBe(0);
      const b = attach(config);
      expect(b.add.json.ips[0].address).toMatch(/^10\.77\.0\.10\d\/24$/);
      expect(cni(lab, macvlan(), { command: "DEL", config, ...b.call }).code).toBe(0);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("dual stack with ipv6DAD wait: IPv6 passes real DAD before ADD returns; default routes per family", () => {
    const config = conf(
      {
        ipv6DAD: "wait",
        ipam: staticIpam(
          [
            { address: "10.77.0.6/24", gateway: "10.77.0.1" },
            { address: "fd77::6/64", gateway: "fd77::1" },
          ],
          [{ dst: "0.0.0.0/0" }, { dst: "::/0" }],
        ),
      },
      "1.1.0",
    );
    // static speaks up to 1.0.0: run the config at 1.0.0 for IPAM but ask our result in 1.1.0 below
    const cfg = { ...config, cniVersion: "1.0.0" };
    const { pod, call, add } = attach(cfg);
    expect(add.code, add.stdout).toBe(0);
    expect(addresses(pod)).toEqual(["10.77.0.6/24", "fd77::6/64"]);
    const [eth0] = JSON.parse(ipIn(pod, "-j", "-6", "addr", "show", "dev", "eth0"));
    const v6 = eth0.addr_info.find((a: any) => a.local === "fd77::6");
    expect(v6.tentative).toBeUndefined(); // DAD finished before ADD answered
    expect(v6.dadfailed).toBeUndefined();
    expect(routes(pod).filter((r) => r.dst === "default")).toEqual([
      { dst: "default", gateway: "10.77.0.1", dev: "eth0", flags: [] },
      { dst: "default", gateway: "fd77::1", dev: "eth0", flags: [] },
    ]);
    expect(ipIn(pod, "netns", "exec", pod.name, "ping", "-6", "-c1", "-W2", "fd77::1")).toContain("1 received");
    expect(cni(lab, macvlan(), { command: "CHECK", config: withPrev(cfg, add.json), ...call }).code).toBe(0);
    expect(cni(lab, macvlan(), { command: "DEL", config: cfg, ...call }).code).toBe(0);
  });

  it("a duplicate IPv6 address fails DAD: error naming it, nothing left in the pod", () => {
    ipIn(lab.lan, "addr", "add", "fd77::66/64", "dev", "lan0", "nodad");
    try {
      const config = conf({ ipv6DAD: "wait", ipam: staticIpam([{ address: "fd77::66/64", gateway: "fd77::1" }], []) });
      const { pod, add } = attach(config);
      expect(add.json).toMatchObject({ code: 104 });
      expect(add.json.msg).toContain("fd77::66/64");
      expect(add.json.msg).toContain("duplicate address detection failed");
      expect(macvlans(pod)).toEqual([]);
    } finally {
      ipIn(lab.lan, "addr", "del", "fd77::66/64", "dev", "lan0");
    }
  });

  it("IPv6 DAD is optimistic by default (usable at once, as sriov-cni), off on request; a bad ipv6DAD is 7", () => {
    const v6 = (extra: Record<string, unknown>, address: string) =>
      conf({ ...extra, ipam: staticIpam([{ address, gateway: "fd77::1" }], [{ dst: "::/0" }]) });
    const opt = attach(v6({}, "fd77::71/64"));
    expect(opt.add.code, opt.add.stdout).toBe(0);
    const flags = (pod: typeof opt.pod, ip: string) =>
      JSON.parse(ipIn(pod, "-j", "-6", "addr", "show", "dev", "eth0"))[0].addr_info.find((a: any) => a.local === ip);
    const optimistic = flags(opt.pod, "fd77::71");
    expect(optimistic.optimistic === true || optimistic.tentative === undefined).toBe(true); // ADD did not wait for DAD
    expect(ipIn(opt.pod, "netns", "exec", opt.pod.name, "sysctl", "-n", "net.ipv6.conf.eth0.optimistic_dad").trim()).toBe("1");
    // Usable at once; neighbours may learn it only when DAD is over (about 1 s): give ping that long.
    expect(ipIn(opt.pod, "netns", "exec", opt.pod.name, "ping", "-6", "-c1", "-W5", "fd77::1")).toContain("1 received");
    expect(cni(lab, macvlan(), { command: "DEL", config: v6({}, "fd77::71/64"), ...opt.call }).code).toBe(0);

    const off = attach(v6({ ipv6DAD: "off" }, "fd77::72/64"));
    expect(off.add.code, off.add.stdout).toBe(0);
    expect(flags(off.pod, "fd77::72").tentative).toBeUndefined(); // nodad: never tentative
    expect(cni(lab, macvlan(), { command: "DEL", config: v6({ ipv6DAD: "off" }, "fd77::72/64"), ...off.call }).code).toBe(0);

    const bad = attach(v6({ ipv6DAD: "sometimes" }, "fd77::73/64"));
    expect(bad.add.json).toMatchObject({ code: 7, msg: 'invalid network config: ipv6DAD "sometimes" is not a DAD mode' });
  });

  it("a gateway outside the pod's prefix is routed on-link", () => {
    const config = conf({ ipam: staticIpam([{ address: "10.77.0.7/32", gateway: "10.77.0.1" }]) });
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    expect(routes(pod)).toContainEqual({ dst: "default", gateway: "10.77.0.1", dev: "eth0", flags: ["onlink"] });
    expect(cni(lab, macvlan(), { command: "CHECK", config: withPrev(config, add.json), ...call }).code).toBe(0);
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
  });

  it("result conversion to every supported version", () => {
    for (const version of ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]) {
      const config = conf({}, version);
      const { pod, call, add } = attach(config);
      expect(add.code, add.stdout).toBe(0);
      const mac = podLink(pod)!.address;
      const ip = version.startsWith("0.")
        ? { version: "4", interface: 0, address: "10.77.0.5/24", gateway: "10.77.0.1" }
        : { interface: 0, address: "10.77.0.5/24", gateway: "10.77.0.1" };
      expect(add.json).toEqual({
        cniVersion: version,
        interfaces: [{ name: "eth0", mac, sandbox: pod.path }],
        ips: [ip],
        routes: [{ dst: "0.0.0.0/0" }],
        dns: {},
      });
      expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
    }
    // 1.1.0 (the static plugin stops at 1.0.0: IPAM-less config)
    const config = { cniVersion: "1.1.0", name: "underlay", type: "berth-macvlan", master: "m0", stateDir, mtu: 1450 };
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    expect(add.json).toEqual({
      cniVersion: "1.1.0",
      interfaces: [{ name: "eth0", mac: podLink(pod)!.address, mtu: 1450, sandbox: pod.path }],
      dns: {},
    });
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
  });
});

describe("berth-macvlan conformance", () => {
  it("DEL succeeds when the netns has vanished and with an empty CNI_NETNS", () => {
    const config = conf();
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    removeNetns(pod);
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
    const empty = cni(lab, macvlan(), { command: "DEL", config, ...call, netns: "" });
    expect(empty.code, empty.stdout).toBe(0);
  });

  it("DEL succeeds after the master was deleted", () => {
    ipIn(lab.host, "link", "add", "m9", "type", "veth", "peer", "name", "m9p");
    ipIn(lab.host, "link", "set", "m9", "up");
    ipIn(lab.host, "link", "set", "m9p", "up");
    const config = conf({ master: "m9" });
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    ipIn(lab.host, "link", "del", "m9");
    expect(podLink(pod)).toBeUndefined(); // the kernel removed the macvlan with its parent
    const del = cni(lab, macvlan(), { command: "DEL", config, ...call });
    expect(del.code, del.stdout).toBe(0);
  });

  it("ADD when CNI_IFNAME already exists fails and leaves the pod as it was", () => {
    const pod = newPod(lab);
    ipIn(pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other");
    const before = links(pod)
      .map((l) => l.ifname)
      .sort();
    const config = conf();
    const add = cni(lab, macvlan(), { command: "ADD", config, containerId: "ctr-exists", netns: pod.path, ifName: "eth0" });
    expect(add.json).toMatchObject({ code: 142 });
    expect(add.json.msg).toContain('interface "eth0" already exists');
    expect(
      links(pod)
        .map((l) => l.ifname)
        .sort(),
    ).toEqual(before);
    expect(macvlans(lab.host)).toEqual([]);
  });

  it("an unknown CNI_ARGS key is refused unless IgnoreUnknown is set", () => {
    const config = conf();
    const bad = attach(config, { cniArgs: "FOO=bar" });
    expect(bad.add.json).toMatchObject({ code: 2 });
    expect(bad.add.json.msg).toContain("FOO");
    expect(macvlans(bad.pod)).toEqual([]);
    const ok = attach(config, { cniArgs: "IgnoreUnknown=true;FOO=bar" });
    expect(ok.add.code, ok.add.stdout).toBe(0);
    expect(cni(lab, macvlan(), { command: "DEL", config, ...ok.call }).code).toBe(0);
  });

  it("every invalid value is refused with code 7 naming the field, before any change", () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ master: undefined }, "master"],
      [{ master: "no/such" }, "master"],
      [{ master: "nosuchnic0" }, 'master "nosuchnic0" does not exist'],
      [{ vlan: 4095 }, "vlan"],
      [{ vlan: "101" }, "vlan"],
      [{ mode: "source" }, "mode"],
      [{ mtu: 20 }, "mtu"],
      [{ mac: "01:00:5e:00:00:01" }, "mac"],
      [{ mac: "zz" }, "mac"],
      [{ macFromIP: "yes" }, "macFromIP"],
      [{ stateDir: "relative" }, "stateDir"],
      [{ runtimeConfig: { mac: "nope" } }, "runtimeConfig.mac"],
    ];
    for (const [extra, field] of cases) {
      const { pod, add } = attach(conf(extra));
      expect(add.json?.code, `${JSON.stringify(extra)}: ${add.stdout}`).toBe(7);
      expect(add.json.msg).toContain(field);
      expect(add.json.details.length).toBeGreaterThan(10);
      expect(links(pod).map((l) => l.ifname)).toEqual(["lo"]);
    }
  });

  it("a master the kernel refuses (a bridge port: its rx handler is taken) is a busy device (142), not an internal error", () => {
    ipIn(lab.host, "link", "add", "mbr0", "type", "bridge");
    ipIn(lab.host, "link", "add", "mport0", "type", "veth", "peer", "name", "mport0p");
    ipIn(lab.host, "link", "set", "mport0", "master", "mbr0");
    try {
      const { pod, add } = attach(conf({ master: "mport0" }));
      expect(add.code).toBe(1);
      expect(add.json).toMatchObject({ code: 142 });
      expect(add.json.msg).toContain("EBUSY");
      expect(add.json.msg).toContain("mport0");
      expect(add.json.details).toContain("mport0");
      expect(links(pod).map((l) => l.ifname)).toEqual(["lo"]);
    } finally {
      ipIn(lab.host, "link", "del", "mport0");
      ipIn(lab.host, "link", "del", "mbr0");
    }
  });

  it("a master that is not an Ethernet device (loopback) is a kernel refusal (140), not an internal error", () => {
    const { pod, add } = attach(conf({ master: "lo" }));
    expect(add.json).toMatchObject({ code: 140 });
    expect(add.json.msg).toContain("EINVAL");
    expect(links(pod).map((l) => l.ifname)).toEqual(["lo"]);
  });

  it("a VLAN without 802.1Q in the kernel fails cleanly naming 8021q, and leaves nothing behind", () => {
    const config = conf({ vlan: 101 });
    const { pod, add } = attach(config);
    expect(add.json).toMatchObject({ code: 140 });
    expect(add.json.msg).toContain("8021q");
    expect(add.json.details).toContain("modprobe 8021q");
    expect(links(pod).map((l) => l.ifname)).toEqual(["lo"]);
    expect(
      links(lab.host)
        .map((l) => l.ifname)
        .sort(),
    ).toEqual(["lo", "m0"]);
    expect(stateFiles(stateDir)).toEqual([]);
  });

  it("GC drops VLAN records of attachments the runtime no longer lists, and keeps valid ones and other networks'", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-macvlan-gc-"));
    try {
      writeFileSync(
        join(dir, "m0.2000.json"),
        JSON.stringify({ master: "m0", vlan: 2000, attachments: ["underlay/gone-1/eth0", "underlay/live-1/eth0", "othernet/x/eth0"] }),
      );
      const config = {
        cniVersion: "1.1.0",
        name: "underlay",
        type: "berth-macvlan",
        master: "m0",
        stateDir: dir,
        "cni.dev/valid-attachments": [{ containerID: "live-1", ifname: "eth0" }],
      };
      const gc = cni(lab, macvlan(), { command: "GC", config });
      expect(gc.code, gc.stdout).toBe(0);
      expect(JSON.parse(readFileSync(join(dir, "m0.2000.json"), "utf8")).attachments).toEqual(["underlay/live-1/eth0", "othernet/x/eth0"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("STATUS and GC without IPAM succeed; with a bad config they report it", () => {
    const config = { cniVersion: "1.1.0", name: "underlay", type: "berth-macvlan", master: "m0", stateDir };
    expect(cni(lab, macvlan(), { command: "STATUS", config }).code).toBe(0);
    expect(cni(lab, macvlan(), { command: "GC", config: { ...config, "cni.dev/valid-attachments": [] } }).code).toBe(0);
    const bad = cni(lab, macvlan(), { command: "STATUS", config: { ...config, mode: "nope" } });
    expect(bad.json).toMatchObject({ code: 7 });
  });
});

describe("names and derived MACs", () => {
  it("sub-interface names: master.vlan when it fits, else a documented deterministic short form", async () => {
    const { vlanLinkName } = await import("../../cni/plugins/vlan");
    expect(vlanLinkName("eth0", 101)).toBe("eth0.101");
    expect(vlanLinkName("enp175s0f0", 4094)).toBe("enp175s0f0.4094"); // exactly 15
    const long = vlanLinkName("enp175s0f0np0", 101);
    expect(long).toMatch(/^enp175s[0-9a-f]{4}\.101$/);
    expect(vlanLinkName("enp175s0f0np0", 101)).toBe(long);
    expect(vlanLinkName("enp175s0f0np1", 101)).not.toBe(long);
  });

  it("macFromIP: 0a:58 + IPv4 bytes, else the last 4 bytes of IPv6", async () => {
    const { macFromIp } = await import("../../cni/plugins/macvlan");
    expect(macFromIp(["fd00::1/64", "10.1.0.5/24"])).toBe("0a:58:0a:01:00:05");
    expect(macFromIp(["fd00::a:b0c/64"])).toBe("0a:58:00:0a:0b:0c");
    expect(macFromIp([])).toBeUndefined();
  });
});

describe("berth-macvlan: every verb as the CNI spec means it", () => {
  it("ADD passes prevResult through: the earlier plugin's interface, IPs, routes and DNS stay, ours is appended", () => {
    const prevResult = {
      cniVersion: "1.0.0",
      interfaces: [{ name: "up0" }],
      ips: [{ interface: 0, address: "192.0.2.9/32" }],
      routes: [{ dst: "192.0.2.0/24" }],
      dns: { nameservers: ["192.0.2.53"] },
    };
    const config = conf({ dns: { nameservers: ["10.77.0.53"] } });
    const { pod, call, add } = attach({ ...config, prevResult });
    expect(add.code, add.stdout).toBe(0);
    expect(add.json).toEqual({
      cniVersion: "1.0.0",
      interfaces: [{ name: "up0" }, { name: "eth0", mac: podLink(pod)!.address, sandbox: pod.path }],
      ips: [
        { interface: 0, address: "192.0.2.9/32" },
        { interface: 1, address: "10.77.0.5/24", gateway: "10.77.0.1" },
      ],
      routes: [{ dst: "192.0.2.0/24" }, { dst: "0.0.0.0/0" }],
      dns: { nameservers: ["192.0.2.53", "10.77.0.53"] },
    });
    expect(cni(lab, macvlan(), { command: "DEL", config: withPrev(config, add.json), ...call }).code).toBe(0);
    expect(podLink(pod)).toBeUndefined();
  });

  it("CHECK passes after tuning, later in the chain, changed the MTU (as the reference macvlan)", () => {
    const config = conf({ mtu: 1450 });
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    const tuningConf = { cniVersion: "1.0.0", name: "underlay", type: "tuning", mtu: 1400, prevResult: add.json };
    const tuning = cni(lab, "/usr/lib/cni/tuning", { command: "ADD", config: tuningConf, ...call });
    expect(tuning.code, tuning.stdout + tuning.stderr).toBe(0);
    expect(podLink(pod)!.mtu).toBe(1400);
    const chk = cni(lab, macvlan(), { command: "CHECK", config: withPrev(config, tuning.json), ...call });
    expect(chk.code, chk.stdout).toBe(0);
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
  });

  it("the DEL after another network's failed ADD leaves this network's eth0 alone", () => {
    const a = attach(conf());
    expect(a.add.code, a.add.stdout).toBe(0);
    const other = conf({ name: "second", ipam: staticIpam([{ address: "10.77.0.9/24", gateway: "10.77.0.1" }]) });
    expectCniError(cni(lab, macvlan(), { command: "ADD", config: other, ...a.call }), 142, 'interface "eth0" already exists');
    expect(cni(lab, macvlan(), { command: "DEL", config: other, ...a.call }).code).toBe(0);
    expect(podLink(a.pod)).toBeDefined();
    expect(addresses(a.pod)).toEqual(["10.77.0.5/24"]);
    expect(cni(lab, macvlan(), { command: "DEL", config: conf(), ...a.call }).code).toBe(0);
    expect(podLink(a.pod)).toBeUndefined();
  });

  it("DEL removes the temporary macvlan a killed ADD left in the pod, and only that one", () => {
    const pod = newPod(lab);
    const call = { containerId: `ctr-killed-${process.pid}`, netns: pod.path, ifName: "eth0" };
    const { tmpName } = ownership({ conf: { name: "underlay" }, containerId: call.containerId, ifName: "eth0" } as never);
    for (const name of [tmpName, "bmv00000000"]) {
      ipIn(lab.host, "link", "add", "link", "m0", "name", name, "type", "macvlan", "mode", "bridge");
      ipIn(lab.host, "link", "set", name, "netns", pod.name);
    }
    expect(macvlans(pod).sort()).toEqual(["bmv00000000", tmpName].sort());
    expect(cni(lab, macvlan(), { command: "DEL", config: conf(), ...call }).code).toBe(0);
    expect(macvlans(pod)).toEqual(["bmv00000000"]);
  });

  it("a pod MAC equal to the master's, or to another pod's macvlan on the master, is 7 naming the fix", () => {
    const masterMac = links(lab.host).find((l) => l.ifname === "m0")!.address;
    const same = attach(conf({ mac: masterMac }));
    expectCniError(same.add, 7, `it is the MAC of master m0`);
    expect(macvlans(same.pod)).toEqual([]);
    const first = attach(conf({ mac: "0a:58:0a:4d:00:aa" }));
    expect(first.add.code, first.add.stdout).toBe(0);
    const second = attach(conf({ mac: "0a:58:0a:4d:00:aa" }));
    const e = expectCniError(second.add, 7, "another macvlan on m0 (in another pod) already has it");
    expect(e.details).toContain("pick a different mac");
    expect(macvlans(second.pod)).toEqual([]);
    expect(cni(lab, macvlan(), { command: "DEL", config: conf({ mac: "0a:58:0a:4d:00:aa" }), ...first.call }).code).toBe(0);
  });

  it("STATUS: ready with the master, 51 without it (ADD would fail and its pods have no connectivity)", () => {
    expect(cni(lab, macvlan(), { command: "STATUS", config: conf({ ipam: undefined }, "1.1.0") }).code).toBe(0);
    const gone = cni(lab, macvlan(), { command: "STATUS", config: conf({ master: "gone0", ipam: undefined }, "1.1.0") });
    expectCniError(gone, 51, 'master "gone0" does not exist');
    // and ADD agrees: a missing master is a config error (7), not 141
    expectCniError(attach(conf({ master: "gone0" })).add, 7, '"gone0" does not exist in the host network namespace');
  });

  it("CNI_NETNS naming the plugin's own (host) namespace is refused (4) and the host is untouched", () => {
    const before = macvlans(lab.host);
    const r = cni(lab, macvlan(), { command: "ADD", config: conf(), containerId: "ctr-hostns", netns: lab.host.path, ifName: "eth9" });
    expectCniError(r, 4, "is the plugin's own (host) network namespace");
    expect(macvlans(lab.host)).toEqual(before);
    expect(ipIn(lab.host, "addr", "show")).not.toContain("10.77.0.5/24");
  });

  it("prevResult: ADD refuses an undecodable one (7, naming it); DEL goes on without it and answers 0", () => {
    const bad = attach({ ...conf(), prevResult: "x" });
    expectCniError(bad.add, 7, "invalid prevResult: is not a JSON object (got string)");
    const { call, add } = attach(conf());
    expect(add.code).toBe(0);
    const del = cni(lab, macvlan(), { command: "DEL", config: { ...conf(), prevResult: { ips: "x" } }, ...call });
    expect(del.code, del.stdout).toBe(0);
    expect(del.stdout).toBe("");
  });

  it("the delegated IPAM plugin's stderr reaches the plugin's stderr on every verb", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-noisy-ipam-"));
    try {
      writeFileSync(
        join(dir, "noisy"),
        [
          "#!/bin/sh",
          'echo "noisy-ipam says hello ($CNI_COMMAND)" >&2',
          "cat >/dev/null",
          `[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.77.0.41/24","gateway":"10.77.0.1"}]}'`,
          "exit 0",
          "",
        ].join("\n"),
        { mode: 0o755 },
      );
      const config = conf({ ipam: { type: "noisy" } });
      const { pod, call, add } = attach(config);
      const path = [dir, ...lab.path];
      const again = cni(lab, macvlan(), { command: "ADD", config, ...call, ifName: "eth1", path });
      expect(again.code, again.stdout).toBe(0);
      expect(again.stderr).toContain("noisy-ipam says hello (ADD)");
      expect(addresses(pod, "eth1")).toEqual(["10.77.0.41/24"]);
      const del = cni(lab, macvlan(), { command: "DEL", config, ...call, ifName: "eth1", path });
      expect(del.code).toBe(0);
      expect(del.stderr).toContain("noisy-ipam says hello (DEL)");
      expect(add.code).toBe(1); // without the plugin's dir in CNI_PATH: 100
      expect(add.json.code).toBe(100);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("announces the pod's addresses (gratuitous ARP) once the link has carrier", () => {
    ipIn(lab.lan, "netns", "exec", lab.lan.name, "sysctl", "-qw", "net.ipv4.conf.lan0.arp_accept=1");
    const config = conf({ ipam: staticIpam([{ address: "10.77.0.44/24", gateway: "10.77.0.1" }]) });
    const { pod, call, add } = attach(config);
    expect(add.code, add.stdout).toBe(0);
    // nothing in the pod talked to the lan: only the announcement can have taught it the pod's MAC
    const neigh = ipJson<{ dst: string; lladdr?: string }[]>(lab.lan, "neigh", "show", "dev", "lan0");
    expect(neigh).toContainEqual(expect.objectContaining({ dst: "10.77.0.44", lladdr: podLink(pod)!.address }));
    expect(cni(lab, macvlan(), { command: "DEL", config, ...call }).code).toBe(0);
  });
});
