// The operator calls in cluster mode act on the shared identities in etcd, from any node: reserve ahead, pin,
// release, register/unregister a StatefulSet, and the cluster-wide listing of sticky reservations with the node each
// is bound to. A member's local row is not needed for any of them: the node where the member next attaches binds
// the identity and writes its row then; other nodes' stale rows follow etcd (ClusterNode's watch, and every ADD).
import type {
  PinRequest,
  PinResponse,
  RegisterResponse,
  ReleaseReservationRequest,
  ReleaseReservationsResponse,
  Reservation,
  ReservationFilter,
  ReservationsResponse,
  ReserveRequest,
  ReserveResponse,
  StatefulSetRequest,
  UnregisterResponse,
} from "../../api/types";
import { canonicalIp } from "../../lib/ip";
import { ApiError, reservationsAttached } from "../errors";
import { describePlacement, type Placement, type Pool, parseRequested, placementConstrains } from "../pools";
import { MAX_PAGE, type Views } from "../views";
import { ClusterError } from "./errors";
import type { IpOwner, StickyIdentity, StickyRecord } from "./keys";
import { parseJson } from "./keys";
import type { ClusterNode } from "./node";
import { clusterApiError, identityOf } from "./node-ownership";
import { stickyReservation } from "./sticky-events";

type Listed = { identity: StickyIdentity; record: StickyRecord };

export class ClusterOperator {
  constructor(
    private readonly c: ClusterNode,
    private readonly views: Views,
  ) {}

  private get pools() {
    return this.c.pools!;
  }
  private get store() {
    return this.c.store!;
  }
  private get me(): string {
    return this.c.config.nodeName;
  }

  // ---------- reads ----------

  /** This node's rows, with every sticky reservation of the cluster (etcd's view of them wins). */
  async reservations(f: ReservationFilter): Promise<ReservationsResponse> {
    let listed: Listed[];
    let cluster: ReservationsResponse["cluster"];
    try {
      listed = await this.c.own.listSticky(f.pool);
      cluster = { source: "etcd" };
    } catch (e) {
      listed = [...this.c.own.stickyView]
        .map(([name, record]) => ({
          identity: this.c.keys.identityFromKey(`${this.c.keys.prefix}/sticky/${name}`),
          record,
        }))
        .filter((x) => !f.pool || x.identity.pool === f.pool);
      cluster = { source: "cache", detail: `etcd unreachable, this node's last watched view: ${(e as Error).message}` };
    }
    const ip = f.ip ? (canonicalIp(f.ip) ?? f.ip) : undefined;
    // This node's rows, every page (the merged listing has no cursor of its own: it is cut at one page below).
    const local: Reservation[] = [];
    for (let after: string | undefined; ; ) {
      const page = this.views.reservations({ ...f, limit: MAX_PAGE, ...(after ? { after } : {}) });
      local.push(...page.reservations);
      if (!page.next) break;
      after = page.next;
    }
    const out: Reservation[] = local.filter((r) => !r.sticky).map((r) => ({ ...r, node: this.me }));
    const localSticky = new Map(local.filter((r) => r.sticky).map((r) => [`${r.owner} ${r.pool}`, r]));
    for (const x of listed) {
      const v = this.view(x);
      if (f.namespace && v.namespace !== f.namespace) continue;
      if (f.statefulset && v.statefulset !== f.statefulset) continue;
      if (f.owner && v.owner !== f.owner) continue;
      if (ip && v.ip !== ip) continue;
      if (f.state && v.state !== f.state) continue;
      const mine = localSticky.get(`${v.owner} ${v.pool}`);
      out.push(mine && mine.ip === v.ip && x.record.node === this.me ? { ...mine, node: this.me } : v);
    }
    out.sort(
      (a, b) =>
        cmp(a.pool, b.pool) ||
        cmp(a.namespace ?? "", b.namespace ?? "") ||
        cmp(a.statefulset ?? "", b.statefulset ?? "") ||
        (a.ordinal ?? -1) - (b.ordinal ?? -1) ||
        cmp(a.ip, b.ip),
    );
    const limit = Math.min(f.limit ?? MAX_PAGE, MAX_PAGE);
    return { reservations: out.slice(0, limit), truncated: out.length > limit, cluster };
  }

  private view(x: Listed): Reservation {
    return stickyReservation(this.pools, x.identity, x.record);
  }

  // ---------- StatefulSets ----------

  async register(req: StatefulSetRequest): Promise<RegisterResponse> {
    await this.etcd("register", () =>
      this.c.client.put(this.c.keys.statefulSet(req.namespace, req.statefulset), JSON.stringify({ node: this.me, at: Date.now() })),
    );
    await this.c.sync("register", () => this.store.registerStatefulSet(req.namespace, req.statefulset, Date.now()));
    return { registered: req };
  }

  async unregister(req: StatefulSetRequest): Promise<UnregisterResponse> {
    const deleted = await this.etcd("unregister", () => this.c.client.delete(this.c.keys.statefulSet(req.namespace, req.statefulset)));
    const local = await this.c.sync("unregister", () => this.store.unregisterStatefulSet(req.namespace, req.statefulset));
    const configured = this.c.config.statefulSets.some((s) => s.namespace === req.namespace && s.name === req.statefulset);
    return { unregistered: deleted > 0 || local, configured };
  }

