// Dumps larger than one datagram: the answer comes in several NLM_F_MULTI parts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addAddress, listAddresses } from "../../cni/netlink/addr";
import { addVeth, getLinkByName, listLinks, setLinkUp } from "../../cni/netlink/link";
import { addRoute, listRoutes } from "../../cni/netlink/route";
import type { NetlinkSocket } from "../../cni/netlink/socket";
import { createNetns, ipJson, openNetlinkIn, removeNetns, type TestNetns } from "../helpers/netns";

let ns: TestNetns;
let nl: NetlinkSocket;
const PAIRS = 120;

beforeAll(() => {
  ns = createNetns("dump");
  nl = openNetlinkIn(ns.path);
  for (let i = 0; i < PAIRS; i++) addVeth(nl, { name: `d${i}a`, peerName: `d${i}b` });
  const idx = getLinkByName(nl, "d0a").index;
  setLinkUp(nl, idx);
  for (let i = 0; i < 400; i++) addAddress(nl, { index: idx, cidr: `10.${40 + (i >> 8)}.${i & 255}.1/32` });
  for (let i = 0; i < 400; i++) addRoute(nl, { dst: `10.200.${i & 255}.${i >> 8}/32`, index: idx, scope: "link" });
});
afterAll(() => {
  nl?.close();
  removeNetns(ns);
});

describe("multi-part dumps", () => {
  it("lists every link", () => {
    const links = listLinks(nl);
    expect(links).toHaveLength(1 + 2 * PAIRS);
    const theirs = ipJson<{ ifindex: number; ifname: string }[]>(ns, "link", "show");
    expect(links.map((l) => [l.index, l.name])).toEqual(theirs.map((l) => [l.ifindex, l.ifname]));
  });

  it("lists every address and route", () => {
    expect(listAddresses(nl, { family: 4 }).filter((a) => a.address.startsWith("10.4"))).toHaveLength(400);
    expect(listRoutes(nl, { family: 4 }).filter((r) => r.dst.startsWith("10.200."))).toHaveLength(400);
  });

  it("the socket stays usable for requests after dumps (sequence numbers line up)", () => {
    for (let i = 0; i < 3; i++) {
      listLinks(nl);
      expect(getLinkByName(nl, `d${i}b`).name).toBe(`d${i}b`);
    }
  });
});
