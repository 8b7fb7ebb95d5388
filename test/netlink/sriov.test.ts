// SR-IOV: this kernel has no SR-IOV device, so VF state parsing is checked on a
// message laid out exactly as the kernel's rtnl_fill_vfinfo() writes it, and the
// VF configuration path is run against a real (non-SR-IOV) link to check that
// the kernel's refusal reaches the caller with the PF and setting named. The
// request bytes themselves are proven against iproute2 in iproute2-fixtures.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addVeth, getLinkByName, parseLink } from "../../cni/netlink/link";
import { encodeSetVf, getVf, listVfs, setVf } from "../../cni/netlink/sriov";
import { NetlinkError, type NetlinkSocket } from "../../cni/netlink/socket";
import { createNetns, openNetlinkIn, removeNetns, type TestNetns } from "../helpers/netns";

/** One TLV, kernel style: u16 len, u16 type, payload, zero padding to 4. */
function tlv(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const b = Buffer.alloc((len + 3) & ~3);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}
const u32 = (...v: number[]) => {
  const b = Buffer.alloc(4 * v.length);
  v.forEach((x, i) => {
    b.writeUInt32LE(x >>> 0, 4 * i);
  });
  return b;
};

interface KernelVf {
  vf: number;
  mac: number[];
  vlan: number;
  qos: number;
  proto: number;
  min: number;
  max: number;
  spoofchk: number;
  linkstate: number;
  trust: number;
}

/** IFLA_VF_INFO as rtnl_fill_vfinfo() emits it (Linux 6.x), attribute order included. */
function kernelVfInfo(v: KernelVf): Buffer {
  const mac = Buffer.alloc(36);
  mac.writeUInt32LE(v.vf);
  Buffer.from(v.mac).copy(mac, 4);
  const bcast = Buffer.alloc(32);
  Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).copy(bcast);
  const vlanInfo = Buffer.alloc(16);
  vlanInfo.writeUInt32LE(v.vf);
  vlanInfo.writeUInt32LE(v.vlan, 4);
  vlanInfo.writeUInt32LE(v.qos, 8);
  vlanInfo.writeUInt16BE(v.proto, 12);
  return tlv(
    1,
    Buffer.concat([
      tlv(1, mac), // IFLA_VF_MAC
      tlv(13, bcast), // IFLA_VF_BROADCAST
      tlv(2, u32(v.vf, v.vlan, v.qos)), // IFLA_VF_VLAN
      tlv(6, u32(v.vf, v.min, v.max)), // IFLA_VF_RATE
      tlv(3, u32(v.vf, v.max)), // IFLA_VF_TX_RATE
      tlv(4, u32(v.vf, v.spoofchk)), // IFLA_VF_SPOOFCHK
      tlv(5, u32(v.vf, v.linkstate)), // IFLA_VF_LINK_STATE
      tlv(7, u32(v.vf, 0xffffffff)), // IFLA_VF_RSS_QUERY_EN
      tlv(9, u32(v.vf, v.trust)), // IFLA_VF_TRUST
      tlv(12, tlv(1, vlanInfo)), // IFLA_VF_VLAN_LIST { IFLA_VF_VLAN_INFO }
    ]),
  );
}

function kernelPfMessage(vfs: KernelVf[]) {
  const ifi = Buffer.alloc(16);
  ifi.writeUInt16LE(1, 2);
  ifi.writeInt32LE(7, 4);
  ifi.writeUInt32LE(0x1043, 8);
  const name = Buffer.from("ens1f0\0");
  const data = Buffer.concat([
    ifi,
    tlv(3, name), // IFLA_IFNAME
    tlv(4, u32(9000)), // IFLA_MTU
    tlv(1, Buffer.from([0x0c, 0x42, 0xa1, 0x00, 0x00, 0x01])), // IFLA_ADDRESS
    tlv(21, u32(vfs.length)), // IFLA_NUM_VF
    tlv(22, Buffer.concat(vfs.map(kernelVfInfo))), // IFLA_VFINFO_LIST
  ]);
  return { type: 16, flags: 2, seq: 1, pid: 1, data };
}

