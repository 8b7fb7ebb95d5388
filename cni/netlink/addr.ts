// Interface addresses (RTM_NEWADDR/RTM_DELADDR/RTM_GETADDR), IPv4 and IPv6.
// Requests match `ip addr add|del ADDR/LEN [brd +] dev X [nodad]` of iproute2 6.1.
import { sleepSync } from "../../lib/files";
import type { NetlinkSocket } from "./socket";
import { broadcastOf, formatIP, parsePrefix, type Prefix } from "./ip";
import { describeLink, requestNaming } from "./link";
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
  RTM_DELADDR,
  RTM_GETADDR,
  RTM_NEWADDR,
  attrStr,
  attrU32,
  parseAttrs,
} from "./wire";

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_LABEL = 3;
const IFA_BROADCAST = 4;
const IFA_FLAGS = 8;

export const IFA_F_NODAD = 0x02;
const IFA_F_OPTIMISTIC = 0x04;
const IFA_F_DADFAILED = 0x08;
const IFA_F_TENTATIVE = 0x40;
const IFA_F_PERMANENT = 0x80;

export type Scope = "global" | "site" | "link" | "host" | "nowhere";
const SCOPES: Record<number, Scope> = { 0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere" };
export const SCOPE_NUMBERS: Record<Scope, number> = { global: 0, site: 200, link: 253, host: 254, nowhere: 255 };
export function scopeName(n: number): Scope | `${number}` {
  return SCOPES[n] ?? (String(n) as `${number}`);
}

interface AddressOptions {
  index: number;
  /** "10.0.0.2/24" or "fd00::2/64" */
  cidr: string;
  /** IPv6: skip duplicate address detection (IFA_F_NODAD) */
  nodad?: boolean;
  /** IPv6: usable while DAD runs (IFA_F_OPTIMISTIC; needs the interface's optimistic_dad sysctl) */
  optimistic?: boolean;
  /**
   * IPv4 broadcast: true/undefined sets it for prefixes up to /30 like `brd +`
   * (and the reference CNI plugins), false leaves it unset, a string sets it.
   */
  broadcast?: boolean | string;
}

export interface Address {
  index: number;
  family: 4 | 6;
  address: string;
  prefixLen: number;
  cidr: string;
  scope: Scope | `${number}`;
  /** IFA_F_* flags (IFA_FLAGS when present) */
  flags: number;
  /** IPv6 DAD still running */
  tentative: boolean;
  /** IPv6 DAD found a duplicate: the address is unusable */
  dadFailed: boolean;
  /** static, not from autoconfiguration */
  permanent: boolean;
  broadcast?: string;
  label?: string;
}

function ifaddrmsg(p: Prefix, index: number, flags = 0, scope = 0): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(p.family === 4 ? AF_INET : AF_INET6, 0);
  b.writeUInt8(p.prefixLen, 1);
  b.writeUInt8(flags, 2);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index, 4);
  return b;
}

export function encodeAddAddress(o: AddressOptions): MessageBuilder {
  const p = parsePrefix(o.cidr, "address");
  const msg = new MessageBuilder(
    RTM_NEWADDR,
    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    ifaddrmsg(p, o.index, (o.nodad ? IFA_F_NODAD : 0) | (o.optimistic && p.family === 6 ? IFA_F_OPTIMISTIC : 0)),
  );
  msg.attr(IFA_LOCAL, p.bytes).attr(IFA_ADDRESS, p.bytes);
  if (p.family === 4 && o.broadcast !== false) {
    if (typeof o.broadcast === "string") {
      const b = parsePrefix(o.broadcast, "broadcast address");
      if (b.family !== 4) throw new TypeError(`invalid broadcast address "${o.broadcast}": must be IPv4`);
      msg.attr(IFA_BROADCAST, b.bytes);
    } else if (p.prefixLen <= 30) {
      msg.attr(IFA_BROADCAST, broadcastOf(p));
    }
  }
  return msg;
}

export function encodeDeleteAddress(o: { index: number; cidr: string }): MessageBuilder {
  const p = parsePrefix(o.cidr, "address");
  return new MessageBuilder(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, ifaddrmsg(p, o.index))
    .attr(IFA_LOCAL, p.bytes)
    .attr(IFA_ADDRESS, p.bytes);
}

export function addAddress(nl: NetlinkSocket, o: AddressOptions): void {
  requestNaming(nl, encodeAddAddress(o), () => `RTM_NEWADDR ${o.cidr} on ${describeLink(nl, o.index)}`);
}

export function deleteAddress(nl: NetlinkSocket, o: { index: number; cidr: string }): void {
  requestNaming(nl, encodeDeleteAddress(o), () => `RTM_DELADDR ${o.cidr} on ${describeLink(nl, o.index)}`);
}

function parseAddress(m: NlMsg): Address {
  const d = m.data;
  const family = d.readUInt8(0) === AF_INET ? 4 : 6;
  const prefixLen = d.readUInt8(1);
  const a = parseAttrs(d, 8);
  const flags = attrU32(a, IFA_FLAGS) ?? d.readUInt8(2);
  const raw = a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS);
  const address = raw ? formatIP(raw) : "";
  const out: Address = {
    index: d.readUInt32LE(4),
    family,
    address,
    prefixLen,
    cidr: `${address}/${prefixLen}`,
    scope: scopeName(d.readUInt8(3)),
    flags,
    tentative: (flags & IFA_F_TENTATIVE) !== 0,
    dadFailed: (flags & IFA_F_DADFAILED) !== 0,
    permanent: (flags & IFA_F_PERMANENT) !== 0,
  };
  const brd = a.get(IFA_BROADCAST);
  if (brd) out.broadcast = formatIP(brd);
  const label = attrStr(a, IFA_LABEL);
  if (label) out.label = label;
  return out;
}

export function listAddresses(nl: NetlinkSocket, filter: { index?: number; family?: 4 | 6 } = {}): Address[] {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt8(filter.family === 4 ? AF_INET : filter.family === 6 ? AF_INET6 : AF_UNSPEC, 0);
  const msgs = nl.dump(new MessageBuilder(RTM_GETADDR, 0, hdr), "RTM_GETADDR dump");
  return msgs
    .filter((m) => m.type === RTM_NEWADDR)
    .map(parseAddress)
    .filter((x) => (filter.index === undefined || x.index === filter.index) && (filter.family === undefined || x.family === filter.family));
}

/**
 * Waits until no IPv6 address on the link is tentative (duplicate address
 * detection finished), like the reference plugins' SettleAddresses. Throws when
 * DAD failed (another host uses the address) or on timeout.
 */
export function waitForAddresses(nl: NetlinkSocket, index: number, timeoutMs = 10_000): Address[] {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const addrs = listAddresses(nl, { index });
    const failed = addrs.filter((a) => a.dadFailed);
    if (failed.length) {
      throw new Error(
        `duplicate address detection failed for ${failed.map((a) => a.cidr).join(", ")} on ${describeLink(nl, index)}: ` +
          `another host on the network uses it; release it there or pick another address`,
      );
    }
    const tentative = addrs.filter((a) => a.tentative && !(a.flags & IFA_F_OPTIMISTIC));
    if (tentative.length === 0) return addrs;
    if (Date.now() >= deadline) {
      throw new Error(
        `addresses ${tentative.map((a) => a.cidr).join(", ")} on ${describeLink(nl, index)} still ` +
          `tentative after ${timeoutMs} ms (duplicate address detection); is the link up with carrier?`,
      );
    }
    sleepSync(50);
  }
}
