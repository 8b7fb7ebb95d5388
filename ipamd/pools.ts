// Pools: their usable ranges (compiled from the config), node selectors, and which pools a
// request may use on this node. Pure: no database.
import { ApiError } from "./errors";
import { cidrContains, type Cidr, type Family, formatCidr, formatIp, lastOf, networkOf, parseCidr, parseIp } from "../lib/ip";

/** Kubernetes label selector (matchLabels / matchExpressions). */
export interface NodeSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: "In" | "NotIn" | "Exists" | "DoesNotExist"; values?: string[] }[];
}

/** A pool as written in the config (already schema-checked). */
export interface PoolSpec {
  name: string;
  subnet: string;
  ranges?: { start: string; end: string }[];
  exclude?: string[];
  gateway?: string;
  routes?: { dst: string; gw?: string }[];
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
  vlan?: number;
  networks?: string[];
  nodeSelector?: NodeSelector;
}

/** Inclusive [first, last] address range. */
interface Segment {
  first: bigint;
  last: bigint;
}

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

/** A pool spec that cannot be compiled: `field` is relative to the pool. */
export class PoolSpecError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

/** "first-last" with two addresses of one family, else null. */
export function parseDashRange(s: string): [string, string] | null {
  const i = s.indexOf("-");
  if (i < 0) return null;
  const a = s.slice(0, i).trim();
  const b = s.slice(i + 1).trim();
  const pa = parseIp(a);
  const pb = parseIp(b);
  return pa && pb && pa.family === pb.family ? [a, b] : null;
}

function subtract(segments: Segment[], cut: Segment): Segment[] {
  const out: Segment[] = [];
  for (const s of segments) {
    if (cut.last < s.first || cut.first > s.last) {
      out.push(s);
      continue;
    }
    if (cut.first > s.first) out.push({ first: s.first, last: cut.first - 1n });
    if (cut.last < s.last) out.push({ first: cut.last + 1n, last: s.last });
  }
  return out;
}

export function compilePool(raw: PoolSpec, index: number): Pool {
  const fail = (field: string, msg: string): never => {
    throw new PoolSpecError(field, msg);
  };
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

/**
 * Every router and DNS server of a subnet (any pool's gateway, route gateway or nameserver inside
 * it) is taken out of every pool on that subnet: a pod answering ARP for the router breaks the
 * whole VLAN. A pool left with no usable address is an error (one message per such pool).
 */
export function excludeInfrastructure(pools: Pool[]): { pool: Pool; message: string }[] {
  const infra: { family: Family; value: bigint; what: string }[] = [];
  for (const p of pools) {
    const add = (text: string | undefined, what: string): void => {
      const ip = text ? parseIp(text) : null;
      if (ip) infra.push({ family: ip.family, value: ip.value, what: `${what} of pool "${p.name}"` });
    };
    add(p.gateway, "gateway");
    for (const r of p.routes) add(r.gw, `route gateway (${r.dst})`);
    for (const ns of p.dns.nameservers ?? []) add(ns, "nameserver");
  }
  const errors: { pool: Pool; message: string }[] = [];
  for (const p of pools) {
    const cut = infra.filter((a) => a.family === p.family && cidrContains(p.subnet, a.family, a.value) && isUsable(p, a.family, a.value));
    if (cut.length === 0) continue;
    for (const a of cut) p.segments = subtract(p.segments, { first: a.value, last: a.value });
    if (p.segments.length === 0) {
      errors.push({
        pool: p,
        message:
          `no usable address is left in pool "${p.name}" once the ${cut.map((a) => a.what).join(", ")} ` +
          "are excluded; give it a range without them",
      });
      continue;
    }
    p.size = p.segments.reduce((n, s) => n + s.last - s.first + 1n, 0n);
    p.fingerprint = p.segments.map((s) => `${s.first.toString(16)}-${s.last.toString(16)}`).join(",");
  }
  return errors;
}

/**
 * Two pools may share a subnet (e.g. one range per rack) but never an address: one message per
 * pool whose usable addresses overlap an earlier pool's.
 */
export function overlaps(pools: Pool[]): { pool: Pool; message: string }[] {
  const out: { pool: Pool; message: string }[] = [];
  for (let i = 0; i < pools.length; i++) {
    for (let j = i + 1; j < pools.length; j++) {
      const a = pools[i]!;
      const b = pools[j]!;
      if (a.family !== b.family) continue;
      for (const sa of a.segments) {
        const clash = b.segments.find((sb) => sa.first <= sb.last && sb.first <= sa.last);
        if (clash) {
          const from = sa.first > clash.first ? sa.first : clash.first; // bigints: Math.max throws on them
          out.push({
            pool: b,
            message:
              `usable addresses of pool "${b.name}" overlap pool "${a.name}" ` +
              `(from ${formatIp(a.family, from)}); give them disjoint ranges or exclusions`,
          });
          break;
        }
      }
    }
  }
  return out;
}

/** Kubernetes label-selector semantics. An empty selector matches every node. */
export function selectorMatches(selector: NodeSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[k] !== v) return false;
  }
  for (const r of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, r.key);
    const value = labels[r.key];
    switch (r.operator) {
      case "In":
        if (!has || !r.values!.includes(value!)) return false;
        break;
      case "NotIn":
        if (has && r.values!.includes(value!)) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
    }
  }
  return true;
}

