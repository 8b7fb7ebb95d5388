import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addAddress, deleteAddress, listAddresses, waitForAddresses, IFA_F_NODAD } from "../../cni/netlink/addr";
import { addVeth, getLinkByName, setLinkUp } from "../../cni/netlink/link";
import { addRoute, deleteRoute, listRoutes } from "../../cni/netlink/route";
import { NetlinkError, type NetlinkSocket } from "../../cni/netlink/socket";
import { closeFd, ifaceSysctl, openNetnsFd } from "../../cni/netns";
import { createNetns, ipJson, openNetlinkIn, removeNetns, setSysctlIn, type TestNetns } from "../helpers/netns";

let host: TestNetns, pod: TestNetns;
let hnl: NetlinkSocket, pnl: NetlinkSocket;
let hIndex: number, pIndex: number;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function codeOf(fn: () => void): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof NetlinkError ? e.code : `not a NetlinkError: ${e}`;
  }
  return undefined;
}

beforeAll(() => {
  host = createNetns("ahost");
  pod = createNetns("apod");
  hnl = openNetlinkIn(host.path);
  pnl = openNetlinkIn(pod.path);
  const fd = openNetnsFd(pod.path);
  try {
    addVeth(hnl, { name: "hv0", peerName: "pv0", peerNetnsFd: fd });
  } finally {
    closeFd(fd);
  }
  hIndex = getLinkByName(hnl, "hv0").index;
  pIndex = getLinkByName(pnl, "pv0").index;
  // fast DAD so the duplicate-address test takes a fraction of a second
  setSysctlIn(pod.path, ifaceSysctl(6, "pv0", "dad_transmits"), 1);
  setSysctlIn(pod.path, ["net", "ipv6", "neigh", "pv0", "retrans_time_ms"], 100);
  setSysctlIn(pod.path, ifaceSysctl(6, "pv0", "accept_dad"), 1);
  setLinkUp(hnl, hIndex);
  setLinkUp(pnl, pIndex);
});
afterAll(() => {
  hnl?.close();
  pnl?.close();
  removeNetns(host);
  removeNetns(pod);
});

