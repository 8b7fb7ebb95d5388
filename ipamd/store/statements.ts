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
}

/** The attachment columns of a row: who uses the address now. */
export interface AttachmentColumns {
  container_id: string; ifname: string; network: string;
  pod_namespace: string | null; pod_name: string | null; pod_uid: string | null;
}

interface PoolCounts { pool: string; used: number; reserved: number }
interface RegisteredStatefulSet { namespace: string; name: string; registered_at: number }
/** A StatefulSet last seen through the Kubernetes API. */
export interface TrackedStatefulSet { namespace: string; name: string; uid: string; retention: string; seen_at: number }

export class Statements {
  private readonly q: Record<
    | "byAttachment" | "byOwner" | "byId" | "byIp" | "ipTaken" | "insert" | "attach" | "detach" | "setPinned"
    | "handToAttachment" | "remove" | "addReleased" | "oldestReleased" | "dropReleased" | "coolingCount" | "cursor"
    | "saveCursor" | "stsKnown" | "stsRegister" | "stsUnregister" | "stsList" | "attachedOnNetwork" | "expired" | "usage"
    | "cooling" | "count" | "kubeTrack" | "kubeUntrack" | "kubeTracked" | "kubeAllTracked",
    Statement
  >;

  constructor(private readonly db: DB) {
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
      remove: p("DELETE FROM reservations WHERE id = ?"),
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
      kubeTrack: p(`INSERT INTO kube_statefulsets (namespace, name, uid, retention, seen_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT(namespace, name) DO UPDATE SET uid = excluded.uid, retention = excluded.retention, seen_at = excluded.seen_at`),
      kubeUntrack: p("DELETE FROM kube_statefulsets WHERE namespace = ? AND name = ?"),
      kubeTracked: p("SELECT * FROM kube_statefulsets WHERE namespace = ? AND name = ?"),
      kubeAllTracked: p("SELECT * FROM kube_statefulsets ORDER BY namespace, name"),
    };
  }

  // ---------- reservations ----------

  byAttachment(containerID: string, ifName: string, network: string): Row[] {
    return this.q.byAttachment.all(containerID, ifName, network) as Row[];
  }

  /** The sticky rows of one owner (a StatefulSet member's addresses, one per pool). */
  stickyByOwner(owner: string): Row[] { return this.q.byOwner.all(owner) as Row[]; }

  byId(id: number): Row { return this.q.byId.get(id) as Row; }

  byIp(ip: string): Row | undefined { return this.q.byIp.get(ip) as Row | undefined; }

  /** A StatefulSet's rows, optionally one ordinal and/or one pool, by ordinal and family. */
  byStatefulSet(namespace: string, statefulset: string, ordinal?: number, pool?: string): Row[] {
    const where = ["namespace = ?", "statefulset = ?"];
    const args: unknown[] = [namespace, statefulset];
    if (ordinal !== undefined) { where.push("ordinal = ?"); args.push(ordinal); }
    if (pool) { where.push("pool = ?"); args.push(pool); }
    return this.db.prepare(`SELECT * FROM reservations WHERE ${where.join(" AND ")} ORDER BY ordinal, family`).all(...args) as Row[];
  }

  /** Rows matching every given field of `f` (`ip` canonical), at most `limit`. */
  matching(f: ReservationFilter, limit: number): Row[] {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (sql: string, v: unknown): void => { where.push(sql); args.push(v); };
    if (f.namespace) add("namespace = ?", f.namespace);
    if (f.statefulset) add("statefulset = ?", f.statefulset);
    if (f.pool) add("pool = ?", f.pool);
    if (f.owner) add("owner = ?", f.owner);
    if (f.ip) add("ip = ?", f.ip);
    if (f.state === "attached") where.push("container_id IS NOT NULL");
    if (f.state === "detached") where.push("container_id IS NULL");
    const sql = `SELECT * FROM reservations ${where.length ? "WHERE " + where.join(" AND ") : ""}
      ORDER BY pool, namespace, statefulset, ordinal, id LIMIT ?`;
    return this.db.prepare(sql).all(...args, limit) as Row[];
  }

  /** Rows attached on `network` since before `before`. */
  attachedOnNetwork(network: string, before: number): Row[] { return this.q.attachedOnNetwork.all(network, before) as Row[]; }

  /** Detached, sticky, unpinned rows detached before `before`, oldest first (at most 10,000). */
  detachedBefore(before: number): Row[] { return this.q.expired.all(before) as Row[]; }

  insert(row: Omit<Row, "id">): Row {
    return this.byId(Number(this.q.insert.run(row).lastInsertRowid));
  }

  attach(id: number, attachment: AttachmentColumns, now: number): void { this.q.attach.run({ ...attachment, now, id }); }

  detach(id: number, now: number): void { this.q.detach.run(now, id); }

  setPinned(id: number): void { this.q.setPinned.run(id); }

  /** The row keeps its address and attachment but is owned by `owner` (containerID/ifName), not sticky. */
  handToAttachment(id: number, owner: string): void { this.q.handToAttachment.run(owner, id); }

  remove(id: number): void { this.q.remove.run(id); }

  count(): number { return (this.q.count.get() as { n: number }).n; }

  countsByPool(): PoolCounts[] { return this.q.usage.all() as PoolCounts[]; }

  // ---------- released addresses (cooldown) ----------

  addReleased(ip: string, pool: string, at: number): void { this.q.addReleased.run(ip, pool, at); }

  /** The least recently released address of `pool` released at or before `before`. */
  oldestReleased(pool: string, before: number): string | undefined {
    return (this.q.oldestReleased.get(pool, before) as { ip: string } | undefined)?.ip;
  }

  dropReleased(ip: string): void { this.q.dropReleased.run(ip); }

  /** Addresses of `pool` released after `after`. */
  coolingCount(pool: string, after: number): number { return (this.q.coolingCount.get(pool, after) as { n: number }).n; }

  coolingByPool(after: number): { pool: string; n: number }[] { return this.q.cooling.all(after) as { pool: string; n: number }[]; }

  /** Held by a reservation or waiting in the cooldown. */
  ipTaken(ip: string): boolean { return this.q.ipTaken.get(ip, ip) !== undefined; }

  // ---------- per-pool cursor of never-used addresses ----------

  cursor(pool: string): { next: string; fingerprint: string } | undefined {
    return this.q.cursor.get(pool) as { next: string; fingerprint: string } | undefined;
  }

  saveCursor(pool: string, next: string, fingerprint: string): void { this.q.saveCursor.run(pool, next, fingerprint); }

  // ---------- StatefulSets registered through the API ----------

  statefulSetKnown(namespace: string, name: string): boolean { return this.q.stsKnown.get(namespace, name) !== undefined; }

  registerStatefulSet(namespace: string, name: string, at: number): void { this.q.stsRegister.run(namespace, name, at); }

  /** True when it was registered. */
  unregisterStatefulSet(namespace: string, name: string): boolean { return this.q.stsUnregister.run(namespace, name).changes > 0; }

  registeredStatefulSets(): RegisteredStatefulSet[] { return this.q.stsList.all() as RegisteredStatefulSet[]; }

  // ---------- StatefulSets seen through the Kubernetes API ----------

  trackStatefulSet(t: TrackedStatefulSet): void { this.q.kubeTrack.run(t.namespace, t.name, t.uid, t.retention, t.seen_at); }

  untrackStatefulSet(namespace: string, name: string): void { this.q.kubeUntrack.run(namespace, name); }

  trackedStatefulSet(namespace: string, name: string): TrackedStatefulSet | undefined {
    return this.q.kubeTracked.get(namespace, name) as TrackedStatefulSet | undefined;
  }

  trackedStatefulSets(): TrackedStatefulSet[] { return this.q.kubeAllTracked.all() as TrackedStatefulSet[]; }

  /** Every attached row (for the leak reconciler: compared with the pods on this node). */
  attached(): Row[] { return this.db.prepare("SELECT * FROM reservations WHERE container_id IS NOT NULL ORDER BY id").all() as Row[]; }
}
