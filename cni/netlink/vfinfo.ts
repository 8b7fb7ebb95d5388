// Decoding of IFLA_VFINFO_LIST: the state of every SR-IOV VF of a PF, as the
// kernel reports it in RTM_NEWLINK answers (requested with RTEXT_FILTER_VF).
import { attrList, bufferToMac, parseAttrs } from "./wire";

export const IFLA_VF_INFO = 1;
export const IFLA_VF_MAC = 1;
export const IFLA_VF_VLAN = 2;
export const IFLA_VF_TX_RATE = 3;
export const IFLA_VF_SPOOFCHK = 4;
export const IFLA_VF_LINK_STATE = 5;
export const IFLA_VF_RATE = 6;
export const IFLA_VF_RSS_QUERY_EN = 7;
export const IFLA_VF_TRUST = 9;
export const IFLA_VF_VLAN_LIST = 12;
export const IFLA_VF_VLAN_INFO = 1;

export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;

export type VfLinkState = "auto" | "enable" | "disable";
export const VF_LINK_STATES: VfLinkState[] = ["auto", "enable", "disable"];

export interface VfInfo {
  vf: number;
  mac: string;
  vlan: number;
  qos: number;
  vlanProto: "802.1Q" | "802.1ad";
  /** undefined when the driver does not report it */
  spoofChk?: boolean;
  trust?: boolean;
  linkState?: VfLinkState;
  /** Mbit/s, 0 = unlimited */
  minTxRate: number;
  maxTxRate: number;
}

const UNSET = 0xffffffff;

function optionalBool(v: number | undefined): boolean | undefined {
  return v === undefined || v === UNSET ? undefined : v !== 0;
}

export function parseVfInfoList(list: Buffer): VfInfo[] {
  const out: VfInfo[] = [];
  for (const [type, data] of attrList(list)) {
    if (type !== IFLA_VF_INFO) continue;
    const a = parseAttrs(data);
    const mac = a.get(IFLA_VF_MAC);
    const vlan = a.get(IFLA_VF_VLAN);
    const rate = a.get(IFLA_VF_RATE);
    const txRate = a.get(IFLA_VF_TX_RATE);
    const state = a.get(IFLA_VF_LINK_STATE)?.readUInt32LE(4);
    const info: VfInfo = {
      vf: (mac ?? vlan ?? rate)?.readUInt32LE(0) ?? out.length,
      mac: mac ? bufferToMac(mac.subarray(4, 10)) : "00:00:00:00:00:00",
      vlan: vlan ? vlan.readUInt32LE(4) : 0,
      qos: vlan ? vlan.readUInt32LE(8) : 0,
      vlanProto: "802.1Q",
      spoofChk: optionalBool(a.get(IFLA_VF_SPOOFCHK)?.readUInt32LE(4)),
      trust: optionalBool(a.get(IFLA_VF_TRUST)?.readUInt32LE(4)),
      linkState: state === undefined ? undefined : VF_LINK_STATES[state],
      minTxRate: rate ? rate.readUInt32LE(4) : 0,
      maxTxRate: rate ? rate.readUInt32LE(8) : txRate ? txRate.readUInt32LE(4) : 0,
    };
    // IFLA_VF_VLAN_LIST carries the protocol (802.1ad); its first entry is the VF's VLAN.
    const vlanList = a.get(IFLA_VF_VLAN_LIST);
    const first = vlanList ? parseAttrs(vlanList).get(IFLA_VF_VLAN_INFO) : undefined;
    if (first && first.length >= 14) {
      info.vlan = first.readUInt32LE(4);
      info.qos = first.readUInt32LE(8);
      info.vlanProto = first.readUInt16BE(12) === ETH_P_8021AD ? "802.1ad" : "802.1Q";
    }
    out.push(info);
  }
  return out;
}