/** A node label requirement as Kubernetes writes it (a nodeSelectorTerm's matchExpressions; Gt/Lt tell nothing here). */
export interface LabelRequirement {
  key: string;
  operator: string;
  values?: string[];
}

/**
 * Where a pod template's pods may run: on nodes carrying its nodeSelector's labels and, with required node affinity,
 * matching any one of its terms (each term's requirements all hold). A term's `matchFields` (the only field is
 * metadata.name) are in `affinityFields`, by the same index; `nodes` has the labels of the nodes they name with In (a
 * node missing from it has no Node object: no pod runs there).
 */
export interface Placement {
  nodeSelector?: Record<string, string>;
  affinityTerms?: LabelRequirement[][];
  affinityFields?: LabelRequirement[][];
  nodes?: Map<string, Record<string, string>>;
}

/** The terms, each with its label requirements and its node-name requirements ([[]]: one term that allows any node). */
function termsOf(p: Placement): { labels: LabelRequirement[]; names: LabelRequirement[] }[] {
  const n = Math.max(p.affinityTerms?.length ?? 0, p.affinityFields?.length ?? 0, 1);
  return Array.from({ length: n }, (_, i) => ({ labels: p.affinityTerms?.[i] ?? [], names: p.affinityFields?.[i] ?? [] }));
}

/** The node names a term's matchFields allow (undefined: any name, as far as In goes), those NotIn excluded. */
function namesAllowed(names: LabelRequirement[]): string[] | undefined {
  let allowed: string[] | undefined;
  for (const r of names.filter((x) => x.operator === "In")) {
    allowed = allowed ? allowed.filter((v) => r.values?.includes(v)) : [...(r.values ?? [])];
  }
  const excluded = new Set(names.filter((x) => x.operator === "NotIn").flatMap((x) => x.values ?? []));
  return allowed?.filter((v) => !excluded.has(v));
}

/** The node names a placement's In requirements name (whose labels selectsPlacement needs in `nodes`). */
export function namedNodes(p: Placement): string[] {
  return [...new Set(termsOf(p).flatMap((t) => namesAllowed(t.names) ?? []))];
}

/** Whether a placement says anything about labels or node names (else the pods may run anywhere). */
export function placementConstrains(p: Placement): boolean {
  return (
    Object.keys(p.nodeSelector ?? {}).length > 0 || termsOf(p).some((t) => t.labels.length > 0 || t.names.some((r) => r.operator === "In"))
  );
}

/** The placement in words, for errors: "the nodes of nodeSelector {...} and node affinity rack In (r1, r2) or ...". */
export function describePlacement(p: Placement): string {
  const parts: string[] = [];
  if (Object.keys(p.nodeSelector ?? {}).length > 0) parts.push(`nodeSelector ${JSON.stringify(p.nodeSelector)}`);
  const req = (r: LabelRequirement): string => `${r.key} ${r.operator}${r.values?.length ? ` (${r.values.join(", ")})` : ""}`;
  const terms = termsOf(p)
    .map((t) => [...t.labels, ...t.names].map(req).join(", "))
    .filter(Boolean);
  if (terms.length > 0) parts.push(`node affinity ${terms.join(" or ")}`);
  return `the nodes of ${parts.join(" and ")}`;
}

