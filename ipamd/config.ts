// ipamd configuration: pools, node identity, StatefulSets, tuning. Validated with zod;
// every error names the JSON path of the offending field.
import { readFileSync } from "node:fs";
import { z } from "zod";
import {
  cidrContains, type Cidr, type Family, formatCidr, formatIp, lastOf, networkOf, parseCidr, parseIp,
} from "../lib/ip";

const ipString = z.string().refine((s) => parseIp(s) !== null, { message: "not a valid IPv4/IPv6 address" });
const cidrString = z.string().refine((s) => parseCidr(s) !== null, {
  message: "not a valid CIDR (expected address/prefix, e.g. 10.99.0.0/24 or fd00::/64)",
});
const labelKey = z.string().min(1).max(317);

const selectorRequirement = z.strictObject({
  key: labelKey,
  operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
  values: z.array(z.string()).optional(),
}).superRefine((r, ctx) => {
  const needsValues = r.operator === "In" || r.operator === "NotIn";
  if (needsValues && (!r.values || r.values.length === 0)) {
    ctx.addIssue({ code: "custom", path: ["values"], message: `operator ${r.operator} needs a non-empty values list` });
  }
  if (!needsValues && r.values && r.values.length > 0) {
    ctx.addIssue({ code: "custom", path: ["values"], message: `operator ${r.operator} takes no values; remove the list` });
  }
});

export const nodeSelectorSchema = z.strictObject({
  matchLabels: z.record(labelKey, z.string()).optional(),
  matchExpressions: z.array(selectorRequirement).optional(),
});
export type NodeSelector = z.infer<typeof nodeSelectorSchema>;

const poolSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/, {
    message: "pool name must be 1-63 lowercase letters, digits, '.', '_' or '-', starting and ending alphanumeric",
  }),
  subnet: cidrString,
  ranges: z.array(z.strictObject({ start: ipString, end: ipString })).optional(),
  exclude: z.array(z.string().refine((s) => parseIp(s) !== null || parseCidr(s) !== null || parseDashRange(s) !== null, {
    message: "expected an address, a CIDR or a range 'first-last'",
  })).optional(),
  gateway: ipString.optional(),
  routes: z.array(z.strictObject({ dst: cidrString, gw: ipString.optional() })).optional(),
  dns: z.strictObject({
    nameservers: z.array(ipString).optional(),
    domain: z.string().optional(),
    search: z.array(z.string()).optional(),
    options: z.array(z.string()).optional(),
  }).optional(),
  vlan: z.number().int().min(0).max(4094).optional(),
  networks: z.array(z.string().min(1)).optional(),
  nodeSelector: nodeSelectorSchema.optional(),
});

export const configSchema = z.strictObject({
  node: z.strictObject({
    name: z.string().min(1).optional(),
    labels: z.record(labelKey, z.string()).optional(),
  }).optional(),
  socket: z.string().min(1).optional(),
  database: z.string().min(1).optional(),
  metricsAddress: z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, {
    message: "expected host:port, e.g. 127.0.0.1:9631",
  }).optional(),
  logFile: z.string().optional(),
  cooldownSeconds: z.number().min(0).max(86400 * 7).default(30),
  detachedTTLSeconds: z.number().min(0).default(0),
  maxBatch: z.number().int().min(1).max(10000).default(512),
  statefulSets: z.array(z.strictObject({ namespace: z.string().min(1), name: z.string().min(1) })).default([]),
  pools: z.array(poolSchema).min(1, { message: "define at least one pool" }),
});
export type RawPool = z.infer<typeof poolSchema>;

/** Inclusive [first, last] address range. */
export interface Segment { first: bigint; last: bigint }

export interface Pool {
  name: string;
  index: number; // position in the config's pools array
  family: Family;
  subnet: Cidr; // network address, normalized
  gateway?: string;
  vlan?: number;
  networks?: string[];
  selector: NodeSelector;
  /** Usable addresses: ranges minus exclusions, gateway, network/broadcast. Sorted, disjoint. */
  segments: Segment[];
  size: bigint;
  routes: { dst: string; gw?: string }[];
  dns: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
  /** Changes when the usable set changes, to invalidate the allocation cursor. */
  fingerprint: string;
}

export interface Config {
  nodeName: string;
  nodeLabels: Record<string, string>;
  socket: string;
  database: string;
  metricsAddress?: string;
  logFile?: string;
  cooldownMs: number;
  detachedTtlMs: number;
  maxBatch: number;
  statefulSets: { namespace: string; name: string }[];
  pools: Pool[];
}

export class ConfigError extends Error {}

