// Not node:net's isIP: loading node:net costs a compiled plugin ~1.5 ms at every start.
import { parseIP } from "../netlink/ip";

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

/** Canonical text of an IP so "fd00:0::1" and "fd00::1" compare equal. */
export function canonicalIp(ip: string): string {
  const family = isIP(ip);
  if (family === 4) return ip.split(".").map((o) => String(Number(o))).join(".");
  if (family !== 6) return ip;
  // Expand, then let URL-style compression produce the RFC 5952 form.
  let text = ip.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = v4[1]!.split(".").map(Number);
    text = text.slice(0, -v4[1]!.length) + ((o[0]! << 8) | o[1]!).toString(16) + ":" + ((o[2]! << 8) | o[3]!).toString(16);
  }
  const [head, tail] = text.includes("::") ? text.split("::") as [string, string] : [text, undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined ? (tail ? tail.split(":") : []) : [];
  const groups = tail !== undefined ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
  const hex = groups.map((g) => parseInt(g, 16).toString(16));
  // Longest run of zero groups (length >= 2) becomes "::".
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (hex[i] !== "0") { i++; continue; }
    let j = i;
    while (j < 8 && hex[j] === "0") j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return hex.join(":");
  return hex.slice(0, best).join(":") + "::" + hex.slice(best + bestLen).join(":");
}

/** Canonical "ip/prefix" text, or the input unchanged when it is not a CIDR. */
export function canonicalCidr(s: string): string {
  const c = parseCidr(s);
  return c ? `${canonicalIp(c.ip)}/${c.prefix}` : s;
}
