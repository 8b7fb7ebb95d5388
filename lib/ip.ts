// IP addresses, CIDRs and MAC addresses: the one parser and formatter the plugins, netlink and
// ipamd share. One contract: a parse or canonical function returns null for text that is not
// one; nothing here throws on bad input. Addresses are BigInt so a /64 is as cheap to walk as a
// /24; ipToBytes/ipFromBytes give the network-order bytes netlink puts on the wire.
//
// Not node:net's isIP (loading node:net costs a compiled plugin ~1.5 ms at every start), and not
// the ip-address package (dropped from package.json): it is 33 KB minified that every plugin start
// would load; a compiled one-liner validating a CIDR with it took 1.15x the CPU and 1.4 MiB more
// memory than with this module (median of 20 runs), for parsing that these ~60 lines do.

export type Family = 4 | 6;

interface Ip {
  family: Family;
  value: bigint;
}

export interface Cidr {
  family: Family;
  /** as written (host bits may be set) */
  address: bigint;
  prefix: number;
}

export function familyBits(family: Family): number {
  return family === 4 ? 32 : 128;
}

function parseV4(text: string): bigint | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseV6(text: string): bigint | null {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return null; // no zone IDs (%eth0), no brackets
  let head = text;
  let v4Tail: bigint | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    v4Tail = parseV4(text.slice(lastColon + 1));
    if (v4Tail === null) return null;
    head = text.slice(0, lastColon + 1) + "0:0"; // placeholder for two groups
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const groupsOf = (s: string): string[] => (s === "" ? [] : s.split(":"));
  const left = groupsOf(halves[0]!);
  const right = halves.length === 2 ? groupsOf(halves[1]!) : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...right];
  let value = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    value = (value << 16n) | BigInt(parseInt(g, 16));
  }
  if (v4Tail !== null) value = (value & ~0xffffffffn) | v4Tail;
  return value;
}

/** A bare IPv4 or IPv6 address ("10.1.0.5", "fd00::5"); null when it is not one. */
export function parseIp(text: string): Ip | null {
  if (typeof text !== "string") return null;
  if (text.includes(":")) {
    const value = parseV6(text);
    return value === null ? null : { family: 6, value };
  }
  const value = parseV4(text);
  return value === null ? null : { family: 4, value };
}

/**
 * "addr/prefix"; null when malformed. With `bare`, an address without "/len" is read as a host
 * prefix (/32, /128), as iproute2 does.
 */
export function parseCidr(text: string, o: { bare?: boolean } = {}): Cidr | null {
  if (typeof text !== "string") return null;
  const slash = text.indexOf("/");
  if (slash < 0) {
    const ip = o.bare ? parseIp(text) : null;
    return ip ? { family: ip.family, address: ip.value, prefix: familyBits(ip.family) } : null;
  }
  const ip = parseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > familyBits(ip.family)) return null;
  return { family: ip.family, address: ip.value, prefix };
}

/** 4 or 6 for a bare address, 0 when it is not one. */
export function ipFamily(text: string): 0 | Family {
  return parseIp(text)?.family ?? 0;
}

/**
 * RFC 5952 text: the longest run of two or more zero groups compressed, leftmost on ties.
 * `mappedAsV4` writes an IPv4-mapped address as ::ffff:10.1.2.3 (as iproute2 shows it); without
 * it every IPv6 address is hex groups, the canonical form compared and stored.
 */
export function formatIp(family: Family, value: bigint, o: { mappedAsV4?: boolean } = {}): string {
  if (family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => ((value >> s) & 0xffn).toString()).join(".");
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  if (o.mappedAsV4 && value >> 32n === 0xffffn) return `::ffff:${formatIp(4, value & 0xffffffffn)}`;
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return hex.slice(0, bestStart).join(":") + "::" + hex.slice(bestStart + bestLen).join(":");
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c.family, c.address)}/${c.prefix}`;
}

/** Canonical text of an address, so "fd00:0::1" and "fd00::1" compare equal; null when invalid. */
export function canonicalIp(text: string): string | null {
  const ip = parseIp(text);
  return ip ? formatIp(ip.family, ip.value) : null;
}

/** Canonical "ip/prefix" text (host bits kept); null when it is not a CIDR. */
export function canonicalCidr(text: string): string | null {
  const c = parseCidr(text);
  return c ? formatCidr(c) : null;
}

export function networkOf(c: Cidr): bigint {
  const hostBits = BigInt(familyBits(c.family) - c.prefix);
  return (c.address >> hostBits) << hostBits;
}

/** The last address of the prefix (the IPv4 broadcast address). */
export function lastOf(c: Cidr): bigint {
  const hostBits = BigInt(familyBits(c.family) - c.prefix);
  return networkOf(c) | ((1n << hostBits) - 1n);
}

export function cidrContains(c: Cidr, family: Family, value: bigint): boolean {
  return family === c.family && value >= networkOf(c) && value <= lastOf(c);
}

/** Network-order bytes: 4 for IPv4, 16 for IPv6. */
export function ipToBytes(family: Family, value: bigint): Buffer {
  const out = Buffer.alloc(family === 4 ? 4 : 16);
  for (let i = out.length - 1, v = value; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}

export function ipFromBytes(b: Uint8Array): Ip {
  if (b.length !== 4 && b.length !== 16) throw new TypeError(`not an IP address: ${b.length} bytes`);
  let value = 0n;
  for (let i = 0; i < b.length; i++) value = (value << 8n) | BigInt(b[i]!); // no typed-array iterator: docs/architecture.md, "Plugins"
  return { family: b.length === 4 ? 4 : 6, value };
}

const MAC = /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/;

/** "AA-BB-CC-DD-EE-FF" or "aa:bb:cc:dd:ee:ff" as lower-case colon form; null when it is not a MAC. */
export function normalizeMac(text: unknown): string | null {
  if (typeof text !== "string" || !MAC.test(text)) return null;
  return text.toLowerCase().replaceAll("-", ":");
}
