// Allocation logic. Every mutating method must run inside a transaction (the server's group
// commit wraps each request in its own savepoint); nothing here keeps state outside SQLite.
import { type Config, firstUsableAtOrAfter, isUsable, type Pool, selectorMatches } from "./config";
import { ApiError } from "./errors";
import { canonicalIp, cidrContains, type Family, formatIp, parseIp } from "./ip";
import type {
  AllocateRequest, AttachmentRequest, GcRequest, PinRequest, ReleaseReservationRequest, ReserveRequest,
} from "./schemas";
import type { DB, Statement } from "./store";
import type {
  AllocateResponse, GcResponse, PinResponse, PoolUsage, ReleaseReservationsResponse, ReleaseResponse, Reservation,
  ReservationFilter, ReservationsResponse, ReserveResponse, StatefulSetsResponse, UnregisterResponse,
} from "./types";

export interface Row {
  id: number;
  ip: string;
  pool: string;
  family: Family;
  owner: string;
  kind: "statefulset" | "attachment";
  sticky: number;
  pinned: number;
  namespace: string | null;
  statefulset: string | null;
  ordinal: number | null;
  container_id: string | null;
  ifname: string | null;
  network: string | null;
  pod_namespace: string | null;
  pod_name: string | null;
  pod_uid: string | null;
  created_at: number;
  attached_at: number | null;
  detached_at: number | null;
}

interface StsOwner { namespace: string; statefulset: string; ordinal: number; owner: string }

const ORDINAL = /^(0|[1-9][0-9]{0,6})$/;

export class Allocator {
  readonly nodePools: Pool[];
  private readonly poolsByName: Map<string, Pool>;
  private readonly configStatefulSets: Set<string>;
  private readonly q: Record<string, Statement>;
  /** Called when a sticky reservation moves from a still-attached container to a new one (logged). */
  onTakeover?: (row: Row, req: AttachmentRequest) => void;