describe("IFLA_VFINFO_LIST parsing", () => {
  it("reads every VF's MAC, VLAN/QoS/protocol, rates, spoofchk, trust and link state", () => {
    const link = parseLink(
      kernelPfMessage([
        { vf: 0, mac: [2, 0, 0, 0, 1, 2], vlan: 200, qos: 1, proto: 0x88a8, min: 10, max: 500, spoofchk: 0, linkstate: 1, trust: 1 },
        {
          vf: 1,
          mac: [0, 0, 0, 0, 0, 0],
          vlan: 0,
          qos: 0,
          proto: 0x8100,
          min: 0,
          max: 0,
          spoofchk: 0xffffffff,
          linkstate: 0,
          trust: 0xffffffff,
        },
        { vf: 2, mac: [2, 0, 0, 0, 1, 3], vlan: 101, qos: 0, proto: 0x8100, min: 0, max: 1000, spoofchk: 1, linkstate: 2, trust: 0 },
      ]),
    );
    expect(link).toMatchObject({ index: 7, name: "ens1f0", mtu: 9000, mac: "0c:42:a1:00:00:01", up: true, numVfs: 3 });
    expect(link.vfs).toEqual([
      {
        vf: 0,
        mac: "02:00:00:00:01:02",
        vlan: 200,
        qos: 1,
        vlanProto: "802.1ad",
        spoofChk: false,
        trust: true,
        linkState: "enable",
        minTxRate: 10,
        maxTxRate: 500,
      },
      {
        vf: 1,
        mac: "00:00:00:00:00:00",
        vlan: 0,
        qos: 0,
        vlanProto: "802.1Q",
        spoofChk: undefined,
        trust: undefined,
        linkState: "auto",
        minTxRate: 0,
        maxTxRate: 0,
      },
      {
        vf: 2,
        mac: "02:00:00:00:01:03",
        vlan: 101,
        qos: 0,
        vlanProto: "802.1Q",
        spoofChk: true,
        trust: false,
        linkState: "disable",
        minTxRate: 0,
        maxTxRate: 1000,
      },
    ]);
  });

  it("handles a PF with SR-IOV capability but no VFs enabled", () => {
    const link = parseLink(kernelPfMessage([]));
    expect(link.numVfs).toBe(0);
    expect(link.vfs).toEqual([]);
  });
});

describe("VF configuration on this kernel", () => {
  let ns: TestNetns;
  let nl: NetlinkSocket;
  let index: number;
  beforeAll(() => {
    ns = createNetns("vf");
    nl = openNetlinkIn(ns.path);
    addVeth(nl, { name: "notapf0", peerName: "notapf1" });
    index = getLinkByName(nl, "notapf0").index;
  });
  afterAll(() => {
    nl?.close();
    removeNetns(ns);
  });

  it("a link without VFs reports none", () => {
    expect(listVfs(nl, index)).toEqual([]);
    expect(() => getVf(nl, index, 0)).toThrow(/VF 0 not found on "notapf0" \(it has 0 VFs\)/);
  });

  it("the kernel's refusal names the PF, the VF and the setting", () => {
    let err: unknown;
    try {
      setVf(nl, index, 0, { mac: "02:00:00:00:01:01", vlan: 100, qos: 3, vlanProto: "802.1ad" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NetlinkError);
    expect((err as NetlinkError).code).toBe("EOPNOTSUPP");
    expect((err as Error).message).toBe('RTM_NEWLINK set "notapf0" vf 0 mac 02:00:00:00:01:01: EOPNOTSUPP (Operation not supported)');
    expect(() => setVf(nl, index, 0, { trust: true })).toThrow('RTM_NEWLINK set "notapf0" vf 0 trust on: EOPNOTSUPP');
  });

  it("a single rate is completed from the VF's current state, which must exist", () => {
    expect(() => setVf(nl, index, 3, { maxTxRate: 1000 })).toThrow(/VF 3 not found on "notapf0"/);
  });

  it("rejects invalid settings before sending", () => {
    expect(() => encodeSetVf(index, 0, { vlan: 4096 })).toThrow(/invalid VF vlan 4096/);
    expect(() => encodeSetVf(index, 0, { vlan: 10, qos: 8 })).toThrow(/invalid VF qos 8/);
    expect(() => encodeSetVf(index, 0, { qos: 1 })).toThrow(/need vlan/);
    expect(() => encodeSetVf(index, 0, { minTxRate: 100, maxTxRate: 10 })).toThrow(/above maxTxRate/);
    expect(() => encodeSetVf(index, -1, {})).toThrow(/invalid VF number/);
    expect(() => setVf(nl, index, 0, { mac: "nope" })).toThrow(/invalid VF MAC address "nope"/);
  });
});
