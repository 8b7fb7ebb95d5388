// Not node:net's isIP: loading node:net costs a compiled plugin ~1.5 ms at every start.
import { formatIP, parseIP } from "../netlink/ip";

function isIP(s: string): 0 | 4 | 6 {
  return parseIP(s)?.family ?? 0;
}

export interface Cidr {
  ip: string;
  prefix: number;
  family: 4 | 6;
}

/** Parses "10.1.0.5/24" or "fd00::5/64"; returns undefined when malformed. */
export function parseCidr(s: string): Cidr | undefined {
  if (typeof s !== "string") return undefined;
  const slash = s.indexOf("/");
  if (slash < 0) return undefined;
  const ip = s.slice(0, slash);
  const p = s.slice(slash + 1);
  const family = isIP(ip);
  if (family === 0 || !/^\d{1,3}$/.test(p)) return undefined;
  const prefix = Number(p);
  if (prefix > (family === 4 ? 32 : 128)) return undefined;
  return { ip, prefix, family };
}

/** 4 or 6 for a plain IP address, 0 when it is not one. */
export function ipFamily(s: string): 0 | 4 | 6 {
  return typeof s === "string" ? isIP(s) : 0;
}

/** Canonical text of an IP so "fd00:0::1" and "fd00::1" compare equal (RFC 5952, hex groups only). */
export function canonicalIp(ip: string): string {
  const parsed = parseIP(ip);
  return parsed ? formatIP(parsed.bytes, false) : ip;
}

/** Canonical "ip/prefix" text, or the input unchanged when it is not a CIDR. */
export function canonicalCidr(s: string): string {
  const c = parseCidr(s);
  return c ? `${canonicalIp(c.ip)}/${c.prefix}` : s;
}