  constructor(private readonly db: DB, readonly config: Config) {
    this.poolsByName = new Map(config.pools.map((p) => [p.name, p]));
    this.nodePools = config.pools.filter((p) => selectorMatches(p.selector, config.nodeLabels));
    this.configStatefulSets = new Set(config.statefulSets.map((s) => `${s.namespace}/${s.name}`));
    const p = (sql: string): Statement => db.prepare(sql);
    this.q = {
      byAttachment: p("SELECT * FROM reservations WHERE container_id = ? AND ifname = ? AND network = ? ORDER BY family"),
      byOwner: p("SELECT * FROM reservations WHERE owner = ? AND sticky = 1"),
      byId: p("SELECT * FROM reservations WHERE id = ?"),
      byIp: p("SELECT * FROM reservations WHERE ip = ?"),
      ipTaken: p("SELECT 1 FROM reservations WHERE ip = ? UNION ALL SELECT 1 FROM released WHERE ip = ? LIMIT 1"),
      insert: p(`INSERT INTO reservations (ip, pool, family, owner, kind, sticky, pinned, namespace, statefulset, ordinal,
        container_id, ifname, network, pod_namespace, pod_name, pod_uid, created_at, attached_at, detached_at)
        VALUES (@ip, @pool, @family, @owner, @kind, @sticky, @pinned, @namespace, @statefulset, @ordinal,
        @container_id, @ifname, @network, @pod_namespace, @pod_name, @pod_uid, @created_at, @attached_at, @detached_at)`),
      attach: p(`UPDATE reservations SET container_id = @container_id, ifname = @ifname, network = @network,
        pod_namespace = @pod_namespace, pod_name = @pod_name, pod_uid = @pod_uid, attached_at = @now, detached_at = NULL
        WHERE id = @id`),
      detach: p("UPDATE reservations SET container_id = NULL, ifname = NULL, network = NULL, detached_at = ? WHERE id = ?"),
      setPinned: p("UPDATE reservations SET pinned = 1 WHERE id = ?"),
      handToAttachment: p(`UPDATE reservations SET owner = ?, kind = 'attachment', sticky = 0, pinned = 0,
        namespace = NULL, statefulset = NULL, ordinal = NULL WHERE id = ?`),
      delete: p("DELETE FROM reservations WHERE id = ?"),
      addReleased: p(`INSERT INTO released (ip, pool, released_at) VALUES (?, ?, ?)
        ON CONFLICT(ip) DO UPDATE SET pool = excluded.pool, released_at = excluded.released_at`),
      oldestReleased: p("SELECT ip FROM released WHERE pool = ? AND released_at <= ? ORDER BY released_at, ip LIMIT 1"),
      dropReleased: p("DELETE FROM released WHERE ip = ?"),
      coolingCount: p("SELECT count(*) AS n FROM released WHERE pool = ? AND released_at > ?"),
      cursor: p("SELECT next, fingerprint FROM pool_cursor WHERE pool = ?"),
      saveCursor: p(`INSERT INTO pool_cursor (pool, next, fingerprint) VALUES (?, ?, ?)
        ON CONFLICT(pool) DO UPDATE SET next = excluded.next, fingerprint = excluded.fingerprint`),
      stsKnown: p("SELECT 1 FROM statefulsets WHERE namespace = ? AND name = ?"),
      stsRegister: p("INSERT OR IGNORE INTO statefulsets (namespace, name, registered_at) VALUES (?, ?, ?)"),
      stsUnregister: p("DELETE FROM statefulsets WHERE namespace = ? AND name = ?"),
      stsList: p("SELECT namespace, name, registered_at FROM statefulsets ORDER BY namespace, name"),
      attachedOnNetwork: p("SELECT * FROM reservations WHERE network = ? AND container_id IS NOT NULL AND attached_at < ?"),
      expired: p(`SELECT * FROM reservations WHERE container_id IS NULL AND sticky = 1 AND pinned = 0
        AND detached_at < ? ORDER BY detached_at LIMIT 10000`),
      usage: p(`SELECT pool, sum(container_id IS NOT NULL) AS used, sum(container_id IS NULL) AS reserved
        FROM reservations GROUP BY pool`),
      cooling: p("SELECT pool, count(*) AS n FROM released WHERE released_at > ? GROUP BY pool"),
      count: p("SELECT count(*) AS n FROM reservations"),
    };
  }

  // ---------- CNI operations ----------

  allocate(req: AllocateRequest, now: number): AllocateResponse {
    const held = this.q.byAttachment!.all(req.containerID, req.ifName, req.network) as Row[];
    if (held.length > 0) return this.response(held); // idempotent ADD

    const sts = this.statefulSetOwner(req.podNamespace, req.podName);
    const usable = this.usablePools(req.network, req.pools);
    const wanted = this.requestedIps(req.ips, usable);
    const attachment = {
      container_id: req.containerID, ifname: req.ifName, network: req.network,
      pod_namespace: req.podNamespace ?? null, pod_name: req.podName ?? null, pod_uid: req.podUID ?? null,
    };
    const rows: Row[] = [];
    for (const family of [4, 6] as const) {
      const familyPools = usable.filter((p) => p.family === family);
      if (familyPools.length === 0) continue;
      const want = wanted.get(family);
      const existing = sts
        ? (this.q.byOwner!.all(sts.owner) as Row[]).find((r) => familyPools.some((p) => p.name === r.pool))
        : undefined;
      // A second interface of the same pod in the same pool cannot share the member's sticky
      // address: it gets an address owned by its attachment instead.
      const secondInterface = existing?.container_id === req.containerID && existing.ifname !== req.ifName;
      if (sts && !secondInterface) {
        if (existing && (!want || want.ip === existing.ip)) {
          if (existing.container_id && existing.container_id !== req.containerID) this.onTakeover?.(existing, req);
          this.q.attach!.run({ ...attachment, now, id: existing.id });
          if (want) this.q.setPinned!.run(existing.id);
          rows.push(this.rowById(existing.id));
          continue;
        }
        if (want) {
          this.assertFree(want.ip, sts.owner, now, req, "ips");
          // Changing a pin replaces the member's previous address on the same network(s), atomically
          // (an address a running container still uses stays held by that container).
          const previous = this.previousAddresses(sts.owner, want.pool);
          if (existing && !previous.some((r) => r.id === existing.id)) previous.push(existing);
          for (const old of previous) this.endReservation(old, now);
          rows.push(this.insert(want.pool, want.ip, sts, true, true, attachment, now));
          continue;
        }
        const ip = this.takeFromPools(familyPools, now);
        rows.push(this.insert(ip.pool, ip.ip, sts, true, false, attachment, now));
      } else {
        const owner = { owner: `${req.containerID}/${req.ifName}` };
        if (want) {
          this.assertFree(want.ip, owner.owner, now, req, "ips");
          rows.push(this.insert(want.pool, want.ip, owner, false, true, attachment, now));
        } else {
          const ip = this.takeFromPools(familyPools, now);
          rows.push(this.insert(ip.pool, ip.ip, owner, false, false, attachment, now));
        }
      }
    }
    return this.response(rows);
  }

