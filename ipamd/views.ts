// What the API answers, shaped from rows and pools: reservations, allocations, pool usage, and
// the read-only queries behind GET.
import type {
  AllocateResponse, NetworkStatusRequest, NetworkStatusResponse, PoolUsage, Reservation, ReservationFilter, ReservationsResponse,
} from "../api/types";
import { ApiError } from "./errors";
import { canonicalIp, formatIp } from "../lib/ip";
import type { NodePools } from "./pools";
import type { Row, Statements } from "./store/statements";

export class Views {
  constructor(private readonly store: Statements, private readonly pools: NodePools, private readonly cooldownMs: number) {}

  reservation(r: Row): Reservation {
    const iso = (t: number | null): string | undefined => (t === null ? undefined : new Date(t).toISOString());
    const v: Reservation = {
      ip: r.ip, address: `${r.ip}/${this.pools.prefixOf(r.pool, r.family)}`, pool: r.pool, family: r.family, owner: r.owner,
      kind: r.kind, sticky: r.sticky === 1, pinned: r.pinned === 1, state: r.container_id ? "attached" : "detached",
      createdAt: iso(r.created_at)!,
    };
    if (r.namespace !== null) v.namespace = r.namespace;
    if (r.statefulset !== null) v.statefulset = r.statefulset;
    if (r.ordinal !== null) v.ordinal = r.ordinal;
    if (r.container_id !== null) { v.containerID = r.container_id; v.ifName = r.ifname ?? undefined; v.network = r.network ?? undefined; }
    if (r.pod_namespace !== null) v.podNamespace = r.pod_namespace;
    if (r.pod_name !== null) v.podName = r.pod_name;
    if (r.pod_uid !== null) v.podUID = r.pod_uid;
    if (r.attached_at !== null) v.attachedAt = iso(r.attached_at);
    if (r.detached_at !== null) v.detachedAt = iso(r.detached_at);
    return v;
  }

  /** An attachment's addresses, with the routes and DNS of their pools (merged, without repeats). */
  allocation(rows: Row[]): AllocateResponse {
    const ips = rows.map((r) => {
      const pool = this.pools.get(r.pool);
      return {
        pool: r.pool, family: r.family, address: `${r.ip}/${this.pools.prefixOf(r.pool, r.family)}`,
        ...(pool?.gateway ? { gateway: pool.gateway } : {}), ...(pool?.vlan !== undefined ? { vlan: pool.vlan } : {}),
      };
    });
    const routes: { dst: string; gw?: string }[] = [];
    const dns: AllocateResponse["dns"] = {};
    for (const r of rows) {
      const pool = this.pools.get(r.pool);
      if (!pool) continue;
      for (const route of pool.routes) {
        if (!routes.some((x) => x.dst === route.dst && x.gw === route.gw)) routes.push(route);
      }
      const merge = (key: "nameservers" | "search" | "options"): void => {
        const add = pool.dns[key];
        if (add?.length) dns[key] = [...new Set([...(dns[key] ?? []), ...add])];
      };
      merge("nameservers"); merge("search"); merge("options");
      if (pool.dns.domain && !dns.domain) dns.domain = pool.dns.domain;
    }
    const first = rows[0]!;
    return { owner: first.owner, sticky: first.sticky === 1, ips, routes, dns };
  }

  reservations(f: ReservationFilter): ReservationsResponse {
    const limit = f.limit ?? 100_000;
    const rows = this.store.matching({ ...f, ...(f.ip ? { ip: canonicalIp(f.ip) ?? f.ip } : {}) }, limit + 1);
    return { reservations: rows.slice(0, limit).map((r) => this.reservation(r)), truncated: rows.length > limit };
  }

  poolUsage(now: number): PoolUsage[] {
    const usage = new Map(this.store.countsByPool().map((u) => [u.pool, u]));
    const cooling = new Map(this.store.coolingByPool(now - this.cooldownMs).map((c) => [c.pool, c.n]));
    return this.pools.all.map((p) => {
      const used = usage.get(p.name)?.used ?? 0;
      const reserved = usage.get(p.name)?.reserved ?? 0;
      const cool = cooling.get(p.name) ?? 0;
      const free = p.size - BigInt(used + reserved + cool);
      return {
        name: p.name, family: p.family, subnet: `${formatIp(p.family, p.subnet.address)}/${p.subnet.prefix}`,
        ...(p.gateway ? { gateway: p.gateway } : {}), ...(p.vlan !== undefined ? { vlan: p.vlan } : {}),
        ...(p.networks ? { networks: p.networks } : {}),
        selected: this.pools.selected.includes(p), nodeSelector: p.selector,
        ranges: p.segments.map((s) => ({ start: formatIp(p.family, s.first), end: formatIp(p.family, s.last) })),
        total: p.size.toString(), used, reserved, cooling: cool, free: (free < 0n ? 0n : free).toString(),
        routes: p.routes, dns: p.dns,
      };
    });
  }

  reservationCount(): number { return this.store.count(); }

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
        throw new ApiError("pool_exhausted", `no free IPv${family} address for network "${req.network}" in ${names}` +
          (cooling ? ` (${cooling} released addresses come back after the cooldown)` : ""));
      }
    }
    return { network: req.network, pools };
  }
}
