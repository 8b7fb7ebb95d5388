// Node liveness (a key on a lease, kept alive; liveness only, never a reservation), the node's registration (a
// durable key that says the node may hold address keys) and the reaper that returns a dead node's buffered and
// non-sticky attachment addresses after a grace period and a re-check. Several reapers may run at once: each delete
// compares the key's ModRevision, so at most one succeeds and nothing else is touched.
//
// What the reaper reads: every pass, the liveness keys and the registrations, keys only (two small ranges, one key
// per node). The pools' address keys (with values: the key names no node) only when a registered node's liveness key
// is gone past the grace period, and for the backstop: one reaper of the cluster every `fullScanMs` (the turn is a
// compare-and-swap on <prefix>/reaper/full-scan) reads them all and registers every holder found without a
// registration (nodes of a version before registrations, or a write that raced an unregistration).
import type { Compare, EtcdClient, KeyValue, TxnOp } from "./etcd";
import { type FullScanRecord, type IpOwner, KeyLayout, type NodeRecord, type OwnerRecord, parseJson } from "./keys";

/** The put of `node`'s registration, for a transaction that writes an address key for it (by: the writer). */
export function registrationOp(keys: KeyLayout, node: string, at: number, by?: string): TxnOp {
  const rec: OwnerRecord = { node, at, ...(by && by !== node ? { by } : {}) };
  return { put: { key: keys.owner(node), value: JSON.stringify(rec) } };
}

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

  /**
   * One keepalive; grants a new lease and rewrites the key when the old lease is gone, with the node's registration in
   * the same transaction: a node is registered before it claims anything, and again whenever it comes back.
   */
  async renew(): Promise<void> {
    const started = this.now();
    if (this.lease && (await this.o.client.leaseKeepAlive(this.lease)) > 0) {
      this.confirmedAt = started;
      return;
    }
    if (this.lease) this.leaseLost++;
    const { id } = await this.o.client.leaseGrant(this.ttl);
    const rec: NodeRecord = { node: this.o.node, startedAt: started, ...(this.o.labels ? { labels: this.o.labels } : {}) };
    await this.o.client.txn(
      [],
      [
        { put: { key: this.keys.node(this.o.node), value: JSON.stringify(rec), lease: id } },
        registrationOp(this.keys, this.o.node, started),
      ],
    );
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
  /** Addresses of dead nodes that sandboxes of a joined node use: their keys became those sandboxes' attachments. */
  handedOver: { pool: string; ip: string; node: string; to: string }[];
  /** The pools were read with values this pass: for dead nodes past their grace, or the backstop scan of all holders. */
  scan?: "dead-nodes" | "full";
  /** Nodes found holding keys (or alive) without a registration, registered by this pass. */
  adopted: string[];
}

type HeldKey = { pool: string; key: string; modRevision: number; owner: "buffer" | "attachment" };

/** The backstop's period by default: an upgraded cluster's unregistered holders are found within this long. */
const FULL_SCAN_MS = 3_600_000;

export class Reaper {
  private readonly keys: KeyLayout;
  private readonly goneSince = new Map<string, number>();
  /** Nodes whose Kubernetes Node object was deleted: no grace once their liveness key is gone. */
  private readonly deleted = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private nextFullScan = 0;
  private readonly fullScanMs: number;

