// One node's cluster mode, assembled and run: the etcd client, liveness (lease) and the reaper of dead nodes, the
// shared ownership (buffer, sticky identities), the seam implementation the rules use, the outbox drain, the watch
// that keeps the local record following etcd, status and metrics. The operator calls live in operator.ts.
//
// Start-up, etcd reachable: liveness, then the buffer from etcd (minus what SQLite uses), orphans of a crash between
// an etcd write and its commit are undone, the sticky watch resumes from the saved revision (a compacted one: list
// again). The sticky watch's changes also become events of this node's reservation stream (sticky-events.ts), in the
// commit that saves the revision the watch resumes from. etcd unreachable: the buffer from SQLite (always a subset of
// what etcd grants this node), fenced once the last confirmed liveness is older than the grace period; everything
// else retries with backoff.
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { ClusterStatus } from "../../api/types";
import type { Config } from "../config";
import type { EventDraft } from "../events";
import { type NodePools, selectorMatches } from "../pools";
import { ownerOf, StatefulSets } from "../statefulsets";
import type { DB } from "../store/database";
import type { Row, Statements } from "../store/statements";
import { ClusterError } from "./errors";
import { type ConnectionState, EtcdClient, EtcdError, type KeyValue } from "./etcd";
import { type HistoryLoss, RevisionGuard } from "./history";
import { type AttachmentRef, type IpOwner, KeyLayout, parseJson, type StickyIdentity } from "./keys";
import { NodeLiveness, type ReapReport, Reaper } from "./liveness";
import { ClusterStore } from "./local-store";
import { ClusterMetrics } from "./metrics";
import { ClusterNodeOwnership, identityOf, memberOfRow } from "./node-ownership";
import { type BufferEntry, ClusterOwnership, type JoinEntry, type JoinOutcome } from "./ownership";
import { type StickyChange, StickyFeed } from "./sticky-events";
import { WatchLoop } from "./watch";

/** How often a node compares etcd's revision with the highest it has seen (one linearizable read, keys only). */
const HISTORY_CHECK_MS = 2000;

/** Runs `fn` inside the group commit (a savepoint of its own), like a request. */
export type LocalRunner = <T>(reason: string, fn: () => T) => Promise<T>;

export class ClusterNode {
  readonly client: EtcdClient;
  readonly keys: KeyLayout;
  readonly own: ClusterOwnership;
  readonly local: ClusterStore;
  readonly metrics: ClusterMetrics;
  readonly graceMs: number;
  private readonly liveness: NodeLiveness;
  private readonly reaper: Reaper;
  private seam?: ClusterNodeOwnership;
  store?: Statements;
  pools?: NodePools;
  private runLocal?: LocalRunner;
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  private stateDetail = "";
  /** When etcd last confirmed this node's liveness as far as fencing is concerned (ms, persisted). */
  private fenceConfirmed = 0;
  private draining = false;
  private drainBackoffMs = 0;
  private drainTimer: NodeJS.Timeout | null = null;
  outboxConflicts = 0;
  private lastReap: ReapReport = { freed: [], waiting: [], conflicts: 0, adopted: [], handedOver: [] };
  /**
   * Identities this node bound (by keys.stickyName, as the watch's view names them), with the revision: a watch
   * event or view older than that (a watch lags the transaction's answer) must not undo the local row.
   */
  private readonly boundAt = new Map<string, number>();
  private pendingSync = new Map<string, number>();
  private relistPending = false;
  private syncTimer: NodeJS.Timeout | null = null;
  private readonly registered = new Set<string>();
  private stsWatch?: WatchLoop;
  private livenessUp = false;
  /** The sticky identities' changes as reservation events (created once the store is open). */
  private feed?: StickyFeed;
  /** Queues events into the running commit (ApiServer's reservation stream). */
  private stream?: (drafts: EventDraft[]) => void;
  private readonly history: RevisionGuard;
  /** Set while this node re-asserts its addresses after etcd lost history: no claims of new addresses meanwhile. */
  private recovering: Promise<void> | null = null;
  private claimsPausedUntil = 0;
  /** Set once start-up is done: the history is checked every HISTORY_CHECK_MS and when etcd answers again. */
  private checkingHistory = false;
  /** The last etcd connection state was "unreachable": the next other state is etcd answering again. */
  private etcdUnreachable = false;