function parseDashRange(s: string): [string, string] | null {
  const i = s.indexOf("-");
  if (i < 0) return null;
  const a = s.slice(0, i).trim();
  const b = s.slice(i + 1).trim();
  const pa = parseIp(a);
  const pb = parseIp(b);
  return pa && pb && pa.family === pb.family ? [a, b] : null;
}

function formatZodIssues(error: z.ZodError): string {
  return error.issues.map((issue) => {
    const path = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
    return `  ${path || "(top level)"}: ${issue.message}`;
  }).join("\n");
}

function subtract(segments: Segment[], cut: Segment): Segment[] {
  const out: Segment[] = [];
  for (const s of segments) {
    if (cut.last < s.first || cut.first > s.last) { out.push(s); continue; }
    if (cut.first > s.first) out.push({ first: s.first, last: cut.first - 1n });
    if (cut.last < s.last) out.push({ first: cut.last + 1n, last: s.last });
  }
  return out;
}

function compilePool(raw: RawPool, index: number): Pool {
  const at = `pools[${index}]`;
  const fail = (field: string, msg: string): never => { throw new ConfigError(`  ${at}.${field}: ${msg}`); };
  const parsed = parseCidr(raw.subnet)!;
  const net = networkOf(parsed);
  if (net !== parsed.address) {
    fail("subnet", `${raw.subnet} has host bits set; did you mean ${formatCidr({ ...parsed, address: net })}?`);
  }
  const subnet: Cidr = { ...parsed, address: net };
  const family = subnet.family;
  const inSubnet = (text: string, field: string): bigint => {
    const ip = parseIp(text)!;
    if (!cidrContains(subnet, ip.family, ip.value)) fail(field, `${text} is outside subnet ${raw.subnet}`);
    return ip.value;
  };
  const broadcast = lastOf(subnet);
  // Like host-local: skip the network address (and the IPv4 broadcast) unless the subnet is tiny.
  const defaultFirst = subnet.prefix >= (family === 4 ? 31 : 127) ? net : net + 1n;
  const defaultLast = family === 4 && subnet.prefix < 31 ? broadcast - 1n : broadcast;
  let segments: Segment[] = [];
  if (raw.ranges && raw.ranges.length > 0) {
    raw.ranges.forEach((r, i) => {
      const first = inSubnet(r.start, `ranges[${i}].start`);
      const last = inSubnet(r.end, `ranges[${i}].end`);
      if (first > last) fail(`ranges[${i}]`, `start ${r.start} is after end ${r.end}`);
      segments = subtract(segments, { first, last });
      segments.push({ first, last });
    });
  } else {
    segments = [{ first: defaultFirst, last: defaultLast }];
  }
  (raw.exclude ?? []).forEach((ex, i) => {
    let cut: Segment;
    const dash = parseDashRange(ex);
    const cidr = parseCidr(ex);
    if (dash) {
      cut = { first: inSubnet(dash[0], `exclude[${i}]`), last: inSubnet(dash[1], `exclude[${i}]`) };
      if (cut.first > cut.last) fail(`exclude[${i}]`, `range ${ex} starts after it ends; write it as first-last`);
    } else if (cidr) {
      if (cidr.family !== family) fail(`exclude[${i}]`, `${ex} is not IPv${family} like the subnet`);
      cut = { first: networkOf(cidr), last: lastOf(cidr) };
    } else {
      const v = inSubnet(ex, `exclude[${i}]`);
      cut = { first: v, last: v };
    }
    segments = subtract(segments, cut);
  });
  if (raw.gateway) {
    const gw = inSubnet(raw.gateway, "gateway");
    segments = subtract(segments, { first: gw, last: gw });
  }
  segments.sort((a, b) => (a.first < b.first ? -1 : a.first > b.first ? 1 : 0));
  if (segments.length === 0) fail("ranges", "no usable address is left after exclusions and the gateway");
  let size = 0n;
  for (const s of segments) size += s.last - s.first + 1n;
  const gateway = raw.gateway ? formatIp(family, parseIp(raw.gateway)!.value) : undefined;
  const routes = (raw.routes ?? []).map((r, i) => {
    const dst = parseCidr(r.dst)!;
    if (dst.family !== family) fail(`routes[${i}].dst`, `${r.dst} is not IPv${family} like the subnet`);
    const via = r.gw ? parseIp(r.gw)! : undefined;
    if (via && via.family !== family) fail(`routes[${i}].gw`, `${r.gw} is not IPv${family}`);
    const gw = via ? formatIp(family, via.value) : gateway;
    return { dst: formatCidr({ ...dst, address: networkOf(dst) }), ...(gw ? { gw } : {}) };
  });
  return {
    name: raw.name,
    index,
    family,
    subnet,
    gateway,
    vlan: raw.vlan,
    networks: raw.networks,
    selector: raw.nodeSelector ?? {},
    segments,
    size,
    routes,
    dns: raw.dns ?? {},
    fingerprint: segments.map((s) => `${s.first.toString(16)}-${s.last.toString(16)}`).join(","),
  };
}

