// Links: list/get, create macvlan / 802.1Q vlan / veth, change state, name, MTU,
// MAC, alias, namespace, delete. Message layouts match iproute2 6.1 byte for byte
// (see test/fixtures/iproute2 and scripts/capture-iproute2.sh).
import { NetlinkError, type NetlinkSocket, isNetlinkError } from "./socket";
import { parseVfInfoList, type VfInfo, ETH_P_8021AD, ETH_P_8021Q } from "./vfinfo";
import {
  AF_UNSPEC,
  type Attrs,
  MessageBuilder,
  NLA_F_NESTED,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NLM_F_ACK,
  type NlMsg,
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NAMES,
  RTM_NEWLINK,
  attrList,
  attrS32,
  attrStr,
  attrU16,
  attrU32,
  attrU8,
  bufferToMac,
  cString,
  macToBuffer,
  parseAttrs,
} from "./wire";

export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
const IFLA_MASTER = 10;
const IFLA_OPERSTATE = 16;
export const IFLA_LINKINFO = 18;
export const IFLA_IFALIAS = 20;
export const IFLA_NUM_VF = 21;
const IFLA_AF_SPEC = 26;
const IFLA_INET_CONF = 1;
const AF_INET = 2;
export const IFLA_VFINFO_LIST = 22;
const IFLA_NET_NS_FD = 28;
const IFLA_EXT_MASK = 29;
const IFLA_LINK_NETNSID = 37;
const IFLA_PROP_LIST = 52;
export const IFLA_ALT_IFNAME = 53;
const IFLA_PERM_ADDRESS = 54;

export const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const IFLA_INFO_SLAVE_KIND = 4;
const IFLA_MACVLAN_MODE = 1;
const IFLA_VLAN_ID = 1;
const IFLA_VLAN_PROTOCOL = 5;
const VETH_INFO_PEER = 1;

const IFF_UP = 0x1;
export const RTEXT_FILTER_VF = 1;
const RTEXT_FILTER_SKIP_STATS = 8;
const IFNAMSIZ = 16;

export type MacvlanMode = "private" | "vepa" | "bridge" | "passthru" | "source";
export const MACVLAN_MODES: Record<MacvlanMode, number> = { private: 1, vepa: 2, bridge: 4, passthru: 8, source: 16 };
type VlanProtocol = "802.1Q" | "802.1ad";
type OperState = "unknown" | "notpresent" | "down" | "lowerlayerdown" | "testing" | "dormant" | "up";
const OPER_STATES: OperState[] = ["unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"];

export interface Link {
  index: number;
  name: string;
  altNames: string[];
  /** "aa:bb:cc:dd:ee:ff"; empty for links without a hardware address */
  mac: string;
  mtu: number;
  /** administratively up (IFF_UP) */
  up: boolean;
  /** raw IFF_* flags */
  flags: number;
  operState: OperState;
  alias?: string;
  /** IFLA_LINK: the parent (lower) link; in the namespace linkNetnsId when that is set */
  parentIndex?: number;
  masterIndex?: number;
  /** the peer/parent lives in the namespace with this id (as seen from this namespace) */
  linkNetnsId?: number;
  kind?: string;
  slaveKind?: string;
  macvlan?: { mode: MacvlanMode | "unknown" };
  vlan?: { id: number; protocol: VlanProtocol };
  numVfs?: number;
  vfs?: VfInfo[];
  permAddress?: string;
}

function ifinfomsg(index = 0, flags = 0, change = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(AF_UNSPEC, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags, 8);
  b.writeUInt32LE(change, 12);
  return b;
}

