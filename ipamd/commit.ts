// Group commit: requests that arrive together are applied in one SQLite transaction, each in its
// own savepoint, and their replies are sent only after that commit. The commit sequence number
// (store meta) of the last durable commit is also recorded outside the WAL (the commit record,
// store/guard.ts), so that a database found behind it is known to have lost acknowledged commits.
// That record trails by one batch: while a batch's COMMIT syncs the WAL on the event loop, the
// record of the batch before it syncs in libuv's thread pool (the two fsyncs overlap instead of
// adding up), and the batch's replies wait for both. Once no batch follows, the last one is
// recorded too, after its replies. Replies leave in commit order.
// A batch waits while requests are still arriving (commit delay): Node accepts one waiting connection per turn of
// its event loop and every CNI call is a new connection, so without it each commit (each fsync) held about one
// request of a burst of plugins. It waits a turn more while the queue grew in the last one, at most LINGER_MS.
import { ApiError } from "./errors";
import type { Metrics } from "./metrics";
import type { DB } from "./store/database";
import type { Statements } from "./store/statements";
import type { ThrottledLog } from "./throttle";

/** The longest a batch waits for more requests (about one fsync of a loaded disk here; a lone request waits one turn). */
const LINGER_MS = 1;

interface Pending {
  run: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** Whether the last commit went through: what GET /v1/status reports. */
interface CommitOutcome {
  ok: boolean;
  at: number;
  error?: string;
}

/** Applies queued operations in shared transactions; each op gets its own savepoint. */
export class GroupCommitter {
  private queue: Pending[] = [];
  private scheduled = false;
  private closed = false;
  /** The last commit's outcome (ok until a commit fails). */
  outcome: CommitOutcome = { ok: true, at: Date.now() };
  /** Writes the commit record: `seq` is durable (resolves once the record is on disk). */
  recordCommit?: (seq: number) => Promise<void> | void;
  /** The sequence the commit record was last written with, and its writes not yet on disk. */
  private recordedSeq = -1;
  private recording = 0;
  /** The replies of the last committed batch: each batch's go out after the previous one's. */
  private replied: Promise<void> = Promise.resolve();
  private replying = 0;
  /** The batch being gathered: when it started to wait, and how many requests it had at the last turn. */
  private lingerSince = 0;
  private lingerSeen = 0;

  constructor(
    private readonly db: DB,
    private readonly store: Statements,
    private readonly maxBatch: number,
    private readonly metrics?: Metrics,
    private readonly log?: ThrottledLog,
  ) {}

  submit<T>(run: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new ApiError("shutting_down", "ipamd is shutting down; retry shortly"));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  get idle(): boolean {
    return this.queue.length === 0 && !this.scheduled && this.replying === 0 && this.recording === 0;
  }

  close(): void {
    this.closed = true;
  }

  /**
   * Whether a commit can succeed now. After a failed commit: a real (empty) commit, so that the
   * daemon notices when the disk has room again. Otherwise: take the write lock without waiting and
   * roll back (another process holding a lock on the database makes every write fail).
   */
  async probe(): Promise<CommitOutcome> {
    if (!this.outcome.ok) {
      await this.submit(() => undefined).catch(() => undefined);
      return this.outcome;
    }
    if (this.db.inTransaction) return this.outcome;
    try {
      this.db.pragma("busy_timeout = 0");
      this.db.exec("BEGIN IMMEDIATE");
      this.db.exec("ROLLBACK");
      return this.outcome;
    } catch (e) {
      return { ok: false, at: Date.now(), error: `cannot take the database's write lock: ${(e as Error).message}` };
    } finally {
      this.db.pragma("busy_timeout = 5000");
    }
  }

  private flush(): void {
    this.scheduled = false;
    const waiting = this.queue.length;
    if (waiting === 0) return;
    const now = performance.now();
    if (this.lingerSince === 0) this.lingerSince = now;
    if (waiting > this.lingerSeen && waiting < this.maxBatch && now - this.lingerSince < LINGER_MS) {
      this.lingerSeen = waiting;
      this.reschedule();
      return;
    }
    this.lingerSince = 0;
    this.lingerSeen = 0;
    const batch = this.queue.splice(0, this.maxBatch);
    const outcomes: { ok: boolean; value: unknown }[] = [];
    const started = performance.now();
    let seq = 0;
    let recorded: Promise<void> = Promise.resolve();
    try {
      this.db.transaction(() => {
        seq = this.store.beginCommit();
        for (const item of batch) {
          try {
            outcomes.push({ ok: true, value: this.db.transaction(item.run)() }); // savepoint per request
          } catch (e) {
            outcomes.push({ ok: false, value: e });
          }
        }
        recorded = this.record(seq - 1); // the batch before this one; its fsync overlaps this COMMIT's
      })();
    } catch (e) {
      // The commit itself failed (disk full, I/O error, locked): nothing of this batch is durable.
      this.outcome = { ok: false, at: Date.now(), error: (e as Error).message };
      this.log?.error({ err: e }, "group commit failed");
      for (const item of batch) item.reject(new ApiError("internal", `database commit failed: ${(e as Error).message}`));
      this.reschedule();
      return;
    }
    this.store.committed(seq);
    if (!this.outcome.ok) this.log?.log.info({ failedSince: new Date(this.outcome.at).toISOString() }, "database commits succeed again");
    this.outcome = { ok: true, at: Date.now() };
    const reply = (): void => {
      this.replying--;
      this.metrics?.batchSize.observe(batch.length);
      this.metrics?.commitSeconds.observe((performance.now() - started) / 1000);
      batch.forEach((item, i) => {
        if (outcomes[i]!.ok) item.resolve(outcomes[i]!.value);
        else item.reject(outcomes[i]!.value);
      });
      // No batch follows (none queued, none committing): record this one now. The record's write happens
      // here, before the replies reach their sockets (in later ticks), so a daemon that crashes never leaves
      // it behind an answered batch; only a power loss before its fdatasync ends can. A batch that starts
      // later writes the record after this write, so the record never goes back.
      if (this.replying === 0 && this.queue.length === 0 && !this.scheduled) void this.record(seq);
    };
    this.replying++;
    this.replied = Promise.all([this.replied, recorded]).then(reply);
    this.reschedule();
  }

  /** The commit record says `seq`; written once per sequence (the idle record and the next batch's agree). */
  private async record(seq: number): Promise<void> {
    if (seq <= this.recordedSeq || !this.recordCommit) return;
    this.recordedSeq = seq;
    this.recording++;
    try {
      await this.recordCommit(seq);
    } catch (e) {
      this.log?.error({ err: e }, "cannot record the commit sequence");
    } finally {
      this.recording--;
    }
  }

  private reschedule(): void {
    if (this.queue.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }
}
