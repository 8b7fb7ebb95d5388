// Every SQL statement ipamd runs, prepared once, behind typed methods. No rules here: callers
// decide what to write; every write runs inside the group commit's transaction.
import type { Statement } from "./database";
import type { ReservationFilter } from "../../api/types";
import type { Family } from "../../lib/ip";
import type { DB } from "./database";

/** A row of `reservations`: one address held by one owner (see schema.ts). */
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
  /** The commit sequence of the attach (monotonic; GC compares it, never the wall clock). */
  attached_seq: number | null;
}

/** Where a page of GET /v1/reservations ends: the listing order's key of its last row. */
export type ListingKey = [pool: string, namespace: string, statefulset: string, ordinal: number, id: number];

/** The attachment columns of a row: who uses the address now. */
export interface AttachmentColumns {
  container_id: string;
  ifname: string;
  network: string;
  pod_namespace: string | null;
  pod_name: string | null;
  pod_uid: string | null;
}

interface PoolCounts {
  pool: string;
  used: number;
  reserved: number;
}
interface RegisteredStatefulSet {
  namespace: string;
  name: string;
  registered_at: number;
}
/** A StatefulSet last seen through the Kubernetes API. */
export interface TrackedStatefulSet {
  namespace: string;
  name: string;
  uid: string;
  retention: string;
  seen_at: number;
}

/** One change of a reservation row: `before` is the row as it was (absent for an insert), `after` as it is now (absent for a remove). */
export interface RowChange {
  change: "insert" | "attach" | "detach" | "setPinned" | "handToAttachment" | "remove";
  before?: Row;
  after?: Row;
}

/**
 * The columns of an inserted row, bound by position: node:sqlite binds an object's named parameters by
 * looking each name up under every prefix ($, :, @), about 9 µs for these 20 on every ADD.
 */
const INSERT_COLUMNS = [
  "ip",
  "pool",
  "family",
  "owner",
  "kind",
  "sticky",
  "pinned",
  "namespace",
  "statefulset",
  "ordinal",
  "container_id",
  "ifname",
  "network",
  "pod_namespace",
  "pod_name",
  "pod_uid",
  "created_at",
  "attached_at",
  "detached_at",
  "attached_seq",
] as const satisfies readonly (keyof Omit<Row, "id">)[];

/** The released address a pool reuses next: past its cooldown, least recently released, then the lowest. */
/** Rows of pools not in the JSON list (orphaned pools), at most `limit`; a test reads its query plan. */
export const HELD_OUTSIDE =
  "WITH RECURSIVE held(pool) AS (SELECT (SELECT min(pool) FROM reservations) " +
  "UNION ALL SELECT (SELECT min(pool) FROM reservations WHERE pool > held.pool) FROM held WHERE held.pool IS NOT NULL) " +
  "SELECT r.* FROM held CROSS JOIN reservations r ON r.pool = held.pool " +
  "WHERE held.pool IS NOT NULL AND held.pool NOT IN (SELECT value FROM json_each(?)) ORDER BY r.pool, r.id LIMIT ?";
export const OLDEST_RELEASED = "SELECT ip FROM released WHERE pool = ? AND released_at <= ? ORDER BY released_at, ip LIMIT 1";

export class Statements {
  /** Hears every change of a reservation row, inside its transaction (ipamd/changes.ts). */
  observer?: (c: RowChange) => void;
  private readonly q: Record<
    | "byAttachment"
    | "byOwner"
    | "byId"
    | "byIp"
    | "heldAmong"
    | "ipTaken"
    | "insert"
    | "attach"
    | "detach"
    | "setPinned"
    | "handToAttachment"
    | "remove"
    | "addReleased"
    | "oldestReleased"
    | "dropReleased"
    | "coolingCount"
    | "cursor"
    | "saveCursor"
    | "stsKnown"
    | "stsRegister"
    | "stsUnregister"
    | "stsList"
    | "attachedOnNetwork"
    | "expired"
    | "usage"
    | "cooling"
    | "count"
    | "kubeTrack"
    | "kubeUntrack"
    | "kubeTracked"
    | "kubeAllTracked"
    | "seq"
    | "saveSeq"
    | "meta"
    | "attachedByNetwork"
    | "held",
    Statement
  >;