export function parseLink(m: NlMsg): Link {
  const d = m.data;
  const a = parseAttrs(d, 16);
  const flags = d.readUInt32LE(8);
  const link: Link = {
    index: d.readInt32LE(4),
    name: attrStr(a, IFLA_IFNAME) ?? "",
    altNames: [],
    mac: a.has(IFLA_ADDRESS) ? bufferToMac(a.get(IFLA_ADDRESS)!) : "",
    mtu: attrU32(a, IFLA_MTU) ?? 0,
    up: (flags & IFF_UP) !== 0,
    flags,
    operState: OPER_STATES[attrU8(a, IFLA_OPERSTATE) ?? 0] ?? "unknown",
  };
  const alias = attrStr(a, IFLA_IFALIAS);
  if (alias) link.alias = alias;
  const parent = attrS32(a, IFLA_LINK);
  // may equal link.index when the parent is in another namespace (linkNetnsId)
  if (parent !== undefined) link.parentIndex = parent;
  const master = attrU32(a, IFLA_MASTER);
  if (master) link.masterIndex = master;
  const nsid = attrS32(a, IFLA_LINK_NETNSID);
  if (nsid !== undefined) link.linkNetnsId = nsid;
  const props = a.get(IFLA_PROP_LIST);
  if (props) for (const [t, v] of attrList(props)) if (t === IFLA_ALT_IFNAME) link.altNames.push(cString(v));
  if (a.has(IFLA_PERM_ADDRESS)) link.permAddress = bufferToMac(a.get(IFLA_PERM_ADDRESS)!);
  const numVfs = attrU32(a, IFLA_NUM_VF);
  if (numVfs !== undefined) link.numVfs = numVfs;
  const vfList = a.get(IFLA_VFINFO_LIST);
  if (vfList) link.vfs = parseVfInfoList(vfList);
  const info = a.get(IFLA_LINKINFO);
  if (info) parseLinkInfo(link, parseAttrs(info));
  return link;
}

function parseLinkInfo(link: Link, info: Attrs): void {
  link.kind = attrStr(info, IFLA_INFO_KIND);
  const slaveKind = attrStr(info, IFLA_INFO_SLAVE_KIND);
  if (slaveKind) link.slaveKind = slaveKind;
  const data = info.get(IFLA_INFO_DATA);
  if (!data) return;
  const d = parseAttrs(data);
  if (link.kind === "macvlan" || link.kind === "macvtap") {
    const mode = attrU32(d, IFLA_MACVLAN_MODE) ?? 0;
    let name: MacvlanMode | "unknown" = "unknown"; // a loop, not find(): see docs/architecture.md, "Plugins"
    for (const k of Object.keys(MACVLAN_MODES) as MacvlanMode[]) if (MACVLAN_MODES[k] === mode) name = k;
    link.macvlan = { mode: name };
  } else if (link.kind === "vlan") {
    const proto = d.get(IFLA_VLAN_PROTOCOL)?.readUInt16BE(0);
    link.vlan = { id: attrU16(d, IFLA_VLAN_ID) ?? 0, protocol: proto === ETH_P_8021AD ? "802.1ad" : "802.1Q" };
  }
}

// ---- reading

function getLinkMessage(filter: { index?: number; name?: string }): MessageBuilder {
  const msg = new MessageBuilder(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, ifinfomsg(filter.index ?? 0));
  if (filter.name !== undefined) {
    // Names longer than IFNAMSIZ-1 can only be altnames.
    if (Buffer.byteLength(filter.name) < IFNAMSIZ) msg.strz(IFLA_IFNAME, filter.name);
    else msg.strz(IFLA_ALT_IFNAME, filter.name);
  }
  return msg.u32(IFLA_EXT_MASK, RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS);
}

export function listLinks(nl: NetlinkSocket): Link[] {
  const msg = new MessageBuilder(RTM_GETLINK, 0, ifinfomsg()).u32(IFLA_EXT_MASK, RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS);
  return nl
    .dump(msg, "RTM_GETLINK dump")
    .filter((m) => m.type === RTM_NEWLINK)
    .map(parseLink);
}

/** The link with this name or altname; throws NetlinkError ENODEV when there is none. */
export function getLinkByName(nl: NetlinkSocket, name: string): Link {
  if (!name || Buffer.byteLength(name) > 127 || /[\s/]/.test(name)) {
    throw new TypeError(`invalid interface name "${name}": 1-15 characters (altnames up to 127), no spaces or "/"`);
  }
  const replies = nl.request(getLinkMessage({ name }), `RTM_GETLINK "${name}"`);
  return parseLink(replies[0]);
}

/** Throws NetlinkError ENODEV when no link has this index. */
export function getLinkByIndex(nl: NetlinkSocket, index: number): Link {
  const replies = nl.request(getLinkMessage({ index }), `RTM_GETLINK ifindex ${index}`);
  return parseLink(replies[0]);
}

/** Like getLinkByName, but undefined when the link does not exist. */
export function findLinkByName(nl: NetlinkSocket, name: string): Link | undefined {
  try {
    return getLinkByName(nl, name);
  } catch (e) {
    if (isNetlinkError(e, "ENODEV")) return undefined;
    throw e;
  }
}

export function findLinkByIndex(nl: NetlinkSocket, index: number): Link | undefined {
  try {
    return getLinkByIndex(nl, index);
  } catch (e) {
    if (isNetlinkError(e, "ENODEV")) return undefined;
    throw e;
  }
}