/** Whether one term (with the nodeSelector) admits the node `name` with `labels`. */
function termAdmits(p: Placement, term: ReturnType<typeof termsOf>[number], labels: Record<string, string>, name: string): boolean {
  const allowed = namesAllowed(term.names);
  const excluded = term.names.filter((r) => r.operator === "NotIn").flatMap((r) => r.values ?? []);
  if ((allowed && !allowed.includes(name)) || excluded.includes(name)) return false;
  return selectorMatches(
    {
      matchLabels: p.nodeSelector ?? {},
      matchExpressions: term.labels.filter((r) =>
        ["In", "NotIn", "Exists", "DoesNotExist"].includes(r.operator),
      ) as NodeSelector["matchExpressions"],
    },
    labels,
  );
}

/** Whether the node `name` with `labels` is one the pods of `placement` may run on. */
export function placementMatches(p: Placement, labels: Record<string, string>, name: string): boolean {
  return termsOf(p).some((term) => termAdmits(p, term, labels, name));
}

/** What one term with the nodeSelector says of a label key: the values it allows (undefined: any), those it excludes. */
interface KeyConstraint {
  values?: Set<string>;
  excluded: Set<string>;
  exists: boolean;
  absent: boolean;
}

function constraintsOf(nodeSelector: Record<string, string>, term: LabelRequirement[]): Map<string, KeyConstraint> {
  const out = new Map<string, KeyConstraint>();
  const of = (key: string): KeyConstraint => {
    let c = out.get(key);
    if (!c) out.set(key, (c = { excluded: new Set(), exists: false, absent: false }));
    return c;
  };
  const allow = (key: string, values: string[]): void => {
    const c = of(key);
    c.values = new Set(c.values ? values.filter((v) => c.values!.has(v)) : values);
    c.exists = true;
  };
  for (const [k, v] of Object.entries(nodeSelector)) allow(k, [v]);
  for (const r of term) {
    if (r.operator === "In") allow(r.key, r.values ?? []);
    else if (r.operator === "NotIn") for (const v of r.values ?? []) of(r.key).excluded.add(v);
    else if (r.operator === "Exists") of(r.key).exists = true;
    else if (r.operator === "DoesNotExist") of(r.key).absent = true;
  }
  return out;
}

/**
 * Whether `selector` selects every node the pods of `placement` may run on: each of the pool's requirements follows
 * from the pods' constraints, for every affinity term no node fails by itself. A term that names its nodes (matchFields
 * metadata.name In) is judged by their labels instead: the pool selects each node of it the term admits. When every
 * term contradicts itself (or the nodeSelector) the pods can run nowhere, and no pool is chosen for them.
 */
export function selectsPlacement(selector: NodeSelector, p: Placement): boolean {
  const impossible = (x: KeyConstraint): boolean =>
    (x.absent && x.exists) || (x.values !== undefined && [...x.values].every((v) => x.excluded.has(v)));
  const terms = termsOf(p).map((t) => ({ ...t, allowed: namesAllowed(t.names) }));
  // A term that names its nodes (matchFields metadata.name In): the nodes it admits, by their labels.
  const named = terms
    .filter((t) => t.allowed !== undefined)
    .map((t) => t.allowed!.filter((n) => p.nodes?.has(n) && termAdmits(p, t, p.nodes.get(n)!, n)))
    .filter((admitted) => admitted.length > 0);
  const symbolic = terms
    .filter((t) => t.allowed === undefined)
    .map((t) => constraintsOf(p.nodeSelector ?? {}, t.labels))
    .filter((c) => ![...c.values()].some(impossible));
  return (
    named.length + symbolic.length > 0 &&
    named.every((admitted) => admitted.every((n) => selectorMatches(selector, p.nodes!.get(n)!))) &&
    symbolic.every((c) => {
      const possible = (k: string): string[] | undefined => {
        const x = c.get(k);
        return x?.values ? [...x.values].filter((v) => !x.excluded.has(v)) : undefined;
      };
      const requirements = [
        ...Object.entries(selector.matchLabels ?? {}).map(([key, v]) => ({ key, operator: "In", values: [v] })),
        ...(selector.matchExpressions ?? []),
      ];
      return requirements.every((r) => {
        const x = c.get(r.key);
        const vals = possible(r.key);
        switch (r.operator) {
          case "In":
            return vals?.every((v) => r.values!.includes(v)) === true;
          case "NotIn":
            return (
              x?.absent === true || vals?.every((v) => !r.values!.includes(v)) === true || (r.values ?? []).every((v) => x?.excluded.has(v))
            );
          case "Exists":
            return x?.exists === true;
          case "DoesNotExist":
            return x?.absent === true;
          default:
            return false;
        }
      });
    })
  );
}