  release(req: AttachmentRequest, now: number): ReleaseResponse {
    const rows = this.q.byAttachment!.all(req.containerID, req.ifName, req.network) as Row[];
    const out: ReleaseResponse = { released: [], kept: [] };
    for (const row of rows) (this.letGo(row, now) ? out.kept : out.released).push(row.ip);
    return out;
  }

  check(req: AttachmentRequest): AllocateResponse {
    const rows = this.q.byAttachment!.all(req.containerID, req.ifName, req.network) as Row[];
    if (rows.length === 0) {
      throw new ApiError("not_found", `no addresses are allocated to container ${req.containerID} interface ${req.ifName} on network ${req.network}`);
    }
    return this.response(rows);
  }

  /** CNI GC: attachments on `network` not listed and attached before the GC began lose their addresses. */
  gc(req: GcRequest, startedAt: number, now: number): GcResponse {
    const valid = new Set(req.validAttachments.map((a) => `${a.containerID}\0${a.ifName}`));
    const out: GcResponse = { released: [], detached: [] };
    for (const row of this.q.attachedOnNetwork!.all(req.network, startedAt) as Row[]) {
      if (!valid.has(`${row.container_id}\0${row.ifname}`)) (this.letGo(row, now) ? out.detached : out.released).push(row.ip);
    }
    return out;
  }

  // ---------- operator operations ----------

  reserve(req: ReserveRequest, now: number): ReserveResponse {
    const usable = this.usablePools(req.network, req.pools);
    this.q.stsRegister!.run(req.namespace, req.statefulset, now);
    const rows: Row[] = [];
    for (let ordinal = 0; ordinal < req.replicas; ordinal++) {
      const owner = this.stsOwner(req.namespace, req.statefulset, ordinal);
      const held = this.q.byOwner!.all(owner.owner) as Row[];
      for (const family of [4, 6] as const) {
        const familyPools = usable.filter((p) => p.family === family);
        if (familyPools.length === 0) continue;
        const existing = held.find((r) => familyPools.some((p) => p.name === r.pool));
        if (existing) { rows.push(existing); continue; }
        const ip = this.takeFromPools(familyPools, now);
        rows.push(this.insert(ip.pool, ip.ip, owner, true, false, null, now));
      }
    }
    return { statefulset: { namespace: req.namespace, name: req.statefulset }, reservations: rows.map((r) => this.view(r)) };
  }

