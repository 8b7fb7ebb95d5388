// Routes (RTM_NEWROUTE/RTM_DELROUTE/RTM_GETROUTE). Requests match
// `ip [-6] route add|del DST [via GW] [metric M] [table T] dev X [scope S] [onlink]`
// of iproute2 6.1, including its defaults (protocol boot, scope link without a
// gateway, RT_TABLE_UNSPEC + RTA_TABLE for tables above 255).
import type { NetlinkSocket } from "./socket";
import { addressBytes, formatIP, networkOf, parsePrefix } from "./ip";
import { describeLink, requestNaming } from "./link";
import { SCOPE_NUMBERS, type Scope, scopeName } from "./addr";
import {
  AF_INET,
  AF_INET6,
  AF_UNSPEC,
  MessageBuilder,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  type NlMsg,
  RTM_DELROUTE,
  RTM_GETROUTE,
  RTM_NEWROUTE,
  attrU32,
  parseAttrs,
} from "./wire";

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_MULTIPATH = 9;
const RTA_TABLE = 15;

const RT_TABLE_UNSPEC = 0;
const RT_TABLE_MAIN = 254;
const RTPROT_BOOT = 3;
const RTN_UNICAST = 1;
const RTNH_F_ONLINK = 4;
const RTM_F_CLONED = 0x200;

export interface RouteOptions {
  /** "0.0.0.0/0", "::/0" or any prefix */
  dst: string;
  gateway?: string;
  /** output interface (RTA_OIF) */
  index?: number;
  /** gateway is reachable on the link even if no prefix covers it */
  onLink?: boolean;
  metric?: number;
  /** default main (254) */
  table?: number;
  /** default like ip: link for IPv4 without a gateway, otherwise global */
  scope?: Scope;
}

export interface Route {
  family: 4 | 6;
  dst: string;
  gateway?: string;
  index?: number;
  metric?: number;
  table: number;
  scope: Scope | `${number}`;
  protocol: number;
  type: number;
  onLink: boolean;
  prefSrc?: string;
  multipath?: { gateway?: string; index: number; onLink: boolean }[];
}

function encodeRoute(type: number, o: RouteOptions): MessageBuilder {
  const dst = parsePrefix(o.dst, "route destination");
  const gw = o.gateway === undefined ? undefined : addressBytes(o.gateway);
  if (o.gateway !== undefined && (!gw || gw.family !== dst.family)) {
    throw new TypeError(`invalid gateway "${o.gateway}" for route ${o.dst}: must be an IPv${dst.family} address`);
  }
  const table = o.table ?? RT_TABLE_MAIN;
  if (!Number.isInteger(table) || table < 1 || table > 0xffffffff) throw new TypeError(`invalid route table ${table}: use 1-4294967295`);
  if (o.metric !== undefined && (!Number.isInteger(o.metric) || o.metric < 0 || o.metric > 0xffffffff)) {
    throw new TypeError(`invalid route metric ${o.metric}: use 0-4294967295`);
  }
  const adding = type === RTM_NEWROUTE;
  let scope: number;
  if (o.scope !== undefined) {
    scope = SCOPE_NUMBERS[o.scope];
    if (scope === undefined) throw new TypeError(`invalid route scope "${o.scope}": use global, site, link or host`);
  } else if (dst.family === 6) scope = 0;
  else if (!adding)
    scope = SCOPE_NUMBERS.nowhere; // matches any scope on delete
  else scope = gw ? 0 : SCOPE_NUMBERS.link;

  const rtmsg = Buffer.alloc(12);
  rtmsg.writeUInt8(dst.family === 4 ? AF_INET : AF_INET6, 0);
  rtmsg.writeUInt8(dst.prefixLen, 1);
  rtmsg.writeUInt8(table < 256 ? table : RT_TABLE_UNSPEC, 4);
  rtmsg.writeUInt8(adding ? RTPROT_BOOT : 0, 5);
  rtmsg.writeUInt8(scope, 6);
  rtmsg.writeUInt8(adding ? RTN_UNICAST : 0, 7);
  rtmsg.writeUInt32LE(o.onLink ? RTNH_F_ONLINK : 0, 8);
  const flags = NLM_F_REQUEST | NLM_F_ACK | (adding ? NLM_F_CREATE | NLM_F_EXCL : 0);
  const msg = new MessageBuilder(type, flags, rtmsg);
  // iproute2 omits RTA_DST for the IPv4 default route but sends :: for IPv6.
  if (dst.prefixLen > 0 || dst.family === 6) msg.attr(RTA_DST, networkOf(dst));
  if (gw) msg.attr(RTA_GATEWAY, gw.bytes);
  if (o.metric !== undefined) msg.u32(RTA_PRIORITY, o.metric);
  if (table >= 256) msg.u32(RTA_TABLE, table);
  if (o.index !== undefined) msg.u32(RTA_OIF, o.index);
  return msg;
}

