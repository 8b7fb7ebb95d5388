// The reservation stream (GET /v1/reservations?watch=true, api/API.md): every change of a
// reservation is an event under a sequence number this daemon gives out. Events are written in
// the commit of the change they describe (so a restart neither loses nor renumbers one), the
// newest KEEP of them are kept in SQLite, and a watcher resumes with ?since=<seq>. In cluster mode the sticky
// reservations' events are not read off this node's rows but off etcd (cluster/sticky-events.ts): queued by the
// commit that records them, numbered with it.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Reservation, ReservationEvent, WatchLine } from "../api/types";
import type { Change } from "./changes";
import { ApiError } from "./errors";
import type { DB, Statement } from "./store/database";
import type { Row } from "./store/statements";

/** Events kept for resuming watchers. */
export const KEEP_EVENTS = 10_000;
/** A bookmark line this often, so that idle watchers learn the sequence and dead connections are noticed. */
const BOOKMARK_MS = 15_000;
/** A watcher that lets this much pile up unread is cut off (it resumes from its last sequence). */
const MAX_UNREAD_BYTES = 4 * 1024 * 1024;

/** An event before it is numbered. */
export type EventDraft = Omit<ReservationEvent, "seq">;
/** What the audit log gets of a commit: every change of this node's rows, with its sequence when it is streamed. */
export type CommittedEvent = EventDraft & { seq?: number };

interface Watcher {
  res: ServerResponse;
  /** The last sequence this watcher has been sent (or told about in a bookmark). */
  last: number;
}

export class ReservationEvents {
  private seq: number;
  /** The lowest sequence still kept (seq + 1 when none is). */
  private oldest: number;
  private readonly watchers = new Set<Watcher>();
  private readonly bookmarks: NodeJS.Timeout;
  private readonly q: Record<"insert" | "since" | "prune", Statement>;
  /** Events queued by the running commit (`queue`), numbered by its `record`. */
  private queued: EventDraft[] = [];

  constructor(
    db: DB,
    private readonly node: string,
    private readonly keep = KEEP_EVENTS,
  ) {
    const bounds = db.prepare("SELECT min(seq) AS lo, max(seq) AS hi FROM reservation_events").get() as {
      lo: number | null;
      hi: number | null;
    };
    this.seq = bounds.hi ?? 0;
    this.oldest = bounds.lo ?? this.seq + 1;
    this.q = {
      insert: db.prepare("INSERT INTO reservation_events (seq, json) VALUES (?, ?)"),
      since: db.prepare("SELECT json FROM reservation_events WHERE seq > ? ORDER BY seq"),
      prune: db.prepare("DELETE FROM reservation_events WHERE seq <= ?"),
    };
    this.bookmarks = setInterval(() => this.bookmark(), BOOKMARK_MS);
    this.bookmarks.unref();
  }

  /** The last sequence given out. */
  get lastSeq(): number {
    return this.seq;
  }

  get watching(): number {
    return this.watchers.size;
  }

  /** Inside a commit: events not read off its row changes (cluster mode: etcd's sticky changes), numbered by its `record`. */
  queue(drafts: EventDraft[]): void {
    this.queued.push(...drafts);
  }

  /** A commit that failed: what it queued is dropped. */
  dropQueued(): void {
    this.queued = [];
  }

  /**
   * Inside the request's savepoint: numbers and stores the queued events, then those of `changes` that `streamed`
   * keeps (all by default; cluster mode leaves out sticky rows, whose events come from etcd). Returns what goes
   * to the watchers after the commit, and every change for the audit log. A savepoint rolled back leaves a gap in
   * the numbers, never a reuse.
   */
  record(
    changes: Change[],
    reason: string,
    reservation: (row: Row) => Reservation,
    now: number,
    streamed: (c: Change) => boolean = () => true,
  ): { published: ReservationEvent[]; audited: CommittedEvent[] } {
    const at = new Date(now).toISOString();
    const published = this.queued.splice(0).map((d) => this.store({ seq: 0, ...d }));
    const audited = changes.map((c): CommittedEvent => {
      const d: CommittedEvent = { type: c.event, at, node: this.node, reason, reservation: reservation(c.row) };
      if (c.heldBy) d.heldBy = c.heldBy;
      if (!streamed(c)) return d;
      const e = this.store({ seq: 0, ...d });
      published.push(e);
      return e;
    });
    if (this.seq - this.oldest >= this.keep + Math.ceil(this.keep / 10)) {
      this.q.prune.run(this.seq - this.keep);
      this.oldest = this.seq - this.keep + 1;
    }
    return { published, audited };
  }

  /** Numbers and stores one event (`seq` first in its JSON, as the stream has always sent it). */
  private store(e: ReservationEvent): ReservationEvent {
    e.seq = ++this.seq;
    this.q.insert.run(e.seq, JSON.stringify(e));
    return e;
  }

  /** After the commit: the events go to every watcher (in sequence order; none twice). */
  publish(events: ReservationEvent[]): void {
    if (events.length === 0) return;
    for (const w of this.watchers) {
      const fresh = events.filter((e) => e.seq > w.last);
      if (fresh.length === 0) continue;
      w.last = fresh[fresh.length - 1]!.seq;
      this.write(w, fresh);
    }
  }

  /**
   * Serves one watcher: the kept events after `since` (none when absent), a bookmark with the
   * current sequence, then every event as it is committed.
   */
  watch(req: IncomingMessage, res: ServerResponse, since: number | undefined): void {
    if (since !== undefined && since > this.seq) {
      throw new ApiError(
        "invalid_request",
        `since=${since} is ahead of this daemon's last event (${this.seq}): it was not given out by this ipamd's database ` +
          "(restored or replaced?); list the reservations (GET /v1/reservations) and watch again without since",
        "since",
      );
    }
    if (since !== undefined && since < this.oldest - 1) {
      throw new ApiError(
        "events_expired",
        `the events after ${since} are no longer kept (this ipamd keeps the last ${this.keep}; the oldest kept is ` +
          `${this.oldest}): list the reservations (GET /v1/reservations), then watch again with since=${this.seq}`,
        "since",
      );
    }
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    req.socket.setTimeout(0);
    const w: Watcher = { res, last: this.seq };
    const lines: string[] = [];
    if (since !== undefined) for (const r of this.q.since.all(since) as { json: string }[]) lines.push(r.json);
    lines.push(JSON.stringify({ type: "bookmark", seq: this.seq } satisfies WatchLine));
    res.write(`${lines.join("\n")}\n`);
    this.watchers.add(w);
    res.on("close", () => this.watchers.delete(w));
  }

  /** Ends every stream (shutdown): watchers reconnect with their last sequence. */
  close(): void {
    clearInterval(this.bookmarks);
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  private bookmark(): void {
    for (const w of this.watchers) {
      w.last = Math.max(w.last, this.seq);
      this.send(w, JSON.stringify({ type: "bookmark", seq: w.last } satisfies WatchLine));
    }
  }

  private write(w: Watcher, events: ReservationEvent[]): void {
    this.send(w, events.map((e) => JSON.stringify(e)).join("\n"));
  }

  private send(w: Watcher, text: string): void {
    if (w.res.writableLength > MAX_UNREAD_BYTES) {
      this.watchers.delete(w);
      const message = `this watcher read too slowly (over ${MAX_UNREAD_BYTES} bytes unread); reconnect with since=<the last seq read>`;
      w.res.end(`${JSON.stringify({ type: "error", message } satisfies WatchLine)}\n`);
      return;
    }
    w.res.write(`${text}\n`);
  }
}