  pin(req: PinRequest, now: number): PinResponse {
    const owner = this.stsOwner(req.namespace, req.statefulset, req.ordinal);
    const { pool, ip } = this.locate(req.ip, this.nodePools, "ip");
    this.q.stsRegister!.run(req.namespace, req.statefulset, now);
    const holder = this.q.byIp!.get(ip) as Row | undefined;
    if (holder && holder.owner === owner.owner && holder.sticky) {
      this.q.setPinned!.run(holder.id);
      return { reservation: this.view(this.rowById(holder.id)), released: [], heldByContainer: [] };
    }
    this.assertFree(ip, owner.owner, now, null, "ip");
    const previous = this.previousAddresses(owner.owner, pool);
    const running = previous.find((r) => r.container_id);
    if (running && !req.force) {
      throw new ApiError("reservation_attached", `${owner.owner} is running with ${running.ip} (container ${running.container_id}); ` +
        "delete the pod first, or pass force to move the pin now (the running container keeps the old address until its " +
        "CNI DEL or GC frees it; the next pod of the member gets the pinned one)");
    }
    const released: string[] = [];
    const heldByContainer: string[] = [];
    for (const old of previous) {
      released.push(old.ip);
      if (this.endReservation(old, now)) heldByContainer.push(old.ip);
    }
    const row = this.insert(pool, ip, owner, true, true, null, now);
    return { reservation: this.view(row), released, heldByContainer };
  }

  releaseReservations(req: ReleaseReservationRequest, now: number): ReleaseReservationsResponse {
    let rows: Row[];
    if (req.ip) {
      const ip = this.requested(req.ip, "ip").canonical;
      const row = this.q.byIp!.get(ip) as Row | undefined;
      if (!row) throw new ApiError("not_found", `no reservation holds ${ip}`, "ip");
      rows = [row];
    } else {
      const where = ["namespace = ?", "statefulset = ?"];
      const args: unknown[] = [req.namespace, req.statefulset];
      if (req.ordinal !== undefined) { where.push("ordinal = ?"); args.push(req.ordinal); }
      if (req.pool) { where.push("pool = ?"); args.push(req.pool); }
      rows = this.db.prepare(`SELECT * FROM reservations WHERE ${where.join(" AND ")} ORDER BY ordinal, family`).all(...args) as Row[];
      if (req.ordinal === undefined && !req.pool) this.q.stsUnregister!.run(req.namespace, req.statefulset);
    }
    const attached = rows.filter((r) => r.container_id);
    if (attached.length > 0 && !req.force) {
      const list = attached.slice(0, 5).map((r) => `${r.ip} (${r.owner}, container ${r.container_id})`).join(", ");
      throw new ApiError("reservation_attached", `${attached.length} of these reservations are in use by running containers: ${list}; ` +
        "delete the pods first, or pass force to end the reservations now (an address in use stays held by its container " +
        "until the container's CNI DEL or GC frees it)");
    }
    const heldByContainer: Reservation[] = [];
    for (const row of rows) {
      if (this.endReservation(row, now)) heldByContainer.push(this.view(this.rowById(row.id)));
    }
    return { released: rows.map((r) => this.view(r)), heldByContainer };
  }

  registerStatefulSet(namespace: string, name: string, now: number): void {
    this.q.stsRegister!.run(namespace, name, now);
  }

  unregisterStatefulSet(namespace: string, name: string): UnregisterResponse {
    const unregistered = this.q.stsUnregister!.run(namespace, name).changes > 0;
    return { unregistered, configured: this.configStatefulSets.has(`${namespace}/${name}`) };
  }

  listStatefulSets(): StatefulSetsResponse {
    const fromConfig = this.config.statefulSets.map((s) => ({ ...s, source: "config" as const }));
    const fromApi = (this.q.stsList!.all() as { namespace: string; name: string; registered_at: number }[])
      .filter((s) => !this.configStatefulSets.has(`${s.namespace}/${s.name}`))
      .map((s) => ({ namespace: s.namespace, name: s.name, source: "api" as const, registeredAt: new Date(s.registered_at).toISOString() }));
    return { statefulsets: [...fromConfig, ...fromApi] };
  }