describe("addresses", () => {
  it("adds IPv4 with broadcast like `brd +` and reads back exactly that", () => {
    addAddress(pnl, { index: pIndex, cidr: "10.50.0.2/24" });
    const [a] = listAddresses(pnl, { index: pIndex, family: 4 });
    expect(a).toEqual({
      index: pIndex,
      family: 4,
      address: "10.50.0.2",
      prefixLen: 24,
      cidr: "10.50.0.2/24",
      scope: "global",
      flags: expect.any(Number),
      tentative: false,
      dadFailed: false,
      permanent: true,
      broadcast: "10.50.0.255",
      label: "pv0",
    });
    const shown = ipJson<{ addr_info: { family: string; local: string; prefixlen: number; broadcast?: string }[] }[]>(
      pod,
      "addr",
      "show",
      "dev",
      "pv0",
    );
    expect(shown[0].addr_info.filter((x) => x.family === "inet")).toEqual([
      expect.objectContaining({ local: "10.50.0.2", prefixlen: 24, broadcast: "10.50.0.255" }),
    ]);
  });

  it("adds /32 without broadcast, and without broadcast when asked", () => {
    addAddress(pnl, { index: pIndex, cidr: "10.51.0.9/32" });
    addAddress(pnl, { index: pIndex, cidr: "10.52.0.9/24", broadcast: false });
    const v4 = listAddresses(pnl, { index: pIndex, family: 4 });
    expect(v4.find((a) => a.address === "10.51.0.9")).not.toHaveProperty("broadcast");
    expect(v4.find((a) => a.address === "10.52.0.9")).not.toHaveProperty("broadcast");
    deleteAddress(pnl, { index: pIndex, cidr: "10.51.0.9/32" });
    deleteAddress(pnl, { index: pIndex, cidr: "10.52.0.9/24" });
    expect(listAddresses(pnl, { index: pIndex, family: 4 }).map((a) => a.cidr)).toEqual(["10.50.0.2/24"]);
  });

  it("adds IPv6 with nodad: usable at once", () => {
    addAddress(pnl, { index: pIndex, cidr: "fd00:50::2/64", nodad: true });
    const a = listAddresses(pnl, { index: pIndex, family: 6 }).find((x) => x.address === "fd00:50::2")!;
    expect(a).toMatchObject({
      family: 6,
      prefixLen: 64,
      cidr: "fd00:50::2/64",
      scope: "global",
      tentative: false,
      dadFailed: false,
      permanent: true,
    });
    expect(a.flags & IFA_F_NODAD).toBe(IFA_F_NODAD);
  });

  it("shows IPv6 tentative while DAD runs, then settled (waitForAddresses)", () => {
    addAddress(pnl, { index: pIndex, cidr: "fd00:51::2/64" });
    const first = listAddresses(pnl, { index: pIndex }).find((x) => x.address === "fd00:51::2")!;
    expect(first.tentative).toBe(true);
    const settled = waitForAddresses(pnl, pIndex, 5000);
    expect(settled.find((x) => x.address === "fd00:51::2")).toMatchObject({ tentative: false, dadFailed: false });
  });

  it("reports dadFailed when another host on the link has the address", async () => {
    addAddress(hnl, { index: hIndex, cidr: "fd00:52::7/64", nodad: true });
    addAddress(pnl, { index: pIndex, cidr: "fd00:52::7/64" });
    const find = () => listAddresses(pnl, { index: pIndex, family: 6 }).find((x) => x.address === "fd00:52::7")!;
    for (let i = 0; i < 50 && !find().dadFailed; i++) await sleep(100);
    expect(find()).toMatchObject({ dadFailed: true, tentative: true });
    expect(() => waitForAddresses(pnl, pIndex, 1000)).toThrow(
      'duplicate address detection failed for fd00:52::7/64 on "pv0": another host on the network uses it',
    );
    deleteAddress(pnl, { index: pIndex, cidr: "fd00:52::7/64" });
  });

  it("EEXIST on a duplicate, EADDRNOTAVAIL deleting a missing one, with the address in the message", () => {
    expect(codeOf(() => addAddress(pnl, { index: pIndex, cidr: "10.50.0.2/24" }))).toBe("EEXIST");
    expect(() => deleteAddress(pnl, { index: pIndex, cidr: "10.99.99.99/24" })).toThrow(
      'RTM_DELADDR 10.99.99.99/24 on "pv0": EADDRNOTAVAIL (Cannot assign requested address)',
    );
    expect(() => addAddress(pnl, { index: pIndex, cidr: "10.1.2.300/24" })).toThrow(/invalid address "10.1.2.300\/24"/);
  });

  it("deletes IPv6", () => {
    deleteAddress(pnl, { index: pIndex, cidr: "fd00:51::2/64" });
    expect(listAddresses(pnl, { index: pIndex, family: 6 }).map((a) => a.address)).not.toContain("fd00:51::2");
  });
});

