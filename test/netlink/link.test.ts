import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  IPV4_DEVCONF_ARP_NOTIFY,
  MACVLAN_MODES,
  type MacvlanMode,
  addMacvlan,
  addVeth,
  addVlan,
  deleteLink,
  findLinkByIndex,
  findLinkByMac,
  findLinkByName,
  getLinkByIndex,
  getLinkByName,
  listLinks,
  renameLink,
  setIpv4Conf,
  setLinkAlias,
  setLinkDown,
  setLinkMac,
  setLinkMtu,
  setLinkName,
  setLinkNetns,
  setLinkUp,
} from "../../cni/netlink/link";
import { NetlinkError, NetlinkSocket } from "../../cni/netlink/socket";
import { closeFd, openNetnsFd } from "../../cni/netns";
import { createNetns, ipIn, ipJson, openNetlinkIn, removeNetns, type TestNetns } from "../helpers/netns";

// "host" plays the node (parent links live there), "pod" the pod sandbox.
let host: TestNetns, pod: TestNetns;
let hnl: NetlinkSocket, pnl: NetlinkSocket;
let parentIndex: number;

beforeAll(() => {
  host = createNetns("host");
  pod = createNetns("pod");
  hnl = openNetlinkIn(host.path);
  pnl = openNetlinkIn(pod.path);
  addVeth(hnl, { name: "uplink0", peerName: "uplink1" });
  parentIndex = getLinkByName(hnl, "uplink0").index;
  setLinkUp(hnl, parentIndex);
});
afterAll(() => {
  hnl?.close();
  pnl?.close();
  removeNetns(host);
  removeNetns(pod);
});

describe("veth", () => {
  it("creates a pair, peer directly in another namespace", () => {
    const fd = openNetnsFd(pod.path);
    try {
      addVeth(hnl, { name: "hv0", peerName: "pv0", peerNetnsFd: fd });
    } finally {
      closeFd(fd);
    }
    const h = getLinkByName(hnl, "hv0");
    const p = getLinkByName(pnl, "pv0");
    expect(h.kind).toBe("veth");
    expect(p.kind).toBe("veth");
    expect(h.parentIndex).toBe(p.index); // IFLA_LINK: the peer, in the other namespace
    expect(p.parentIndex).toBe(h.index);
    expect(h.linkNetnsId).toBeTypeOf("number");
    expect(findLinkByName(hnl, "pv0")).toBeUndefined();
  });
});