  /** Releases sticky reservations detached for longer than the TTL (pins are kept). */
  reapExpired(now: number): string[] {
    if (this.config.detachedTtlMs <= 0) return [];
    const rows = this.q.expired!.all(now - this.config.detachedTtlMs) as Row[];
    for (const row of rows) this.free(row, now);
    return rows.map((r) => r.ip);
  }

  // ---------- reads ----------

  listReservations(f: ReservationFilter): ReservationsResponse {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (sql: string, v: unknown): void => { where.push(sql); args.push(v); };
    if (f.namespace) add("namespace = ?", f.namespace);
    if (f.statefulset) add("statefulset = ?", f.statefulset);
    if (f.pool) add("pool = ?", f.pool);
    if (f.owner) add("owner = ?", f.owner);
    if (f.ip) add("ip = ?", canonicalIp(f.ip) ?? f.ip);
    if (f.state === "attached") where.push("container_id IS NOT NULL");
    if (f.state === "detached") where.push("container_id IS NULL");
    const limit = f.limit ?? 100_000;
    const sql = `SELECT * FROM reservations ${where.length ? "WHERE " + where.join(" AND ") : ""}
      ORDER BY pool, namespace, statefulset, ordinal, id LIMIT ?`;
    const rows = this.db.prepare(sql).all(...args, limit + 1) as Row[];
    return { reservations: rows.slice(0, limit).map((r) => this.view(r)), truncated: rows.length > limit };
  }

  poolUsage(now: number): PoolUsage[] {
    const usage = new Map((this.q.usage!.all() as { pool: string; used: number; reserved: number }[]).map((u) => [u.pool, u]));
    const cooling = new Map((this.q.cooling!.all(now - this.config.cooldownMs) as { pool: string; n: number }[]).map((c) => [c.pool, c.n]));
    return this.config.pools.map((p) => {
      const used = usage.get(p.name)?.used ?? 0;
      const reserved = usage.get(p.name)?.reserved ?? 0;
      const cool = cooling.get(p.name) ?? 0;
      const free = p.size - BigInt(used + reserved + cool);
      return {
        name: p.name, family: p.family, subnet: `${formatIp(p.family, p.subnet.address)}/${p.subnet.prefix}`,
        ...(p.gateway ? { gateway: p.gateway } : {}), ...(p.vlan !== undefined ? { vlan: p.vlan } : {}),
        ...(p.networks ? { networks: p.networks } : {}),
        selected: this.nodePools.includes(p), nodeSelector: p.selector,
        ranges: p.segments.map((s) => ({ start: formatIp(p.family, s.first), end: formatIp(p.family, s.last) })),
        total: p.size.toString(), used, reserved, cooling: cool, free: (free < 0n ? 0n : free).toString(),
        routes: p.routes, dns: p.dns,
      };
    });
  }

  reservationCount(): number {
    return (this.q.count!.get() as { n: number }).n;
  }

  // ---------- internals ----------

  private statefulSetOwner(namespace: string | undefined, podName: string | undefined): StsOwner | null {
    if (!namespace || !podName) return null;
    const dash = podName.lastIndexOf("-");
    if (dash <= 0) return null;
    const name = podName.slice(0, dash);
    const ordinal = podName.slice(dash + 1);
    if (!ORDINAL.test(ordinal)) return null;
    // Only StatefulSets the daemon knows: a Deployment pod's random suffix can be all digits.
    const known = this.configStatefulSets.has(`${namespace}/${name}`) || this.q.stsKnown!.get(namespace, name) !== undefined;
    return known ? this.stsOwner(namespace, name, Number(ordinal)) : null;
  }