describe("routes", () => {
  it("adds and lists an IPv4 default route via a gateway", () => {
    addRoute(pnl, { dst: "0.0.0.0/0", gateway: "10.50.0.1", index: pIndex });
    const def = listRoutes(pnl, { family: 4 }).filter((r) => r.dst === "0.0.0.0/0");
    expect(def).toEqual([
      {
        family: 4,
        dst: "0.0.0.0/0",
        gateway: "10.50.0.1",
        index: pIndex,
        table: 254,
        scope: "global",
        protocol: 3,
        type: 1,
        onLink: false,
      },
    ]);
    expect(ipJson<{ dst: string; gateway: string; dev: string }[]>(pod, "route", "show", "default")).toEqual([
      expect.objectContaining({ dst: "default", gateway: "10.50.0.1", dev: "pv0" }),
    ]);
  });

  it("adds a link-scoped route, an onlink route and a metric/table route", () => {
    addRoute(pnl, { dst: "10.60.0.0/16", index: pIndex, scope: "link" });
    addRoute(pnl, { dst: "10.70.0.0/16", gateway: "192.168.77.1", index: pIndex, onLink: true });
    addRoute(pnl, { dst: "10.80.0.0/16", gateway: "10.50.0.1", index: pIndex, metric: 100, table: 100 });
    addRoute(pnl, { dst: "0.0.0.0/0", gateway: "10.50.0.1", index: pIndex, table: 1000 });
    const main = listRoutes(pnl, { family: 4 });
    expect(main.find((r) => r.dst === "10.60.0.0/16")).toMatchObject({ scope: "link", index: pIndex, table: 254 });
    expect(main.find((r) => r.dst === "10.60.0.0/16")).not.toHaveProperty("gateway");
    expect(main.find((r) => r.dst === "10.70.0.0/16")).toMatchObject({ gateway: "192.168.77.1", onLink: true, scope: "global" });
    expect(main.find((r) => r.dst === "10.80.0.0/16")).toBeUndefined();
    expect(listRoutes(pnl, { table: 100 })).toEqual([
      {
        family: 4,
        dst: "10.80.0.0/16",
        gateway: "10.50.0.1",
        index: pIndex,
        metric: 100,
        table: 100,
        scope: "global",
        protocol: 3,
        type: 1,
        onLink: false,
      },
    ]);
    expect(listRoutes(pnl, { table: 1000 })).toMatchObject([{ dst: "0.0.0.0/0", gateway: "10.50.0.1", table: 1000 }]);
    expect(listRoutes(pnl, { table: "all", family: 4 }).map((r) => r.table)).toEqual(expect.arrayContaining([100, 254, 255, 1000]));
    const t100 = ipJson<{ dst: string; metric: number }[]>(pod, "route", "show", "table", "100");
    expect(t100).toEqual([expect.objectContaining({ dst: "10.80.0.0/16", metric: 100 })]);
  });

  it("adds an IPv6 default route and a route with a metric", () => {
    addRoute(pnl, { dst: "::/0", gateway: "fd00:50::1", index: pIndex });
    addRoute(pnl, { dst: "fd00:96::/48", gateway: "fd00:50::1", index: pIndex, metric: 1024 });
    const v6 = listRoutes(pnl, { family: 6 });
    expect(v6.find((r) => r.dst === "::/0")).toMatchObject({ gateway: "fd00:50::1", index: pIndex, table: 254, protocol: 3 });
    expect(v6.find((r) => r.dst === "fd00:96::/48")).toMatchObject({ gateway: "fd00:50::1", metric: 1024 });
  });

  it("EEXIST on a duplicate, ESRCH deleting a missing one; errors name the route", () => {
    expect(codeOf(() => addRoute(pnl, { dst: "0.0.0.0/0", gateway: "10.50.0.1", index: pIndex }))).toBe("EEXIST");
    expect(() => deleteRoute(pnl, { dst: "10.123.0.0/16", gateway: "10.50.0.1", index: pIndex })).toThrow(
      'RTM_DELROUTE 10.123.0.0/16 via 10.50.0.1 dev "pv0": ESRCH (No such process)',
    );
    expect(() => addRoute(pnl, { dst: "10.124.0.0/16", gateway: "10.99.0.1", index: pIndex })).toThrow(
      /RTM_NEWROUTE 10.124.0.0\/16 via 10.99.0.1 dev "pv0": ENETUNREACH .*Nexthop has invalid gateway/,
    );
    expect(() => addRoute(pnl, { dst: "10.124.0.0/16", gateway: "fd00::1" })).toThrow(/must be an IPv4 address/);
  });

  it("deletes routes and reads back what is left", () => {
    deleteRoute(pnl, { dst: "0.0.0.0/0", gateway: "10.50.0.1", index: pIndex });
    deleteRoute(pnl, { dst: "10.60.0.0/16", index: pIndex });
    deleteRoute(pnl, { dst: "10.70.0.0/16", gateway: "192.168.77.1", index: pIndex });
    deleteRoute(pnl, { dst: "10.80.0.0/16", gateway: "10.50.0.1", index: pIndex, metric: 100, table: 100 });
    deleteRoute(pnl, { dst: "0.0.0.0/0", table: 1000 });
    deleteRoute(pnl, { dst: "::/0", gateway: "fd00:50::1", index: pIndex });
    deleteRoute(pnl, { dst: "fd00:96::/48", gateway: "fd00:50::1", index: pIndex, metric: 1024 });
    expect(listRoutes(pnl, { family: 4 }).map((r) => r.dst)).toEqual(["10.50.0.0/24"]);
    expect(listRoutes(pnl, { table: 100 })).toEqual([]);
    expect(listRoutes(pnl, { table: 1000 })).toEqual([]);
    expect(listRoutes(pnl, { family: 6 }).map((r) => r.dst)).not.toContain("::/0");
  });
});
