// The cluster tables of the node's SQLite (schema.ts): the outbox of changes for etcd, the persisted buffer, and
// small state (when etcd last confirmed this node's liveness, the sticky watch's revision). A write made inside a
// request's savepoint commits with it; one made outside is its own (autocommit) transaction.
import type { BufferEntry, OutboxOp, OutboxRecord } from "./ownership";
import type { DB, Statement } from "../store/database";

export class ClusterStore {
  private readonly q: Record<
    "enqueue" | "pending" | "pendingAfter" | "count" | "drop" | "bufAdd" | "bufDel" | "bufDelPool" | "bufAll" | "get" | "set",
    Statement
  >;

  constructor(private readonly db: DB) {
    const p = (sql: string): Statement => db.prepare(sql);
    this.q = {
      enqueue: p("INSERT INTO cluster_outbox (created_at, op, json) VALUES (?, ?, ?)"),
      pending: p("SELECT id, created_at, json FROM cluster_outbox ORDER BY id LIMIT ?"),
      pendingAfter: p("SELECT id, created_at, json FROM cluster_outbox WHERE id > ? ORDER BY id LIMIT ?"),
      count: p("SELECT count(*) AS n FROM cluster_outbox"),
      drop: p("DELETE FROM cluster_outbox WHERE id IN (SELECT value FROM json_each(?))"),
      bufAdd: p(`INSERT INTO cluster_buffer (pool, ip, mod_revision, not_before) VALUES (?, ?, ?, ?)
        ON CONFLICT(pool, ip) DO UPDATE SET mod_revision = excluded.mod_revision, not_before = excluded.not_before`),
      bufDel: p("DELETE FROM cluster_buffer WHERE pool = ? AND ip = ?"),
      bufDelPool: p("DELETE FROM cluster_buffer WHERE pool = ?"),
      bufAll: p("SELECT pool, ip, mod_revision, not_before FROM cluster_buffer ORDER BY rowid"),
      get: p("SELECT value FROM cluster_state WHERE key = ?"),
      set: p("INSERT INTO cluster_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
    };
  }

  enqueue(rec: OutboxOp, now: number): void {
    this.q.enqueue.run(now, rec.op, JSON.stringify(rec));
  }

  pending(limit = 256): OutboxRecord[] {
    return (this.q.pending.all(limit) as { id: number; created_at: number; json: string }[]).map((r) => ({
      ...(JSON.parse(r.json) as OutboxOp),
      id: r.id,
      createdAt: r.created_at,
    }));
  }

  /** One page of the outbox after id `after` (start-up reads it all, page by page). */
  pendingAfter(after: number, limit: number): OutboxRecord[] {
    return (this.q.pendingAfter.all(after, limit) as { id: number; created_at: number; json: string }[]).map((r) => ({
      ...(JSON.parse(r.json) as OutboxOp),
      id: r.id,
      createdAt: r.created_at,
    }));
  }

  pendingCount(): number {
    return (this.q.count.get() as { n: number }).n;
  }

  drop(ids: number[]): void {
    if (ids.length) this.q.drop.run(JSON.stringify(ids));
  }

  /** Outside a request: one transaction for the whole batch (one fsync). */
  private batch(fn: () => void): void {
    this.db.transaction(fn)();
  }

  bufferAdded(entries: BufferEntry[]): void {
    if (entries.length)
      this.batch(() => {
        for (const e of entries) this.q.bufAdd.run(e.pool, e.ip, e.modRevision, e.notBefore);
      });
  }

  /** One address leaves the buffer (inside the request's savepoint when a local allocation takes it). */
  bufferRemove(pool: string, ip: string): void {
    this.q.bufDel.run(pool, ip);
  }

  bufferRemoved(pool: string, ips: string[]): void {
    if (ips.length)
      this.batch(() => {
        for (const ip of ips) this.q.bufDel.run(pool, ip);
      });
  }

  bufferReset(pool: string, entries: BufferEntry[]): void {
    this.batch(() => {
      this.q.bufDelPool.run(pool);
      for (const e of entries) this.q.bufAdd.run(e.pool, e.ip, e.modRevision, e.notBefore);
    });
  }

  buffer(): BufferEntry[] {
    return (this.q.bufAll.all() as { pool: string; ip: string; mod_revision: number; not_before: number }[]).map((r) => ({
      pool: r.pool,
      ip: r.ip,
      modRevision: r.mod_revision,
      notBefore: r.not_before,
    }));
  }

  state(key: string): string | undefined {
    return (this.q.get.get(key) as { value: string } | undefined)?.value;
  }
  setState(key: string, value: string): void {
    this.q.set.run(key, value);
  }
}