/** The first usable address at or after `value`, or null past the end. */
export function firstUsableAtOrAfter(pool: Pool, value: bigint): bigint | null {
  const segs = pool.segments;
  let lo = 0;
  let hi = segs.length - 1;
  let found = -1;
  while (lo <= hi) {
    // first segment whose last >= value
    const mid = (lo + hi) >> 1;
    if (segs[mid]!.last >= value) {
      found = mid;
      hi = mid - 1;
    } else lo = mid + 1;
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

/** An address located in a pool: the pool and the canonical text of the address. */
export interface Located {
  pool: Pool;
  ip: string;
}

/** Parses a requested address, given bare or as address/prefix. */
export function parseRequested(text: string, field: string): { family: Family; value: bigint; canonical: string } {
  const ip = parseIp(text.split("/")[0]!);
  if (!ip) throw new ApiError("invalid_request", `${field}: ${text} is not an IP address`, field);
  return { ...ip, canonical: formatIp(ip.family, ip.value) };
}

/** The configured pools as this node sees them: which select it, and which a request may use. */
export class NodePools {
  /** Pools whose selector matches this node's labels, in config order. */
  private selection: Pool[];
  private readonly byName: Map<string, Pool>;
  private readonly node: { name: string; labels: Record<string, string> };

  constructor(
    readonly all: Pool[],
    node: { name: string; labels: Record<string, string> },
  ) {
    this.byName = new Map(all.map((p) => [p.name, p]));
    this.node = { name: node.name, labels: { ...node.labels } };
    this.selection = all.filter((p) => selectorMatches(p.selector, node.labels));
  }

  /** Pools whose selector matches this node's labels, in config order. */
  get selected(): Pool[] {
    return this.selection;
  }

  get nodeName(): string {
    return this.node.name;
  }

  /** The labels the selection was made from. */
  get labels(): Record<string, string> {
    return { ...this.node.labels };
  }

  /**
   * New node labels (the Node object changed): re-selects the pools at once. Reservations in a pool
   * that no longer selects the node are kept, but not used here. Returns the names of the new selection.
   */
  relabel(labels: Record<string, string>): string[] {
    this.node.labels = { ...labels };
    this.selection = this.all.filter((p) => selectorMatches(p.selector, labels));
    const names = this.selection.map((p) => p.name);
    for (const f of this.selectionListeners) f(names);
    return names;
  }

  private readonly selectionListeners: ((selected: string[]) => void)[] = [];
  /** Called with the selected pools' names after every relabel (cluster mode keeps its buffers to them). */
  onSelection(f: (selected: string[]) => void): void {
    this.selectionListeners.push(f);
  }

  get(name: string): Pool | undefined {
    return this.byName.get(name);
  }

  /**
   * The pool that gives a row its shape (prefix, gateway, routes, DNS): its own, or, when its pool
   * left the config (renamed, split), the configured pool whose usable addresses now include it.
   */
  shapeOf(poolName: string, ip: string): Pool | undefined {
    const own = this.byName.get(poolName);
    if (own) return own;
    const parsed = parseIp(ip);
    return parsed ? this.all.find((p) => isUsable(p, parsed.family, parsed.value)) : undefined;
  }

  /** The prefix length of a row's address: its shape's (see shapeOf), else a host prefix. */
  prefixOf(poolName: string, family: Family, ip: string): number {
    return this.shapeOf(poolName, ip)?.subnet.prefix ?? (family === 4 ? 32 : 128);
  }

  /**
   * Pools a request may use: selecting this node, open to `network`, limited to `names` when given.
   * Per family, pools that name the network explicitly win over pools open to any network.
   */
  usable(network: string | undefined, names: string[] | undefined, on?: { placement: Placement; what: string }): Pool[] {
    // `on`: for every node a pod template's pods may run on (nodeSelector, required node affinity), not for this node.
    const chosen = on ? this.all.filter((p) => selectsPlacement(p.selector, on.placement)) : this.selected;
    const target = on ? on.what : `node ${this.node.name}`;
    const mismatch = (pool: Pool): string =>
      on
        ? `its nodeSelector ${JSON.stringify(pool.selector)} does not select every one of them`
        : `its nodeSelector does not match labels ${JSON.stringify(this.node.labels)}`;
    const openTo = (p: Pool): boolean => network === undefined || !p.networks || p.networks.includes(network);
    if (names && names.length > 0) {
      return names.map((name, i) => {
        const pool = this.byName.get(name);
        const field = `pools[${i}]`;
        if (!pool) {
          const defined = [...this.byName.keys()].join(", ");
          throw new ApiError("no_pool", `pool "${name}" is not defined in the ipamd config (defined: ${defined})`, field);
        }
        if (!chosen.includes(pool)) {
          throw new ApiError("no_pool", `pool "${name}" does not select ${target} (${mismatch(pool)})`, field);
        }
        if (!openTo(pool)) {
          throw new ApiError(
            "no_pool",
            `pool "${name}" is not open to network "${network}" (networks: ${pool.networks!.join(", ")}); ` +
              "add the network to the pool or request another pool",
            field,
          );
        }
        return pool;
      });
    }
    const usable = chosen
      .filter(openTo)
      .filter(
        (p) =>
          p.networks !== undefined || network === undefined || !chosen.some((q) => q.family === p.family && q.networks?.includes(network)),
      );
    if (usable.length === 0) {
      const selected = chosen.map((p) => p.name).join(", ") || "none";
      throw new ApiError(
        "no_pool",
        `no pool serves network "${network}" on ${target}: pools selecting it: ${selected}; ` +
          "add the network to a pool's networks, or fix the pool nodeSelector / node labels",
        "network",
      );
    }
    return usable;
  }

  /** Finds the pool (among `pools`) whose usable addresses include `text`. */
  locate(text: string, pools: Pool[], field: string): Located {
    const { canonical, ...ip } = parseRequested(text, field);
    const pool = pools.find((p) => cidrContains(p.subnet, ip.family, ip.value) && isUsable(p, ip.family, ip.value));
    if (pool) return { pool, ip: canonical };
    const inSubnet = pools.find((p) => cidrContains(p.subnet, ip.family, ip.value));
    if (inSubnet) {
      throw new ApiError(
        "ip_unavailable",
        `${canonical} is inside pool "${inSubnet.name}" but not allocatable ` +
          "(it is the network/broadcast address, the gateway, outside the pool ranges, or excluded)",
        field,
      );
    }
    const listed = pools.map((p) => `${p.name} ${formatIp(p.family, p.subnet.address)}/${p.subnet.prefix}`).join(", ") || "none";
    throw new ApiError(
      "ip_unavailable",
      `${canonical} is not inside any pool this node may use for this request ` + `(usable pools: ${listed})`,
      field,
    );
  }

  /** The requested `ips` (at most one per family), each located in one of `usable`. */
  requested(ips: string[] | undefined, usable: Pool[]): Map<Family, Located> {
    const out = new Map<Family, Located>();
    (ips ?? []).forEach((text, i) => {
      const found = this.locate(text, usable, `ips[${i}]`);
      if (out.has(found.pool.family)) {
        throw new ApiError(
          "invalid_request",
          `ips: more than one IPv${found.pool.family} address requested; give at most one per family`,
          `ips[${i}]`,
        );
      }
      out.set(found.pool.family, found);
    });
    return out;
  }

  /**
   * Whether two pools of one family serve a network in common on this node. A pool without
   * `networks` serves every network, except those a pool of this node names explicitly for that
   * family (the same preference as usable()).
   */
  shareNetwork(a: Pool, b: Pool): boolean {
    if (a.name === b.name) return true;
    if (!a.networks && !b.networks) return true;
    if (a.networks && b.networks) return a.networks.some((n) => b.networks!.includes(n));
    const [open, named] = a.networks ? [b, a] : [a, b];
    return named.networks!.some((n) => !this.selected.some((p) => p.family === open.family && p.networks?.includes(n)));
  }
}
