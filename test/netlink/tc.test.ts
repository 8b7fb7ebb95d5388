// The tc codecs against the kernel: what we add is what `tc` shows, and our dump parser reads
// back what `tc` added.
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addIfb } from "../../cni/netlink/ifb";
import { addVeth, getLinkByName } from "../../cni/netlink/link";
import type { NetlinkSocket } from "../../cni/netlink/socket";
import {
  INGRESS_HANDLE,
  TCA_EGRESS_REDIR,
  TC_H_INGRESS,
  TC_H_ROOT,
  TBF_HANDLE,
  addIngressQdisc,
  addRedirectFilter,
  addTbf,
  deleteQdisc,
  listFilters,
  listQdiscs,
  ticksToUsec,
} from "../../cni/netlink/tc";
import { createNetns, openNetlinkIn, removeNetns, type TestNetns } from "../helpers/netns";

let ns: TestNetns;
let nl: NetlinkSocket;
const tc = (...args: string[]) => execFileSync("tc", ["-n", ns.name, ...args], { encoding: "utf8" });
const tcJson = (...args: string[]) => JSON.parse(tc("-j", ...args) || "[]");

beforeAll(() => {
  ns = createNetns("tc");
  nl = openNetlinkIn(ns.path);
  addVeth(nl, { name: "tc0", peerName: "tc1" });
  addIfb(nl, { name: "tcifb", mtu: 1400 });
});
afterAll(() => {
  nl?.close();
  removeNetns(ns);
});

describe("tc codecs on a real kernel", () => {
  it("the ifb exists with its MTU", () => {
    const ifb = getLinkByName(nl, "tcifb");
    expect(ifb.kind).toBe("ifb");
    expect(ifb.mtu).toBe(1400);
  });

  it("tbf: tc shows our rate and burst; we read them back", () => {
    const dev = getLinkByName(nl, "tc0");
    addTbf(nl, { index: dev.index, rate: 1_250_000, burst: 12_500, latencyUs: 25_000 });
    const [theirs] = tcJson("qdisc", "show", "dev", "tc0");
    expect(theirs).toMatchObject({ kind: "tbf", handle: "1:", root: true, options: { rate: 1_250_000, burst: 12_500 } });
    const [ours] = listQdiscs(nl, dev.index);
    expect(ours).toMatchObject({ kind: "tbf", handle: TBF_HANDLE, parent: TC_H_ROOT, tbf: { rate: 1_250_000, limit: 43_750 } });
    expect(ticksToUsec(ours!.tbf!.bufferTicks)).toBeCloseTo(10_000, 0); // 12500 bytes at 1.25 MB/s
    deleteQdisc(nl, dev.index, "root");
    expect(listQdiscs(nl, dev.index).find((q) => q.kind === "tbf")).toBeUndefined();
  });

  it("a rate above 2^32-1 bytes/s goes in TCA_TBF_RATE64 and comes back whole", () => {
    const dev = getLinkByName(nl, "tc0");
    addTbf(nl, { index: dev.index, rate: 5_000_000_000, burst: 1_000_000, latencyUs: 25_000 });
    expect(listQdiscs(nl, dev.index)[0]?.tbf?.rate).toBe(5_000_000_000);
    deleteQdisc(nl, dev.index, "root");
  });

  it("ingress qdisc and the u32 redirect to the ifb: tc shows the mirred action; we parse it", () => {
    const dev = getLinkByName(nl, "tc0");
    const ifb = getLinkByName(nl, "tcifb");
    addIngressQdisc(nl, dev.index);
    addRedirectFilter(nl, { index: dev.index, ifbIndex: ifb.index });
    expect(tc("filter", "show", "dev", "tc0", "parent", "ffff:")).toContain("mirred (Egress Redirect to device tcifb) stolen");
    const ingress = listQdiscs(nl, dev.index).find((q) => q.kind === "ingress");
    expect(ingress).toMatchObject({ handle: INGRESS_HANDLE, parent: TC_H_INGRESS });
    const node = listFilters(nl, dev.index, INGRESS_HANDLE).find((f) => f.u32Keys);
    expect(node).toMatchObject({ kind: "u32", prio: 1, protocol: 0x0003, u32Keys: [[0, 0]] });
    expect(node!.actions).toEqual([{ kind: "mirred", mirred: { eaction: TCA_EGRESS_REDIR, ifindex: ifb.index } }]);
    deleteQdisc(nl, dev.index, "ingress");
    expect(listQdiscs(nl, dev.index).find((q) => q.kind === "ingress")).toBeUndefined();
    expect(tc("filter", "show", "dev", "tc0", "ingress")).toBe("");
  });

  it("reads a tbf that tc added (peak rate included)", () => {
    tc(
      "qdisc",
      "add",
      "dev",
      "tcifb",
      "root",
      "handle",
      "1:",
      "tbf",
      "rate",
      "8mbit",
      "burst",
      "20000",
      "latency",
      "10ms",
      "peakrate",
      "16mbit",
      "mtu",
      "1514",
    );
    const [q] = listQdiscs(nl, getLinkByName(nl, "tcifb").index);
    expect(q?.tbf).toMatchObject({ rate: 1_000_000, peakRate: 2_000_000 });
    expect(ticksToUsec(q!.tbf!.bufferTicks)).toBeCloseTo(20_000, 0);
  });
});