describe("link attributes", () => {
  it("sets up/down, MTU, MAC, alias and name, and reads them back", () => {
    addVeth(hnl, { name: "attr0", peerName: "attr1" });
    const l = getLinkByName(hnl, "attr0");
    expect(l.up).toBe(false);
    setLinkUp(hnl, l.index);
    expect(getLinkByIndex(hnl, l.index).up).toBe(true);
    setLinkMtu(hnl, l.index, 1280);
    setLinkMac(hnl, l.index, "02:AA:bb:00:00:01");
    setLinkAlias(hnl, l.index, "berth: pod default/web-0");
    setLinkDown(hnl, l.index);
    setLinkName(hnl, l.index, "renamed0");
    const after = getLinkByIndex(hnl, l.index);
    expect(after).toMatchObject({
      name: "renamed0",
      mtu: 1280,
      mac: "02:aa:bb:00:00:01",
      alias: "berth: pod default/web-0",
      up: false,
      kind: "veth",
    });
    // cross-check with iproute2
    const [shown] = ipJson<{ ifname: string; mtu: number; address: string; ifalias: string; flags: string[] }[]>(
      host,
      "link",
      "show",
      "dev",
      "renamed0",
    );
    expect(shown).toMatchObject({ ifname: "renamed0", mtu: 1280, address: "02:aa:bb:00:00:01", ifalias: "berth: pod default/web-0" });
    expect(shown.flags).not.toContain("UP");
    expect(findLinkByMac(hnl, "02-AA-BB-00-00-01")?.index).toBe(l.index);
    expect(findLinkByIndex(hnl, 99999)).toBeUndefined();
  });

  it("renames with an alias in one request; sets an interface's IPv4 settings (arp_notify) over netlink", () => {
    addVeth(hnl, { name: "ren0", peerName: "ren1" });
    const l = getLinkByName(hnl, "ren0");
    renameLink(hnl, l.index, "ren0x", "berth-macvlan 0123");
    expect(getLinkByIndex(hnl, l.index)).toMatchObject({ name: "ren0x", alias: "berth-macvlan 0123" });
    const sysctl = () => ipIn(host, "netns", "exec", host.name, "sysctl", "-n", "net.ipv4.conf.ren0x.arp_notify").trim();
    expect(sysctl()).toBe("0");
    setIpv4Conf(hnl, l.index, [[IPV4_DEVCONF_ARP_NOTIFY, 1]]);
    expect(sysctl()).toBe("1");
    // the kernel refuses an id it does not know, naming the link
    expect(() => setIpv4Conf(hnl, l.index, [[9999, 1]])).toThrow(/IPv4 settings of .*ren0x.*EINVAL/);
    // a name taken: EEXIST, nothing changed
    addVeth(hnl, { name: "ren2", peerName: "ren3" });
    expect(() => renameLink(hnl, getLinkByName(hnl, "ren2").index, "ren0x", "other")).toThrow(/EEXIST/);
    expect(getLinkByName(hnl, "ren2").alias).toBeUndefined();
    deleteLink(hnl, l.index);
    deleteLink(hnl, getLinkByName(hnl, "ren2").index);
  });

  it("finds a link by altname", () => {
    addVeth(hnl, { name: "alt0", peerName: "alt1" });
    ipIn(host, "link", "property", "add", "dev", "alt0", "altname", "berth-a-very-long-alternative-name");
    const l = getLinkByName(hnl, "berth-a-very-long-alternative-name");
    expect(l.name).toBe("alt0");
    expect(l.altNames).toEqual(["berth-a-very-long-alternative-name"]);
  });

  it("moves a link to another namespace and deletes it there", () => {
    addVeth(hnl, { name: "mv-src", peerName: "mv-peer" });
    const l = getLinkByName(hnl, "mv-src");
    const fd = openNetnsFd(pod.path);
    try {
      setLinkNetns(hnl, l.index, fd);
    } finally {
      closeFd(fd);
    }
    expect(findLinkByName(hnl, "mv-src")).toBeUndefined();
    const moved = getLinkByName(pnl, "mv-src");
    expect(moved.kind).toBe("veth");
    deleteLink(pnl, moved.index);
    expect(findLinkByName(pnl, "mv-src")).toBeUndefined();
    expect(findLinkByName(hnl, "mv-peer")).toBeUndefined(); // a veth goes with its peer
  });
});

