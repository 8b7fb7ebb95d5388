// Addresses in the byte form rtnetlink carries them. Parsing and text are lib/ip's; this only
// converts, and throws TypeError (naming the field) for text that is not an address.
import {
  familyBits,
  formatIp,
  ipFromBytes,
  ipToBytes,
  lastOf,
  networkOf as networkValue,
  parseCidr,
  parseIp,
  type Cidr,
} from "../../lib/ip";

export interface Prefix {
  family: 4 | 6;
  /** address bytes (4 or 16) as written, host bits kept */
  bytes: Buffer;
  prefixLen: number;
}

/** A bare address as bytes; undefined when it is not one. */
export function addressBytes(s: string): { family: 4 | 6; bytes: Buffer } | undefined {
  const ip = parseIp(s);
  return ip ? { family: ip.family, bytes: ipToBytes(ip.family, ip.value) } : undefined;
}

/** "10.0.0.2/24", "fd00::2/64"; a bare address gets /32 or /128. */
export function parsePrefix(s: string, what = "address"): Prefix {
  const c = parseCidr(s.trim(), { bare: true });
  if (!c) {
    throw new TypeError(`invalid ${what} "${s}": expected an IPv4 or IPv6 address with prefix length, like 10.1.2.3/24 or fd00::3/64`);
  }
  return { family: c.family, bytes: ipToBytes(c.family, c.address), prefixLen: c.prefix };
}

/**
 * RFC 5952 text of address bytes. `mappedAsV4: false` writes an IPv4-mapped address in hex
 * groups too (::ffff:a01:203).
 */
export function formatIP(b: Buffer, mappedAsV4 = true): string {
  const ip = ipFromBytes(b);
  return formatIp(ip.family, ip.value, { mappedAsV4 });
}

function cidrOf(p: Prefix): Cidr {
  return { family: p.family, address: ipFromBytes(p.bytes).value, prefix: Math.min(p.prefixLen, familyBits(p.family)) };
}

/** The prefix with host bits cleared. */
export function networkOf(p: Prefix): Buffer {
  return ipToBytes(p.family, networkValue(cidrOf(p)));
}

/** IPv4 broadcast address of a prefix (all host bits set). */
export function broadcastOf(p: Prefix): Buffer {
  return ipToBytes(p.family, lastOf(cidrOf(p)));
}
