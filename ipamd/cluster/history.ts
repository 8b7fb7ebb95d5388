// Noticing that etcd lost history: restored from an older snapshot (disaster recovery), every key written after the
// snapshot is gone while the nodes' SQLite still holds those addresses. etcd's revision only ever grows in normal
// life (compaction does not lower it), so a fresh linearizable read whose header revision is below one this node has
// already seen means exactly that. The highest revision seen is kept in SQLite, so a restart notices it too.
// The node that notices first writes the marker key (its id and etcd's revision then) before it writes its addresses
// back: those writes push etcd's revision past what a node checking later had seen, which could then not tell. A node
// that finds a marker it has not handled, whose revision is below the highest it had seen, lost history too.
import { randomUUID } from "node:crypto";
import type { EtcdClient } from "./etcd";
import type { ClusterStore } from "./local-store";

const STATE_KEY = "etcd_revision_seen";
const MARKER_STATE_KEY = "etcd_history_lost_handled";

interface Marker {
  id: string;
  /** etcd's revision when the loss was noticed. */
  revision: number;
}

export interface HistoryLoss {
  /** The highest revision this node had seen. */
  seen: number;
  /** etcd's revision when the loss was noticed (by this node, or by the one whose marker this node found), lower. */
  current: number;
  /** The marker to write (noticed here), or the one found (already in etcd). */
  marker: Marker;
  found: boolean;
  /** The marker key's mod revision when this node read it (0: absent): written only over that one. */
  markerModRevision: number;
}

/** How often a check writes the revision seen to SQLite (an fsync): not at every claim's check. */
const SAVE_EVERY_MS = 2000;
/** How long a passed check vouches for the claims after it, over the same connections (a refill claims in bursts). */
const VOUCH_MS = 1000;

export class RevisionGuard {
  private stored: number;
  /** The id of the last marker this node handled (kept in SQLite; read here once, not at every claim's check). */
  private handled: string | undefined;
  private savedAt = 0;
  /** The last check that found no loss: when, and over which connections (EtcdClient.connectionsMade). */
  private passed = { at: -Infinity, connections: -1 };

  constructor(
    private readonly client: EtcdClient,
    private readonly local: ClusterStore,
    /** The marker key, read by every check (its header revision is etcd's revision now). */
    private readonly markerKey: string,
  ) {
    this.stored = Number(local.state(STATE_KEY) ?? 0);
    this.handled = local.state(MARKER_STATE_KEY);
  }

  /** The highest revision seen, persisted or in this run. */
  get seen(): number {
    return Math.max(this.stored, this.client.highestRevision);
  }

  /** etcd's revision now: one linearizable read (the default range, never serializable: a lagging member must not answer). */
  async current(): Promise<number> {
    return (await this.read()).revision;
  }

  async check(): Promise<HistoryLoss | null> {
    this.passed = { at: -Infinity, connections: -1 };
    const seen = this.seen;
    const { revision: current, marker, modRevision } = await this.read();
    if (marker && marker.id !== this.handled) {
      if (marker.revision < seen) return { seen, current: marker.revision, marker, found: true, markerModRevision: modRevision };
      this.handle(marker.id); // a loss of history this node had seen nothing of
    }
    if (current < seen) {
      return { seen, current, marker: { id: randomUUID(), revision: current }, found: false, markerModRevision: modRevision };
    }
    if (current > this.stored && Date.now() - this.savedAt >= SAVE_EVERY_MS) this.save(Math.max(current, this.client.highestRevision));
    this.passed = { at: Date.now(), connections: this.client.connectionsMade };
    return null;
  }

  /**
   * Whether a check passed less than VOUCH_MS ago and no connection to etcd was made since: etcd cannot have been
   * restored in between (that restarts every member, and so every connection), so a claim needs no read of its own.
   */
  vouched(): boolean {
    return this.passed.connections === this.client.connectionsMade && Date.now() - this.passed.at < VOUCH_MS;
  }

  /** At a clean stop: the highest revision seen, for the next start's check (a crash loses at most SAVE_EVERY_MS of it). */
  persist(): void {
    if (this.seen > this.stored) this.save(this.seen);
  }

  /**
   * Noticed here: the marker goes to etcd before this node writes its addresses back, unless another node noticed at
   * the same time and wrote its own first: then this node takes that one as the loss it handles (one loss, one
   * recovery on each node, not a second when the other marker is found later).
   */
  async announce(loss: HistoryLoss): Promise<void> {
    if (loss.found) return;
    const r = await this.client.txn(
      [{ key: this.markerKey, target: "mod", equals: loss.markerModRevision }],
      [{ put: { key: this.markerKey, value: JSON.stringify(loss.marker) } }],
      [{ get: { key: this.markerKey } }],
    );
    if (r.succeeded) return;
    const kv = r.responses.flatMap((x) => (x.kind === "get" ? x.kvs : []))[0];
    const theirs = kv && parseMarker(kv.value);
    if (theirs) {
      loss.marker = theirs;
      loss.found = true;
    }
  }

  /** Recovered: etcd's revision counts from `current` again, the check stops firing. */
  reset(current: number, loss: HistoryLoss): void {
    this.client.resetHighestRevision(current);
    this.save(current);
    this.handle(loss.marker.id);
  }

  private handle(markerId: string): void {
    this.handled = markerId;
    this.local.setState(MARKER_STATE_KEY, markerId);
  }

  private async read(): Promise<{ revision: number; marker?: Marker; modRevision: number }> {
    const r = await this.client.range(this.markerKey, { limit: 1 });
    const kv = r.kvs[0];
    const marker = kv && parseMarker(kv.value);
    return { revision: r.revision, modRevision: kv?.modRevision ?? 0, ...(marker ? { marker } : {}) };
  }

  private save(revision: number): void {
    this.stored = revision;
    this.savedAt = Date.now();
    this.local.setState(STATE_KEY, String(revision));
  }
}

/** A marker written by a node; anything else at the key is not one of ours and is ignored. */
function parseMarker(value: string): Marker | undefined {
  try {
    const m = JSON.parse(value) as Partial<Marker>;
    if (typeof m.id === "string" && typeof m.revision === "number") return { id: m.id, revision: m.revision };
  } catch {}
  return undefined;
}
