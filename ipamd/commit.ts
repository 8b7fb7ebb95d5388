// Group commit: requests that arrive together are applied in one SQLite transaction, each in its
// own savepoint, and their replies are sent only after that commit.
import type { Logger } from "pino";
import { ApiError } from "./errors";
import type { Metrics } from "./metrics";
import type { DB } from "./store/database";

interface Pending { run: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }

/** Applies queued operations in shared transactions; each op gets its own savepoint. */
export class GroupCommitter {
  private queue: Pending[] = [];
  private scheduled = false;
  private closed = false;

  constructor(private readonly db: DB, private readonly maxBatch: number, private readonly metrics?: Metrics,
    private readonly log?: Logger) {}

  submit<T>(run: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new ApiError("shutting_down", "ipamd is shutting down; retry shortly"));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) { this.scheduled = true; setImmediate(() => this.flush()); }
    });
  }

  get idle(): boolean { return this.queue.length === 0 && !this.scheduled; }

  close(): void { this.closed = true; }

  private flush(): void {
    this.scheduled = false;
    const batch = this.queue.splice(0, this.maxBatch);
    if (batch.length === 0) return;
    const outcomes: { ok: boolean; value: unknown }[] = [];
    const started = performance.now();
    try {
      this.db.transaction(() => {
        for (const item of batch) {
          try {
            outcomes.push({ ok: true, value: this.db.transaction(item.run)() }); // savepoint per request
          } catch (e) {
            outcomes.push({ ok: false, value: e });
          }
        }
      })();
    } catch (e) {
      // The commit itself failed (disk full, I/O error): nothing of this batch is durable.
      this.log?.error({ err: e }, "group commit failed");
      for (const item of batch) item.reject(new ApiError("internal", `database commit failed: ${(e as Error).message}`));
      this.reschedule();
      return;
    }
    this.metrics?.batchSize.observe(batch.length);
    this.metrics?.commitSeconds.observe((performance.now() - started) / 1000);
    batch.forEach((item, i) => (outcomes[i]!.ok ? item.resolve(outcomes[i]!.value) : item.reject(outcomes[i]!.value)));
    this.reschedule();
  }

  private reschedule(): void {
    if (this.queue.length > 0 && !this.scheduled) { this.scheduled = true; setImmediate(() => this.flush()); }
  }
}
