// Cluster mode behind THE SEAM (ipamd/ownership.ts): the rules (allocator.ts) keep deciding what a request does and
// keep the local record; this decides which address is free for it by asking etcd, before the commit, and carries
// what the commit changed back to etcd, through the SQLite outbox, after it.
//
// prepare(op), awaited outside the transaction, does every etcd round trip the request needs:
//   ordinary ADD  -> an address from this node's buffer (claimed now when the buffer is empty; no etcd on the hot path,
//                    not even afterwards: the key stays "buffer of this node")
//   sticky ADD    -> the member's identity bound to this node in one compare-and-swap (rebind, or create from the buffer)
//   ADD with ips  -> the exact address claimed create-if-absent (a member's: pinned to its identity)
// The synchronous calls inside the savepoint only hand the rules what prepare got, reconcile the member's local row
// with what etcd said, and queue outbox records in the same commit: a DEL's `release` or `detach-sticky`. After the
// commit the outbox is applied (ClusterNode drains it, with backoff while etcd is down).
import { ApiError } from "../errors";
import type { Family } from "../../lib/ip";
import type { AllocateRequest, GcRequest, ReleaseResponse, GcResponse } from "../../api/types";
import type { AddressOwnership, OwnershipOp, OwnershipTicket } from "../ownership";
import type { Located, NodePools, Pool } from "../pools";
import { type Member, ownerOf, type StatefulSets } from "../statefulsets";
import type { Row, Statements } from "../store/statements";
import { ClusterError, l2Domain } from "./errors";
import { type EtcdError, EtcdOutcomeUnknown, EtcdUnavailable } from "./etcd";
import { parseJson, type StickyIdentity, type StickyRecord } from "./keys";
import type { ClusterStore } from "./local-store";
import type { BufferedAddress, ClusterOwnership, OutboxOp } from "./ownership";

/** The iface segment of an identity: the rules key stickiness by member and pool (one address per pool, any interface). */
export const MEMBER_IFACE = "-";

export function identityOf(m: { namespace: string; statefulset: string; ordinal: number }, pool: string): StickyIdentity {
  return { pool, namespace: m.namespace, statefulset: m.statefulset, ordinal: m.ordinal, iface: MEMBER_IFACE };
}

/** What etcd says about one member's identity in one pool. */
interface Binding {
  owner: string;
  member: Member;
  pool: string;
  ip: string;
  pinned: boolean;
}

interface ClusterTicket extends OwnershipTicket {
  /** Buffered addresses prepared per family for take(). */
  taken: Map<Family, BufferedAddress>;
  /** Exact addresses claimed in etcd for this attachment (ips), by ip. */
  claimed: Map<string, string>;
  bindings: Binding[];
  /** Pools where etcd holds no identity of the member (its local rows there are stale). */
  absent: { owner: string; pools: string[] }[];
  /** Addresses whose etcd state prepare already settled: the rules' giveBack/endSticky add nothing for them. */
  settled: Set<string>;
  /** gc: the container each attached address had before the rule ran. */
  containers: Map<string, string>;
  used: Set<string>;
  wroteOutbox: boolean;
}

export interface ClusterNodeDeps {
  node: string;
  store: Statements;
  pools: NodePools;
  statefulSets: StatefulSets;
  own: ClusterOwnership;
  local: ClusterStore;
  /** Outbox records were written: apply them soon. */
  kick: () => void;
  /** Outbox rows already applied to etcd: deleted in the current commit. */
  takeApplied: () => number[];
  /** Applies the outbox now; resolves when it is empty, etcd is unreachable, or after `maxWaitMs`. */
  flush: (maxWaitMs: number) => Promise<void>;
  /** A StatefulSet registered cluster-wide but unknown here: make it known locally (through the group commit). */
  learnStatefulSet: (namespace: string, podName: string) => Promise<boolean>;
  onInconsistency: (message: string, detail: Record<string, unknown>) => void;
  /** This node bound an identity at this etcd revision (a watch event older than it must not undo the local row). */
  bound: (identity: StickyIdentity, revision: number) => void;
}