  constructor(
    readonly config: Config,
    private readonly db: DB,
    readonly log: Logger,
    registry: Registry,
  ) {
    const c = config.cluster!;
    this.graceMs = c.nodeGraceSeconds * 1000;
    this.metrics = new ClusterMetrics(registry);
    this.local = new ClusterStore(db);
    this.keys = new KeyLayout(c.etcd.prefix);
    this.client = new EtcdClient({
      endpoints: c.etcd.endpoints,
      caFile: c.etcd.caFile,
      certFile: c.etcd.certFile,
      keyFile: c.etcd.keyFile,
      requestTimeoutMs: c.etcd.requestTimeoutSeconds * 1000,
      observer: this.metrics.etcdObserver(
        (state, detail) => this.onState(state, detail),
        (ok, detail) => (ok ? this.log.info(detail) : this.log.warn(detail)),
      ),
    });
    this.liveness = new NodeLiveness({
      client: this.client,
      node: config.nodeName,
      prefix: c.etcd.prefix,
      ttlSeconds: c.leaseTTLSeconds,
      labels: config.nodeLabels,
      onError: (e) => this.log.warn({ err: e.message }, "etcd liveness renewal failed; retrying"),
    });
    this.reaper = new Reaper({
      client: this.client,
      pools: config.pools.map((p) => p.name),
      graceMs: this.graceMs,
      prefix: c.etcd.prefix,
      node: config.nodeName,
    });
    const selected = config.pools.filter((p) => selectorMatches(p.selector, config.nodeLabels));
    this.own = new ClusterOwnership({
      client: this.client,
      node: config.nodeName,
      prefix: c.etcd.prefix,
      pools: config.pools,
      selected: selected.map((p) => p.name),
      buffer: c.buffer,
      handbackWaitMs: c.handbackWaitSeconds * 1000,
      cooldownMs: config.cooldownMs,
      liveness: { lastConfirmedAt: () => this.fenceConfirmed, fenceAfterMs: this.graceMs },
      observer: this.metrics.ownershipObserver(),
      usedLocally: (_pool, ips) => this.store?.heldAmong(ips) ?? new Set(),
      beforeClaim: () => this.beforeClaim(),
      persist: {
        // Rides the next group commit (no fsync of its own); what an allocation took meanwhile is left out.
        added: (entries) => this.persistBuffered(entries),
        removed: (pool, ips) => this.local.bufferRemoved(pool, ips),
        reset: (pool, entries) => this.local.bufferReset(pool, entries),
      },
    });
    this.history = new RevisionGuard(this.client, this.local, this.keys.historyLost());
  }

  private persistBuffered(entries: BufferEntry[]): void {
    const write = (): void => this.local.bufferAdded(entries.filter((e) => this.own.isBuffered(e.pool, e.ip)));
    if (!this.runLocal) {
      write();
      return;
    }
    this.runLocal("buffer claimed", write).catch((e: unknown) =>
      this.log.warn({ err: e }, "could not record claimed buffer addresses in SQLite (a restart without etcd has fewer)"),
    );
  }

  /** Who is a StatefulSet member at the etcd step of an ADD (the Kubernetes side plugs its pods in as the source). */
  membership!: StatefulSets;

  /** The factory assembleNode takes: the seam implementation over this node's store and pools. */
  ownership = (store: Statements, pools: NodePools): ClusterNodeOwnership => {
    this.store = store;
    this.pools = pools;
    pools.onSelection((selected) => this.own.select(selected));
    this.membership = new StatefulSets(store, this.config.statefulSets);
    this.seam = new ClusterNodeOwnership({
      node: this.config.nodeName,
      store,
      pools,
      statefulSets: this.membership,
      own: this.own,
      local: this.local,
      kick: () => this.kick(),
      flush: (ms) => this.flush(ms),
      takeApplied: () => this.takeApplied(),
      learnStatefulSet: (ns, podName) => this.learnStatefulSet(ns, podName),
      onInconsistency: (message, detail) => this.log.error(detail, message),
      bound: (identity, revision) => this.markBound(identity, revision),
    });
    return this.seam;
  };

  private onState(state: ConnectionState, detail: string): void {
    const wasUnreachable = this.etcdUnreachable;
    this.etcdUnreachable = state === "unreachable";
    this.stateDetail = detail;
    if (state === "unreachable") this.log.warn({ detail }, "etcd unreachable");
    else this.log.info({ state, detail }, `etcd ${state}`);
    // Back after an outage (a restore from a snapshot is one): etcd may have lost history; check now, not at the next tick.
    if (wasUnreachable && !this.etcdUnreachable && this.checkingHistory) void this.checkHistory().catch(() => undefined);
  }

  /**
   * How long claims of new addresses wait after this node noticed that etcd lost history: every other live node
   * notices within one check interval (or when etcd answers it again) and then has one lease TTL to write its
   * addresses back.
   */
  private get claimPauseMs(): number {
    return HISTORY_CHECK_MS + this.config.cluster!.leaseTTLSeconds * 1000;
  }

