// Node liveness (a key on a lease, kept alive; liveness only, never a reservation) and the reaper that returns a
// dead node's buffered and non-sticky attachment addresses after a grace period and a re-check. Several reapers
// may run at once: each delete compares the key's ModRevision, so at most one succeeds and nothing else is touched.
import type { EtcdClient } from "./etcd";
import { type IpOwner, KeyLayout, type NodeRecord, parseJson } from "./keys";

export class NodeLiveness {
  private lease: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private confirmedAt = 0;
  private readonly keys: KeyLayout;
  leaseLost = 0;

  constructor(
    private readonly o: {
      client: EtcdClient;
      node: string;
      prefix?: string;
      ttlSeconds?: number;
      labels?: Record<string, string>;
      onError?: (e: Error) => void;
      now?: () => number;
    },
  ) {
    this.keys = new KeyLayout(o.prefix);
  }

  private get ttl(): number {
    return this.o.ttlSeconds ?? 10;
  }
  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  /** When etcd last confirmed this node's liveness (ms); 0 before the first success. */
  lastConfirmedAt(): number {
    return this.confirmedAt;
  }

  async start(): Promise<void> {
    await this.renew();
    const tick = (): void => {
      void this.renew()
        .catch((e: Error) => this.o.onError?.(e))
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, (this.ttl * 1000) / 3);
        });
    };
    this.timer = setTimeout(tick, (this.ttl * 1000) / 3);
  }

  /** One keepalive; grants a new lease and rewrites the key when the old lease is gone. */
  async renew(): Promise<void> {
    const started = this.now();
    if (this.lease && (await this.o.client.leaseKeepAlive(this.lease)) > 0) {
      this.confirmedAt = started;
      return;
    }
    if (this.lease) this.leaseLost++;
    const { id } = await this.o.client.leaseGrant(this.ttl);
    const rec: NodeRecord = { node: this.o.node, startedAt: started, ...(this.o.labels ? { labels: this.o.labels } : {}) };
    await this.o.client.put(this.keys.node(this.o.node), JSON.stringify(rec), { lease: id });
    this.lease = id;
    this.confirmedAt = started;
  }

  /** Stops keepalives; with `revoke`, the key goes now (a clean shutdown), else it expires with the lease. */
  async stop(revoke = false): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (revoke && this.lease) await this.o.client.leaseRevoke(this.lease);
  }
}

export interface ReapReport {
  freed: { pool: string; ip: string; node: string; owner: "buffer" | "attachment" }[];
  /** Dead-looking nodes still inside the grace period. */
  waiting: { node: string; goneForMs: number }[];
  conflicts: number;
}

export class Reaper {
  private readonly keys: KeyLayout;
  private readonly goneSince = new Map<string, number>();
  /** Nodes whose Kubernetes Node object was deleted: no grace once their liveness key is gone. */
  private readonly deleted = new Set<string>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly o: { client: EtcdClient; pools: string[]; graceMs: number; prefix?: string; now?: () => number }) {
    this.keys = new KeyLayout(o.prefix);
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  start(intervalMs: number, onReport?: (r: ReapReport) => void, onError?: (e: Error) => void): void {
    const tick = (): void => {
      void this.reapOnce()
        .then(
          (r) => onReport?.(r),
          (e: Error) => onError?.(e),
        )
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, intervalMs);
        });
    };
    this.timer = setTimeout(tick, intervalMs);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The node's Node object was deleted (true) or exists again (false). */
  nodeDeleted(node: string, deleted = true): void {
    if (deleted) this.deleted.add(node);
    else this.deleted.delete(node);
  }

  async reapOnce(): Promise<ReapReport> {
    const report: ReapReport = { freed: [], waiting: [], conflicts: 0 };
    const live = new Set(
      (await this.o.client.range(this.keys.nodes(), { prefix: true, keysOnly: true })).kvs.map((kv) =>
        kv.key.slice(this.keys.nodes().length),
      ),
    );
    for (const n of [...this.goneSince.keys()]) if (live.has(n)) this.goneSince.delete(n);
    const orphans = new Map<string, { pool: string; key: string; modRevision: number; owner: "buffer" | "attachment" }[]>();
    for (const pool of this.o.pools) {
      for (const kv of (await this.o.client.range(this.keys.poolIps(pool), { prefix: true })).kvs) {
        const v = parseJson<IpOwner>(kv.value, kv.key);
        // Sticky identities never die with a node; a cooldown ends by its lease.
        if (v.owner === "sticky" || v.owner === "cooling" || live.has(v.node)) continue;
        const list = orphans.get(v.node) ?? [];
        list.push({ pool, key: kv.key, modRevision: kv.modRevision, owner: v.owner });
        orphans.set(v.node, list);
      }
    }
    const now = this.now();
    for (const [node, keys] of orphans) {
      const since = this.goneSince.get(node) ?? now;
      this.goneSince.set(node, since);
      if (now - since < this.o.graceMs && !this.deleted.has(node)) {
        report.waiting.push({ node, goneForMs: now - since });
        continue;
      }
      if (await this.o.client.get(this.keys.node(node))) {
        this.goneSince.delete(node);
        continue;
      } // back: re-check wins
      for (const k of keys) {
        const r = await this.o.client.txn([{ key: k.key, target: "mod", equals: k.modRevision }], [{ del: { key: k.key } }]);
        if (r.succeeded) report.freed.push({ pool: k.pool, ip: this.keys.ipFromKey(k.key), node, owner: k.owner });
        else report.conflicts++;
      }
      this.goneSince.delete(node);
      this.deleted.delete(node);
    }
    return report;
  }
}
