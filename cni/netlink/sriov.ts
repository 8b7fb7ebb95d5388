// SR-IOV: configure a VF through its PF (IFLA_VFINFO_LIST / IFLA_VF_*) and read
// every VF's state back. Messages match `ip link set dev PF vf N ...` of
// iproute2 6.1 byte for byte.
import { OsError } from "../../lib/oserror";
import type { NetlinkSocket } from "./socket";
import { describeLink, getLinkByIndex, IFLA_VFINFO_LIST, requestNaming } from "./link";
import {
  ETH_P_8021AD,
  IFLA_VF_INFO,
  IFLA_VF_LINK_STATE,
  IFLA_VF_MAC,
  IFLA_VF_RATE,
  IFLA_VF_SPOOFCHK,
  IFLA_VF_TRUST,
  IFLA_VF_VLAN,
  IFLA_VF_VLAN_INFO,
  IFLA_VF_VLAN_LIST,
  VF_LINK_STATES,
  type VfInfo,
  type VfLinkState,
} from "./vfinfo";
import { AF_UNSPEC, MessageBuilder, NLM_F_ACK, NLM_F_REQUEST, RTM_NEWLINK, macToBuffer } from "./wire";

export type { VfInfo, VfLinkState } from "./vfinfo";

export interface VfSettings {
  mac?: string;
  /** 0 clears the VLAN */
  vlan?: number;
  /** 802.1p priority 0-7, sent with vlan */
  qos?: number;
  /** default 802.1Q */
  vlanProto?: "802.1Q" | "802.1ad";
  spoofChk?: boolean;
  trust?: boolean;
  linkState?: VfLinkState;
  /** Mbit/s, 0 = no limit; iproute2 sets both together, so does the encoder */
  minTxRate?: number;
  maxTxRate?: number;
}

function u32s(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => {
    b.writeUInt32LE(v >>> 0, i * 4);
  });
  return b;
}

function checkVf(vf: number): void {
  if (!Number.isInteger(vf) || vf < 0 || vf > 0xffff) throw new TypeError(`invalid VF number ${vf}: use a VF index from 0`);
}

function checkSettings(s: VfSettings): void {
  if (s.vlan !== undefined && (!Number.isInteger(s.vlan) || s.vlan < 0 || s.vlan > 4095))
    throw new TypeError(`invalid VF vlan ${s.vlan}: use 0-4095 (0 clears it)`);
  if (s.qos !== undefined && (!Number.isInteger(s.qos) || s.qos < 0 || s.qos > 7)) throw new TypeError(`invalid VF qos ${s.qos}: use 0-7`);
  if ((s.qos !== undefined || s.vlanProto !== undefined) && s.vlan === undefined) throw new TypeError("VF qos/vlanProto need vlan");
  if (s.vlanProto !== undefined && s.vlanProto !== "802.1Q" && s.vlanProto !== "802.1ad")
    throw new TypeError(`invalid VF vlanProto "${s.vlanProto}": use 802.1Q or 802.1ad`);
  if (s.linkState !== undefined && !VF_LINK_STATES.includes(s.linkState))
    throw new TypeError(`invalid VF linkState "${s.linkState}": use auto, enable or disable`);
  for (const k of ["minTxRate", "maxTxRate"] as const) {
    const v = s[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xffffffff))
      throw new TypeError(`invalid VF ${k} ${v}: Mbit/s, 0 for no limit`);
  }
  if (s.minTxRate !== undefined && s.maxTxRate !== undefined && s.maxTxRate !== 0 && s.minTxRate > s.maxTxRate) {
    throw new TypeError(`VF minTxRate ${s.minTxRate} is above maxTxRate ${s.maxTxRate}`);
  }
}

/**
 * One RTM_NEWLINK on the PF carrying every given setting, in iproute2's order:
 * = `ip link set dev PF vf N [mac M] [vlan V [qos Q] [proto P]] [spoofchk on|off]
 *    [trust on|off] [state S] [min_tx_rate A max_tx_rate B]`.
 * Both rates must be given (setVf fills a missing one from the VF's current state).
 */