  private stsOwner(namespace: string, statefulset: string, ordinal: number): StsOwner {
    return { namespace, statefulset, ordinal, owner: `${namespace}/${statefulset}/${ordinal}` };
  }

  private usablePools(network: string | undefined, names: string[] | undefined): Pool[] {
    const node = this.config.nodeName;
    const openTo = (p: Pool): boolean => network === undefined || !p.networks || p.networks.includes(network);
    if (names && names.length > 0) {
      return names.map((name, i) => {
        const pool = this.poolsByName.get(name);
        const field = `pools[${i}]`;
        if (!pool) {
          throw new ApiError("no_pool", `pool "${name}" is not defined in the ipamd config (defined: ${[...this.poolsByName.keys()].join(", ")})`, field);
        }
        if (!this.nodePools.includes(pool)) {
          throw new ApiError("no_pool", `pool "${name}" does not select node ${node} (its nodeSelector does not match labels ${JSON.stringify(this.config.nodeLabels)})`, field);
        }
        if (!openTo(pool)) {
          throw new ApiError("no_pool", `pool "${name}" is not open to network "${network}" (networks: ${pool.networks!.join(", ")}); add the network to the pool or request another pool`, field);
        }
        return pool;
      });
    }
    // Per family, pools that name the network explicitly win over pools open to any network.
    const usable = this.nodePools.filter(openTo).filter((p) => p.networks !== undefined ||
      network === undefined || !this.nodePools.some((q) => q.family === p.family && q.networks?.includes(network)));
    if (usable.length === 0) {
      const selected = this.nodePools.map((p) => p.name).join(", ") || "none";
      throw new ApiError("no_pool", `no pool serves network "${network}" on node ${node}: pools selecting this node: ${selected}; ` +
        "add the network to a pool's networks, or fix the pool nodeSelector / node labels", "network");
    }
    return usable;
  }

  /** Parses a requested address, given bare or as address/prefix. */
  private requested(text: string, field: string): { family: Family; value: bigint; canonical: string } {
    const ip = parseIp(text.split("/")[0]!);
    if (!ip) throw new ApiError("invalid_request", `${field}: ${text} is not an IP address`, field);
    return { ...ip, canonical: formatIp(ip.family, ip.value) };
  }

  /** Finds the pool (among `pools`) whose usable addresses include `text`. */
  private locate(text: string, pools: Pool[], field: string): { pool: Pool; ip: string } {
    const { canonical, ...ip } = this.requested(text, field);
    const pool = pools.find((p) => cidrContains(p.subnet, ip.family, ip.value) && isUsable(p, ip.family, ip.value));
    if (pool) return { pool, ip: canonical };
    const inSubnet = pools.find((p) => cidrContains(p.subnet, ip.family, ip.value));
    if (inSubnet) {
      throw new ApiError("ip_unavailable", `${canonical} is inside pool "${inSubnet.name}" but not allocatable ` +
        "(it is the network/broadcast address, the gateway, outside the pool ranges, or excluded)", field);
    }
    throw new ApiError("ip_unavailable", `${canonical} is not inside any pool this node may use for this request ` +
      `(usable pools: ${pools.map((p) => `${p.name} ${formatIp(p.family, p.subnet.address)}/${p.subnet.prefix}`).join(", ") || "none"})`, field);
  }

  private requestedIps(ips: string[] | undefined, usable: Pool[]): Map<Family, { pool: Pool; ip: string }> {
    const out = new Map<Family, { pool: Pool; ip: string }>();
    (ips ?? []).forEach((text, i) => {
      const found = this.locate(text, usable, `ips[${i}]`);
      if (out.has(found.pool.family)) {
        throw new ApiError("invalid_request", `ips: more than one IPv${found.pool.family} address requested; give at most one per family`, `ips[${i}]`);
      }
      out.set(found.pool.family, found);
    });
    return out;
  }