/** Maps the cluster layer's failures onto API errors; a retryable one becomes CNI code 11 in the plugin. */
export function clusterApiError(e: unknown, what: string): unknown {
  if (e instanceof ApiError) return e;
  if (e instanceof EtcdUnavailable) return new ApiError("cluster_unavailable", `${what} needs etcd: ${e.message}`);
  if (e instanceof EtcdOutcomeUnknown) {
    return new ApiError("cluster_unavailable", `${what}: ${e.message}; etcd is failing over, retry`);
  }
  if (e instanceof ClusterError) {
    switch (e.code) {
      case "pool_exhausted":
        return new ApiError("pool_exhausted", e.message);
      case "l2_domain":
        return new ApiError("l2_domain", e.message);
      case "attached_elsewhere":
        return new ApiError("attached_elsewhere", e.message);
      case "reservation_attached":
        return new ApiError("reservation_attached", e.message);
      case "ip_unavailable":
        return new ApiError("ip_unavailable", e.message);
      case "fenced":
        return new ApiError("cluster_unavailable", e.message);
      case "inconsistent":
        return new ApiError(e.retryable ? "cluster_unavailable" : "internal", e.message);
    }
  }
  if (e && typeof e === "object" && "endpoint" in e) {
    return new ApiError("cluster_unavailable", `${what}: ${(e as EtcdError).message}`);
  }
  return e;
}

export class ClusterNodeOwnership implements AddressOwnership {
  constructor(private readonly d: ClusterNodeDeps) {}

  // ---------- step 1: prepare (etcd) ----------

  async prepare(op: OwnershipOp): Promise<OwnershipTicket> {
    const t: ClusterTicket = {
      op,
      taken: new Map(),
      claimed: new Map(),
      bindings: [],
      absent: [],
      settled: new Set(),
      containers: new Map(),
      used: new Set(),
      wroteOutbox: false,
    };
    try {
      if (op.kind === "allocate") await this.prepareAllocate(op.req, t);
      if (op.kind === "gc") this.captureContainers(op.req, t);
    } catch (e) {
      this.abandoned(t);
      throw clusterApiError(e, describe(op));
    }
    return t;
  }

  /**
   * Addresses taken from the buffer by requests that have not committed yet: in neither the buffer nor SQLite, and
   * still this node's buffer keys in etcd (what a write-back after an etcd restore must put there again).
   */
  private readonly taking = new Map<string, BufferedAddress>();

  inFlight(): BufferedAddress[] {
    return [...this.taking.values()];
  }

  /**
   * The address key's ModRevision when an ordinary ADD took it from the buffer ("pool ip"; no etcd write since, in
   * the usual case): its DEL's release compares against it instead of reading the key first. Lost at a restart.
   */
  private readonly takenAt = new Map<string, number>();

  isTaking(pool: string, ip: string): boolean {
    return this.taking.has(`${pool} ${ip}`);
  }

  private async prepareAllocate(req: AllocateRequest, t: ClusterTicket): Promise<void> {
    const { store, pools, statefulSets, own } = this.d;
    // An idempotent ADD gets the local answer without etcd. Only the etcd paths look (a sticky bind, an exact claim, a
    // StatefulSet lookup): an ordinary ADD's buffered address goes back unused when the rules find the attachment.
    const attached = (): boolean => store.byAttachment(req.containerID, req.ifName, req.network).length > 0;
    let sts = statefulSets.memberOf(req.podNamespace, req.podName, req.podUID);
    if (!sts && req.podNamespace && req.podName && /-(0|[1-9][0-9]{0,6})$/.test(req.podName)) {
      if (attached()) return;
      if (await this.d.learnStatefulSet(req.podNamespace, req.podName))
        sts = statefulSets.memberOf(req.podNamespace, req.podName, req.podUID);
    }
    if ((sts || req.ips?.length) && attached()) return;
    let usable: Pool[];
    let wanted: Map<Family, Located>;
    try {
      usable = pools.usable(req.network, req.pools);
      wanted = pools.requested(req.ips, usable);
    } catch (e) {
      if (attached()) return; // the rules answer from the local record, as before any config change
      throw e;
    }
    const attachment = { containerID: req.containerID, ifName: req.ifName, ...(req.podUID ? { podUID: req.podUID } : {}) };
    for (const family of [4, 6] as const) {
      const familyPools = usable.filter((p) => p.family === family);
      if (familyPools.length === 0) continue;
      const want = wanted.get(family);
      if (sts && !this.secondInterface(sts, familyPools, req)) {
        await this.prepareMember(sts, family, familyPools, want, req, attachment, t);
      } else if (want) {
        await own.claimExact(want.pool.name, want.ip, attachment);
        t.claimed.set(want.ip, want.pool.name);
      } else {
        const a = await this.takeFor(familyPools, attached);
        if (!a) return; // idempotent ADD with an empty buffer: the local answer, no claim
        t.taken.set(family, a);
        this.taking.set(`${a.pool} ${a.ip}`, a);
      }
    }
  }

