// Cluster mode's half of the reservation stream (events.ts): the changes of the sticky identities in etcd, from
// whichever node made them, as events of this daemon's stream. The sticky watch's changes are compared with what this
// node last saw of each identity (kept in SQLite, table cluster_sticky_seen, with the revision it reflects), and
// the events are numbered in the same commit that advances both: a restart resumes the watch right after what was
// already emitted (nothing twice, nothing skipped). After a re-list (etcd compacted the revision the watch needed)
// the re-listed identities are compared with the seen ones: the net differences are emitted, as `cluster-relist`.
import type { Reservation } from "../../api/types";
import type { EventDraft } from "../events";
import type { NodePools } from "../pools";
import { ownerOf } from "../statefulsets";
import type { DB, Statement } from "../store/database";
import type { KeyLayout, StickyIdentity, StickyRecord } from "./keys";

export type SeenRecord = StickyRecord & { modRevision: number };

/** One change of the sticky watch: the identity's name under <prefix>/sticky/, its value after (null: deleted). */
export interface StickyChange {
  name: string;
  /** The revision of the change (of the delete, for a delete). */
  revision: number;
  record: SeenRecord | null;
}

type Item = { change: StickyChange } | { relist: Map<string, SeenRecord>; revision: number };

/** What one batch adds: the events, and the seen identities and revision once its commit is durable. */
export interface FeedBatch {
  drafts: EventDraft[];
  seen: Map<string, SeenRecord | null>;
  revision: number;
  baselined: boolean;
}

/** The reservation as GET /v1/reservations lists a sticky identity from etcd. */
export function stickyReservation(pools: NodePools, id: StickyIdentity, r: StickyRecord): Reservation {
  const family = pools.get(id.pool)?.family ?? (r.ip.includes(":") ? 6 : 4);
  return {
    ip: r.ip,
    address: `${r.ip}/${pools.prefixOf(id.pool, family, r.ip)}`,
    pool: id.pool,
    family,
    owner: ownerOf(id),
    kind: "statefulset",
    sticky: true,
    pinned: r.pinned === true,
    state: r.attachment ? "attached" : "detached",
    namespace: id.namespace,
    statefulset: id.statefulset,
    ordinal: id.ordinal,
    ...(r.attachment ? { containerID: r.attachment.containerID, ifName: r.attachment.ifName } : {}),
    ...(r.attachment?.podUID ? { podUID: r.attachment.podUID } : {}),
    createdAt: new Date(r.at).toISOString(),
    node: r.node,
  };
}

/** The node that wrote a value: ClusterOwnership's gen is `<node>:<start time, base 36>:<counter>` (node names may hold ":"). */
export function writerOf(gen: string | undefined): string | undefined {
  if (!gen) return undefined;
  const last = gen.lastIndexOf(":");
  const start = last > 0 ? gen.lastIndexOf(":", last - 1) : -1;
  return start > 0 ? gen.slice(0, start) : undefined;
}

export class StickyFeed {
  private readonly seen = new Map<string, SeenRecord>();
  private queue: Item[] = [];
  /** The highest etcd revision the seen identities reflect (0: never listed). */
  revision: number;
  /** Whether the seen identities were ever listed (the first list is the baseline: no events). */
  private baselined: boolean;
  private readonly q: Record<"all" | "upsert" | "delete" | "clear", Statement>;

  constructor(
    db: DB,
    private readonly keys: KeyLayout,
    private readonly pools: () => NodePools,
    private readonly revisionState: { get(): string | undefined; set(value: string): void },
  ) {
    this.q = {
      all: db.prepare("SELECT name, json FROM cluster_sticky_seen"),
      upsert: db.prepare("INSERT INTO cluster_sticky_seen (name, json) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET json = excluded.json"),
      delete: db.prepare("DELETE FROM cluster_sticky_seen WHERE name = ?"),
      clear: db.prepare("DELETE FROM cluster_sticky_seen"),
    };
    this.revision = 0;
    this.baselined = false;
    this.reload();
  }

  /** Reads the seen identities and their revision from SQLite (at start, and after a batch whose outcome is unknown). */
  reload(): void {
    this.seen.clear();
    for (const r of this.q.all.all() as { name: string; json: string }[]) this.seen.set(r.name, JSON.parse(r.json) as SeenRecord);
    this.revision = Number(this.revisionState.get() ?? 0);
    this.baselined = this.revision > 0;
  }

  /** Where the sticky watch resumes after a restart (undefined: list first, and take the list as the baseline). */
  get resumeRevision(): number | undefined {
    return this.baselined ? this.revision : undefined;
  }

  changed(changes: StickyChange[]): void {
    for (const change of changes) this.queue.push({ change });
  }

  /** etcd lost history (history.ts): its revisions count from lower again; the re-list that follows sets the revision. */
  restored(): void {
    this.revision = 0;
  }

  /** The whole prefix as of `revision` (a copy: the view moves on before the batch runs). */
  relisted(view: Map<string, SeenRecord>, revision: number): void {
    this.queue.push({ relist: new Map(view), revision });
  }

  take(): Item[] {
    return this.queue.splice(0);
  }