  // ---------- lifecycle ----------

  /** `stream` queues reservation events into the commit that runs (the sticky identities' changes). */
  async start(runLocal: LocalRunner, stream?: (drafts: EventDraft[]) => void): Promise<void> {
    this.runLocal = runLocal;
    this.stream = stream;
    this.fenceConfirmed = Number(this.local.state("liveness_confirmed_at") ?? 0);
    const silentFor = Date.now() - this.fenceConfirmed;
    // A database that never ran in cluster mode: its reservations go to etcd first.
    let joining = this.fenceConfirmed === 0 && this.local.state("cluster_joined_at") === undefined ? this.joinEntries() : undefined;
    this.feed = new StickyFeed(this.db, this.keys, () => this.pools!, {
      get: () => this.local.state("sticky_events_revision"),
      set: (value) => this.local.setState("sticky_events_revision", value),
    });
    // Resumed right after what the stream has emitted; never listed (or before this version): list, as the baseline.
    const stickyRevision = this.feed.resumeRevision;
    const inUse = this.inUse();
    const startOpts = {
      inUse,
      eachKey: this.orphanIp,
      stickyRevision,
      onSticky: (changes: StickyChange[], revision: number, relisted: boolean) => this.onSticky(changes, revision, relisted),
      onWatchError: (e: Error) => {
        this.log.debug({ err: e.message }, "sticky watch interrupted; resuming");
        void this.checkHistory().catch(() => undefined);
      },
    };
    try {
      await this.liveness.start();
      this.livenessUp = true;
      this.fenceConfirmed = this.liveness.lastConfirmedAt();
      // Before the watches: a sticky row etcd does not know would be taken for one released elsewhere and dropped.
      if (joining) await this.join(joining);
      joining = undefined; // joined: a later etcd failure is the ordinary start without etcd
      this.local.setState("liveness_confirmed_at", String(this.fenceConfirmed));
      const loss = await this.history.check();
      await this.own.start(startOpts);
      await this.undoOrphans(silentFor > this.graceMs / 2);
      if (loss) await this.recoverHistory(loss);
    } catch (e) {
      if (!(e instanceof EtcdError)) throw e;
      if (joining?.length) throw cannotJoin(joining.length, e);
      this.log.warn({ err: e.message }, "etcd unreachable at start-up: serving from the SQLite buffer; retrying etcd with backoff");
      if (!this.livenessUp) this.retryLiveness(500);
      await this.own.start({ ...startOpts, buffer: this.local.buffer() });
    }
    this.startStatefulSetWatch();
    this.reaper.start(
      Math.max(250, Math.floor(this.graceMs / 4)),
      (r) => this.onReap(r),
      (e) => this.log.debug({ err: e.message }, "reaper pass failed"),
    );
    this.every(1000, () => this.checkLiveness());
    // etcd unreachable: its state is logged already; the next check retries.
    this.checkingHistory = true;
    this.every(HISTORY_CHECK_MS, () =>
      this.checkHistory().catch((e: unknown) => {
        if (!(e instanceof EtcdError)) throw e;
      }),
    );
    this.every(5000, () => this.kick());
    this.kick();
    this.log.info(
      { endpoints: this.config.cluster!.etcd.endpoints, prefix: this.keys.prefix, graceSeconds: this.graceMs / 1000 },
      "cluster mode: sharing pools through etcd",
    );
  }

  /**
   * The first start in cluster mode (never confirmed a lease before) of a database with reservations, made in
   * single-node mode: they are written to etcd before the node serves, so no node takes their addresses for free
   * ones. Sticky reservations become identities bound to this node. An address or identity etcd holds otherwise is
   * logged as held twice (etcd's holder stays; a sandbox here keeps its address until its DEL). Without etcd the
   * daemon does not start: those addresses must be in etcd first.
   */
  private joinEntries(): JoinEntry[] {
    const pools = new Set(this.own.poolNames());
    const entries: JoinEntry[] = [];
    for (const row of this.store!.matching({}, 10_000_000)) {
      if (!pools.has(row.pool)) continue;
      const attachment = attachmentOf(row);
      if (row.sticky) {
        const identity = identityOf(memberOfRow(row), row.pool);
        entries.push({ identity, ip: row.ip, pinned: row.pinned === 1, ...(attachment ? { attachment } : {}) });
      } else if (attachment) {
        entries.push({ pool: row.pool, ip: row.ip, attachment });
      }
    }
    return entries;
  }