/** First link whose MAC (or permanent MAC) equals `mac` (any case, ":" or "-"). */
export function findLinkByMac(nl: NetlinkSocket, mac: string): Link | undefined {
  const want = bufferToMac(macToBuffer(mac));
  const links = listLinks(nl);
  return links.find((l) => l.mac === want) ?? links.find((l) => l.permAddress === want);
}

/** `"eth0"` for an index, or `ifindex 7` when it cannot be resolved; for error messages. */
export function describeLink(nl: NetlinkSocket, index: number): string {
  try {
    return `"${getLinkByIndex(nl, index).name}"`;
  } catch {
    return `ifindex ${index}`;
  }
}

// ---- creating

interface MacvlanOptions {
  name: string;
  parentIndex: number;
  mode: MacvlanMode;
  mtu?: number;
  mac?: string;
  /** create the link directly in the namespace of this fd (see openNetnsFd) */
  netnsFd?: number;
}

function checkName(name: string, field = "name"): void {
  if (!name || Buffer.byteLength(name) >= IFNAMSIZ || /[\s/:]/.test(name) || name === "." || name === "..") {
    throw new TypeError(`invalid interface ${field} "${name}": use 1-15 characters without spaces, "/" or ":"`);
  }
}

/** = `ip link add link PARENT name NAME [mtu M] [address A] [netns NS] type macvlan mode MODE` */
export function encodeAddMacvlan(o: MacvlanOptions): MessageBuilder {
  checkName(o.name);
  const mode = MACVLAN_MODES[o.mode];
  if (!mode) throw new TypeError(`invalid macvlan mode "${o.mode}": use one of ${Object.keys(MACVLAN_MODES).join(", ")}`);
  const msg = new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, ifinfomsg());
  if (o.mtu !== undefined) msg.u32(IFLA_MTU, o.mtu);
  if (o.mac !== undefined) msg.attr(IFLA_ADDRESS, macToBuffer(o.mac, "macvlan MAC address"));
  if (o.netnsFd !== undefined) msg.u32(IFLA_NET_NS_FD, o.netnsFd);
  msg.u32(IFLA_LINK, o.parentIndex).strz(IFLA_IFNAME, o.name);
  return msg.nest(IFLA_LINKINFO, (m) => m.str(IFLA_INFO_KIND, "macvlan").nest(IFLA_INFO_DATA, (d) => d.u32(IFLA_MACVLAN_MODE, mode)));
}

export function addMacvlan(nl: NetlinkSocket, o: MacvlanOptions): void {
  const msg = encodeAddMacvlan(o);
  requestNaming(
    nl,
    msg,
    () => `RTM_NEWLINK macvlan "${o.name}" on ${describeLink(nl, o.parentIndex)}`,
    () => describeLink(nl, o.parentIndex),
  );
}

interface VlanOptions {
  name: string;
  parentIndex: number;
  id: number;
  /** omitted: the kernel's default, 802.1Q */
  protocol?: VlanProtocol;
}

/** = `ip link add link PARENT name NAME type vlan id ID [protocol P]` */
export function encodeAddVlan(o: VlanOptions): MessageBuilder {
  checkName(o.name);
  if (!Number.isInteger(o.id) || o.id < 1 || o.id > 4094) throw new TypeError(`invalid VLAN id ${o.id}: use 1-4094`);
  if (o.protocol !== undefined && o.protocol !== "802.1Q" && o.protocol !== "802.1ad") {
    throw new TypeError(`invalid VLAN protocol "${o.protocol}": use 802.1Q or 802.1ad`);
  }
  const msg = new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, ifinfomsg());
  msg.u32(IFLA_LINK, o.parentIndex).strz(IFLA_IFNAME, o.name);
  return msg.nest(IFLA_LINKINFO, (m) =>
    m.str(IFLA_INFO_KIND, "vlan").nest(IFLA_INFO_DATA, (d) => {
      d.u16(IFLA_VLAN_ID, o.id);
      if (o.protocol) d.u16be(IFLA_VLAN_PROTOCOL, o.protocol === "802.1ad" ? ETH_P_8021AD : ETH_P_8021Q);
    }),
  );
}

export function addVlan(nl: NetlinkSocket, o: VlanOptions): void {
  requestNaming(
    nl,
    encodeAddVlan(o),
    () => `RTM_NEWLINK vlan ${o.id} "${o.name}" on ${describeLink(nl, o.parentIndex)}`,
    () => describeLink(nl, o.parentIndex),
  );
}

