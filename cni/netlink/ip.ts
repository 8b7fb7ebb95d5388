// Small IP address helpers (parse to bytes, format RFC 5952), kept dependency-free
// because every plugin loads this module at start-up.

export interface Prefix {
  family: 4 | 6;
  /** address bytes (4 or 16) as written, host bits kept */
  bytes: Buffer;
  prefixLen: number;
}

export function parseIPv4(s: string): Buffer | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const out = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i])) return undefined;
    const n = Number(parts[i]);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

export function parseIPv6(s: string): Buffer | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  let tail: Buffer | undefined;
  let text = s;
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".")) {
    tail = parseIPv4(s.slice(lastColon + 1));
    if (!tail) return undefined;
    text = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(all[i])) return undefined;
    out.writeUInt16BE(parseInt(all[i], 16), i * 2);
  }
  if (tail) tail.copy(out, 12);
  return out;
}

export function parseIP(s: string): { family: 4 | 6; bytes: Buffer } | undefined {
  const v4 = parseIPv4(s);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = parseIPv6(s);
  return v6 ? { family: 6, bytes: v6 } : undefined;
}

/** Parses "10.0.0.2/24", "fd00::2/64"; a bare address gets /32 or /128. */
export function parsePrefix(s: string, what = "address"): Prefix {
  const [addr, len, extra] = s.trim().split("/");
  const ip = parseIP(addr);
  const max = ip?.family === 6 ? 128 : 32;
  const prefixLen = len === undefined ? max : /^[0-9]{1,3}$/.test(len) ? Number(len) : NaN;
  if (!ip || extra !== undefined || !(prefixLen >= 0 && prefixLen <= max)) {
    throw new TypeError(`invalid ${what} "${s}": expected an IPv4 or IPv6 address with prefix length, like 10.1.2.3/24 or fd00::3/64`);
  }
  return { family: ip.family, bytes: ip.bytes, prefixLen };
}

/**
 * RFC 5952 text. `mappedAsV4: false` writes an IPv4-mapped address in hex groups too
 * (::ffff:a01:203), for callers that split the text into groups.
 */
export function formatIP(b: Buffer, mappedAsV4 = true): string {
  if (b.length === 4) return [...b].join(".");
  if (b.length !== 16) throw new TypeError(`not an IP address: ${b.length} bytes`);
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i));
  if (mappedAsV4 && g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `::ffff:${[...b.subarray(12)].join(".")}`;
  let bestStart = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** The prefix with host bits cleared. */
export function networkOf(p: Prefix): Buffer {
  const out = Buffer.from(p.bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, p.prefixLen - i * 8));
    out[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

/** IPv4 broadcast address of a prefix (all host bits set). */
export function broadcastOf(p: Prefix): Buffer {
  const out = Buffer.from(p.bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, p.prefixLen - i * 8));
    out[i] |= ~((0xff << (8 - keep)) & 0xff) & 0xff;
  }
  return out;
}