  /** `restored`: written again into an etcd restored from an older snapshot, not a first join. */
  private async join(entries: JoinEntry[], restored = false): Promise<void> {
    const why = restored ? "etcd restored" : "joining cluster mode";
    if (entries.length > 0) {
      let outcomes: JoinOutcome[];
      try {
        outcomes = await this.own.join(entries, { restored });
      } catch (e) {
        throw restored ? e : cannotJoin(entries.length, e as Error);
      }
      const count = (status: JoinOutcome["status"]): number => outcomes.filter((o) => o.status === status).length;
      for (const o of outcomes.filter((x) => x.status === "conflict")) {
        this.log.error(
          { ip: o.entry.ip, ...("identity" in o.entry ? { identity: this.keys.identityName(o.entry.identity) } : {}) },
          `${why}: ${o.detail}; the address is held twice in the cluster: etcd's holder keeps it, ` +
            "a sandbox here keeps it until its DEL (move one of them to another address)" +
            (o.claimed
              ? `; claimed for that sandbox (${this.keys.joinClaims()}): the key becomes its attachment once that buffer gives it up`
              : ""),
        );
      }
      this.log.info(
        { written: count("written"), present: count("present"), conflicts: count("conflict") },
        !restored
          ? "joined cluster mode: this node's reservations from single-node mode are in etcd"
          : `${why}: this node's reservations are in etcd again`,
      );
    }
    this.local.setState("cluster_joined_at", String(Date.now()));
  }

  /**
   * Addresses of this node's buffer keys in etcd that are not free here: used by a row (a plain attachment keeps its
   * key as "buffer of this node"), or waiting in the outbox for their release (which puts them back, cooled down).
   */
  private inUse(): (pool: string, ip: string) => boolean {
    const releasing = new Set<string>();
    for (let after = 0; ; ) {
      const page = this.local.pendingAfter(after, 1024);
      if (page.length === 0) break;
      for (const r of page) if (r.op === "release") releasing.add(`${r.pool} ${r.ip}`);
      after = page[page.length - 1]!.id;
    }
    return (pool, ip) => releasing.has(`${pool} ${ip}`) || this.store!.byIp(ip) !== undefined || this.seam?.isTaking(pool, ip) === true;
  }

  private every(ms: number, fn: () => void | Promise<void>): void {
    const t = setInterval(() => {
      void Promise.resolve(fn()).catch((e: unknown) => this.log.warn({ err: e }, "cluster task failed"));
    }, ms);
    t.unref();
    this.timers.push(t);
  }

  private retryLiveness(waitMs: number): void {
    const t = setTimeout(() => {
      if (this.closed) return;
      this.liveness.start().then(
        () => {
          this.livenessUp = true;
          this.log.info("etcd reachable again: liveness renewed");
        },
        () => this.retryLiveness(Math.min(waitMs * 2, 5000)),
      );
    }, waitMs);
    t.unref();
  }

  /**
   * Fencing follows the lease: confirmations advance `fenceConfirmed`; after a silence longer than the grace period
   * (other nodes may have reaped this node's buffer and attachments) the buffer is read again from etcd and the
   * local attachments re-asserted before the node hands out buffered addresses again.
   */
  private async checkLiveness(): Promise<void> {
    const c = this.liveness.lastConfirmedAt();
    if (c <= this.fenceConfirmed) return;
    if (c - this.fenceConfirmed > this.graceMs && this.fenceConfirmed > 0) {
      this.log.warn(
        { silentSeconds: Math.round((c - this.fenceConfirmed) / 1000) },
        "etcd liveness was lost for longer than the grace period: re-reading the buffer and re-asserting attachments",
      );
      await this.own.resync(this.inUse(), this.orphanIp);
      await this.undoOrphans(true);
    }
    this.fenceConfirmed = c;
    this.local.setState("liveness_confirmed_at", String(c));
  }

  /** Compares etcd's revision now with the highest seen; lower: etcd lost history, this node recovers. */
  private async checkHistory(): Promise<void> {
    if (this.recovering || this.closed || !this.store) return;
    const loss = await this.history.check();
    if (loss) await this.recoverHistory(loss);
  }

  private async beforeClaim(): Promise<void> {
    if (!this.recovering && this.store && this.livenessUp && !this.history.vouched()) await this.checkHistory();
    const wait = this.recovering ? this.claimPauseMs : this.claimsPausedUntil - Date.now();
    if (wait > 0)
      throw new ClusterError(
        "inconsistent",
        `etcd was restored from an older snapshot: claims of new addresses wait ${Math.ceil(wait / 1000)} s more, until every ` +
          "node has written its addresses back; addresses already buffered on this node are handed out meanwhile; retry",
        true,
      );
  }

