// Keeps a view of one key prefix fresh: list, then watch from the list's revision + 1; on a lost stream watch
// again from the last revision seen (next endpoint, backoff); on compaction list again. The view is a cache:
// nothing that decides ownership reads it without a compare in etcd.
import { type EtcdClient, EtcdCompacted, type KeyValue, type WatchEvent, type WatchHandle } from "./etcd";

export interface WatchLoopHandlers {
  /** The whole prefix as of `revision` (start, and after compaction). */
  onList(kvs: KeyValue[], revision: number): void;
  onEvents(events: WatchEvent[], revision: number): void;
  onError?(error: Error): void;
}

export class WatchLoop {
  private handle: WatchHandle | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private failures = 0;
  /** Highest revision the view reflects. */
  revision = 0;
  relists = 0;
  /** Times the watched revision had been compacted away (each followed by a re-list). */
  compactions = 0;

  constructor(
    private readonly client: EtcdClient,
    readonly prefix: string,
    private readonly h: WatchLoopHandlers,
    private readonly maxBackoffMs = 5000,
  ) {}

  /** From `fromRevision` (the last revision a previous run reflected: a restart), or list first. */
  start(fromRevision?: number): void {
    this.stopped = false;
    if (fromRevision) {
      this.revision = fromRevision;
      this.watch();
    } else void this.list();
  }

  stop(): void {
    this.stopped = true;
    this.handle?.close();
    if (this.timer) clearTimeout(this.timer);
  }

  /** etcd lost history (history.ts): the saved revision means nothing now; list again and watch from there. */
  relist(): void {
    if (this.stopped) return;
    this.handle?.close();
    if (this.timer) clearTimeout(this.timer);
    this.revision = 0;
    this.listing++;
    void this.list();
  }

  private later(fn: () => void): void {
    const wait = Math.min(100 * 2 ** this.failures++, this.maxBackoffMs);
    this.timer = setTimeout(fn, wait);
  }

  /** Bumped by relist: a list still in flight from before is dropped. */
  private listing = 0;

  private async list(): Promise<void> {
    if (this.stopped) return;
    const listing = this.listing;
    try {
      const r = await this.client.range(this.prefix, { prefix: true });
      if (this.stopped || listing !== this.listing) return;
      this.relists++;
      this.revision = r.revision;
      this.h.onList(r.kvs, r.revision);
      this.watch();
    } catch (e) {
      if (listing !== this.listing) return;
      this.h.onError?.(e as Error);
      this.later(() => void this.list());
    }
  }

  private watch(): void {
    if (this.stopped) return;
    this.handle = this.client.watch(
      this.prefix,
      { prefix: true, startRevision: this.revision + 1 },
      {
        onCreated: () => {
          this.failures = 0;
        },
        onEvents: (events, revision) => {
          // Resume after the last event, not the header: a catch-up batch's header revision runs ahead of events still
          // to come (etcd sends at most 1000 revisions per batch), and resuming there would skip them (clientv3 does the same).
          this.revision = Math.max(this.revision, ...events.map((e) => e.kv.modRevision));
          this.h.onEvents(events, revision);
        },
        onCompacted: () => undefined,
        onEnd: (err) => {
          if (this.stopped) return;
          this.h.onError?.(err);
          if (err instanceof EtcdCompacted) {
            this.compactions++;
            void this.list();
            return;
          }
          this.later(() => this.watch());
        },
      },
    );
  }
}