interface VethOptions {
  name: string;
  peerName: string;
  /** create the peer directly in this namespace */
  peerNetnsFd?: number;
}

/** = `ip link add NAME type veth peer name PEER [netns NS]` */
export function encodeAddVeth(o: VethOptions): MessageBuilder {
  checkName(o.name);
  checkName(o.peerName, "peer name");
  const msg = new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, ifinfomsg());
  msg.strz(IFLA_IFNAME, o.name);
  return msg.nest(IFLA_LINKINFO, (m) =>
    m.str(IFLA_INFO_KIND, "veth").nest(IFLA_INFO_DATA, (d) =>
      d.nest(VETH_INFO_PEER, (p) => {
        p.raw(ifinfomsg());
        if (o.peerNetnsFd !== undefined) p.u32(IFLA_NET_NS_FD, o.peerNetnsFd);
        p.strz(IFLA_IFNAME, o.peerName);
      }),
    ),
  );
}

export function addVeth(nl: NetlinkSocket, o: VethOptions): void {
  nl.request(encodeAddVeth(o), `RTM_NEWLINK veth "${o.name}" peer "${o.peerName}"`);
}

// ---- changing

const setMsg = (index: number, flags = 0, change = 0) =>
  new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, ifinfomsg(index, flags, change));

/** = `ip link set dev X up` */
export const encodeSetLinkUp = (index: number) => setMsg(index, IFF_UP, IFF_UP);
/** = `ip link set dev X down` */
export const encodeSetLinkDown = (index: number) => setMsg(index, 0, IFF_UP);
/** = `ip link set dev X name NAME` */
export function encodeSetLinkName(index: number, name: string): MessageBuilder {
  checkName(name);
  return setMsg(index).strz(IFLA_IFNAME, name);
}
/** = `ip link set dev X mtu MTU` */
export function encodeSetLinkMtu(index: number, mtu: number): MessageBuilder {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new TypeError(`invalid MTU ${mtu}: use 68-65535`);
  return setMsg(index).u32(IFLA_MTU, mtu);
}
/** = `ip link set dev X address MAC` */
export const encodeSetLinkMac = (index: number, mac: string) => setMsg(index).attr(IFLA_ADDRESS, macToBuffer(mac));
/** = `ip link set dev X alias ALIAS` (no terminating NUL, like iproute2) */
export function encodeSetLinkAlias(index: number, alias: string): MessageBuilder {
  checkAlias(alias);
  return setMsg(index).str(IFLA_IFALIAS, alias);
}
function checkAlias(alias: string): void {
  if (Buffer.byteLength(alias) > 255) throw new TypeError(`interface alias too long (${Buffer.byteLength(alias)} bytes): at most 255`);
}
/** = `ip link set dev X name NAME alias ALIAS`: both in one message (the alias first, as iproute2 sends it). */
export function encodeRenameLink(index: number, name: string, alias: string): MessageBuilder {
  checkName(name);
  checkAlias(alias);
  return setMsg(index).str(IFLA_IFALIAS, alias).strz(IFLA_IFNAME, name);
}
/**
 * The interface's IPv4 settings (net.ipv4.conf.<if>.*) by their IPV4_DEVCONF_ ids, which the kernel
 * takes in IFLA_AF_SPEC: no namespace switch and no /proc write for them (iproute2 has no command).
 */
export function encodeSetIpv4Conf(index: number, conf: [id: number, value: number][]): MessageBuilder {
  return setMsg(index).nest(IFLA_AF_SPEC, (spec) =>
    spec.nest(AF_INET, (inet) =>
      inet.nest(IFLA_INET_CONF, (c) => {
        for (const [id, value] of conf) c.u32(id, value);
      }),
    ),
  );
}
/** IPV4_DEVCONF_ARP_NOTIFY (include/uapi/linux/ip.h): net.ipv4.conf.<if>.arp_notify */
export const IPV4_DEVCONF_ARP_NOTIFY = 22;
/** = `ip link set dev X netns NS` */
export const encodeSetLinkNetns = (index: number, netnsFd: number) => setMsg(index).u32(IFLA_NET_NS_FD, netnsFd);
/** = `ip link del dev X` */
export const encodeDeleteLink = (index: number) => new MessageBuilder(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, ifinfomsg(index));

export const setLinkUp = (nl: NetlinkSocket, index: number) =>
  requestNaming(
    nl,
    encodeSetLinkUp(index),
    () => `RTM_NEWLINK set ${describeLink(nl, index)} up`,
    () => describeLink(nl, index),
  );