  /**
   * etcd lost history (restored from an older snapshot): what this node's SQLite holds is written again (the buffer,
   * then plain attachments and sticky identities, as the join does: create-if-absent; an address another node holds
   * meanwhile is logged as held twice), the buffer is read back, orphans undone, the watches list again and the
   * revision seen starts over. Claims wait meanwhile, and claimPauseMs from the notice at least: every live node
   * notices and writes its own addresses back before anyone claims them.
   */
  private recoverHistory(loss: HistoryLoss): Promise<void> {
    if (this.recovering) return this.recovering;
    this.metrics.historyLosses.inc();
    this.claimsPausedUntil = Date.now() + this.claimPauseMs;
    this.log.error(
      { seenRevision: loss.seen, etcdRevision: loss.current },
      `etcd's revision ${loss.current} is lower than revision ${loss.seen} this node has seen: etcd lost history ` +
        `(restored from an older snapshot?${loss.found ? `; noticed first by another node: ${this.keys.historyLost()}` : ""}); ` +
        `writing this node's addresses back to etcd, claims of new addresses paused for ${this.claimPauseMs / 1000} s`,
    );
    const run = async (): Promise<void> => {
      await this.history.announce(loss);
      // With the addresses requests took from the buffer and have not committed yet: in neither list below.
      const buffered = await this.own.reassertBuffer(this.seam?.inFlight() ?? []);
      await this.join(this.joinEntries(), true);
      await this.own.resync(this.inUse(), this.orphanIp);
      await this.undoOrphans(false);
      this.kick();
      // Only now: a re-list before the identities are back would take this node's sticky rows for released ones.
      this.boundAt.clear();
      this.relistRevision = 0;
      this.feed?.restored();
      this.own.forgetRevisions();
      this.stsWatch?.relist();
      const after = await this.history.current();
      this.history.reset(after, loss);
      this.claimsPausedUntil = Math.max(this.claimsPausedUntil, Date.now());
      this.log.warn(
        { bufferWritten: buffered, etcdRevision: after },
        "etcd restored: this node's addresses are back in etcd (one another node took meanwhile was logged as held twice)",
      );
    };
    this.recovering = run()
      .catch((e: unknown) =>
        this.log.error({ err: e }, "writing this node's addresses back to the restored etcd failed; retried at the next check"),
      )
      .finally(() => {
        this.recovering = null;
      });
    return this.recovering;
  }

  /**
   * The Kubernetes Node object of `node` is gone (ipamd/kube): once its liveness key is gone too, its buffered and
   * non-sticky addresses return without the grace period. `reapNow`: this node runs the pass at once (the release
   * leader); the others only stop waiting for the grace.
   */
  async nodeDeleted(node: string, reapNow: boolean): Promise<ReapReport | undefined> {
    this.reaper.nodeDeleted(node);
    if (!reapNow || this.closed) return undefined;
    const r = await this.reaper.reapOnce({ findDeleted: true });
    this.onReap(r);
    return r;
  }

  /** A Node object of that name exists (again): the grace period applies to it as to any node. */
  nodeSeen(node: string): void {
    this.reaper.nodeDeleted(node, false);
  }

  private onReap(r: ReapReport): void {
    this.lastReap = r;
    for (const f of r.freed) this.metrics.reaped.inc({ owner: f.owner });
    if (r.scan) this.metrics.reaperScans.inc({ kind: r.scan });
    if (r.adopted.length) {
      this.log.info({ nodes: r.adopted }, "registered nodes found without a registration (a version before registrations)");
    }
    if (r.freed.length) {
      this.log.warn(
        { freed: r.freed.length, nodes: [...new Set(r.freed.map((f) => f.node))] },
        "returned a dead node's buffered and non-sticky addresses to their pools (grace period over, or its Node object deleted)",
      );
    }
    if (r.handedOver.length) {
      this.log.warn({ handedOver: r.handedOver }, "a dead node's addresses that joined nodes' sandboxes use became their attachments");
    }
    if (this.own.joinClaimsPending > 0 && !this.retryingJoins) void this.retryJoinClaims();
  }
  private retryingJoins = false;

  /** This node's join claims, after each reaper pass: written when the buffer key is gone, forgotten once carried out. */
  private async retryJoinClaims(): Promise<void> {
    this.retryingJoins = true;
    try {
      const done = await this.own.retryJoinClaims();
      if (done.length)
        this.log.info({ ips: done }, "joined sandboxes' addresses held by another node's buffer are their attachments in etcd now");
    } catch (e) {
      this.log.debug({ err: (e as Error).message }, "join claims not retried now; the next reaper pass retries");
    } finally {
      this.retryingJoins = false;
    }
  }