describe("macvlan", () => {
  it.each(Object.keys(MACVLAN_MODES) as MacvlanMode[])("creates mode %s and parses it back", (mode) => {
    const name = `mvl-${mode.slice(0, 4)}`;
    // passthru takes over the parent: only one per parent, and source needs no MAC list to exist
    addMacvlan(hnl, { name, parentIndex, mode });
    try {
      const l = getLinkByName(hnl, name);
      expect(l.kind).toBe("macvlan");
      expect(l.macvlan).toEqual({ mode });
      expect(l.parentIndex).toBe(parentIndex);
      expect(l.linkNetnsId).toBeUndefined();
      expect(ipJson<{ linkinfo: { info_data: { mode: string } } }[]>(host, "-d", "link", "show", name)[0].linkinfo.info_data.mode).toBe(
        mode,
      );
    } finally {
      deleteLink(hnl, getLinkByName(hnl, name).index);
    }
  });

  it("creates the macvlan directly in the pod namespace under a temporary name (the CNI path)", () => {
    const fd = openNetnsFd(pod.path);
    try {
      addMacvlan(hnl, { name: "tmp4f2a", parentIndex, mode: "bridge", mtu: 1400, mac: "02:00:00:00:be:01", netnsFd: fd });
    } finally {
      closeFd(fd);
    }
    expect(findLinkByName(hnl, "tmp4f2a")).toBeUndefined();
    const l = getLinkByName(pnl, "tmp4f2a");
    expect(l).toMatchObject({ kind: "macvlan", macvlan: { mode: "bridge" }, mtu: 1400, mac: "02:00:00:00:be:01", parentIndex });
    expect(l.linkNetnsId).toBeTypeOf("number"); // parent lives in another namespace
    setLinkName(pnl, l.index, "eth0");
    setLinkUp(pnl, l.index);
    const eth0 = getLinkByName(pnl, "eth0");
    expect(eth0.index).toBe(l.index);
    expect(eth0.up).toBe(true);
    expect(ipIn(pod, "-o", "link", "show", "eth0")).toMatch(/eth0@if\d+: .*UP/);
  });

  it("reports EEXIST with what was attempted", () => {
    addMacvlan(hnl, { name: "dup0", parentIndex, mode: "bridge" });
    let err: unknown;
    try {
      addMacvlan(hnl, { name: "dup0", parentIndex, mode: "bridge" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NetlinkError);
    expect((err as NetlinkError).code).toBe("EEXIST");
    expect((err as NetlinkError).errno).toBe(17);
    expect((err as NetlinkError).message).toBe('RTM_NEWLINK macvlan "dup0" on "uplink0": EEXIST (File exists)');
  });

  it("reports a missing parent", () => {
    expect(() => addMacvlan(hnl, { name: "orphan0", parentIndex: 4242, mode: "bridge" })).toThrow(
      /RTM_NEWLINK macvlan "orphan0" on ifindex 4242: (ENODEV|EINVAL)/,
    );
  });

  it("rejects bad input before the kernel sees it", () => {
    expect(() => addMacvlan(hnl, { name: "a-name-that-is-too-long", parentIndex, mode: "bridge" })).toThrow(/1-15 characters/);
    expect(() => addMacvlan(hnl, { name: "x0", parentIndex, mode: "bridge", mac: "zz" })).toThrow(/invalid macvlan MAC address "zz"/);
    expect(() => addMacvlan(hnl, { name: "x0", parentIndex, mode: "nope" as MacvlanMode })).toThrow(/invalid macvlan mode/);
  });
});

describe("errors", () => {
  it("ENODEV for unknown names and indexes", () => {
    expect(() => getLinkByName(hnl, "nosuch0")).toThrow(expect.objectContaining({ code: "ENODEV", errno: 19 }));
    expect(() => deleteLink(hnl, 31337)).toThrow(/RTM_DELLINK ifindex 31337: ENODEV \(No such device\)/);
  });

  it("802.1Q vlan: this kernel has no 8021q module, the kernel's reason is in the error", () => {
    let err: NetlinkError | undefined;
    try {
      addVlan(hnl, { name: "uplink0.101", parentIndex, id: 101, protocol: "802.1ad" });
    } catch (e) {
      err = e as NetlinkError;
    }
    // where 8021q exists the link is created and must parse back
    if (!err) {
      const v = getLinkByName(hnl, "uplink0.101");
      expect(v.vlan).toEqual({ id: 101, protocol: "802.1ad" });
      expect(v.parentIndex).toBe(parentIndex);
      return;
    }
    expect(err.code).toBe("EOPNOTSUPP");
    expect(err.message).toBe('RTM_NEWLINK vlan 101 "uplink0.101" on "uplink0": EOPNOTSUPP (Operation not supported): Unknown device type');
    expect(() => addVlan(hnl, { name: "v0", parentIndex, id: 4095 })).toThrow(/invalid VLAN id 4095/);
  });
});

describe("dumps", () => {
  it("lists links of a namespace with what ip shows", () => {
    const ours = listLinks(hnl).map((l) => ({ index: l.index, name: l.name, mtu: l.mtu }));
    const theirs = ipJson<{ ifindex: number; ifname: string; mtu: number }[]>(host, "link", "show").map((l) => ({
      index: l.ifindex,
      name: l.ifname,
      mtu: l.mtu,
    }));
    expect(ours).toEqual(theirs);
  });

  it("parses a full link dump of the host namespace", () => {
    const nl = NetlinkSocket.open();
    try {
      const links = listLinks(nl);
      const theirs = JSON.parse(execFileSync("ip", ["-j", "-d", "link", "show"], { encoding: "utf8" })) as {
        ifindex: number;
        ifname: string;
        address?: string;
        linkinfo?: { info_kind?: string };
      }[];
      expect(links.map((l) => [l.index, l.name])).toEqual(theirs.map((l) => [l.ifindex, l.ifname]));
      for (const t of theirs) {
        const l = links.find((x) => x.index === t.ifindex)!;
        if (t.address) expect(l.mac).toBe(t.address);
        expect(l.kind).toBe(t.linkinfo?.info_kind);
      }
      expect(getLinkByName(nl, "lo").index).toBe(1);
    } finally {
      nl.close();
    }
  });
});