  /** The rules give a member's second interface in the same pool an address of its own (not sticky). */
  private secondInterface(sts: Member, familyPools: Pool[], req: AllocateRequest): boolean {
    const local = this.d.store.stickyByOwner(sts.owner).find((r) => familyPools.some((p) => p.name === r.pool));
    return local?.container_id === req.containerID && local.ifname !== req.ifName;
  }

  private async prepareMember(
    sts: Member,
    family: Family,
    familyPools: Pool[],
    want: Located | undefined,
    req: AllocateRequest,
    attachment: { containerID: string; ifName: string; podUID?: string },
    t: ClusterTicket,
  ): Promise<void> {
    const { own, pools, node } = this.d;
    // Every pool of the family open to the network, selecting this node or not: the L2-domain rule needs them all.
    const candidates = pools.all.filter(
      (p) =>
        p.family === family &&
        (req.pools?.length ? req.pools.includes(p.name) : req.network === undefined || !p.networks || p.networks.includes(req.network)),
    );
    // One pool to look in (the common case): the sticky watch's view is the bind's starting guess, checked by its
    // compares (no read first). Several pools: read them all (the L2-domain rule and a move between pools need them).
    const guess = candidates.length === 1 && !want ? own.cachedSticky(identityOf(sts, candidates[0]!.name)) : undefined;
    const found =
      guess === undefined
        ? await own.getSticky(candidates.map((p) => identityOf(sts, p.name)))
        : guess
          ? [{ identity: identityOf(sts, candidates[0]!.name), record: parseJson<StickyRecord>(guess.value, guess.key), kv: guess }]
          : [];
    const here = found.find((f) => familyPools.some((p) => p.name === f.identity.pool));
    const outside = found.find((f) => !pools.selected.some((p) => p.name === f.identity.pool));
    if (!here && outside && !want) {
      const pool = pools.get(outside.identity.pool)!;
      throw l2Domain(pool.name, pool.selector, node);
    }
    const foundPools = new Set(found.map((f) => f.identity.pool));
    t.absent.push({ owner: sts.owner, pools: candidates.map((p) => p.name).filter((p) => !foundPools.has(p)) });
    if (want) {
      if (here && here.identity.pool !== want.pool.name) {
        // the member moves to another pool of the family: end the old identity
        await this.applyNow({ op: "release-sticky", identity: here.identity, force: true });
        t.settled.add(here.record.ip);
        t.absent.push({ owner: sts.owner, pools: [here.identity.pool] });
      }
      const r = await own.pinSticky(identityOf(sts, want.pool.name), want.ip, { attachment, force: true });
      this.d.bound(identityOf(sts, want.pool.name), r.revision);
      if (r.previousIp) t.settled.add(r.previousIp);
      t.bindings.push({ owner: sts.owner, member: sts, pool: want.pool.name, ip: want.ip, pinned: true });
      return;
    }
    const order = here ? [here.identity.pool] : familyPools.map((p) => p.name);
    for (let i = 0; i < order.length; i++) {
      try {
        // The bind starts from the read (or the guess) above: one compare-and-swap when nothing changed meanwhile.
        const current = here ? here.kv : order.length === 1 || i === 0 ? null : undefined;
        const b = await own.bindSticky(identityOf(sts, order[i]!), {
          selectsNode: true,
          attachment,
          ...(current !== undefined ? { current, guess: guess !== undefined } : {}),
        });
        this.d.bound(b.identity, b.stickyModRevision);
        t.bindings.push({ owner: sts.owner, member: sts, pool: order[i]!, ip: b.ip, pinned: b.record.pinned === true });
        return;
      } catch (e) {
        if (!(e instanceof ClusterError && e.code === "pool_exhausted") || i === order.length - 1) throw e;
      }
    }
  }