  /**
   * After a crash or a long silence: etcd keys this node holds that SQLite does not know are undone (an etcd write
   * whose commit never happened), and with `reassert`, SQLite's attachments are written again (a reaper may have
   * freed them). Runs before the node serves, or fenced, right after the buffer is read back from etcd: that read
   * hands each address key to orphanIp.
   */
  private async undoOrphans(reassert: boolean): Promise<void> {
    const store = this.store!;
    const me = this.config.nodeName;
    for (const { identity, record } of await this.own.listSticky()) {
      if (record.attachment?.node !== me) continue;
      const row = store.stickyByOwner(ownerOf(identity)).find((r) => r.pool === identity.pool);
      if (row?.container_id === record.attachment.containerID) continue;
      this.local.enqueue({ op: "detach-sticky", identity, containerID: record.attachment.containerID }, Date.now());
    }
    if (reassert) {
      for (const row of store.matching({ state: "attached" }, 10_000_000)) {
        if (row.sticky || !this.own.poolNames().includes(row.pool)) continue;
        this.local.enqueue(
          {
            op: "attach",
            pool: row.pool,
            ip: row.ip,
            attachment: attachmentOf(row)!,
          },
          Date.now(),
        );
      }
    }
  }

  /** An address key of this node's attachment that SQLite does not hold: its release is queued (kept in the buffer). */
  private readonly orphanIp = (pool: string, kv: KeyValue): void => {
    const v = parseJson<IpOwner>(kv.value, kv.key);
    if (v.owner !== "attachment" || v.node !== this.config.nodeName) return;
    const ip = this.keys.ipFromKey(kv.key);
    const row = this.store!.byIp(ip);
    if (row?.container_id === v.attachment.containerID) return;
    this.local.enqueue({ op: "release", pool, ip, containerID: v.attachment.containerID, keepInBuffer: true }, Date.now());
  };

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    if (this.drainTimer) clearTimeout(this.drainTimer);
    if (this.dropTimer) clearTimeout(this.dropTimer);
    const ids = this.takeApplied();
    if (ids.length) this.local.drop(ids);
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.reaper.stop();
    this.stsWatch?.stop();
    this.own.stop();
    // The liveness key is left to expire with its lease: a restart within the grace period keeps everything.
    await this.liveness.stop(false);
    this.history.persist();
    this.client.close();
  }

  // ---------- outbox ----------

  /** Applies the outbox soon (after a commit that wrote to it, on a timer, after a backoff). */
  kick(): void {
    if (this.closed || this.drainTimer) return;
    if (this.draining) this.again = true;
    else void this.drain();
  }

  private drained: (() => void)[] = [];
  /** Applied outbox ids not yet deleted: deleted inside the next commit (no fsync of their own), or by a timer. */
  private applied: number[] = [];
  private dropTimer: NodeJS.Timeout | null = null;

  /** Called inside a request's savepoint (by the seam) and by the timer: deletes applied outbox rows. */
  takeApplied(): number[] {
    return this.applied.splice(0);
  }

  private dropApplied(): void {
    if (this.dropTimer || this.applied.length === 0) return;
    this.dropTimer = setTimeout(() => {
      this.dropTimer = null;
      const ids = this.takeApplied();
      if (ids.length) this.local.drop(ids);
    }, 500);
    this.dropTimer.unref();
  }

  /** Kicks the drain and waits for it to end (empty outbox, or etcd failing), at most `maxWaitMs`. */
  flush(maxWaitMs: number): Promise<void> {
    if (this.client.connectionState === "unreachable" && this.drainTimer) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, maxWaitMs);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.drained.push(done);
      if (this.drainTimer) {
        clearTimeout(this.drainTimer);
        this.drainTimer = null;
      }
      this.kick();
    });
  }
  private again = false;

  /**
   * One drain at a time, `draining` for all of it: a flush that comes while it runs makes it go round once more,
   * and its waiters are answered only by a pass that started after their records were queued.
   */
  private async drain(): Promise<void> {
    this.draining = true;
    try {
      do {
        this.again = false;
        try {
          // Fenced (silent longer than the grace period, maybe reaped and unregistered): the outbox waits for the
          // liveness renewal, which registers this node again before any of its records writes an address key of it.
          if (Date.now() - this.fenceConfirmed > this.graceMs) this.retryDrain(1000);
          else await this.drainOnce();
        } catch (e) {
          this.log.error({ err: e }, "applying the outbox to etcd failed; it is retried");
        }
      } while (this.again && !this.closed && !this.drainTimer);
    } finally {
      this.draining = false;
    }
    for (const f of this.drained.splice(0)) f();
  }

  private retryDrain(ms: number): void {
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      this.kick();
    }, ms);
    this.drainTimer.unref();
  }

  private async drainOnce(): Promise<void> {
    for (;;) {
      const skip = new Set(this.applied);
      const records = this.local
        .pending(256 + skip.size)
        .filter((r) => !skip.has(r.id))
        .slice(0, 256);
      this.metrics.outboxPending.set(this.local.pendingCount() - this.applied.length);
      if (records.length === 0) {
        this.drainBackoffMs = 0;
        return;
      }
      const r = await this.own.applyOutbox(records);
      const done = r.outcomes.map((o) => o.id);
      for (const o of r.outcomes.filter((x) => x.status === "conflict")) {
        this.outboxConflicts++;
        this.metrics.outboxConflicts.inc();
        this.log.error(
          { record: records.find((x) => x.id === o.id), detail: o.detail },
          "outbox record contradicted by etcd: this node's record and etcd disagree about an address; " +
            "check it with ipamctl reservations",
        );
      }
      if (r.error instanceof ClusterError && !r.error.retryable) {
        const bad = records[r.outcomes.length]!;
        this.outboxConflicts++;
        this.metrics.outboxConflicts.inc();
        this.log.error({ record: bad, err: r.error.message }, "outbox record cannot be applied; dropped");
        done.push(bad.id);
      }
      this.applied.push(...done);
      this.dropApplied();
      if (r.error && !(r.error instanceof ClusterError && !r.error.retryable)) {
        this.metrics.outboxPending.set(this.local.pendingCount());
        this.drainBackoffMs = Math.min(5000, Math.max(100, this.drainBackoffMs * 2));
        this.log.debug(
          { pending: this.local.pendingCount(), err: r.error.message, retryInMs: this.drainBackoffMs },
          "outbox waits for etcd",
        );
        this.retryDrain(this.drainBackoffMs);
        return;
      }
    }
  }

  // ---------- the local record follows etcd (watch) ----------

  private onSticky(changes: StickyChange[], revision: number, relisted: boolean): void {
    for (const c of changes) this.pendingSync.set(c.name, Math.max(c.revision, this.pendingSync.get(c.name) ?? 0));
    // A bind the view has caught up with needs no guard any more (the view holds it, or something newer).
    const seen = this.own.stickyWatch?.revision ?? 0;
    for (const [name, rev] of this.boundAt) if (rev <= seen) this.boundAt.delete(name);
    this.feed?.changed(changes);
    if (relisted) {
      this.relistPending = true;
      this.relistRevision = Math.max(this.relistRevision, revision);
      this.feed?.relisted(this.own.stickyView, revision);
    }
    this.scheduleSync();
  }
  private syncing = false;
  private relistRevision = 0;

  /** One batch at a time: the feed compares each batch with what the previous one committed. */
  private scheduleSync(): void {
    if (this.syncTimer) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      if (this.syncing) this.scheduleSync();
      else void this.flushSync();
    }, 100);
    this.syncTimer.unref();
  }

  private async flushSync(): Promise<void> {
    if (!this.runLocal || this.closed) return;
    this.syncing = true;
    const changes = this.pendingSync;
    this.pendingSync = new Map();
    const relisted = this.relistPending;
    this.relistPending = false;
    const items = this.feed?.take() ?? [];
    const view = this.own.stickyView;
    const follow = (name: string, eventRevision: number): void => {
      const record = view.get(name) ?? null;
      if ((this.boundAt.get(name) ?? 0) > Math.max(eventRevision, record?.modRevision ?? 0)) return; // our newer bind wins
      this.seam!.followRecord(this.keys.identityFromKey(`${this.keys.prefix}/sticky/${name}`), record);
    };
    // Without events to record (no stream feed), changes of identities this node holds no row of need no commit.
    const owners = [...changes.keys()].map((name) => this.keys.identityFromKey(`${this.keys.prefix}/sticky/${name}`));
    if (!relisted && items.length === 0 && !owners.some((id) => this.store!.stickyByOwner(ownerOf(id)).some((r) => r.pool === id.pool))) {
      this.syncing = false;
      return;
    }
    const mine = (): string[] =>
      this.store!.matching({}, 10_000_000)
        .filter((r) => r.sticky === 1)
        .map((r) => identityOf({ namespace: r.namespace!, statefulset: r.statefulset!, ordinal: r.ordinal! }, r.pool))
        .map((id) => this.keys.stickyName(id));
    try {
      const batch = await this.runLocal("sticky watch", () => {
        for (const [name, rev] of changes) follow(name, rev);
        if (relisted) for (const name of mine()) follow(name, this.relistRevision);
        // The events and the revision the watch resumes from, in this commit: a restart repeats and skips nothing.
        const b = this.feed?.apply(items, Date.now());
        if (b?.drafts.length) this.stream?.(b.drafts);
        return b;
      });
      if (batch) this.feed!.committed(batch);
    } catch (e) {
      this.log.warn({ err: e }, "could not apply sticky identity changes locally; retrying");
      for (const [n, r] of changes) if (!this.pendingSync.has(n)) this.pendingSync.set(n, r);
      this.relistPending ||= relisted;
      this.feed?.putBack(items);
      this.scheduleSync();
    } finally {
      this.syncing = false;
    }
  }

  // ---------- StatefulSets registered cluster-wide ----------

  private startStatefulSetWatch(): void {
    const prefix = this.keys.statefulSets();
    const name = (kv: KeyValue): string => kv.key.slice(prefix.length);
    this.stsWatch = new WatchLoop(this.client, prefix, {
      onList: (kvs) => {
        this.registered.clear();
        for (const kv of kvs) this.registered.add(name(kv));
      },
      onEvents: (events) => {
        for (const e of events) {
          if (e.type === "delete") this.registered.delete(name(e.kv));
          else this.registered.add(name(e.kv));
        }
      },
    });
    this.stsWatch.start();
  }

  /** A pod named like a member of a StatefulSet registered on another node: register it here too. */
  private async learnStatefulSet(namespace: string, podName: string): Promise<boolean> {
    const statefulset = podName.slice(0, podName.lastIndexOf("-"));
    let known = this.registered.has(`${namespace}/${statefulset}`);
    if (!known) {
      try {
        known = (await this.client.get(this.keys.statefulSet(namespace, statefulset))) !== null;
      } catch {
        return false;
      }
    }
    if (!known || !this.runLocal) return false;
    await this.runLocal("statefulset registered in etcd", () => this.store!.registerStatefulSet(namespace, statefulset, Date.now()));
    return true;
  }

  isRegistered(namespace: string, name: string): boolean {
    return this.registered.has(`${namespace}/${name}`);
  }

  /** Runs a local fix-up through the group commit. */
  sync<T>(reason: string, fn: () => T): Promise<T> {
    if (!this.runLocal) throw new Error("cluster node not started");
    return this.runLocal(reason, fn);
  }

  get ownershipSeam(): ClusterNodeOwnership {
    return this.seam!;
  }

  markBound(identity: StickyIdentity, revision: number): void {
    this.boundAt.set(this.keys.stickyName(identity), revision);
  }

  // ---------- status ----------

  status(): ClusterStatus {
    const c = this.config.cluster!;
    const now = Date.now();
    const buffer: Record<string, number> = {};
    for (const pool of this.own.poolNames()) buffer[pool] = this.own.bufferSize(pool);
    const watch = this.own.stickyWatch;
    return {
      etcd: {
        state: this.client.connectionState ?? "connecting",
        endpoints: c.etcd.endpoints,
        current: this.client.currentEndpoint,
        detail: this.client.connectionState === "connected" ? "" : this.stateDetail,
        prefix: this.keys.prefix,
      },
      liveness: {
        confirmedSecondsAgo: this.fenceConfirmed ? Math.round((now - this.fenceConfirmed) / 100) / 10 : null,
        fenced: now - this.fenceConfirmed > this.graceMs,
        graceSeconds: c.nodeGraceSeconds,
        leaseTTLSeconds: c.leaseTTLSeconds,
      },
      buffer,
      outboxPending: this.local.pendingCount() - this.applied.length,
      outboxConflicts: this.outboxConflicts,
      watch: { revision: watch?.revision ?? 0, relists: watch?.relists ?? 0, compactions: watch?.compactions ?? 0 },
      nodesInGrace: this.lastReap.waiting.map((w) => ({ node: w.node, goneSeconds: Math.round(w.goneForMs / 1000) })),
    };
  }
}

/** The sandbox a row is attached to, as etcd records it (without the node), or undefined when detached. */
function attachmentOf(row: Row): Omit<AttachmentRef, "node"> | undefined {
  if (!row.container_id) return undefined;
  return { containerID: row.container_id, ifName: row.ifname!, ...(row.pod_uid ? { podUID: row.pod_uid } : {}) };
}

function cannotJoin(reservations: number, e: Error): Error {
  return new Error(
    `cannot join cluster mode: ${e.message}. This database has ${reservations} reservations from single-node mode, ` +
      "which ipamd writes to etcd before it serves (no other node may take their addresses); start ipamd again once " +
      "etcd is reachable",
  );
}