  // ---------- reserve ahead ----------

  /**
   * Identities for ordinals 0..replicas-1 (existing ones kept, wherever bound); all or nothing. `unbound`: the new
   * identities are bound to no node (node "") until a pod attaches (reserve at creation, done once for the cluster).
   */
  async reserve(req: ReserveRequest, o: { unbound?: boolean; placement?: Placement } = {}): Promise<ReserveResponse> {
    const usable =
      o.placement && placementConstrains(o.placement)
        ? this.pools.usable(req.network, req.pools, { placement: o.placement, what: describePlacement(o.placement) })
        : this.pools.usable(req.network, req.pools);
    await this.register({ namespace: req.namespace, statefulset: req.statefulset });
    const created: StickyIdentity[] = [];
    const out: Reservation[] = [];
    try {
      for (const family of [4, 6] as const) {
        const familyPools = usable.filter((p) => p.family === family);
        if (familyPools.length === 0) continue;
        const members = Array.from({ length: req.replicas }, (_, ordinal) => ({
          namespace: req.namespace,
          statefulset: req.statefulset,
          ordinal,
        }));
        const existing = new Map<number, Listed>();
        // Which members exist already: one read transaction of at most 128 keys per group of members.
        const perRead = Math.max(1, Math.floor(128 / familyPools.length));
        const found = await mapLimit(chunks(members, perRead), 4, (group) =>
          this.c.own.getSticky(group.flatMap((m) => familyPools.map((p) => identityOf(m, p.name)))),
        );
        for (const x of found.flat()) if (!existing.has(x.identity.ordinal)) existing.set(x.identity.ordinal, x);
        const missing = members.filter((m) => !existing.has(m.ordinal));
        await this.c.own.ensureBuffered(familyPools[0]!.name, Math.min(missing.length, 1024));
        // Up to 64 members a transaction from the first pool's buffer; what a batch did not create (a race, an empty
        // buffer, the next pool of the family) one transaction each.
        const batched = new Map<number, Listed>();
        await mapLimit(chunks(missing, 64), 4, async (chunk) => {
          const bound = await this.c.own.createSticky(
            chunk.map((m) => identityOf(m, familyPools[0]!.name)),
            { unbound: o.unbound === true },
          );
          for (const b of bound) {
            if (!b) continue;
            created.push(b.identity);
            batched.set(b.identity.ordinal, { identity: b.identity, record: b.record });
          }
        });
        const rest = missing.filter((m) => !batched.has(m.ordinal));
        const results = await mapLimit(rest, 16, (m) => this.createReservation(m, familyPools, created, o.unbound === true));
        for (const [i, m] of rest.entries()) batched.set(m.ordinal, results[i]!);
        for (const m of members) out.push(this.view(existing.get(m.ordinal) ?? batched.get(m.ordinal)!));
      }
    } catch (e) {
      for (const identity of created)
        await this.c.own.applyOutbox([{ id: 0, createdAt: 0, op: "release-sticky", identity }]).catch(() => undefined);
      throw clusterApiError(e, `reserve of ${req.namespace}/${req.statefulset}`);
    }
    out.sort((a, b) => (a.ordinal ?? 0) - (b.ordinal ?? 0) || a.family - b.family);
    return { statefulset: { namespace: req.namespace, name: req.statefulset }, reservations: out };
  }

  private async createReservation(
    m: { namespace: string; statefulset: string; ordinal: number },
    familyPools: Pool[],
    created: StickyIdentity[],
    unbound: boolean,
  ): Promise<Listed> {
    for (let i = 0; i < familyPools.length; i++) {
      const identity = identityOf(m, familyPools[i]!.name);
      try {
        // The batch read in reserve found no identity of this member: the bind starts from that (a create that lost a
        // race re-reads), and its result is what etcd holds: one transaction per new member.
        const b = await this.c.own.bindSticky(identity, { selectsNode: true, reserveOnly: true, unbound, current: null });
        if (b.created) created.push(identity);
        return { identity, record: b.record };
      } catch (e) {
        if (!(e instanceof ClusterError && e.code === "pool_exhausted") || i === familyPools.length - 1) throw e;
      }
    }
    throw new Error("unreachable");
  }

  // ---------- pin ----------

  async pin(req: PinRequest): Promise<PinResponse> {
    const target = this.pools.locate(req.ip, this.pools.selected, "ip");
    const m = { namespace: req.namespace, statefulset: req.statefulset, ordinal: req.ordinal };
    const identity = identityOf(m, target.pool.name);
    await this.register({ namespace: req.namespace, statefulset: req.statefulset });
    let r;
    try {
      r = await this.c.own.pinSticky(identity, target.ip, { force: req.force });
    } catch (e) {
      throw clusterApiError(e, `pin of ${target.ip} to ${req.namespace}/${req.statefulset}/${req.ordinal}`);
    }
    this.c.markBound(identity, r.revision);
    await this.follow([identity]);
    const [x] = await this.c.own.getSticky([identity]);
    return {
      reservation: this.view(x!),
      released: r.previousIp ? [r.previousIp] : [],
      heldByContainer: r.previousHeldBy && r.previousIp ? [r.previousIp] : [],
    };
  }

