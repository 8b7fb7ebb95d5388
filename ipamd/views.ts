// What the API answers, shaped from rows and pools: reservations, allocations, pool usage, and
// the read-only queries behind GET.
import type {
  AllocateResponse,
  NetworkStatusRequest,
  NetworkStatusResponse,
  OrphanedPool,
  PoolUsage,
  Reservation,
  ReservationFilter,
  ReservationsResponse,
} from "../api/types";
import { ApiError } from "./errors";
import { canonicalIp, formatIp } from "../lib/ip";
import type { NodePools } from "./pools";
import type { ListingKey, Row, Statements } from "./store/statements";

/** GET /v1/reservations pages: `limit` defaults to this, and is cut to MAX_PAGE (a `next` cursor gives the rest). */
const DEFAULT_PAGE = 1000;
export const MAX_PAGE = 5000;
/** Orphaned rows examined per status / pools answer. */
const ORPHANS_EXAMINED = 10_000;

export class Views {
  constructor(
    private readonly store: Statements,
    private readonly pools: NodePools,
    private readonly cooldownMs: number,
  ) {}

  reservation(r: Row): Reservation {
    const iso = (t: number | null): string | undefined => (t === null ? undefined : new Date(t).toISOString());
    const v: Reservation = {
      ip: r.ip,
      address: `${r.ip}/${this.pools.prefixOf(r.pool, r.family, r.ip)}`,
      pool: r.pool,
      family: r.family,
      owner: r.owner,
      kind: r.kind,
      sticky: r.sticky === 1,
      pinned: r.pinned === 1,
      state: r.container_id ? "attached" : "detached",
      createdAt: iso(r.created_at)!,
    };
    if (r.namespace !== null) v.namespace = r.namespace;
    if (r.statefulset !== null) v.statefulset = r.statefulset;
    if (r.ordinal !== null) v.ordinal = r.ordinal;
    if (r.container_id !== null) {
      v.containerID = r.container_id;
      v.ifName = r.ifname ?? undefined;
      v.network = r.network ?? undefined;
    }
    if (r.pod_namespace !== null) v.podNamespace = r.pod_namespace;
    if (r.pod_name !== null) v.podName = r.pod_name;
    if (r.pod_uid !== null) v.podUID = r.pod_uid;
    if (r.attached_at !== null) v.attachedAt = iso(r.attached_at);
    if (r.detached_at !== null) v.detachedAt = iso(r.detached_at);
    return v;
  }

  /** An attachment's addresses, with the routes and DNS of their pools (merged, without repeats); `existing`: held before the request. */
  allocation(rows: Row[], existing: boolean): AllocateResponse {
    const shapes = rows.map((r) => {
      const pool = this.pools.shapeOf(r.pool, r.ip);
      if (!pool) {
        throw new ApiError(
          "no_pool",
          `container ${r.container_id ?? "-"} holds ${r.ip} from pool "${r.pool}", which is no longer in ` +
            "the ipamd config and no configured pool contains the address, so its prefix, gateway and routes are unknown; put the " +
            "pool back in the config, or delete the pod (its CNI DEL frees the address)",
        );
      }
      return pool;
    });
    const ips = rows.map((r, i) => {
      const pool = shapes[i]!;
      return {
        pool: r.pool,
        family: r.family,
        address: `${r.ip}/${pool.subnet.prefix}`,
        ...(pool?.gateway ? { gateway: pool.gateway } : {}),
        ...(pool?.vlan !== undefined ? { vlan: pool.vlan } : {}),
      };
    });
    const routes: { dst: string; gw?: string }[] = [];
    const dns: AllocateResponse["dns"] = {};
    for (const pool of shapes) {
      for (const route of pool.routes) {
        if (!routes.some((x) => x.dst === route.dst && x.gw === route.gw)) routes.push(route);
      }
      const merge = (key: "nameservers" | "search" | "options"): void => {
        const add = pool.dns[key];
        if (add?.length) dns[key] = [...new Set([...(dns[key] ?? []), ...add])];
      };
      merge("nameservers");
      merge("search");
      merge("options");
      if (pool.dns.domain && !dns.domain) dns.domain = pool.dns.domain;
    }
    const first = rows[0]!;
    return { owner: first.owner, sticky: first.sticky === 1, existing, ips, routes, dns };
  }

  /**
   * One page of reservations in listing order (pool, namespace, statefulset, ordinal): at most
   * `limit` (cut to MAX_PAGE), after the cursor `after`; `next` continues when there are more.
   */
  reservations(f: ReservationFilter): ReservationsResponse {
    const limit = Math.min(f.limit ?? DEFAULT_PAGE, MAX_PAGE);
    const rows = this.store.matching({ ...f, ...(f.ip ? { ip: canonicalIp(f.ip) ?? f.ip } : {}) }, limit + 1, decodeCursor(f.after));
    const page = rows.slice(0, limit);
    const more = rows.length > limit;
    const last = page[page.length - 1];
    const next = more && last ? encodeCursor([last.pool, last.namespace ?? "", last.statefulset ?? "", last.ordinal ?? -1, last.id]) : "";
    return { reservations: page.map((r) => this.reservation(r)), truncated: more, ...(next ? { next } : {}) };
  }