  private assertFree(ip: string, owner: string, now: number, attachment: AttachmentRequest | null, field: string): void {
    const holder = this.q.byIp!.get(ip) as Row | undefined;
    const runningElsewhere = holder?.container_id && !(attachment && holder.container_id === attachment.containerID &&
      holder.ifname === attachment.ifName && holder.network === attachment.network);
    if (holder && (holder.owner !== owner || runningElsewhere)) {
      throw new ApiError("ip_unavailable", `${ip} is already held by ${holder.owner} ` +
        `(${holder.container_id ? `in use by container ${holder.container_id} interface ${holder.ifname} on network ${holder.network}` : "reserved"}); ` +
        (holder.container_id ? "it is freed when that container is deleted (CNI DEL or GC); request another address"
          : "release it with ipamctl release --ip first, or request another address"), field);
    }
    if (holder) this.free(holder, now); // same owner, a detached record (or this attachment's own)
    this.q.dropReleased!.run(ip); // an explicit request skips the cooldown
  }

  private takeFromPools(pools: Pool[], now: number): { pool: Pool; ip: string } {
    for (const pool of pools) {
      const ip = this.takeFree(pool, now);
      if (ip) return { pool, ip };
    }
    const detail = pools.map((p) => {
      const cooling = (this.q.coolingCount!.get(p.name, now - this.config.cooldownMs) as { n: number }).n;
      return `${p.name} (${p.size} addresses${cooling ? `, ${cooling} released less than ${this.config.cooldownMs / 1000}s ago` : ""})`;
    }).join(", ");
    throw new ApiError("pool_exhausted", `no free IPv${pools[0]!.family} address in ${detail}; ` +
      "release unused reservations (ipamctl reservations / release) or add a range to the pool");
  }

  /**
   * Never-used addresses first (a cursor over the usable ranges; cost independent of how many
   * are taken), then the least recently released address whose cooldown has passed.
   */
  private takeFree(pool: Pool, now: number): string | null {
    const saved = this.q.cursor!.get(pool.name) as { next: string; fingerprint: string } | undefined;
    let next: bigint | null = saved && saved.fingerprint === pool.fingerprint
      ? (saved.next === "" ? null : BigInt(saved.next))
      : pool.segments[0]!.first;
    while (next !== null) {
      const candidate = firstUsableAtOrAfter(pool, next);
      if (candidate === null) { next = null; break; }
      next = candidate + 1n;
      const text = formatIp(pool.family, candidate);
      if (this.q.ipTaken!.get(text, text) !== undefined) continue; // pinned ahead of the cursor, or cooling
      this.q.saveCursor!.run(pool.name, next.toString(), pool.fingerprint);
      return text;
    }
    this.q.saveCursor!.run(pool.name, "", pool.fingerprint);
    for (;;) {
      const row = this.q.oldestReleased!.get(pool.name, now - this.config.cooldownMs) as { ip: string } | undefined;
      if (!row) return null;
      this.q.dropReleased!.run(row.ip);
      const ip = parseIp(row.ip)!;
      // The config may have shrunk the pool since the address was released.
      if (isUsable(pool, ip.family, ip.value) && this.q.byIp!.get(row.ip) === undefined) return row.ip;
    }
  }

  private insert(
    pool: Pool, ip: string, owner: { owner: string; namespace?: string; statefulset?: string; ordinal?: number },
    sticky: boolean, pinned: boolean,
    attachment: { container_id: string; ifname: string; network: string; pod_namespace: string | null; pod_name: string | null; pod_uid: string | null } | null,
    now: number,
  ): Row {
    const info = this.q.insert!.run({
      ip, pool: pool.name, family: pool.family, owner: owner.owner,
      kind: owner.statefulset ? "statefulset" : "attachment",
      sticky: sticky ? 1 : 0, pinned: pinned ? 1 : 0,
      namespace: owner.namespace ?? null, statefulset: owner.statefulset ?? null, ordinal: owner.ordinal ?? null,
      container_id: attachment?.container_id ?? null, ifname: attachment?.ifname ?? null, network: attachment?.network ?? null,
      pod_namespace: attachment?.pod_namespace ?? null, pod_name: attachment?.pod_name ?? null, pod_uid: attachment?.pod_uid ?? null,
      created_at: now, attached_at: attachment ? now : null, detached_at: attachment ? null : now,
    });
    return this.rowById(Number(info.lastInsertRowid));
  }