export const setLinkDown = (nl: NetlinkSocket, index: number) =>
  requestNaming(
    nl,
    encodeSetLinkDown(index),
    () => `RTM_NEWLINK set ${describeLink(nl, index)} down`,
    () => describeLink(nl, index),
  );
export const setLinkName = (nl: NetlinkSocket, index: number, name: string) =>
  requestNaming(
    nl,
    encodeSetLinkName(index, name),
    () => `RTM_NEWLINK rename ${describeLink(nl, index)} to "${name}"`,
    () => describeLink(nl, index),
  );
export const setLinkMtu = (nl: NetlinkSocket, index: number, mtu: number) =>
  requestNaming(
    nl,
    encodeSetLinkMtu(index, mtu),
    () => `RTM_NEWLINK set ${describeLink(nl, index)} mtu ${mtu}`,
    () => describeLink(nl, index),
  );
export const setLinkMac = (nl: NetlinkSocket, index: number, mac: string) =>
  requestNaming(
    nl,
    encodeSetLinkMac(index, mac),
    () => `RTM_NEWLINK set ${describeLink(nl, index)} address ${mac}`,
    () => describeLink(nl, index),
  );
export const setLinkAlias = (nl: NetlinkSocket, index: number, alias: string) =>
  requestNaming(
    nl,
    encodeSetLinkAlias(index, alias),
    () => `RTM_NEWLINK set ${describeLink(nl, index)} alias "${alias}"`,
    () => describeLink(nl, index),
  );
export const renameLink = (nl: NetlinkSocket, index: number, name: string, alias: string) =>
  requestNaming(
    nl,
    encodeRenameLink(index, name, alias),
    () => `RTM_NEWLINK rename ${describeLink(nl, index)} to "${name}" (alias "${alias}")`,
    () => describeLink(nl, index),
  );
export const setIpv4Conf = (nl: NetlinkSocket, index: number, conf: [id: number, value: number][]) =>
  requestNaming(
    nl,
    encodeSetIpv4Conf(index, conf),
    () => `RTM_NEWLINK set the IPv4 settings of ${describeLink(nl, index)}`,
    () => describeLink(nl, index),
  );
/** Moves the link into the namespace of `netnsFd` (see openNetnsFd). Its index may change there. */
export const setLinkNetns = (nl: NetlinkSocket, index: number, netnsFd: number) =>
  requestNaming(
    nl,
    encodeSetLinkNetns(index, netnsFd),
    () => `RTM_NEWLINK move ${describeLink(nl, index)} to netns fd ${netnsFd}`,
    () => describeLink(nl, index),
  );
export const deleteLink = (nl: NetlinkSocket, index: number) =>
  requestNaming(
    nl,
    encodeDeleteLink(index),
    () => `RTM_DELLINK ${describeLink(nl, index)}`,
    () => describeLink(nl, index),
  );

/**
 * Sends a request; on failure, rethrows with a description built only then
 * (it may need another netlink round trip to name the links involved).
 */
export function requestNaming(nl: NetlinkSocket, msg: MessageBuilder, what: () => string, object?: () => string): void {
  try {
    nl.request(msg, RTM_NAMES[msg.type] ?? `netlink type ${msg.type}`);
  } catch (e) {
    if (e instanceof NetlinkError) throw new NetlinkError(what(), e.errno, e.kernelMessage, object?.());
    throw e;
  }
}

const RTM_NEWLINKPROP = 108;
const RTM_DELLINKPROP = 109;

function encodeLinkProp(type: number, index: number, altName: string): MessageBuilder {
  // The kernel's strict validation wants the nested flag on IFLA_PROP_LIST, as iproute2 sets it.
  return new MessageBuilder(type, NLM_F_REQUEST | NLM_F_ACK, ifinfomsg(index)).nest(IFLA_PROP_LIST | NLA_F_NESTED, (p) =>
    p.strz(IFLA_ALT_IFNAME, altName),
  );
}

/** = `ip link property add dev X altname NAME` */
export function addAltName(nl: NetlinkSocket, index: number, name: string): void {
  nl.request(encodeLinkProp(RTM_NEWLINKPROP, index, name), `RTM_NEWLINKPROP altname "${name}"`);
}

/** = `ip link property del dev X altname NAME` */
export function deleteAltName(nl: NetlinkSocket, index: number, name: string): void {
  nl.request(encodeLinkProp(RTM_DELLINKPROP, index, name), `RTM_DELLINKPROP altname "${name}"`);
}