export interface Overrides {
  socket?: string;
  database?: string;
  nodeName?: string;
  nodeLabels?: Record<string, string>;
  metricsAddress?: string;
  logFile?: string;
}

export function buildConfig(input: unknown, overrides: Overrides = {}, source = "config"): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(`${source} is invalid:\n${formatZodIssues(result.error)}`);
  }
  const raw = result.data;
  const errors: string[] = [];
  const pools: Pool[] = [];
  const names = new Set<string>();
  raw.pools.forEach((p, i) => {
    if (names.has(p.name)) { errors.push(`  pools[${i}].name: pool name "${p.name}" is used twice`); return; }
    names.add(p.name);
    try { pools.push(compilePool(p, i)); } catch (e) {
      if (e instanceof ConfigError) errors.push(e.message); else throw e;
    }
  });
  // Two pools may share a subnet (e.g. one range per rack) but never an address.
  for (let i = 0; i < pools.length; i++) {
    for (let j = i + 1; j < pools.length; j++) {
      const a = pools[i]!;
      const b = pools[j]!;
      if (a.family !== b.family) continue;
      for (const sa of a.segments) {
        const clash = b.segments.find((sb) => sa.first <= sb.last && sb.first <= sa.last);
        if (clash) {
          const from = sa.first > clash.first ? sa.first : clash.first;
          errors.push(`  pools[${b.index}]: usable addresses of pool "${b.name}" overlap pool "${a.name}" (from ${formatIp(a.family, from)}); give them disjoint ranges or exclusions`);
          break;
        }
      }
    }
  }
  const nodeName = overrides.nodeName ?? raw.node?.name ?? process.env.NODE_NAME ?? "";
  if (!nodeName) errors.push("  node.name: the node name is missing; set node.name in the config, --node-name, or NODE_NAME");
  if (errors.length > 0) throw new ConfigError(`${source} is invalid:\n${errors.join("\n")}`);
  return {
    nodeName,
    nodeLabels: { ...(raw.node?.labels ?? {}), ...(overrides.nodeLabels ?? {}) },
    socket: overrides.socket ?? raw.socket ?? "/run/berth/ipamd.sock",
    database: overrides.database ?? raw.database ?? "/var/lib/berth/ipamd.db",
    metricsAddress: overrides.metricsAddress ?? raw.metricsAddress,
    logFile: overrides.logFile ?? raw.logFile,
    cooldownMs: Math.round(raw.cooldownSeconds * 1000),
    detachedTtlMs: Math.round(raw.detachedTTLSeconds * 1000),
    maxBatch: raw.maxBatch,
    statefulSets: raw.statefulSets,
    pools,
  };
}

export function loadConfig(path: string, overrides: Overrides = {}): Config {
  let text: string;
  try { text = readFileSync(path, "utf8"); } catch (e) {
    throw new ConfigError(`cannot read config ${path}: ${(e as Error).message}; pass --config with the path of ipamd.json`);
  }
  let json: unknown;
  try { json = JSON.parse(text); } catch (e) {
    throw new ConfigError(`config ${path} is not valid JSON: ${(e as Error).message}`);
  }
  return buildConfig(json, overrides, `config ${path}`);
}

/** Kubernetes label-selector semantics. An empty selector matches every node. */
export function selectorMatches(selector: NodeSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[k] !== v) return false;
  }
  for (const r of selector.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const value = labels[r.key];
    switch (r.operator) {
      case "In": if (!has || !r.values!.includes(value!)) return false; break;
      case "NotIn": if (has && r.values!.includes(value!)) return false; break;
      case "Exists": if (!has) return false; break;
      case "DoesNotExist": if (has) return false; break;
    }
  }
  return true;
}

/** The first usable address at or after `value`, or null past the end. */
export function firstUsableAtOrAfter(pool: Pool, value: bigint): bigint | null {
  const segs = pool.segments;
  let lo = 0;
  let hi = segs.length - 1;
  let found = -1;
  while (lo <= hi) { // first segment whose last >= value
    const mid = (lo + hi) >> 1;
    if (segs[mid]!.last >= value) { found = mid; hi = mid - 1; } else lo = mid + 1;
  }
  if (found < 0) return null;
  const s = segs[found]!;
  return value < s.first ? s.first : value;
}

export function isUsable(pool: Pool, family: Family, value: bigint): boolean {
  if (family !== pool.family) return false;
  const next = firstUsableAtOrAfter(pool, value);
  return next === value;
}
