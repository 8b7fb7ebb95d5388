// Every request encoder against the bytes iproute2 6.1 sends for the same
// operation (captured by scripts/capture-iproute2.sh). nlmsg_seq and nlmsg_pid
// (bytes 8-15) differ per run and are ignored; everything else must be equal.
import { describe, expect, it } from "vitest";
import {
  encodeAddMacvlan,
  encodeAddVeth,
  encodeAddVlan,
  encodeDeleteLink,
  encodeRenameLink,
  encodeSetLinkAlias,
  encodeSetLinkDown,
  encodeSetLinkMac,
  encodeSetLinkMtu,
  encodeSetLinkName,
  encodeSetLinkNetns,
  encodeSetLinkUp,
} from "../../cni/netlink/link";
import { encodeAddAddress, encodeDeleteAddress } from "../../cni/netlink/addr";
import { encodeAddRoute, encodeDeleteRoute } from "../../cni/netlink/route";
import { encodeSetVf } from "../../cni/netlink/sriov";
import { type Encoders, itEncodesEachFixture, loadFixtures } from "../helpers/fixtures";

const fixtures = loadFixtures();

const encoders: Encoders = [
  [/^link-add-macvlan/, (i) => encodeAddMacvlan(i)],
  [/^link-add-vlan/, (i) => encodeAddVlan(i)],
  [/^link-add-veth/, (i) => encodeAddVeth(i)],
  [/^link-set-up$/, (i) => encodeSetLinkUp(i.index)],
  [/^link-set-down$/, (i) => encodeSetLinkDown(i.index)],
  [/^link-set-name$/, (i) => encodeSetLinkName(i.index, i.name)],
  [/^link-set-mtu$/, (i) => encodeSetLinkMtu(i.index, i.mtu)],
  [/^link-set-address$/, (i) => encodeSetLinkMac(i.index, i.mac)],
  [/^link-set-alias$/, (i) => encodeSetLinkAlias(i.index, i.alias)],
  [/^link-set-name-alias$/, (i) => encodeRenameLink(i.index, i.name, i.alias)],
  [/^link-set-netns$/, (i) => encodeSetLinkNetns(i.index, i.netnsFd)],
  [/^link-del$/, (i) => encodeDeleteLink(i.index)],
  [/^addr-add/, (i) => encodeAddAddress(i)],
  [/^addr-del/, (i) => encodeDeleteAddress(i)],
  [/^route-add/, (i) => encodeAddRoute(i)],
  [/^route-del/, (i) => encodeDeleteRoute(i)],
  [/^vf-/, (i) => encodeSetVf(i.pfIndex, i.vf, i.settings)],
];

describe("request encoders equal iproute2 6.1", () => {
  it("has fixtures for every request type", () => {
    const names = fixtures.map((f) => f.name);
    for (const prefix of [
      "link-add-macvlan-private",
      "link-add-macvlan-vepa",
      "link-add-macvlan-bridge",
      "link-add-macvlan-passthru",
      "link-add-macvlan-source",
      "link-add-macvlan-netns",
      "link-add-vlan-8021q",
      "link-add-vlan-8021ad",
      "link-add-veth",
      "link-set-up",
      "link-set-down",
      "link-set-name",
      "link-set-mtu",
      "link-set-address",
      "link-set-alias",
      "link-set-name-alias",
      "link-set-netns",
      "link-del",
      "addr-add-v4",
      "addr-add-v6-nodad",
      "addr-del-v4",
      "addr-del-v6",
      "route-add-default-v4",
      "route-add-default-v6",
      "route-add-scope-link",
      "route-add-onlink",
      "route-add-metric-table",
      "route-add-table-1000",
      "route-del-default-v4",
      "route-del-v6",
      "vf-mac",
      "vf-vlan",
      "vf-vlan-8021ad",
      "vf-spoofchk-on",
      "vf-trust-on",
      "vf-rate",
      "vf-state-enable",
      "vf-all",
    ]) {
      expect(names).toContain(prefix);
    }
  });

  itEncodesEachFixture(fixtures, encoders);
});
