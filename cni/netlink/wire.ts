// rtnetlink wire format: nlmsghdr, rtattr (TLV) encoding and decoding, constants.
// Layout follows iproute2's libnetlink: every attribute is padded to 4 bytes with
// zeros, a nest's length covers its padded contents, nlmsg_len is 4-aligned.
import { normalizeMac } from "../../lib/ip";

export const NLMSG_HDRLEN = 16;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP_INTR = 0x10;
const NLM_F_ROOT = 0x100;
const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
// flags of an NLMSG_ERROR answer
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1;

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;

export const RTM_NAMES: Record<number, string> = {
  16: "RTM_NEWLINK",
  17: "RTM_DELLINK",
  18: "RTM_GETLINK",
  19: "RTM_SETLINK",
  20: "RTM_NEWADDR",
  21: "RTM_DELADDR",
  22: "RTM_GETADDR",
  24: "RTM_NEWROUTE",
  25: "RTM_DELROUTE",
  26: "RTM_GETROUTE",
};

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_INET6 = 10;

export const NLA_F_NESTED = 0x8000;
const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

const align4 = (n: number) => (n + 3) & ~3;

/** Builds one netlink request: a fixed family header followed by attributes. */
export class MessageBuilder {
  private chunks: Buffer[] = [];
  private length = NLMSG_HDRLEN;

  constructor(
    readonly type: number,
    public flags: number,
    header: Buffer,
  ) {
    this.push(header);
  }

  private push(b: Buffer): void {
    const padded = align4(b.length);
    this.chunks.push(padded === b.length ? b : Buffer.concat([b, Buffer.alloc(padded - b.length)]));
    this.length += padded;
  }

  attr(type: number, data: Buffer): this {
    const hdr = Buffer.alloc(4);
    hdr.writeUInt16LE(4 + data.length, 0);
    hdr.writeUInt16LE(type, 2);
    this.push(Buffer.concat([hdr, data]));
    return this;
  }
  u8(type: number, v: number): this {
    return this.attr(type, Buffer.from([v]));
  }
  u16(type: number, v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v);
    return this.attr(type, b);
  }
  u16be(type: number, v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(v);
    return this.attr(type, b);
  }
  u32(type: number, v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    return this.attr(type, b);
  }
  s32(type: number, v: number): this {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    return this.attr(type, b);
  }
  /** NUL-terminated string (IFLA_IFNAME and most names). */
  strz(type: number, s: string): this {
    return this.attr(type, Buffer.concat([Buffer.from(s), Buffer.alloc(1)]));
  }
  /** String without terminator (IFLA_INFO_KIND, IFLA_IFALIAS, as iproute2 sends them). */
  str(type: number, s: string): this {
    return this.attr(type, Buffer.from(s));
  }
  /** Raw bytes inside the current nest, not an attribute (e.g. the peer's ifinfomsg). */
  raw(data: Buffer): this {
    this.push(data);
    return this;
  }

  nest(type: number, fill: (b: this) => void): this {
    const hdr = Buffer.alloc(4);
    hdr.writeUInt16LE(type, 2);
    const start = this.length;
    this.push(hdr);
    fill(this);
    hdr.writeUInt16LE(this.length - start, 0);
    return this;
  }

  build(seq = 0, pid = 0): Buffer {
    const hdr = Buffer.alloc(NLMSG_HDRLEN);
    hdr.writeUInt32LE(this.length, 0);
    hdr.writeUInt16LE(this.type, 4);
    hdr.writeUInt16LE(this.flags, 6);
    hdr.writeUInt32LE(seq >>> 0, 8);
    hdr.writeUInt32LE(pid >>> 0, 12);
    return Buffer.concat([hdr, ...this.chunks], this.length);
  }
}

export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** payload after the 16-byte nlmsghdr */
  data: Buffer;
}

/** Splits a receive buffer into netlink messages. */
export function parseMessages(buf: Buffer): NlMsg[] {
  const out: NlMsg[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < NLMSG_HDRLEN || off + len > buf.length)
      throw new Error(`malformed netlink message: length ${len} at offset ${off} of ${buf.length}`);
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      data: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Attributes by type (flag bits stripped); a repeated type keeps the first. */
export type Attrs = Map<number, Buffer>;

export function parseAttrs(buf: Buffer, offset = 0): Attrs {
  const m: Attrs = new Map();
  for (const [type, data] of attrList(buf, offset)) if (!m.has(type)) m.set(type, data);
  return m;
}

/** Attributes in order, for lists where a type repeats (IFLA_VF_INFO, IFLA_ALT_IFNAME). */
export function attrList(buf: Buffer, offset = 0): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let off = offset;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) break;
    out.push([buf.readUInt16LE(off + 2) & NLA_TYPE_MASK, buf.subarray(off + 4, off + len)]);
    off += align4(len);
  }
  return out;
}

export const attrU8 = (a: Attrs, t: number) => a.get(t)?.readUInt8(0);
export const attrU16 = (a: Attrs, t: number) => a.get(t)?.readUInt16LE(0);
export const attrU32 = (a: Attrs, t: number) => a.get(t)?.readUInt32LE(0);
export const attrS32 = (a: Attrs, t: number) => a.get(t)?.readInt32LE(0);
export function attrStr(a: Attrs, t: number): string | undefined {
  const b = a.get(t);
  return b && cString(b);
}

/** Text up to the first NUL (or all of it when there is none). */
export function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString();
}

export function macToBuffer(mac: string, what = "MAC address"): Buffer {
  const m = normalizeMac(mac.trim());
  if (!m) throw new TypeError(`invalid ${what} "${mac}": expected six hex bytes like 02:42:ac:11:00:02`);
  const b = Buffer.alloc(6);
  for (let i = 0; i < 6; i++) b[i] = parseInt(m.slice(i * 3, i * 3 + 2), 16); // not map(): see docs/architecture.md, "Plugins"
  return b;
}

// Plain loops here and in the other code every ADD and DEL runs (docs/architecture.md, "Plugins"): JavaScriptCore
// compiles a builtin such as Array.prototype.map, or a Buffer's iterator, the first time a process uses it.
export function bufferToMac(b: Uint8Array): string {
  let mac = "";
  for (let i = 0; i < b.length; i++) mac += (i ? ":" : "") + (b[i]! < 16 ? "0" : "") + b[i]!.toString(16);
  return mac;
}