  constructor(private readonly db: DB) {
    const p = (sql: string): Statement => db.prepare(sql);
    this.q = {
      byAttachment: p("SELECT * FROM reservations WHERE container_id = ? AND ifname = ? AND network = ? ORDER BY family"),
      byOwner: p("SELECT * FROM reservations WHERE owner = ? AND sticky = 1"),
      byId: p("SELECT * FROM reservations WHERE id = ?"),
      byIp: p("SELECT * FROM reservations WHERE ip = ?"),
      heldAmong: p("SELECT ip FROM reservations WHERE ip IN (SELECT value FROM json_each(?))"),
      ipTaken: p("SELECT 1 FROM reservations WHERE ip = ? UNION ALL SELECT 1 FROM released WHERE ip = ? LIMIT 1"),
      insert: p(`INSERT INTO reservations (${INSERT_COLUMNS.join(", ")})
        VALUES (${INSERT_COLUMNS.map(() => "?").join(", ")}) RETURNING *`),
      attach: p(`UPDATE reservations SET container_id = @container_id, ifname = @ifname, network = @network,
        pod_namespace = @pod_namespace, pod_name = @pod_name, pod_uid = @pod_uid, attached_at = @now, detached_at = NULL,
        attached_seq = @seq WHERE id = @id RETURNING *`),
      detach: p("UPDATE reservations SET container_id = NULL, ifname = NULL, network = NULL, detached_at = ? WHERE id = ? RETURNING *"),
      setPinned: p("UPDATE reservations SET pinned = 1 WHERE id = ? RETURNING *"),
      handToAttachment: p(`UPDATE reservations SET owner = ?, kind = 'attachment', sticky = 0, pinned = 0,
        namespace = NULL, statefulset = NULL, ordinal = NULL WHERE id = ? RETURNING *`),
      remove: p("DELETE FROM reservations WHERE id = ? RETURNING *"),
      addReleased: p(`INSERT INTO released (ip, pool, released_at) VALUES (?, ?, ?)
        ON CONFLICT(ip) DO UPDATE SET pool = excluded.pool, released_at = excluded.released_at`),
      oldestReleased: p(OLDEST_RELEASED),
      dropReleased: p("DELETE FROM released WHERE ip = ?"),
      coolingCount: p("SELECT count(*) AS n FROM released WHERE pool = ? AND released_at > ?"),
      cursor: p("SELECT next, fingerprint FROM pool_cursor WHERE pool = ?"),
      saveCursor: p(`INSERT INTO pool_cursor (pool, next, fingerprint) VALUES (?, ?, ?)
        ON CONFLICT(pool) DO UPDATE SET next = excluded.next, fingerprint = excluded.fingerprint`),
      stsKnown: p("SELECT 1 FROM statefulsets WHERE namespace = ? AND name = ?"),
      stsRegister: p("INSERT OR IGNORE INTO statefulsets (namespace, name, registered_at) VALUES (?, ?, ?)"),
      stsUnregister: p("DELETE FROM statefulsets WHERE namespace = ? AND name = ?"),
      stsList: p("SELECT namespace, name, registered_at FROM statefulsets ORDER BY namespace, name"),
      attachedOnNetwork: p(`SELECT * FROM reservations WHERE network = ? AND container_id IS NOT NULL
        AND coalesce(attached_seq, 0) <= ?`),
      expired: p(`SELECT * FROM reservations WHERE container_id IS NULL AND sticky = 1 AND pinned = 0
        AND detached_at < ? ORDER BY detached_at LIMIT 10000`),
      usage: p(`SELECT pool, sum(container_id IS NOT NULL) AS used, sum(container_id IS NULL) AS reserved
        FROM reservations GROUP BY pool`),
      cooling: p("SELECT pool, count(*) AS n FROM released WHERE released_at > ? GROUP BY pool"),
      count: p("SELECT count(*) AS n FROM reservations"),
      kubeTrack: p(`INSERT INTO kube_statefulsets (namespace, name, uid, retention, seen_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT(namespace, name) DO UPDATE SET uid = excluded.uid, retention = excluded.retention, seen_at = excluded.seen_at`),
      kubeUntrack: p("DELETE FROM kube_statefulsets WHERE namespace = ? AND name = ?"),
      kubeTracked: p("SELECT * FROM kube_statefulsets WHERE namespace = ? AND name = ?"),
      kubeAllTracked: p("SELECT * FROM kube_statefulsets ORDER BY namespace, name"),
      seq: p("SELECT value FROM meta WHERE key = 'commit_seq'"),
      saveSeq: p("UPDATE meta SET value = ? WHERE key = 'commit_seq'"),
      meta: p("SELECT value FROM meta WHERE key = ?"),
      attachedByNetwork: p(`SELECT network, count(*) AS n FROM reservations WHERE container_id IS NOT NULL
        GROUP BY network ORDER BY network`),
      // The pools held are found by skipping through the pool index (one lookup per pool, not a scan of every row).
      // CROSS JOIN keeps that order: with statistics (ANALYZE) the planner put reservations outside and read every
      // row on each status call (160 ms at 100,000 rows).
      held: p(HELD_OUTSIDE),
    };
    this.committedSeq = Number((this.q.seq.get() as { value: number }).value);
    this.batchSeq = this.committedSeq + 1;
  }