  /**
   * A batch whose commit failed (or whose outcome is unknown: the change failed after its commit): its items run
   * again first, compared with what SQLite holds, so a batch that did commit emits nothing twice.
   */
  putBack(items: Item[]): void {
    this.reload();
    this.queue.unshift(...items);
  }

  /**
   * Inside the commit: the events of `items` (in order), the seen identities written to SQLite, and the revision
   * saved. The in-memory state follows only with `committed` (a rolled-back commit leaves it as it was).
   */
  apply(items: Item[], now: number): FeedBatch {
    const b: FeedBatch = { drafts: [], seen: new Map(), revision: this.revision, baselined: this.baselined };
    const get = (name: string): SeenRecord | undefined => (b.seen.has(name) ? (b.seen.get(name) ?? undefined) : this.seen.get(name));
    const set = (name: string, r: SeenRecord | null): void => {
      b.seen.set(name, r);
      if (r) this.q.upsert.run(name, JSON.stringify(r));
      else this.q.delete.run(name);
    };
    for (const item of items) {
      if ("change" in item) {
        const { name, record, revision } = item.change;
        const prev = get(name);
        const reflected = b.revision;
        b.revision = Math.max(b.revision, revision);
        if (!b.baselined) continue; // watching before the first list: the list that follows is the baseline
        // Seen already (a watch that resumed too early): older than what the seen identities reflect, or than the identity.
        if (revision < reflected) continue;
        if (record ? prev && record.modRevision <= prev.modRevision : !prev || prev.modRevision >= revision) continue;
        b.drafts.push(...this.events(name, prev ?? null, record, now, revision));
        set(name, record);
        continue;
      }
      b.revision = Math.max(b.revision, item.revision);
      if (!b.baselined) {
        this.q.clear.run();
        for (const name of new Set([...this.seen.keys(), ...b.seen.keys()])) b.seen.set(name, null);
        for (const [name, r] of item.relist) set(name, r);
        b.baselined = true;
        continue;
      }
      for (const name of new Set([...this.seen.keys(), ...b.seen.keys()])) {
        const prev = get(name);
        if (prev && !item.relist.has(name)) {
          b.drafts.push(...this.events(name, prev, null, now, item.revision, "cluster-relist"));
          set(name, null);
        }
      }
      for (const [name, r] of [...item.relist].sort((x, y) => x[1].modRevision - y[1].modRevision)) {
        const prev = get(name);
        if (prev?.modRevision === r.modRevision) continue;
        b.drafts.push(...this.events(name, prev ?? null, r, now, r.modRevision, "cluster-relist"));
        set(name, r);
      }
    }
    if (b.revision > this.revision || b.baselined !== this.baselined) this.revisionState.set(String(b.revision));
    return b;
  }

  /** The batch's commit is durable. */
  committed(b: FeedBatch): void {
    for (const [name, r] of b.seen) {
      if (r) this.seen.set(name, r);
      else this.seen.delete(name);
    }
    this.revision = b.revision;
    this.baselined = b.baselined;
  }

  /** The events of one identity's change from `prev` to `next` (either may be absent). */
  private events(
    name: string,
    prev: SeenRecord | null,
    next: SeenRecord | null,
    now: number,
    revision: number,
    relist?: "cluster-relist",
  ): EventDraft[] {
    const id = this.keys.identityFromKey(`${this.keys.prefix}/sticky/${name}`);
    const out: EventDraft[] = [];
    // A delete carries no value: etcd does not say who deleted, so its node is the one the identity was bound to.
    const at = new Date(next ? next.at : now).toISOString();
    const by = (next ? writerOf(next.gen) || next.node : prev!.attachment?.node || prev!.node || writerOf(prev!.gen)) ?? "";
    const draft = (type: EventDraft["type"], reason: string, r: SeenRecord, extra: Partial<EventDraft> = {}): void => {
      out.push({
        type,
        at,
        node: by,
        reason: relist ?? reason,
        reservation: stickyReservation(this.pools(), id, r),
        etcdRevision: revision,
        ...extra,
      });
    };
    const held = (p: SeenRecord, n: SeenRecord | null): Partial<EventDraft> =>
      p.attachment && p.attachment.containerID !== n?.attachment?.containerID
        ? { heldBy: `${p.attachment.containerID}/${p.attachment.ifName}` }
        : {};
    const created = (n: SeenRecord, reason?: string): void =>
      draft(
        n.attachment ? "attached" : "reserved",
        reason ?? (n.attachment ? "cluster-attach" : n.pinned ? "cluster-pin" : "cluster-reserve"),
        n,
      );
    if (!prev && next) created(next);
    else if (prev && !next) draft("released", "cluster-release", prev, held(prev, null));
    else if (prev && next) {
      if (prev.ip !== next.ip) {
        // Pinned to another address: the old one ends (its sandbox may keep it until its DEL), the new one begins.
        draft("released", "cluster-pin", prev, held(prev, next));
        created(next, "cluster-pin");
      } else if (next.attachment && next.attachment.containerID !== prev.attachment?.containerID) draft("attached", "cluster-attach", next);
      else if (!next.attachment && prev.attachment) draft("detached", "cluster-detach", next);
      else if (next.pinned && !prev.pinned) draft("reserved", "cluster-pin", next);
      else if (next.node !== prev.node) draft(next.attachment ? "attached" : "reserved", "cluster-rebind", next);
    }
    return out;
  }
}