  /** Addresses held under pool names that are no longer in the config (a pool renamed or removed). */
  orphanedPools(): OrphanedPool[] {
    const rows = this.store.heldOutside(
      this.pools.all.map((p) => p.name),
      ORPHANS_EXAMINED,
    );
    const out = new Map<string, OrphanedPool>();
    for (const r of rows) {
      const o = out.get(r.pool) ?? { name: r.pool, held: 0, attached: 0, insidePools: [] };
      o.held++;
      if (r.container_id) o.attached++;
      const inside = this.pools.shapeOf(r.pool, r.ip)?.name;
      if (inside && !o.insidePools.includes(inside)) o.insidePools.push(inside);
      out.set(r.pool, o);
    }
    return [...out.values()];
  }

  poolUsage(now: number): PoolUsage[] {
    const usage = new Map(this.store.countsByPool().map((u) => [u.pool, u]));
    const cooling = new Map(this.store.coolingByPool(now - this.cooldownMs).map((c) => [c.pool, c.n]));
    // Addresses of a configured pool held under the name of a pool that left the config.
    const orphaned = new Map<string, number>();
    for (const r of this.store.heldOutside(
      this.pools.all.map((p) => p.name),
      ORPHANS_EXAMINED,
    )) {
      const inside = this.pools.shapeOf(r.pool, r.ip)?.name;
      if (inside) orphaned.set(inside, (orphaned.get(inside) ?? 0) + 1);
    }
    return this.pools.all.map((p) => {
      const used = usage.get(p.name)?.used ?? 0;
      const reserved = usage.get(p.name)?.reserved ?? 0;
      const cool = cooling.get(p.name) ?? 0;
      const held = orphaned.get(p.name) ?? 0;
      const free = p.size - BigInt(used + reserved + cool + held);
      return {
        name: p.name,
        family: p.family,
        subnet: `${formatIp(p.family, p.subnet.address)}/${p.subnet.prefix}`,
        ...(p.gateway ? { gateway: p.gateway } : {}),
        ...(p.vlan !== undefined ? { vlan: p.vlan } : {}),
        ...(p.networks ? { networks: p.networks } : {}),
        selected: this.pools.selected.includes(p),
        nodeSelector: p.selector,
        ranges: p.segments.map((s) => ({ start: formatIp(p.family, s.first), end: formatIp(p.family, s.last) })),
        total: p.size.toString(),
        used,
        reserved,
        cooling: cool,
        ...(held ? { orphaned: held } : {}),
        free: (free < 0n ? 0n : free).toString(),
        routes: p.routes,
        dns: p.dns,
      };
    });
  }

  reservationCount(): number {
    return this.store.count();
  }

  /**
   * Whether ADD could allocate for `network` (and `pools`) on this node: the pools it may use
   * (no_pool as allocate says it), and a free address in each of their families (pool_exhausted).
   */
  networkStatus(req: NetworkStatusRequest, now: number): NetworkStatusResponse {
    const usable = this.pools.usable(req.network, req.pools);
    const usage = new Map(this.poolUsage(now).map((u) => [u.name, u]));
    const pools = usable.map((p) => ({ name: p.name, family: p.family, free: usage.get(p.name)?.free ?? "0" }));
    for (const family of [4, 6] as const) {
      const of = pools.filter((p) => p.family === family);
      if (of.length && of.every((p) => p.free === "0")) {
        const cooling = of.reduce((n, p) => n + (usage.get(p.name)?.cooling ?? 0), 0);
        const names = of.map((p) => p.name).join(", ");
        throw new ApiError(
          "pool_exhausted",
          `no free IPv${family} address for network "${req.network}" in ${names}` +
            (cooling ? ` (${cooling} released addresses come back after the cooldown)` : ""),
        );
      }
    }
    return { network: req.network, pools };
  }
}

function encodeCursor(key: ListingKey): string {
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

function decodeCursor(text: string | undefined): ListingKey | undefined {
  if (text === undefined) return undefined;
  try {
    const key = JSON.parse(Buffer.from(text, "base64url").toString("utf8")) as unknown;
    if (
      Array.isArray(key) &&
      key.length === 5 &&
      typeof key[0] === "string" &&
      typeof key[1] === "string" &&
      typeof key[2] === "string" &&
      typeof key[3] === "number" &&
      typeof key[4] === "number"
    )
      return key as ListingKey;
  } catch {
    /* below */
  }
  throw new ApiError("invalid_request", "after: not a cursor of GET /v1/reservations (pass the next value of the previous page)", "after");
}