export function encodeSetVf(pfIndex: number, vf: number, s: VfSettings): MessageBuilder {
  checkVf(vf);
  checkSettings(s);
  if ((s.minTxRate === undefined) !== (s.maxTxRate === undefined)) {
    throw new TypeError("encodeSetVf needs both minTxRate and maxTxRate (the kernel sets them together)");
  }
  const ifi = Buffer.alloc(16);
  ifi.writeUInt8(AF_UNSPEC, 0);
  ifi.writeInt32LE(pfIndex, 4);
  const msg = new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, ifi);
  return msg.nest(IFLA_VFINFO_LIST, (l) =>
    l.nest(IFLA_VF_INFO, (m) => {
      if (s.mac !== undefined) {
        const mac = Buffer.alloc(36); // struct ifla_vf_mac { u32 vf; u8 mac[32]; }
        mac.writeUInt32LE(vf, 0);
        macToBuffer(s.mac, "VF MAC address").copy(mac, 4);
        m.attr(IFLA_VF_MAC, mac);
      }
      if (s.vlan !== undefined) {
        if (s.vlanProto === "802.1ad") {
          // struct ifla_vf_vlan_info { u32 vf, vlan, qos; __be16 vlan_proto; } (16 bytes with padding)
          const info = Buffer.alloc(16);
          info.writeUInt32LE(vf, 0);
          info.writeUInt32LE(s.vlan, 4);
          info.writeUInt32LE(s.qos ?? 0, 8);
          info.writeUInt16BE(ETH_P_8021AD, 12);
          m.nest(IFLA_VF_VLAN_LIST, (v) => v.attr(IFLA_VF_VLAN_INFO, info));
        } else {
          // 802.1Q goes through the older IFLA_VF_VLAN, as iproute2 does, so drivers without VLAN_LIST work
          m.attr(IFLA_VF_VLAN, u32s(vf, s.vlan, s.qos ?? 0));
        }
      }
      if (s.spoofChk !== undefined) m.attr(IFLA_VF_SPOOFCHK, u32s(vf, s.spoofChk ? 1 : 0));
      if (s.trust !== undefined) m.attr(IFLA_VF_TRUST, u32s(vf, s.trust ? 1 : 0));
      if (s.linkState !== undefined) m.attr(IFLA_VF_LINK_STATE, u32s(vf, VF_LINK_STATES.indexOf(s.linkState)));
      if (s.minTxRate !== undefined && s.maxTxRate !== undefined) m.attr(IFLA_VF_RATE, u32s(vf, s.minTxRate, s.maxTxRate));
    }),
  );
}

/** State of every VF of the PF (IFLA_VFINFO_LIST); empty when it has none. */
export function listVfs(nl: NetlinkSocket, pfIndex: number): VfInfo[] {
  return getLinkByIndex(nl, pfIndex).vfs ?? [];
}

/** State of one VF; throws when the PF has no such VF. */
export function getVf(nl: NetlinkSocket, pfIndex: number, vf: number): VfInfo {
  const link = getLinkByIndex(nl, pfIndex);
  const info = link.vfs?.find((v) => v.vf === vf);
  if (!info) {
    throw new OsError(
      `VF ${vf} not found on "${link.name}" (it has ${link.numVfs ?? 0} VFs): ` +
        `check the device ID and /sys/class/net/${link.name}/device/sriov_numvfs`,
      "netlink",
      "ENODEV",
      `RTM_GETLINK "${link.name}" vf ${vf}`,
      link.name,
    );
  }
  return info;
}

/**
 * Applies VF settings through the PF, one request per setting so that a driver
 * refusing one (e.g. trust) is named in the error. Earlier settings stay applied.
 */
export function setVf(nl: NetlinkSocket, pfIndex: number, vf: number, s: VfSettings): void {
  checkVf(vf);
  checkSettings(s);
  const steps: [VfSettings, string][] = [];
  if (s.mac !== undefined) steps.push([{ mac: s.mac }, `mac ${s.mac}`]);
  if (s.vlan !== undefined) {
    steps.push([{ vlan: s.vlan, qos: s.qos, vlanProto: s.vlanProto }, `vlan ${s.vlan} qos ${s.qos ?? 0} proto ${s.vlanProto ?? "802.1Q"}`]);
  }
  if (s.spoofChk !== undefined) steps.push([{ spoofChk: s.spoofChk }, `spoofchk ${s.spoofChk ? "on" : "off"}`]);
  if (s.trust !== undefined) steps.push([{ trust: s.trust }, `trust ${s.trust ? "on" : "off"}`]);
  if (s.linkState !== undefined) steps.push([{ linkState: s.linkState }, `state ${s.linkState}`]);
  if (s.minTxRate !== undefined || s.maxTxRate !== undefined) {
    let { minTxRate, maxTxRate } = s;
    if (minTxRate === undefined || maxTxRate === undefined) {
      const current = getVf(nl, pfIndex, vf);
      minTxRate ??= current.minTxRate;
      maxTxRate ??= current.maxTxRate;
    }
    steps.push([{ minTxRate, maxTxRate }, `min_tx_rate ${minTxRate} max_tx_rate ${maxTxRate}`]);
  }
  for (const [settings, text] of steps) {
    requestNaming(nl, encodeSetVf(pfIndex, vf, settings), () => `RTM_NEWLINK set ${describeLink(nl, pfIndex)} vf ${vf} ${text}`);
  }
}
