// Noticing that etcd lost history: restored from an older snapshot (disaster recovery), every key written after the
// snapshot is gone while the nodes' SQLite still holds those addresses. etcd's revision only ever grows in normal
// life (compaction does not lower it), so a fresh linearizable read whose header revision is below one this node has
// already seen means exactly that. The highest revision seen is kept in SQLite, so a restart notices it too.
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

  async check(): Promise<HistoryLoss | null> {
    const seen = this.seen;
    const current = await this.current();
    if (current < seen) return { seen, current };
    if (current > this.stored) this.save(Math.max(current, this.client.highestRevision));
    return null;
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
