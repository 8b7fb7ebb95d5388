import { statSync, writeFileSync, rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Netns, NetnsError, closeFd, currentNetnsInode, getSysctl, ifaceSysctl, openNetnsFd, setSysctl } from "../../cni/netns";
import { addVeth, getLinkByName, listLinks } from "../../cni/netlink/link";
import { NetlinkSocket } from "../../cni/netlink/socket";
import {
  createNetns,
  getSysctlIn,
  inNetns,
  ipIn,
  openNetlinkIn,
  removeNetns,
  setSysctlIn,
  type TestNetns,
  withNetns,
} from "../helpers/netns";

let ns: TestNetns;
let hostInode: number;

beforeAll(() => {
  ns = createNetns("ns");
  hostInode = currentNetnsInode();
});
afterAll(() => removeNetns(ns));

describe("withNetns", () => {
  it("runs inside the namespace and comes back", () => {
    const nsInode = statSync(ns.path).ino;
    expect(nsInode).not.toBe(hostInode);
    const seen = withNetns(ns.path, (nl) => ({ inode: currentNetnsInode(), links: listLinks(nl).map((l) => l.name) }));
    expect(seen.inode).toBe(nsInode);
    expect(seen.links).toEqual(["lo"]);
    expect(currentNetnsInode()).toBe(hostInode);
  });

  it("returns to the original namespace when the callback throws", () => {
    expect(() =>
      withNetns(ns.path, () => {
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(currentNetnsInode()).toBe(hostInode);
  });

  it("returns to the original namespace when a netlink call fails inside", () => {
    expect(() => withNetns(ns.path, (nl) => getLinkByName(nl, "eth0"))).toThrow(/RTM_GETLINK "eth0": ENODEV/);
    expect(currentNetnsInode()).toBe(hostInode);
  });

  it("nests and restores each level", () => {
    const other = createNetns("nest");
    try {
      const inner = withNetns(ns.path, () => {
        const mid = currentNetnsInode();
        const deepest = inNetns(other.path, () => currentNetnsInode());
        return { mid, deepest, back: currentNetnsInode() };
      });
      expect(inner.mid).toBe(statSync(ns.path).ino);
      expect(inner.deepest).toBe(statSync(other.path).ino);
      expect(inner.back).toBe(inner.mid);
      expect(currentNetnsInode()).toBe(hostInode);
    } finally {
      removeNetns(other);
    }
  });

  it("refuses async callbacks (setns only holds on this thread until return)", () => {
    expect(() => inNetns(ns.path, async () => 1)).toThrow(/must be synchronous/);
    expect(currentNetnsInode()).toBe(hostInode);
  });

  it("names a missing namespace", () => {
    expect(() => withNetns("/run/netns/berth-does-not-exist", () => 1)).toThrow(NetnsError);
    expect(() => withNetns("/run/netns/berth-does-not-exist", () => 1)).toThrow(/does not exist.*ENOENT/);
    expect(currentNetnsInode()).toBe(hostInode);
  });

  it("refuses a file that is not a namespace (nsfs magic)", () => {
    const file = `/tmp/berth-not-ns-${process.pid}`;
    writeFileSync(file, "x");
    try {
      expect(() => openNetnsFd(file)).toThrow(/is not a namespace file/);
    } finally {
      rmSync(file);
    }
  });

  it("refuses a namespace of another type", () => {
    expect(() => inNetns("/proc/self/ns/uts", () => 1)).toThrow(/is a namespace but not a network namespace/);
    expect(() => openNetnsFd("/proc/self/ns/mnt")).toThrow(/not a network namespace/);
    expect(currentNetnsInode()).toBe(hostInode);
  });
});

describe("openNetlinkIn", () => {
  it("gives a socket that keeps acting on the namespace from the host", () => {
    const nl = openNetlinkIn(ns.path);
    try {
      expect(currentNetnsInode()).toBe(hostInode);
      addVeth(nl, { name: "bound0", peerName: "bound1" });
      expect(
        listLinks(nl)
          .map((l) => l.name)
          .sort(),
      ).toEqual(["bound0", "bound1", "lo"]);
      expect(ipIn(ns, "-o", "link", "show", "bound0")).toContain("bound0@bound1");
      // and not in the host namespace
      const host = NetlinkSocket.open();
      try {
        expect(listLinks(host).map((l) => l.name)).not.toContain("bound0");
      } finally {
        host.close();
      }
    } finally {
      nl.close();
    }
  });

  it("openNetnsFd returns an fd of the namespace", () => {
    const fd = openNetnsFd(ns.path);
    try {
      expect(statSync(`/proc/self/fd/${fd}`).ino).toBe(statSync(ns.path).ino);
    } finally {
      closeFd(fd);
    }
  });
});

describe("Netns (a pod namespace opened once per command)", () => {
  it("holds the namespace fd and a socket acting there from the host; enter runs inside for /proc/sys/net", () => {
    const pod = Netns.open(ns.path);
    try {
      expect(currentNetnsInode()).toBe(hostInode);
      expect(statSync(`/proc/self/fd/${pod.fd}`).ino).toBe(statSync(ns.path).ino);
      addVeth(pod.nl, { name: "pod0", peerName: "pod1" });
      expect(ipIn(ns, "-o", "link", "show", "pod0")).toContain("pod0@pod1");
      const inside = pod.enter(() => {
        setSysctl(ifaceSysctl(4, "pod0", "arp_notify"), 1);
        return currentNetnsInode();
      });
      expect(inside).toBe(statSync(ns.path).ino);
      expect(currentNetnsInode()).toBe(hostInode);
      expect(getSysctlIn(ns.path, ifaceSysctl(4, "pod0", "arp_notify"))).toBe("1");
      expect(() =>
        pod.enter(() => {
          throw new Error("boom");
        }),
      ).toThrow("boom");
      expect(currentNetnsInode()).toBe(hostInode);
    } finally {
      pod.close();
    }
  });

  it("names a missing namespace", () => {
    expect(() => Netns.open("/run/netns/berth-no-such-ns")).toThrow(/network namespace "\/run\/netns\/berth-no-such-ns" does not exist/);
  });
});

describe("sysctl in a namespace", () => {
  it("reads and writes /proc/sys/net of the namespace only", () => {
    const nl = openNetlinkIn(ns.path);
    try {
      addVeth(nl, { name: "sys.101", peerName: "sysp" }); // a dot in the name, like a VLAN sub-interface
    } finally {
      nl.close();
    }
    const key = ifaceSysctl(4, "sys.101", "arp_notify");
    expect(getSysctlIn(ns.path, key)).toBe("0");
    setSysctlIn(ns.path, key, 1);
    expect(getSysctlIn(ns.path, key)).toBe("1");
    expect(ipIn(ns, "netns", "exec", ns.name, "cat", "/proc/sys/net/ipv4/conf/sys.101/arp_notify").trim()).toBe("1");
    withNetns(ns.path, () => {
      setSysctl(ifaceSysctl(6, "sys.101", "ndisc_notify"), 1);
      setSysctl("net.ipv6.conf.sysp.accept_dad", 0);
      expect(getSysctl("net/ipv6/conf/sys.101/ndisc_notify")).toBe("1");
      expect(getSysctl("net.ipv6.conf.sysp.accept_dad")).toBe("0");
    });
    // the host has no such interface: we are back in the host's /proc/sys/net
    expect(() => getSysctl(key)).toThrow(/ENOENT/);
    expect(getSysctl("net.ipv4.conf.lo.arp_notify")).toMatch(/^[01]$/);
  });

  it("explains a failed write", () => {
    expect(() => withNetns(ns.path, () => setSysctl("net.ipv4.conf.nonexistent0.arp_notify", 1))).toThrow(
      /set sysctl \/proc\/sys\/net\/ipv4\/conf\/nonexistent0\/arp_notify = 1: ENOENT/,
    );
    expect(currentNetnsInode()).toBe(hostInode);
  });
});