  /**
   * A buffered address from the first pool that has one, else (unless the ADD is one already answered: null) claimed
   * now, pool by pool, else pool_exhausted.
   */
  private async takeFor(familyPools: Pool[], attached: () => boolean): Promise<BufferedAddress | null> {
    for (const p of familyPools) {
      const a = this.d.own.takeBuffered(p.name);
      if (a) return a;
    }
    if (attached()) return null;
    const exhausted: string[] = [];
    for (const p of familyPools) {
      try {
        return await this.d.own.claimFree(p.name);
      } catch (e) {
        if (!(e instanceof ClusterError && e.code === "pool_exhausted")) throw e;
        exhausted.push(e.message);
      }
    }
    throw new ApiError("pool_exhausted", exhausted.join("; "));
  }

  private captureContainers(req: GcRequest, t: ClusterTicket): void {
    for (const row of this.d.store.attachedOnNetwork(req.network, Date.now() + 1)) t.containers.set(row.ip, row.container_id!);
  }

  private async applyNow(rec: OutboxOp): Promise<void> {
    const r = await this.d.own.applyOutbox([{ ...rec, id: 0, createdAt: Date.now() }]);
    if (r.error) throw r.error;
  }

  // ---------- step 2: inside the savepoint (synchronous) ----------

  take(pools: readonly Pool[], _now: number, ticket: OwnershipTicket): Located {
    const t = ticket as ClusterTicket;
    const family = pools[0]!.family;
    const a = t.taken.get(family);
    const pool = a && pools.find((p) => p.name === a.pool);
    if (!a || !pool) {
      throw new ApiError(
        "internal",
        `cluster ownership: the rules asked for a free IPv${family} address that prepare did not ` +
          `claim (${describe(t.op)}); this is a bug, please report it`,
      );
    }
    t.taken.delete(family);
    this.taking.delete(`${a.pool} ${a.ip}`);
    if (a.modRevision) this.takenAt.set(`${a.pool} ${a.ip}`, a.modRevision);
    this.clearStale(a.ip, a.pool);
    t.used.add(a.ip);
    // No outbox record and no etcd write: the address key already says "owned by this node" (its buffer), which is
    // all other nodes need; which sandbox uses it is this node's SQLite's business. Node death frees buffered and
    // plain attached addresses alike, after the grace period. Its row in the persisted buffer stays too, as the key
    // does (one write less per ADD): a start without etcd takes that copy minus what the rows use.
    return { pool, ip: a.ip };
  }

  claim(address: Located, _now: number, ticket: OwnershipTicket): void {
    const t = ticket as ClusterTicket;
    const bound = t.bindings.some((b) => b.ip === address.ip);
    if (!t.claimed.has(address.ip) && !bound) {
      throw new ApiError(
        "internal",
        `cluster ownership: ${address.ip} was not claimed in etcd before the commit (${describe(t.op)}); ` +
          "this is a bug, please report it",
      );
    }
    t.used.add(address.ip);
    this.d.local.bufferRemove(address.pool.name, address.ip);
  }

  giveBack(ip: string, pool: string, _now: number, ticket: OwnershipTicket): void {
    const t = ticket as ClusterTicket;
    if (t.settled.has(ip)) return;
    const containerID = t.op.kind === "release" ? t.op.req.containerID : (t.containers.get(ip) ?? "");
    const modRevision = this.takenAt.get(`${pool} ${ip}`);
    this.takenAt.delete(`${pool} ${ip}`);
    this.queue(t, { op: "release", pool, ip, containerID, keepInBuffer: true, ...(modRevision ? { modRevision } : {}) });
  }

