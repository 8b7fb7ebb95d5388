// The traffic-control and ifb encoders against the bytes iproute2 6.1's `tc` and `ip` send for
// the same setup (captured by scripts/capture-tc.sh). nlmsg_seq and nlmsg_pid (bytes 8-15)
// differ per run and are ignored; everything else must be equal.
import { describe, expect, it } from "vitest";
import { encodeAddIfb } from "../../cni/netlink/ifb";
import {
  encodeAddIngressQdisc,
  encodeAddRedirectFilter,
  encodeAddTbf,
  encodeDeleteQdisc,
  encodeListFilters,
  encodeListQdiscs,
  INGRESS_HANDLE,
} from "../../cni/netlink/tc";
import { type Encoders, itEncodesEachFixture, loadFixtures } from "../helpers/fixtures";

const fixtures = loadFixtures("tc");

const encoders: Encoders = [
  [/^link-add-ifb/, (i) => encodeAddIfb(i)],
  [/^tc-qdisc-add-tbf/, (i) => encodeAddTbf(i)],
  [/^tc-qdisc-add-ingress$/, (i) => encodeAddIngressQdisc(i.index)],
  [/^tc-filter-add-redirect$/, (i) => encodeAddRedirectFilter(i)],
  [/^tc-qdisc-del-root$/, (i) => encodeDeleteQdisc(i.index, "root")],
  [/^tc-qdisc-del-ingress$/, (i) => encodeDeleteQdisc(i.index, "ingress")],
  [/^tc-qdisc-show$/, (i) => encodeListQdiscs(i.index)],
  [/^tc-filter-show-ingress$/, (i) => encodeListFilters(i.index, INGRESS_HANDLE)],
];

describe("tc and ifb encoders equal iproute2 6.1", () => {
  it("has a fixture for every request the bandwidth shaping sends", () => {
    const names = fixtures.map((f) => f.name);
    for (const n of [
      "link-add-ifb",
      "link-add-ifb-mtu",
      "tc-qdisc-add-tbf",
      "tc-qdisc-add-tbf-ifb",
      "tc-qdisc-add-tbf-max32",
      "tc-qdisc-add-tbf-rate64",
      "tc-qdisc-add-tbf-peakrate",
      "tc-qdisc-add-tbf-limit",
      "tc-qdisc-add-ingress",
      "tc-filter-add-redirect",
      "tc-qdisc-show",
      "tc-filter-show-ingress",
      "tc-qdisc-del-ingress",
      "tc-qdisc-del-root",
    ])
      expect(names).toContain(n);
    for (const f of fixtures) expect(f.exit, `${f.name}: ${f.command} failed when captured`).toBe(0);
  });

  itEncodesEachFixture(fixtures, encoders);
});
