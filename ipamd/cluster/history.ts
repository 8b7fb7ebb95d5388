// Noticing that etcd lost history: restored from an older snapshot (disaster recovery), every key written after the
// snapshot is gone while the nodes' SQLite still holds those addresses. etcd's revision only ever grows in normal
// life (compaction does not lower it), so a fresh linearizable read whose header revision is below one this node has
// already seen means exactly that. The highest revision seen is kept in SQLite, so a restart notices it too.
// A restore restarts every member, so it breaks every connection to etcd: a claim compares first only on a
// connection opened since the last compare (or once that compare is older than the periodic one), not every time.
import type { EtcdClient } from "./etcd";
import type { ClusterStore } from "./local-store";

const STATE_KEY = "etcd_revision_seen";

export interface HistoryLoss {
  /** The highest revision this node had seen. */
  seen: number;
  /** etcd's revision now, lower. */
  current: number;
}

export class RevisionGuard {
  private stored: number;
  /** The client's connection count and the time of the last compare that found no loss. */
  private verified = { connections: -1, at: 0 };

  constructor(
    private readonly client: EtcdClient,
    private readonly local: ClusterStore,
    /** A key to read (any key: only the header revision matters); keys-only, at most one. */
    private readonly probeKey: string,
  ) {
    this.stored = Number(local.state(STATE_KEY) ?? 0);
  }

  /** The highest revision seen, persisted or in this run. */
  get seen(): number {
    return Math.max(this.stored, this.client.highestRevision);
  }

  /** etcd's revision now: one linearizable read (the default range, never serializable: a lagging member must not answer). */
  async current(): Promise<number> {
    return (await this.client.range(this.probeKey, { keysOnly: true, limit: 1 })).revision;
  }

  /** Whether a claim compares first: a connection to etcd opened since the last compare, or that compare older than `maxAgeMs`. */
  due(maxAgeMs: number): boolean {
    return this.client.connections !== this.verified.connections || Date.now() - this.verified.at >= maxAgeMs;
  }

  async check(): Promise<HistoryLoss | null> {
    const seen = this.seen;
    const connections = this.client.connections; // one opened by this read is counted as unverified: compared again
    const current = await this.current();
    if (current < seen) return { seen, current };
    this.verified = { connections, at: Date.now() };
    if (current > this.stored) this.save(Math.max(current, this.client.highestRevision));
    return null;
  }

  /** At a clean stop: the highest revision seen since the last compare, for the next start's check. */
  persist(): void {
    if (this.seen > this.stored) this.save(this.seen);
  }

  /** Recovered: etcd's revision counts from `current` again, the check stops firing. */
  reset(current: number): void {
    this.client.resetHighestRevision(current);
    this.save(current);
  }

  private save(revision: number): void {
    this.stored = revision;
    this.local.setState(STATE_KEY, String(revision));
  }
}