  findSticky(owner: string, ticket: OwnershipTicket): Row[] {
    const t = ticket as ClusterTicket;
    for (const a of t.absent.filter((x) => x.owner === owner)) {
      for (const pool of a.pools) this.followEtcd(owner, pool, null);
    }
    for (const b of t.bindings.filter((x) => x.owner === owner)) this.followEtcd(owner, b.pool, b);
    return this.d.store.stickyByOwner(owner);
  }

  bindSticky(row: Row, ticket: OwnershipTicket): void {
    const t = ticket as ClusterTicket;
    if (!t.bindings.some((b) => b.owner === row.owner && b.pool === row.pool && b.ip === row.ip)) {
      throw new ApiError(
        "internal",
        `cluster ownership: sticky ${row.owner} -> ${row.ip} was not bound in etcd before the commit ` +
          `(${describe(t.op)}); this is a bug, please report it`,
      );
    }
  }

  endSticky(row: Row, ticket: OwnershipTicket): void {
    const t = ticket as ClusterTicket;
    if (t.settled.has(row.ip)) return;
    if (t.op.kind === "allocate" && t.bindings.some((b) => b.owner === row.owner)) {
      t.settled.add(row.ip);
      return;
    }
    this.queue(t, { op: "release-sticky", identity: identityOf(memberOfRow(row), row.pool) });
    t.settled.add(row.ip);
  }

  inCommit(ticket: OwnershipTicket, result: unknown): void {
    const t = ticket as ClusterTicket;
    this.d.local.drop(this.d.takeApplied()); // rides on this commit: no fsync of its own
    if (t.op.kind === "release") {
      const containerID = t.op.req.containerID;
      for (const ip of (result as ReleaseResponse).kept) this.queueDetach(t, ip, containerID);
    } else if (t.op.kind === "gc") {
      for (const ip of (result as GcResponse).detached) this.queueDetach(t, ip, t.containers.get(ip) ?? "");
    }
  }

  private queueDetach(t: ClusterTicket, ip: string, containerID: string): void {
    const row = this.d.store.byIp(ip);
    if (row?.sticky) this.queue(t, { op: "detach-sticky", identity: identityOf(memberOfRow(row), row.pool), containerID, ip });
  }

  private queue(t: ClusterTicket, rec: OutboxOp): void {
    this.d.local.enqueue(rec, Date.now());
    t.wroteOutbox = true;
  }

  // ---------- after the commit ----------

  committed(ticket: OwnershipTicket): void | Promise<void> {
    const t = ticket as ClusterTicket;
    this.returnUnused(t);
    if (!t.wroteOutbox) return;
    // A DEL answers once etcd has its release (a member recreated on another node then finds it detached), but
    // never waits long: with etcd unreachable it answers at once and the outbox applies it later.
    if (t.op.kind === "release" || t.op.kind === "gc") return this.d.flush(1000);
    this.d.kick();
  }

  abandoned(ticket: OwnershipTicket): void {
    const t = ticket as ClusterTicket;
    this.returnUnused(t);
    if (t.op.kind === "allocate") {
      // etcd was changed for a request that did not commit: take the attachment back off (the binding stays, detached).
      for (const b of t.bindings) {
        this.d.local.enqueue(
          { op: "detach-sticky", identity: identityOf(b.member, b.pool), containerID: t.op.req.containerID, ip: b.ip },
          Date.now(),
        );
        t.wroteOutbox = true;
      }
    }
    if (t.wroteOutbox) this.d.kick();
  }

  /** Buffered addresses the rules did not use go back; exact claims they did not use are released (outbox). */
  private returnUnused(t: ClusterTicket): void {
    for (const a of t.taken.values()) {
      this.taking.delete(`${a.pool} ${a.ip}`);
      this.d.own.putBack(a);
    }
    t.taken.clear();
    if (t.op.kind !== "allocate") return;
    for (const [ip, pool] of t.claimed) {
      if (t.used.has(ip)) continue;
      this.d.local.enqueue({ op: "release", pool, ip, containerID: t.op.req.containerID, keepInBuffer: true }, Date.now());
      t.wroteOutbox = true;
    }
  }

  // ---------- the local record follows etcd ----------