  // ---------- release ----------

  /** A StatefulSet's sticky identities as etcd has them now (the release policy's view, ipamd/kube/members.ts). */
  async stickyOf(namespace: string, statefulset: string): Promise<Reservation[]> {
    return (await this.byStatefulSet({ namespace, statefulset })).map((x) => this.view(x));
  }

  async releaseReservations(req: ReleaseReservationRequest): Promise<ReleaseReservationsResponse> {
    const targets = req.ip ? await this.byIp(req.ip, req.force === true) : await this.byStatefulSet(req);
    if (targets === "held") return { released: [], heldByContainer: [] };
    const attached = targets.filter((x) => x.record.attachment);
    if (attached.length > 0 && !req.force) {
      throw reservationsAttached(
        attached.map(
          (x) =>
            `${x.record.ip} (${this.view(x).owner}, container ${x.record.attachment!.containerID} ` +
            `on node ${x.record.attachment!.node})`,
        ),
      );
    }
    for (const x of targets) {
      const r = await this.c.own.applyOutbox([
        { id: 0, createdAt: Date.now(), op: "release-sticky", identity: x.identity, force: req.force },
      ]);
      if (r.error) throw clusterApiError(r.error, `release of ${this.view(x).owner}`);
    }
    await this.follow(targets.map((x) => x.identity));
    if (!req.ip && req.ordinal === undefined && !req.pool)
      await this.unregister({ namespace: req.namespace!, statefulset: req.statefulset! });
    return {
      released: targets.map((x) => this.view(x)),
      heldByContainer: attached.map((x) => ({
        ...this.view(x),
        owner: `${x.record.attachment!.containerID}/${x.record.attachment!.ifName}`,
        kind: "attachment",
        sticky: false,
        pinned: false,
        node: x.record.attachment!.node,
      })),
    };
  }

  private async byIp(text: string, force: boolean): Promise<Listed[] | "held"> {
    const ip = parseRequested(text, "ip").canonical;
    const pool = this.pools.all.find((p) => {
      try {
        this.pools.locate(ip, [p], "ip");
        return true;
      } catch {
        return false;
      }
    });
    if (!pool) throw new ApiError("not_found", `no reservation holds ${ip} (it is in no pool)`, "ip");
    const kv = await this.etcd("release", () => this.c.client.get(this.c.keys.ip(pool.name, ip)));
    const v = kv ? parseJson<IpOwner>(kv.value, kv.key) : null;
    if (v?.owner === "sticky") {
      const identity = this.c.keys.identityFromKey(`${this.c.keys.prefix}/sticky/${pool.name}/${v.identity}`);
      const found = await this.etcd("release", () => this.c.own.getSticky([identity]));
      if (found.length) return found;
    }
    if (v?.owner === "attachment") {
      if (!force) {
        throw new ApiError(
          "reservation_attached",
          `${ip} is in use by container ${v.attachment.containerID} on node ${v.node}; it is ` +
            "freed by that container's CNI DEL or GC (force does not free an address in use)",
        );
      }
      return "held";
    }
    if (v?.owner === "cooling") {
      throw new ApiError(
        "not_found",
        `no reservation holds ${ip}: ${v.identity} released it, and it is free again from ${new Date(v.until).toISOString()} ` +
          "(the cooldown, cooldownSeconds)",
        "ip",
      );
    }
    throw new ApiError("not_found", `no reservation holds ${ip}`, "ip");
  }

  private async byStatefulSet(req: ReleaseReservationRequest): Promise<Listed[]> {
    const pools = req.pool ? [req.pool] : this.pools.all.map((p) => p.name);
    const out: Listed[] = [];
    for (const pool of pools) {
      const prefix = `${this.c.keys.poolSticky(pool)}${req.namespace}/${req.statefulset}/`;
      const r = await this.etcd("release", () => this.c.client.range(prefix, { prefix: true }));
      for (const kv of r.kvs) {
        const identity = this.c.keys.identityFromKey(kv.key);
        if (req.ordinal === undefined || identity.ordinal === req.ordinal) {
          out.push({ identity, record: parseJson<StickyRecord>(kv.value, kv.key) });
        }
      }
    }
    return out;
  }

  /** This node's rows of these identities follow etcd now (other nodes follow through their watch). */
  private async follow(ids: StickyIdentity[]): Promise<void> {
    const found = new Map((await this.c.own.getSticky(ids).catch(() => [])).map((x) => [this.c.keys.sticky(x.identity), x.record]));
    await this.c.sync("operator call", () => {
      for (const id of ids) this.c.ownershipSeam.followRecord(id, found.get(this.c.keys.sticky(id)) ?? null);
    });
  }

  private async etcd<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw clusterApiError(e, what);
    }
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `items` in consecutive slices of `size` (the last one shorter). */
function chunks<T>(items: T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(items.length / size) }, (_, i) => items.slice(i * size, (i + 1) * size));
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!);
    }),
  );
  return out;
}