  // ---------- the commit sequence ----------

  /** The sequence number of the last durable group commit. */
  committedSeq: number;
  /** The sequence number the running batch commits as (rows it attaches carry it). */
  private batchSeq: number;

  /** Inside a batch's transaction, before its first request: the batch's sequence number, written to meta. */
  beginCommit(): number {
    this.batchSeq = this.committedSeq + 1;
    this.q.saveSeq.run(this.batchSeq);
    return this.batchSeq;
  }

  /** The batch begun with `seq` is durable. */
  committed(seq: number): void {
    this.committedSeq = seq;
    this.batchSeq = seq + 1;
  }

  /** A value of the meta table (JSON text for structured ones), undefined when unset. */
  meta(key: string): unknown {
    return (this.q.meta.get(key) as { value: unknown } | undefined)?.value;
  }

  setMeta(key: string, value: string | number): void {
    this.db.prepare("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
  }

  deleteMeta(key: string): void {
    this.db.prepare("DELETE FROM meta WHERE key = ?").run(key);
  }

  /** Cooling addresses recorded under pool names other than `pools`. */
  releasedOutside(pools: string[]): { ip: string; pool: string }[] {
    return this.db
      .prepare("SELECT ip, pool FROM released WHERE pool NOT IN (SELECT value FROM json_each(?))")
      .all(JSON.stringify(pools)) as { ip: string; pool: string }[];
  }

  /** Moves a cooling address to `pool`, or forgets it (null). */
  rehomeReleased(ip: string, pool: string | null): void {
    if (pool === null) this.q.dropReleased.run(ip);
    else this.db.prepare("UPDATE released SET pool = ? WHERE ip = ?").run(pool, ip);
  }

  /** The random identity the database got when it was created. */
  databaseId(): string {
    return String((this.q.meta.get("database_id") as { value: string }).value);
  }

  // ---------- reservations ----------

  byAttachment(containerID: string, ifName: string, network: string): Row[] {
    return this.q.byAttachment.all(containerID, ifName, network) as Row[];
  }

  /** The sticky rows of one owner (a StatefulSet member's addresses, one per pool). */
  stickyByOwner(owner: string): Row[] {
    return this.q.byOwner.all(owner) as Row[];
  }

  byId(id: number): Row {
    return this.q.byId.get(id) as Row;
  }

  byIp(ip: string): Row | undefined {
    return this.q.byIp.get(ip) as Row | undefined;
  }

  /** Which of `ips` a reservation holds (one statement for many). */
  heldAmong(ips: string[]): Set<string> {
    if (ips.length === 0) return new Set();
    return new Set((this.q.heldAmong.all(JSON.stringify(ips)) as { ip: string }[]).map((r) => r.ip));
  }

  /** A StatefulSet's rows, optionally one ordinal and/or one pool, by ordinal and family. */
  byStatefulSet(namespace: string, statefulset: string, ordinal?: number, pool?: string): Row[] {
    const where = ["namespace = ?", "statefulset = ?"];
    const args: unknown[] = [namespace, statefulset];
    if (ordinal !== undefined) {
      where.push("ordinal = ?");
      args.push(ordinal);
    }
    if (pool) {
      where.push("pool = ?");
      args.push(pool);
    }
    return this.db.prepare(`SELECT * FROM reservations WHERE ${where.join(" AND ")} ORDER BY ordinal, family`).all(...args) as Row[];
  }

  /** Rows matching every given field of `f` (`ip` canonical), at most `limit`, in listing order after `after`. */
  matching(f: ReservationFilter, limit: number, after?: ListingKey): Row[] {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (sql: string, v: unknown): void => {
      where.push(sql);
      args.push(v);
    };
    if (f.namespace) add("namespace = ?", f.namespace);
    if (f.statefulset) add("statefulset = ?", f.statefulset);
    if (f.pool) add("pool = ?", f.pool);
    if (f.owner) add("owner = ?", f.owner);
    if (f.ip) add("ip = ?", f.ip);
    if (f.state === "attached") where.push("container_id IS NOT NULL");
    if (f.state === "detached") where.push("container_id IS NULL");
    const order = "pool, coalesce(namespace, ''), coalesce(statefulset, ''), coalesce(ordinal, -1), id";
    if (after) {
      where.push(`(${order}) > (?, ?, ?, ?, ?)`);
      args.push(...after);
    }
    const sql = `SELECT * FROM reservations ${where.length ? "WHERE " + where.join(" AND ") : ""}
      ORDER BY ${order} LIMIT ?`;
    return this.db.prepare(sql).all(...args, limit) as Row[];
  }

  /** Rows attached on `network` by a commit at or before sequence `seq`. */
  attachedOnNetwork(network: string, seq: number): Row[] {
    return this.q.attachedOnNetwork.all(network, seq) as Row[];
  }

  /** Attached rows per network. */
  attachedByNetwork(): { network: string; n: number }[] {
    return this.q.attachedByNetwork.all() as { network: string; n: number }[];
  }

  /** Rows held in pools other than `pools` (pools that left the config), at most `limit`. */
  heldOutside(pools: string[], limit: number): Row[] {
    return this.q.held.all(JSON.stringify(pools), limit) as Row[];
  }

  /**
   * After the wall clock stepped back (or at start): timestamps later than `now` become `now`, so
   * a cooldown or TTL counts from now instead of waiting for the clock to catch up. Rows changed.
   */
  clampFuture(now: number): number {
    let n = 0;
    for (const col of ["created_at", "attached_at", "detached_at"]) {
      n += this.db.prepare(`UPDATE reservations SET ${col} = ? WHERE ${col} > ?`).run(now, now).changes;
    }
    return n + this.db.prepare("UPDATE released SET released_at = ? WHERE released_at > ?").run(now, now).changes;
  }

  /** Detached, sticky, unpinned rows detached before `before`, oldest first (at most 10,000). */
  detachedBefore(before: number): Row[] {
    return this.q.expired.all(before) as Row[];
  }

  insert(row: Omit<Row, "id" | "attached_seq">): Row {
    const values: Omit<Row, "id"> = { ...row, attached_seq: row.container_id ? this.batchSeq : null };
    const after = this.q.insert.get(...INSERT_COLUMNS.map((c) => values[c])) as Row;
    this.observer?.({ change: "insert", after });
    return after;
  }

  attach(id: number, attachment: AttachmentColumns, now: number): void {
    this.observed("attach", id, () => this.q.attach.get({ ...attachment, now, id, seq: this.batchSeq }));
  }

  detach(id: number, now: number): void {
    this.observed("detach", id, () => this.q.detach.get(now, id));
  }

  setPinned(id: number): void {
    this.observed("setPinned", id, () => this.q.setPinned.get(id));
  }

  /** The row keeps its address and attachment but is owned by `owner` (containerID/ifName), not sticky. */
  handToAttachment(id: number, owner: string): void {
    this.observed("handToAttachment", id, () => this.q.handToAttachment.get(owner, id));
  }

  remove(id: number): void {
    this.observed("remove", id, () => this.q.remove.get(id));
  }

  /** `write` returns the row as it leaves the statement (RETURNING *): the removed row, or the updated one. */
  private observed(change: RowChange["change"], id: number, write: () => unknown): void {
    const before = this.observer && change !== "remove" ? (this.q.byId.get(id) as Row | undefined) : undefined;
    const row = write() as Row | undefined;
    if (!this.observer) return;
    if (change === "remove") this.observer({ change, ...(row ? { before: row } : {}) });
    else this.observer({ change, ...(before ? { before } : {}), ...(row ? { after: row } : {}) });
  }

  count(): number {
    return (this.q.count.get() as { n: number }).n;
  }

  countsByPool(): PoolCounts[] {
    return this.q.usage.all() as PoolCounts[];
  }

  // ---------- released addresses (cooldown) ----------

  addReleased(ip: string, pool: string, at: number): void {
    this.q.addReleased.run(ip, pool, at);
  }

  /** The least recently released address of `pool` released at or before `before`. */
  oldestReleased(pool: string, before: number): string | undefined {
    return (this.q.oldestReleased.get(pool, before) as { ip: string } | undefined)?.ip;
  }

  dropReleased(ip: string): void {
    this.q.dropReleased.run(ip);
  }

  /** Addresses of `pool` released after `after`. */
  coolingCount(pool: string, after: number): number {
    return (this.q.coolingCount.get(pool, after) as { n: number }).n;
  }

  coolingByPool(after: number): { pool: string; n: number }[] {
    return this.q.cooling.all(after) as { pool: string; n: number }[];
  }

  /** Held by a reservation or waiting in the cooldown. */
  ipTaken(ip: string): boolean {
    return this.q.ipTaken.get(ip, ip) !== undefined;
  }

  // ---------- per-pool cursor of never-used addresses ----------

  cursor(pool: string): { next: string; fingerprint: string } | undefined {
    return this.q.cursor.get(pool) as { next: string; fingerprint: string } | undefined;
  }

  saveCursor(pool: string, next: string, fingerprint: string): void {
    this.q.saveCursor.run(pool, next, fingerprint);
  }

  // ---------- StatefulSets registered through the API ----------

  statefulSetKnown(namespace: string, name: string): boolean {
    return this.q.stsKnown.get(namespace, name) !== undefined;
  }

  registerStatefulSet(namespace: string, name: string, at: number): void {
    this.q.stsRegister.run(namespace, name, at);
  }

  /** True when it was registered. */
  unregisterStatefulSet(namespace: string, name: string): boolean {
    return this.q.stsUnregister.run(namespace, name).changes > 0;
  }

  registeredStatefulSets(): RegisteredStatefulSet[] {
    return this.q.stsList.all() as RegisteredStatefulSet[];
  }

  // ---------- StatefulSets seen through the Kubernetes API ----------

  trackStatefulSet(t: TrackedStatefulSet): void {
    this.q.kubeTrack.run(t.namespace, t.name, t.uid, t.retention, t.seen_at);
  }

  untrackStatefulSet(namespace: string, name: string): void {
    this.q.kubeUntrack.run(namespace, name);
  }

  trackedStatefulSet(namespace: string, name: string): TrackedStatefulSet | undefined {
    return this.q.kubeTracked.get(namespace, name) as TrackedStatefulSet | undefined;
  }

  trackedStatefulSets(): TrackedStatefulSet[] {
    return this.q.kubeAllTracked.all() as TrackedStatefulSet[];
  }

  /** Every attached row (for the leak reconciler: compared with the pods on this node). */
  attached(): Row[] {
    return this.db.prepare("SELECT * FROM reservations WHERE container_id IS NOT NULL ORDER BY id").all() as Row[];
  }
}