  /**
   * Makes this node's sticky row of `owner` in `pool` agree with etcd: `binding` (the identity is bound here to that
   * address) or null (etcd holds no identity of it here: released, moved to another node or to another address).
   * A stale detached row is removed; a stale row a running container uses is handed to that attachment (it keeps
   * the address until its DEL, as etcd's key says). Inside the savepoint of a request or of a sync.
   */
  followEtcd(owner: string, pool: string, binding: { ip: string; member: Member; pinned: boolean } | null): void {
    const { store } = this.d;
    for (const row of store.stickyByOwner(owner).filter((r) => r.pool === pool)) {
      if (binding && row.ip === binding.ip) continue;
      this.dropStale(row, binding ? `bound to ${binding.ip} in etcd` : "no identity in etcd on this node");
    }
    if (!binding || store.stickyByOwner(owner).some((r) => r.pool === pool)) return;
    this.clearStale(binding.ip, pool);
    const p = this.d.pools.get(pool)!;
    const now = Date.now();
    store.insert({
      ip: binding.ip,
      pool,
      family: p.family,
      owner,
      kind: "statefulset",
      sticky: 1,
      pinned: binding.pinned ? 1 : 0,
      namespace: binding.member.namespace,
      statefulset: binding.member.statefulset,
      ordinal: binding.member.ordinal,
      container_id: null,
      ifname: null,
      network: null,
      pod_namespace: null,
      pod_name: null,
      pod_uid: null,
      created_at: now,
      attached_at: null,
      detached_at: now,
    });
    this.d.local.bufferRemove(pool, binding.ip);
  }

  /** Follows one identity as the watch (or a list) reports it; null record: deleted. */
  followRecord(identity: StickyIdentity, record: StickyRecord | null): void {
    const rows = this.d.store.stickyByOwner(ownerOf(identity)).filter((r) => r.pool === identity.pool);
    if (rows.length === 0) return;
    if (record && record.node === this.d.node) {
      // Bound here: a row at another address is stale (a pin elsewhere moved it); the same address is right.
      for (const row of rows) if (row.ip !== record.ip) this.dropStale(row, `bound to ${record.ip} in etcd`);
      return;
    }
    for (const row of rows) {
      if (row.container_id && record?.attachment?.containerID === row.container_id && record.ip === row.ip) continue;
      this.dropStale(row, record ? `bound to node ${record.node} in etcd` : "released in etcd");
    }
  }

  private dropStale(row: Row, why: string): void {
    const { store } = this.d;
    if (!row.container_id) {
      store.remove(row.id);
      return;
    }
    this.d.onInconsistency(
      `${row.owner} is ${why} while container ${row.container_id} here still uses ${row.ip}: ` +
        "the container keeps the address as its attachment until its CNI DEL",
      { owner: row.owner, ip: row.ip, container: row.container_id },
    );
    store.handToAttachment(row.id, `${row.container_id}/${row.ifname}`);
  }

  /** A row at `ip` that etcd says is not held that way (its identity moved or ended): removed when detached. */
  private clearStale(ip: string, pool: string): void {
    const row = this.d.store.byIp(ip);
    if (!row) return;
    if (row.container_id) {
      this.d.onInconsistency(`etcd hands ${ip} (pool ${pool}) to this node, but container ${row.container_id} here holds it`, {
        ip,
        owner: row.owner,
      });
      throw new ApiError(
        "internal",
        `${ip} is free in etcd but used here by container ${row.container_id}; not handing it out ` + "(see the ipamd log); retry",
      );
    }
    this.d.store.remove(row.id);
  }
}

export function memberOfRow(row: Row): Member {
  return { namespace: row.namespace!, statefulset: row.statefulset!, ordinal: row.ordinal!, owner: row.owner };
}

function describe(op: OwnershipOp): string {
  switch (op.kind) {
    case "allocate": {
      const pod = op.req.podName ? ` of pod ${op.req.podNamespace ?? "?"}/${op.req.podName}` : "";
      return `ADD of container ${op.req.containerID}${pod}`;
    }
    case "release":
      return `DEL of container ${op.req.containerID}`;
    default:
      return op.kind;
  }
}