  private rowById(id: number): Row {
    return this.q.byId!.get(id) as Row;
  }

  /** CNI DEL / GC of one address: sticky ones are detached and kept (true), others freed. */
  private letGo(row: Row, now: number): boolean {
    if (!row.sticky) { this.free(row, now); return false; }
    this.q.detach!.run(now, row.id);
    return true;
  }

  /**
   * Ends a reservation (operator release, pin, or a member's new pinned address). An address a running container uses is
   * never freed here: it stays held by that attachment, owned by containerID/ifName and not
   * sticky, until the container's CNI DEL or GC frees it into the cooldown. True when still held.
   */
  private endReservation(row: Row, now: number): boolean {
    if (!row.container_id) { this.free(row, now); return false; }
    if (row.sticky || row.kind === "statefulset") this.q.handToAttachment!.run(`${row.container_id}/${row.ifname}`, row.id);
    return true;
  }

  /**
   * The member's addresses that a pin in `pool` replaces: same family, in pools serving a network
   * in common with `pool` (addresses for other networks are kept). Reads the member's few rows
   * through the owner index.
   */
  private previousAddresses(owner: string, pool: Pool): Row[] {
    return (this.q.byOwner!.all(owner) as Row[]).filter((r) => {
      const other = this.poolsByName.get(r.pool);
      return r.family === pool.family && other !== undefined && this.shareNetwork(pool, other);
    });
  }

  /**
   * Whether two pools of one family serve a network in common on this node. A pool without
   * `networks` serves every network, except those a pool of this node names explicitly for that
   * family (the same preference as usablePools).
   */
  private shareNetwork(a: Pool, b: Pool): boolean {
    if (a.name === b.name) return true;
    if (!a.networks && !b.networks) return true;
    if (a.networks && b.networks) return a.networks.some((n) => b.networks!.includes(n));
    const [open, named] = a.networks ? [b, a] : [a, b];
    return named.networks!.some((n) => !this.nodePools.some((p) => p.family === open.family && p.networks?.includes(n)));
  }

  private free(row: Row, now: number): void {
    this.q.delete!.run(row.id);
    this.q.addReleased!.run(row.ip, row.pool, now);
  }

  private prefixOf(row: Row): number {
    return this.poolsByName.get(row.pool)?.subnet.prefix ?? (row.family === 4 ? 32 : 128);
  }

  private response(rows: Row[]): AllocateResponse {
    const ips = rows.map((r) => {
      const pool = this.poolsByName.get(r.pool);
      return {
        pool: r.pool, family: r.family, address: `${r.ip}/${this.prefixOf(r)}`,
        ...(pool?.gateway ? { gateway: pool.gateway } : {}), ...(pool?.vlan !== undefined ? { vlan: pool.vlan } : {}),
      };
    });
    const routes: { dst: string; gw?: string }[] = [];
    const dns: AllocateResponse["dns"] = {};
    for (const r of rows) {
      const pool = this.poolsByName.get(r.pool);
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

  private view(r: Row): Reservation {
    const iso = (t: number | null): string | undefined => (t === null ? undefined : new Date(t).toISOString());
    const v: Reservation = {
      ip: r.ip, address: `${r.ip}/${this.prefixOf(r)}`, pool: r.pool, family: r.family, owner: r.owner, kind: r.kind,
      sticky: r.sticky === 1, pinned: r.pinned === 1, state: r.container_id ? "attached" : "detached",
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
}