  constructor(
    private readonly o: {
      client: EtcdClient;
      pools: string[];
      graceMs: number;
      prefix?: string;
      now?: () => number;
      /** This reaper's node (recorded with the backstop scan it takes). */
      node?: string;
      fullScanMs?: number;
    },
  ) {
    this.keys = new KeyLayout(o.prefix);
    this.fullScanMs = o.fullScanMs ?? Math.max(FULL_SCAN_MS, 4 * o.graceMs);
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

  /**
   * One pass. `findDeleted`: a node whose Node object was deleted and that is neither live nor registered is looked
   * for in the pools now (the release leader, at the deletion) instead of at the next backstop scan.
   */
  async reapOnce(o: { findDeleted?: boolean } = {}): Promise<ReapReport> {
    const report: ReapReport = { freed: [], waiting: [], conflicts: 0, adopted: [], handedOver: [] };
    const live = await this.names(this.keys.nodes());
    const registered = await this.names(this.keys.owners());
    for (const n of [...this.goneSince.keys()]) if (live.has(n) || !registered.has(n)) this.goneSince.delete(n);
    // A live node without a registration runs a version without them: registered now, it is found once it dies.
    for (const n of live.keys()) if (!registered.has(n)) await this.adopt(n, registered, report);
    const now = this.now();
    const due: string[] = [];
    for (const n of registered.keys()) {
      if (live.has(n)) continue;
      const since = this.goneSince.get(n) ?? now;
      this.goneSince.set(n, since);
      if (now - since < this.o.graceMs && !this.deleted.has(n)) report.waiting.push({ node: n, goneForMs: now - since });
      else due.push(n);
    }
    const unknown = o.findDeleted ? [...this.deleted].filter((n) => !live.has(n) && !registered.has(n)) : [];
    const full = unknown.length > 0 || (await this.fullScanTurn(now));
    let held = full ? await this.held() : undefined;
    if (held) {
      report.scan = "full";
      for (const n of held.keys()) {
        if (registered.has(n) || !(await this.adopt(n, registered, report)) || live.has(n)) continue;
        this.goneSince.set(n, now);
        if (this.deleted.has(n)) due.push(n);
        else report.waiting.push({ node: n, goneForMs: 0 });
      }
      for (const n of unknown) if (!held.has(n)) this.deleted.delete(n); // holds nothing: nothing to wait for
    }
    const gone: string[] = [];
    for (const n of due) {
      const back = (await this.o.client.get(this.keys.node(n))) !== null; // the re-check wins
      if (back) this.goneSince.delete(n);
      else gone.push(n);
    }
    if (gone.length === 0) return report;
    report.scan ??= "dead-nodes";
    held ??= await this.held();
    const claims = await this.joinClaims();
    for (const n of gone) {
      for (const k of held.get(n) ?? []) {
        const ip = this.keys.ipFromKey(k.key);
        const claim = claims.get(this.keys.joinClaim(k.pool, ip));
        const compare: Compare[] = [{ key: k.key, target: "mod", equals: k.modRevision }];
        // A sandbox of a node that joined cluster mode uses the address: the key becomes its attachment in the same
        // transaction, so no claim can take the address between the delete and a write of the joined node.
        const r = claim
          ? await this.o.client.txn(
              [...compare, { key: claim.kv.key, target: "mod", equals: claim.kv.modRevision }],
              [
                { put: { key: k.key, value: claim.kv.value } },
                registrationOp(this.keys, claim.owner.node, now, this.o.node ?? "reaper"),
                { del: { key: claim.kv.key } },
              ],
            )
          : await this.o.client.txn(compare, [{ del: { key: k.key } }]);
        if (!r.succeeded) report.conflicts++;
        else if (claim) report.handedOver.push({ pool: k.pool, ip, node: n, to: claim.owner.node });
        else report.freed.push({ pool: k.pool, ip, node: n, owner: k.owner });
      }
      // Unregistered only as read before the pools were: a node that came back (its liveness key), or a key written
      // for it since (registration rewritten with it), keeps its registration.
      await this.o.client.txn(
        [
          { key: this.keys.owner(n), target: "mod", equals: registered.get(n)! },
          { key: this.keys.node(n), target: "create", equals: 0 },
        ],
        [{ del: { key: this.keys.owner(n) } }],
      );
      this.goneSince.delete(n);
      this.deleted.delete(n);
    }
    return report;
  }

  /** The joined nodes' claims on addresses held by other nodes' buffers (few, usually none), by claim key. */
  private async joinClaims(): Promise<Map<string, { kv: KeyValue; owner: IpOwner }>> {
    const r = await this.o.client.range(this.keys.joinClaims(), { prefix: true });
    return new Map(r.kvs.map((kv) => [kv.key, { kv, owner: parseJson<IpOwner>(kv.value, kv.key) }]));
  }

  /** Names under a prefix of one key per node, keys only, with each key's ModRevision. */
  private async names(prefix: string): Promise<Map<string, number>> {
    const r = await this.o.client.range(prefix, { prefix: true, keysOnly: true });
    return new Map(r.kvs.map((kv) => [kv.key.slice(prefix.length), kv.modRevision]));
  }

  /** Registers a node found without a registration (create-if-absent); false when another writer was first. */
  private async adopt(node: string, registered: Map<string, number>, report: ReapReport): Promise<boolean> {
    const r = await this.o.client.txn(
      [{ key: this.keys.owner(node), target: "create", equals: 0 }],
      [registrationOp(this.keys, node, this.now(), this.o.node ?? "reaper")],
    );
    if (!r.succeeded) return false;
    registered.set(node, r.revision);
    report.adopted.push(node);
    return true;
  }

  /** Whether this reaper takes the backstop scan now: one reaper of the cluster per `fullScanMs`. */
  private async fullScanTurn(now: number): Promise<boolean> {
    if (now < this.nextFullScan) return false;
    const kv = await this.o.client.get(this.keys.fullScan());
    const last = kv ? parseJson<FullScanRecord>(kv.value, kv.key).at : 0;
    if (kv && now - last < this.fullScanMs) {
      this.nextFullScan = last + this.fullScanMs;
      return false;
    }
    this.nextFullScan = now + this.fullScanMs;
    const rec: FullScanRecord = { node: this.o.node ?? "reaper", at: now };
    const r = await this.o.client.txn(
      [kv ? { key: kv.key, target: "mod", equals: kv.modRevision } : { key: this.keys.fullScan(), target: "create", equals: 0 }],
      [{ put: { key: this.keys.fullScan(), value: JSON.stringify(rec) } }],
    );
    return r.succeeded;
  }

  /** Every pool's buffer and attachment keys by node (sticky identities never die with a node; a cooldown ends by its lease). */
  private async held(): Promise<Map<string, HeldKey[]>> {
    const out = new Map<string, HeldKey[]>();
    for (const pool of this.o.pools) {
      for (const kv of (await this.o.client.range(this.keys.poolIps(pool), { prefix: true })).kvs) {
        const v = parseJson<IpOwner>(kv.value, kv.key);
        if (v.owner === "sticky" || v.owner === "cooling") continue;
        const list = out.get(v.node) ?? [];
        list.push({ pool, key: kv.key, modRevision: kv.modRevision, owner: v.owner });
        out.set(v.node, list);
      }
    }
    return out;
  }
}