export const encodeAddRoute = (o: RouteOptions) => encodeRoute(RTM_NEWROUTE, o);
export const encodeDeleteRoute = (o: RouteOptions) => encodeRoute(RTM_DELROUTE, o);

function describeRoute(nl: NetlinkSocket, o: RouteOptions): string {
  return [
    o.dst,
    o.gateway && `via ${o.gateway}`,
    o.index !== undefined && `dev ${describeLink(nl, o.index)}`,
    o.metric !== undefined && `metric ${o.metric}`,
    o.table !== undefined && `table ${o.table}`,
    o.onLink && "onlink",
  ]
    .filter(Boolean)
    .join(" ");
}

export function addRoute(nl: NetlinkSocket, o: RouteOptions): void {
  requestNaming(nl, encodeAddRoute(o), () => `RTM_NEWROUTE ${describeRoute(nl, o)}`);
}

export function deleteRoute(nl: NetlinkSocket, o: RouteOptions): void {
  requestNaming(nl, encodeDeleteRoute(o), () => `RTM_DELROUTE ${describeRoute(nl, o)}`);
}

export function parseRoute(m: NlMsg): Route {
  const d = m.data;
  const family = d.readUInt8(0) === AF_INET ? 4 : 6;
  const dstLen = d.readUInt8(1);
  const a = parseAttrs(d, 12);
  const rawDst = a.get(RTA_DST);
  const dstAddr = rawDst ? formatIP(rawDst) : family === 4 ? "0.0.0.0" : "::";
  const r: Route = {
    family,
    dst: `${dstAddr}/${dstLen}`,
    table: attrU32(a, RTA_TABLE) ?? d.readUInt8(4),
    scope: scopeName(d.readUInt8(6)),
    protocol: d.readUInt8(5),
    type: d.readUInt8(7),
    onLink: (d.readUInt32LE(8) & RTNH_F_ONLINK) !== 0,
  };
  const gw = a.get(RTA_GATEWAY);
  if (gw) r.gateway = formatIP(gw);
  const oif = attrU32(a, RTA_OIF);
  if (oif !== undefined) r.index = oif;
  const metric = attrU32(a, RTA_PRIORITY);
  if (metric !== undefined) r.metric = metric;
  const prefSrc = a.get(RTA_PREFSRC);
  if (prefSrc) r.prefSrc = formatIP(prefSrc);
  const mp = a.get(RTA_MULTIPATH);
  if (mp) {
    // struct rtnexthop { u16 len; u8 flags; u8 hops; s32 ifindex; } followed by attributes
    r.multipath = [];
    for (let off = 0; off + 8 <= mp.length; ) {
      const len = mp.readUInt16LE(off);
      if (len < 8) break;
      const nh = parseAttrs(mp.subarray(off + 8, off + len));
      const nhGw = nh.get(RTA_GATEWAY);
      r.multipath.push({
        index: mp.readInt32LE(off + 4),
        onLink: (mp.readUInt8(off + 2) & RTNH_F_ONLINK) !== 0,
        ...(nhGw ? { gateway: formatIP(nhGw) } : {}),
      });
      off += (len + 3) & ~3;
    }
  }
  return r;
}

/** Routes of one table (default main; "all" for every table), cloned cache entries skipped. */
export function listRoutes(nl: NetlinkSocket, filter: { family?: 4 | 6; table?: number | "all"; index?: number } = {}): Route[] {
  const rtmsg = Buffer.alloc(12);
  rtmsg.writeUInt8(filter.family === 4 ? AF_INET : filter.family === 6 ? AF_INET6 : AF_UNSPEC, 0);
  const table = filter.table ?? RT_TABLE_MAIN;
  return nl
    .dump(new MessageBuilder(RTM_GETROUTE, 0, rtmsg), "RTM_GETROUTE dump")
    .filter((m) => m.type === RTM_NEWROUTE && (m.data.readUInt32LE(8) & RTM_F_CLONED) === 0)
    .map(parseRoute)
    .filter(
      (r) =>
        (table === "all" || r.table === table) &&
        (filter.family === undefined || r.family === filter.family) &&
        (filter.index === undefined || r.index === filter.index),
    );
}
