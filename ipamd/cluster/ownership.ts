// Address ownership shared through etcd: a node's buffer (claimed in one create-if-absent transaction per batch,
// refilled in the background, handed back when a pool runs low), sticky identities bound with one compare-and-swap
// transaction, attachment updates and returns as compare-and-swaps, and the outbox that carries a node's local
// changes to etcd when it is reachable. Every change of shared state compares revisions; a failed compare re-reads.
import { createHash, randomBytes } from "node:crypto";
import { formatIp, type Family, parseIp } from "../../lib/ip";
import { type Compare, type EtcdClient, EtcdOutcomeUnknown, type KeyValue, type TxnOp, type TxnResult } from "./etcd";
import { attachedElsewhere, ClusterError, fenced, l2Domain, poolExhausted } from "./errors";
import {
  type AttachmentRef,
  type HandbackRecord,
  type IpOwner,
  KeyLayout,
  parseJson,
  type StickyIdentity,
  type StickyRecord,
} from "./keys";
import { registrationOp } from "./liveness";
import { WatchLoop } from "./watch";

/** Structurally a subset of the config's Pool. */
export interface ClusterPool {
  name: string;
  family: Family;
  /** Usable addresses, sorted and disjoint, inclusive. */
  segments: { first: bigint; last: bigint }[];
  size: bigint;
}

export interface BufferedAddress {
  pool: string;
  ip: string;
  modRevision: number;
}
/** A buffered address as persisted: `notBefore` is the end of its cooldown (0 when it was never used). */
export interface BufferEntry extends BufferedAddress {
  notBefore: number;
}

/**
 * The node's durable copy of its buffer (SQLite). Written so that it is always a subset of what etcd says the
 * node buffers: added after etcd granted, removed before (or with) etcd taking it away.
 */
export interface BufferPersistence {
  added(entries: BufferEntry[]): void;
  removed(pool: string, ips: string[]): void;
  reset(pool: string, entries: BufferEntry[]): void;
}

export interface BufferOptions {
  /** Refill when fewer than this many are buffered. */
  low: number;
  /** Refill up to this many. */
  high: number;
}

export interface OwnershipObserver {
  conflict?(op: string): void;
  buffer?(pool: string, size: number): void;
  outbox?(pending: number): void;
  handback?(pool: string, event: "requested" | "returned", count: number): void;
}

export interface OwnershipOptions {
  client: EtcdClient;
  node: string;
  /** Every pool of the config (a reserve may name one this node does not select). */
  pools: ClusterPool[];
  /** The pools this node's labels select: the ones it keeps a buffer of (default: all). */
  selected?: string[];
  prefix?: string;
  buffer?: BufferOptions;
  /** Per-pool override of the buffer sizes. */
  bufferFor?: Record<string, BufferOptions>;
  /** At most this many addresses per claim transaction (default and most: 128, etcd's default --max-txn-ops). */
  maxClaim?: number;
  /** A handback request from another node stops refills of that pool here for this long. */
  handbackHoldMs?: number;
  /** How long an on-demand claim waits for other nodes to hand addresses back before pool_exhausted. */
  handbackWaitMs?: number;
  /** Poll fallback period (handback signals, refills): correctness never waits for the watch. */
  pollMs?: number;
  /** When set, buffered addresses are refused once liveness was not confirmed for `fenceAfterMs`. */
  liveness?: { lastConfirmedAt(): number; fenceAfterMs: number };
  observer?: OwnershipObserver;
  now?: () => number;
  /** An address released into this node's buffer is handed out again (or back) only after this long. */
  cooldownMs?: number;
  persist?: BufferPersistence;
  /** Which of `ips` the node's local record uses now (a release applied late must not buffer one; a claim skips them). */
  usedLocally?: (pool: string, ips: string[]) => Set<string>;
  /** Before every claim of new addresses: throws while claims must wait (etcd lost history, history.ts). */
  beforeClaim?: () => Promise<void>;
}

/** Every key of a pool's range as the buffer is read back from etcd (the node's orphan check, without a second read). */
export type PoolKeyVisitor = (pool: string, kv: KeyValue) => void;

export interface StartOptions {
  inUse?: (pool: string, ip: string) => boolean;
  eachKey?: PoolKeyVisitor;
  /** Start from this persisted buffer instead of reading etcd (etcd unreachable at start-up). */
  buffer?: BufferEntry[];
  /** With false nothing runs on timers (tests drive refill/poll by hand). */
  background?: boolean;
  /** Watch sticky identities from this revision + 1 (a restart) instead of listing them first. */
  stickyRevision?: number;
  /**
   * Sticky identities changed (names under <prefix>/sticky/, with the revision of the change and the value after it,
   * null when deleted), or were re-listed (`relisted`, no changes: compare everything with stickyView).
   */
  onSticky?: (
    changes: { name: string; revision: number; record: (StickyRecord & { modRevision: number }) | null }[],
    revision: number,
    relisted: boolean,
  ) => void;
  onWatchError?: (e: Error) => void;
}

export interface StickyBinding {
  identity: StickyIdentity;
  ip: string;
  /** The identity did not exist: created with an address from this node's buffer. */
  created: boolean;
  /** The node the identity was bound to before (undefined when created or already here). */
  previousNode?: string;
  stickyModRevision: number;
  ipModRevision: number;
  /** The identity's record in etcd at stickyModRevision (as written by this bind, or as read when nothing changed). */
  record: StickyRecord;
}

export interface BindRequest {
  /** Whether this node's labels select the identity's pool (the L2-domain rule). */
  selectsNode: boolean;
  /** The pool's nodeSelector, for the error message. */
  selector?: unknown;
  /** The sandbox attaching now; absent for reserve-ahead. */
  attachment?: Omit<AttachmentRef, "node">;
  /** Reserve ahead: create when absent, never move an existing identity. */
  reserveOnly?: boolean;
  /** With reserveOnly: a new identity is bound to no node (node "") until a sandbox attaches it. */
  unbound?: boolean;
  /** The identity's key as just read by the caller (null: absent): saves the first read. */
  current?: KeyValue | null;
  /**
   * `current` is a guess (the sticky watch's view, possibly behind): only a transaction's compares may act on it;
   * any answer without a transaction (already bound here, attached elsewhere) reads the key first.
   */
  guess?: boolean;
}

/** A pending change of shared state, recorded in the node's SQLite with the local change, applied later. */
export type OutboxOp =
  | { op: "attach"; pool: string; ip: string; attachment: Omit<AttachmentRef, "node"> }
  /**
   * `modRevision`: the address key's ModRevision when this node took it from its buffer (an ordinary ADD writes no
   * key): the release compares against it and writes in one transaction instead of reading first.
   */
  | { op: "release"; pool: string; ip: string; containerID: string; keepInBuffer?: boolean; modRevision?: number }
  /** `ip`: the address the node's row had (read with the identity in one request; a different one is read after). */
  | { op: "detach-sticky"; identity: StickyIdentity; containerID: string; ip?: string }
  | { op: "release-sticky"; identity: StickyIdentity; force?: boolean };
export type OutboxRecord = OutboxOp & { id: number; createdAt: number };
/** A reservation a node's SQLite had before it ran in cluster mode: written to etcd when the node joins. */
export type JoinEntry =
  | { identity: StickyIdentity; ip: string; pinned: boolean; attachment?: Omit<AttachmentRef, "node"> }
  | { pool: string; ip: string; attachment: Omit<AttachmentRef, "node"> };
export interface JoinOutcome {
  entry: JoinEntry;
  /** written: etcd has it now; present: etcd had it so already; conflict: etcd has the address or identity otherwise. */
  status: "written" | "present" | "conflict";
  detail?: string;
  /** Who holds the address in etcd, for a conflict over it. */
  heldBy?: IpOwner;
  /** A conflict with another node's buffer: a join claim asks for the key when that buffer gives it up (reaper). */
  claimed?: boolean;
}
const poolOf = (e: JoinEntry): string => ("identity" in e ? e.identity.pool : e.pool);
export interface OutboxOutcome {
  id: number;
  status: "applied" | "noop" | "conflict";
  detail?: string;
}

const MAX_CAS_ATTEMPTS = 16;
/** Binds remembered for a one-transaction detach (a node with more sticky pods reads before detaching the oldest). */
const BOUND_HINTS = 4096;
/** IPv4 last octets in the order their keys sort ("0", "1", "10", "100", ..., "99"). */
const OCTETS_IN_KEY_ORDER = Array.from({ length: 256 }, (_, i) => String(i)).sort();

/**
 * "None of these addresses has a key" in fewer compares: CreateRevision == 0 over a key range holds only when no key
 * in the range exists. A range covers a run of candidates of one IPv4 /24 adjacent in key order with no other address
 * of the pool sorting between them, so it checks exactly the keys the per-key compares would (a key outside the pool
 * in it fails the claim, as a taken candidate does). IPv6 candidates keep a compare each.
 */
function absentCompares(prefix: string, p: ClusterPool, ips: string[]): Compare[] {
  const out: Compare[] = [];
  const byNet = new Map<string, Set<string>>();
  for (const ip of ips) {
    const dot = ip.lastIndexOf(".");
    if (p.family !== 4 || dot < 0) {
      out.push({ key: prefix + ip, target: "create", equals: 0 });
      continue;
    }
    const net = ip.slice(0, dot + 1);
    const octets = byNet.get(net) ?? new Set<string>();
    octets.add(ip.slice(dot + 1));
    byNet.set(net, octets);
  }
  for (const [net, octets] of byNet) {
    const base = parseIp(`${net}0`)!.value;
    let run: string[] = [];
    const flush = (): void => {
      if (run.length === 1) out.push({ key: prefix + net + run[0]!, target: "create", equals: 0 });
      else if (run.length > 1) {
        const [a, z] = [prefix + net + run[0]!, prefix + net + run[run.length - 1]!];
        out.push({ key: a, rangeEnd: `${z}\0`, target: "create", equals: 0 });
      }
      run = [];
    };
    for (const o of OCTETS_IN_KEY_ORDER) {
      if (octets.has(o)) run.push(o);
      else if (inPool(p, base + BigInt(o))) flush(); // an address that is not a candidate: the range stops before it
    }
    flush();
  }
  return out;
}

function inPool(p: ClusterPool, v: bigint): boolean {
  return p.segments.some((s) => v >= s.first && v <= s.last);
}
const spanStart = (keys: string[]): string => keys.reduce((a, b) => (b < a ? b : a));
const spanEnd = (keys: string[]): string => keys.reduce((a, b) => (b > a ? b : a));
/** Identities one reserve-ahead transaction creates (two compares and two puts each). */
const STICKY_BATCH = 64;

export class ClusterOwnership {
  readonly keys: KeyLayout;
  readonly node: string;
  private readonly client: EtcdClient;
  private readonly pools = new Map<string, ClusterPool>();
  /** The pools buffered here (the node's labels select them); the buffer of any other is handed back. */
  private selected: Set<string>;
  private readonly buffers = new Map<string, Map<string, number>>(); // pool -> ip -> modRevision
  private readonly cooling = new Map<string, number>(); // "pool ip" -> end of cooldown (ms)
  /** Addresses learnt to be owned (failed compares, pool reads): only steers candidate choice, never decides. */
  private readonly knownOwned = new Map<string, Set<string>>();
  private readonly cursors = new Map<string, bigint>();
  private readonly holdUntil = new Map<string, number>();
  private readonly seenHandback = new Map<string, number>(); // pool -> mod revision handled
  private readonly refilling = new Map<string, Promise<number>>();
  /** ADDs of a pool waiting in claimFree, and the one claim that serves them (or the refill running). */
  private readonly waiting = new Map<string, number>();
  private readonly claimingFor = new Map<string, Promise<number>>();
  private readonly now: () => number;
  private genCounter = 0;
  private readonly genBase: string;
  private pollTimer: NodeJS.Timeout | null = null;
  private watches: WatchLoop[] = [];
  /** This node's join claims in etcd (claim key -> the sandbox and the claim's revision), read at start. */
  private readonly joinClaims = new Map<string, { pool: string; ip: string; containerID: string; modRevision: number }>();
  /**
   * What this node's last bind wrote to a sticky identity and its address key, in one transaction (so both keys
   * carry `revision`): the DEL's detach compares against it and writes in one transaction instead of reading first.
   * A hint only: a compare that fails falls back to what etcd returned. Insertion order; at most BOUND_HINTS.
   */
  private readonly boundHints = new Map<string, { revision: number; record: StickyRecord; owner: IpOwner }>();
  /** Sticky identities as last seen by list/watch (a cache for listings; never used to decide). */
  readonly stickyView = new Map<string, StickyRecord & { modRevision: number }>();
  conflicts = 0;

  constructor(private readonly o: OwnershipOptions) {
    this.client = o.client;
    this.node = o.node;
    this.keys = new KeyLayout(o.prefix);
    this.keys.node(o.node); // validates the name
    for (const p of o.pools) {
      this.keys.poolIps(p.name);
      this.pools.set(p.name, p);
      this.buffers.set(p.name, new Map());
    }
    this.selected = new Set(o.selected ?? o.pools.map((p) => p.name));
    this.now = o.now ?? Date.now;
    this.genBase = `${o.node}:${Date.now().toString(36)}`;
  }

  private gen(): string {
    return `${this.genBase}:${++this.genCounter}`;
  }

  private pool(name: string): ClusterPool {
    const p = this.pools.get(name);
    if (!p) throw new Error(`pool "${name}" is not a cluster pool of node ${this.node}`);
    return p;
  }

  private bufferOpts(pool: string): BufferOptions {
    return this.o.bufferFor?.[pool] ?? this.o.buffer ?? { low: 4, high: 16 };
  }

  private conflict(op: string): void {
    this.conflicts++;
    this.o.observer?.conflict?.(op);
  }
  private reportBuffer(pool: string): void {
    this.o.observer?.buffer?.(pool, this.buffers.get(pool)!.size);
  }

  // ---------- lifecycle ----------

  /**
   * Reads this node's buffered addresses back from etcd (after a restart), minus those the local store already
   * handed out (`inUse`), then starts the watch and the poll fallback. With `background: false` nothing runs
   * on timers (tests drive refill/poll by hand).
   */
  async start(o: StartOptions = {}): Promise<void> {
    if (o.buffer) {
      for (const pool of this.pools.keys())
        this.loadBuffer(
          pool,
          o.buffer.filter((e) => e.pool === pool && !o.inUse?.(pool, e.ip)),
        );
    } else {
      for (const pool of this.pools.keys()) await this.reloadBuffer(pool, o.inUse, o.eachKey);
      await this.loadJoinClaims();
    }
    if (o.background === false) return;
    const sticky = `${this.keys.prefix}/sticky/`;
    // Only the small prefixes (handback signals, sticky identities), never every address of a pool.
    this.watches = [this.keys.handbacks(), sticky].map(
      (prefix) =>
        new WatchLoop(this.client, prefix, {
          onList: (kvs, revision) => {
            if (prefix === sticky) this.stickyView.clear();
            for (const kv of kvs) this.observe(kv, false);
            if (prefix === sticky) o.onSticky?.([], revision, true);
          },
          onEvents: (events, revision) => {
            for (const e of events) this.observe(e.kv, e.type === "delete");
            if (prefix === sticky) {
              o.onSticky?.(
                events.map((e) => {
                  const name = e.kv.key.slice(sticky.length);
                  // observe() above parsed the value into the view; a later event of the same batch may have replaced it
                  const seen = this.stickyView.get(name);
                  const record =
                    e.type === "delete"
                      ? null
                      : seen?.modRevision === e.kv.modRevision
                        ? seen
                        : { ...parseJson<StickyRecord>(e.kv.value, e.kv.key), modRevision: e.kv.modRevision };
                  return { name, revision: e.kv.modRevision, record };
                }),
                revision,
                false,
              );
            }
          },
          onError: o.onWatchError,
        }),
    );
    this.watches[0]!.start();
    this.watches[1]!.start(o.stickyRevision);
    const tick = (): void => {
      void this.poll()
        .catch(() => undefined)
        .finally(() => {
          if (this.pollTimer) this.pollTimer = setTimeout(tick, this.o.pollMs ?? 2000);
        });
    };
    this.pollTimer = setTimeout(tick, 0);
  }

  /**
   * etcd lost history (restored from an older snapshot): every buffered address, and those `inFlight` (taken by
   * requests that have not committed yet), is written again where its key is absent (create-if-absent; one taken
   * meanwhile leaves the buffer at the resync that follows). Returns how many were written.
   */
  async reassertBuffer(inFlight: { pool: string; ip: string }[] = []): Promise<number> {
    const entries = [...this.buffers].flatMap(([pool, buf]) => [...buf.keys()].map((ip) => ({ pool, ip })));
    entries.push(...inFlight);
    let written = 0;
    for (let i = 0; i < entries.length; i += 16) {
      const done = await Promise.all(
        entries.slice(i, i + 16).map(async ({ pool, ip }) => {
          const key = this.keys.ip(pool, ip);
          const until = this.cooling.get(`${pool} ${ip}`);
          const at = this.now();
          const v: IpOwner = {
            owner: "buffer",
            node: this.node,
            gen: this.gen(),
            at,
            ...(until ? { releasedAt: until - (this.o.cooldownMs ?? 0) } : {}),
          };
          const r = await this.client.txn([{ key, target: "create", equals: 0 }], [{ put: { key, value: JSON.stringify(v) } }]);
          return r.succeeded;
        }),
      );
      written += done.filter(Boolean).length;
    }
    return written;
  }

  /** After etcd lost history: revisions remembered from before mean nothing; the watches list again. */
  forgetRevisions(): void {
    this.seenHandback.clear();
    this.knownOwned.clear();
    for (const w of this.watches) w.relist();
  }

  /** The sticky watch (revision, relists), once started. */
  get stickyWatch(): WatchLoop | undefined {
    return this.watches[1];
  }

  stop(): void {
    for (const w of this.watches) w.stop();
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  private observe(kv: KeyValue, deleted: boolean): void {
    if (kv.key.startsWith(this.keys.handbacks())) {
      if (!deleted) void this.onHandback(kv).catch(() => undefined);
    } else if (kv.key.startsWith(`${this.keys.prefix}/sticky/`)) {
      const name = kv.key.slice(`${this.keys.prefix}/sticky/`.length);
      if (deleted) this.stickyView.delete(name);
      else this.stickyView.set(name, { ...parseJson<StickyRecord>(kv.value, kv.key), modRevision: kv.modRevision });
    }
  }

  /** The poll fallback: handback signals, then refills. Also what tests call to step the background work. */
  async poll(): Promise<void> {
    const r = await this.client.range(this.keys.handbacks(), { prefix: true });
    for (const kv of r.kvs) await this.onHandback(kv);
    for (const pool of this.pools.keys()) {
      if (this.selected.has(pool)) await this.refill(pool);
      else if (this.buffers.get(pool)!.size > 0) await this.handBack(pool);
    }
  }

  /** The node's labels changed: the next poll buffers the pools they select now and hands back the others' buffer. */
  select(pools: string[]): void {
    this.selected = new Set(pools.filter((p) => this.pools.has(p)));
  }

  private async reloadBuffer(pool: string, inUse?: (pool: string, ip: string) => boolean, eachKey?: PoolKeyVisitor): Promise<void> {
    const r = await this.client.range(this.keys.poolIps(pool), { prefix: true });
    const buf = this.buffers.get(pool)!;
    buf.clear();
    const entries: BufferEntry[] = [];
    for (const kv of r.kvs) {
      eachKey?.(pool, kv);
      const v = parseJson<IpOwner>(kv.value, kv.key);
      const ip = this.keys.ipFromKey(kv.key);
      if (v.owner === "buffer" && v.node === this.node && !inUse?.(pool, ip)) {
        const notBefore = v.releasedAt ? v.releasedAt + (this.o.cooldownMs ?? 0) : 0;
        entries.push({ pool, ip, modRevision: kv.modRevision, notBefore });
      }
    }
    this.loadBuffer(pool, entries);
    this.o.persist?.reset(pool, entries);
    for (const key of this.notPersisted) if (key.startsWith(`${pool} `)) this.notPersisted.delete(key);
  }

  /** Replaces the in-memory buffer of `pool` (start-up from SQLite when etcd is unreachable, or from etcd). */
  loadBuffer(pool: string, entries: BufferEntry[]): void {
    const buf = this.buffers.get(pool)!;
    buf.clear();
    for (const e of entries) {
      buf.set(e.ip, e.modRevision);
      if (e.notBefore > this.now()) this.cooling.set(`${pool} ${e.ip}`, e.notBefore);
      else this.cooling.delete(`${pool} ${e.ip}`);
    }
    this.reportBuffer(pool);
  }

  /** Reads this node's buffer back from etcd, minus what the local store uses (after a restart or a lost lease). */
  resync(inUse?: (pool: string, ip: string) => boolean, eachKey?: PoolKeyVisitor): Promise<void> {
    return [...this.pools.keys()].reduce((p, pool) => p.then(() => this.reloadBuffer(pool, inUse, eachKey)), Promise.resolve());
  }

  // ---------- the buffer ----------

  poolNames(): string[] {
    return [...this.pools.keys()];
  }
  buffered(pool: string): string[] {
    return [...this.buffers.get(pool)!.keys()];
  }
  /** Whether `ip` is in this node's in-memory buffer now. */
  isBuffered(pool: string, ip: string): boolean {
    return this.buffers.get(pool)?.has(ip) === true;
  }
  bufferSize(pool: string): number {
    return this.buffers.get(pool)!.size;
  }

  /** Refuses once liveness went unconfirmed for `fenceAfterMs` (other nodes may have reaped this node's keys). */
  private checkFence(): void {
    const l = this.o.liveness;
    if (l && this.now() - l.lastConfirmedAt() > l.fenceAfterMs) throw fenced(this.node, this.now() - l.lastConfirmedAt());
  }

  /** A buffered address for a local allocation (no etcd round trip), or null when the buffer is empty. */
  takeBuffered(pool: string): BufferedAddress | null {
    this.pool(pool);
    this.checkFence();
    const buf = this.buffers.get(pool)!;
    let found: [string, number] | undefined;
    const now = this.now();
    for (const entry of buf) {
      const until = this.cooling.get(`${pool} ${entry[0]}`);
      if (until === undefined || until <= now) {
        found = entry;
        break;
      }
    }
    if (!found) {
      this.kickRefill(pool);
      return null;
    }
    const [ip, modRevision] = found;
    buf.delete(ip);
    this.cooling.delete(`${pool} ${ip}`);
    this.reportBuffer(pool);
    if (buf.size < this.bufferOpts(pool).low) this.kickRefill(pool);
    return { pool, ip, modRevision };
  }

  /** Claims until at least `n` addresses of `pool` are buffered (or the pool has no more): before a bulk reserve. */
  async ensureBuffered(pool: string, n: number): Promise<void> {
    while (this.bufferSize(pool) < n) {
      const got = await this.claim(pool, n - this.bufferSize(pool));
      if (got.length === 0) return;
      for (const a of got) this.putBack(a);
      // Not persisted: reserve binds them at once (a crash in between leaves them in etcd as this node's buffer,
      // which a restart reads back; SQLite, without them, stays a subset), so no SQLite write on the way in or out.
      for (const a of got) this.notPersisted.add(`${pool} ${a.ip}`);
    }
  }

  /** In the buffer but not in SQLite (ensureBuffered): taking one needs no SQLite removal. */
  private readonly notPersisted = new Set<string>();

  private persistAdded(entries: BufferEntry[]): void {
    for (const e of entries) this.notPersisted.delete(`${e.pool} ${e.ip}`);
    this.o.persist?.added(entries);
  }

  private unpersisting = new Map<string, string[]>();
  private unpersisted: Promise<void> | null = null;

  /**
   * Removes an address from the persisted buffer; the removals of one turn of the event loop share one SQLite
   * transaction (a reserve ahead binds many members at once: one fsync for them, not one each).
   */
  private unpersist(pool: string, ip: string): Promise<void> {
    if (!this.o.persist || this.notPersisted.delete(`${pool} ${ip}`)) return Promise.resolve();
    const ips = this.unpersisting.get(pool) ?? [];
    ips.push(ip);
    this.unpersisting.set(pool, ips);
    this.unpersisted ??= new Promise<void>((resolve, reject) =>
      setImmediate(() => {
        const all = this.unpersisting;
        this.unpersisting = new Map();
        this.unpersisted = null;
        try {
          for (const [p, list] of all) this.o.persist!.removed(p, list);
          resolve();
        } catch (e) {
          reject(e);
        }
      }),
    );
    return this.unpersisted;
  }

  /** Freshly claimed addresses into the buffer, and into SQLite with the next group commit. */
  private bufferClaimed(got: BufferedAddress[]): void {
    for (const a of got) this.putBack(a);
    this.persistAdded(got.map((a) => ({ ...a, notBefore: 0 })));
  }

  /** Gives back an address taken with takeBuffered that the local commit did not use. */
  putBack(a: BufferedAddress): void {
    this.buffers.get(a.pool)!.set(a.ip, a.modRevision);
    this.reportBuffer(a.pool);
  }

  /** Addresses per claim transaction: etcd's --max-txn-ops (128 by default) caps it. */
  private maxClaim(): number {
    return Math.min(this.o.maxClaim ?? 128, 128);
  }

  private kickRefill(pool: string): void {
    if (this.pollTimer && !this.refilling.has(pool)) void this.refill(pool).catch(() => undefined);
  }

  /**
   * Claims up to the high watermark when below the low one (not while another node asked for a handback), in a pool
   * this node's labels select: a reserve ahead in another rack's pool (ensureBuffered) claims what it binds, no more.
   */
  async refill(pool: string): Promise<number> {
    if (!this.selected.has(pool)) return 0;
    const running = this.refilling.get(pool);
    if (running) {
      await running;
      return 0;
    }
    const { low, high } = this.bufferOpts(pool);
    const size = this.bufferSize(pool);
    if (size >= low || (this.holdUntil.get(pool) ?? 0) > this.now()) return 0;
    // The deficit found now, in as many claim transactions as it takes (at most 128 addresses each; a lost race claims
    // fewer): not one batch per kick, which at thousands of ADDs per second left the buffer at the low watermark, and
    // not topping up what ADDs took meanwhile, which made the later claims tiny. A deficit of more than one batch is
    // claimed in whole batches (385 is 3 of 128, not 3 and 1): a transaction costs etcd about as much as 128 keys do.
    const batch = this.maxClaim();
    const deficit = high - size > batch ? Math.floor((high - size) / batch) * batch : high - size;
    const p = (async (): Promise<number> => {
      let total = 0;
      while (total < deficit && (this.holdUntil.get(pool) ?? 0) <= this.now()) {
        const got = await this.claim(pool, deficit - total);
        if (got.length === 0) break;
        this.bufferClaimed(got);
        total += got.length;
      }
      return total;
    })();
    this.refilling.set(pool, p);
    try {
      return await p;
    } finally {
      this.refilling.delete(pool);
    }
  }

  /**
   * Claims up to `count` free addresses of `pool`, each batch in one transaction: CreateRevision == 0 for every
   * candidate; a failed compare learns which candidates were taken and tries others in a batch half the size (one
   * taken key fails a whole all-or-nothing batch: near the end of a pool several nodes walk the same few free
   * addresses, and a node keeping its batch size could lose every round). The addresses are returned, not buffered
   * (refill buffers them).
   */
  async claim(pool: string, count: number): Promise<BufferedAddress[]> {
    const p = this.pool(pool);
    // Fenced, this node may have been reaped and unregistered: it claims again once its liveness (which registers it
    // again first) is confirmed, so no key of it is ever written while it has no registration.
    this.checkFence();
    await this.o.beforeClaim?.();
    const want = Math.min(count, this.maxClaim());
    const got: BufferedAddress[] = [];
    let batch = want;
    // Optimistic: candidates from this node's cursor minus the addresses it learnt are owned; the pool is read
    // (keys only) again after every two failed compares, and always before answering that nothing is free.
    let owned = this.knownOwned.get(pool) ?? new Set<string>();
    this.knownOwned.set(pool, owned);
    let fresh = false; // read from etcd in this call, and holding no guesses since
    let failedSinceRead = 0;
    const readPool = async (): Promise<void> => {
      owned = new Set(
        (await this.client.range(this.keys.poolIps(pool), { prefix: true, keysOnly: true })).kvs.map((kv) => this.keys.ipFromKey(kv.key)),
      );
      for (const a of got) owned.add(a.ip);
      this.knownOwned.set(pool, owned);
      fresh = true;
      failedSinceRead = 0;
    };
    const won = (ips: string[], revisionOf: (i: number) => number): void => {
      for (const [i, ip] of ips.entries()) {
        owned.add(ip); // ours now: a later claim (after its cursor wraps or jumps) must not race this node's own keys
        got.push({ pool, ip, modRevision: revisionOf(i) });
      }
    };
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS && got.length < want; attempt++) {
      if (failedSinceRead >= 2) await readPool();
      const size = Math.min(batch, want - got.length);
      let candidates = this.candidates(p, owned, size);
      if (candidates.length === 0 && !fresh) {
        await readPool();
        candidates = this.candidates(p, owned, size);
      }
      if (candidates.length === 0) return got;
      const gen = this.gen();
      const value = JSON.stringify({ owner: "buffer", node: this.node, gen, at: this.now() } satisfies IpOwner);
      const keys = candidates.map((ip) => this.keys.ip(pool, ip));
      let r;
      try {
        r = await this.client.txn(
          absentCompares(this.keys.poolIps(pool), p, candidates),
          keys.map((key) => ({ put: { key, value } })),
          // Which of them are taken: one keys-only read of the span they sort in, not a read each (the failure ops
          // travel in every claim's raft entry, to every member, even when the compares hold). A hint only, so
          // bounded: a span that sorts wide (10.0.9.x to 10.0.10.x) may miss some, which the next re-read finds.
          [{ get: { key: spanStart(keys), rangeEnd: `${spanEnd(keys)}\0`, keysOnly: true, limit: 4 * keys.length } }],
        );
      } catch (e) {
        if (!(e instanceof EtcdOutcomeUnknown)) throw e;
        const mine = await this.landed(keys, gen);
        if (mine.length === keys.length) {
          won(candidates, (i) => mine[i]!.modRevision);
          continue;
        }
        for (const ip of candidates) owned.add(ip); // unknown state: try elsewhere, leave these to the next re-read
        fresh = false;
        batch = Math.max(1, batch >> 1);
        continue;
      }
      if (r.succeeded) {
        won(candidates, () => r.revision);
        continue;
      }
      failedSinceRead++;
      this.conflict("claim");
      this.jump(p);
      batch = Math.max(1, batch >> 1);
      // Every key of the span is an owned address (a hint for the next candidates, candidate or not).
      for (const resp of r.responses) if (resp.kind === "get") for (const kv of resp.kvs) owned.add(this.keys.ipFromKey(kv.key));
    }
    if (got.length > 0 || want <= 0) return got;
    // Never "nothing free" for a claim that only kept losing races or meeting unknown outcomes: retryable.
    throw new ClusterError(
      "inconsistent",
      `claim in pool "${pool}": ${MAX_CAS_ATTEMPTS} transactions in a row conflicted or had ` +
        "an unknown outcome (etcd overloaded or failing over); retry",
      true,
    );
  }

  /** Keys whose value carries `gen`: the writes of an unknown-outcome transaction that did land. */
  private async landed(keys: string[], gen: string): Promise<KeyValue[]> {
    const got = await this.client.txn(
      [],
      keys.map((key) => ({ get: { key } })),
    );
    return got.responses
      .flatMap((r) => (r.kind === "get" ? r.kvs : []))
      .filter((kv) => parseJson<{ gen?: string }>(kv.value, kv.key).gen === gen);
  }

  /** Free-looking candidates, walking the pool from this node's cursor (which starts at a node-specific offset). */
  private candidates(p: ClusterPool, owned: Set<string>, want: number): string[] {
    const out: string[] = [];
    const buf = this.buffers.get(p.name)!;
    let cursor = this.cursors.get(p.name) ?? this.startOffset(p);
    const first = p.segments[0]!.first;
    const last = p.segments[p.segments.length - 1]!.last;
    let walked = 0n;
    while (out.length < want && walked < p.size) {
      const looked: string[] = [];
      while (out.length + looked.length < want && walked < p.size) {
        cursor = this.usableAtOrAfter(p, cursor) ?? first;
        const ip = formatIp(p.family, cursor);
        if (!owned.has(ip) && !buf.has(ip)) looked.push(ip);
        cursor = cursor >= last ? first : cursor + 1n;
        walked++;
      }
      // Not one this node uses either (a row etcd has no key for, a conflict its join reported, is no buffer): one
      // read of the local record for the lot, not one per address.
      const used = this.o.usedLocally?.(p.name, looked);
      for (const ip of looked) if (!used?.has(ip)) out.push(ip);
    }
    this.cursors.set(p.name, cursor);
    return out;
  }

  private usedHere(pool: string, ip: string): boolean {
    return this.o.usedLocally?.(pool, [ip]).has(ip) === true;
  }

  private startOffset(p: ClusterPool): bigint {
    // A well-mixed hash of the node name: nodes start far apart (names like n1, n2 differ in one bit).
    return this.addressAt(p, BigInt(`0x${createHash("sha256").update(`${this.node}/${p.name}`).digest("hex").slice(0, 24)}`) % p.size);
  }

  /** After a lost race: continue somewhere random, not on the frontier another node is walking. */
  private jump(p: ClusterPool): void {
    this.cursors.set(p.name, this.addressAt(p, BigInt(`0x${randomBytes(12).toString("hex")}`) % p.size));
  }

  private addressAt(p: ClusterPool, offset: bigint): bigint {
    let off = offset;
    for (const s of p.segments) {
      const n = s.last - s.first + 1n;
      if (off < n) return s.first + off;
      off -= n;
    }
    return p.segments[0]!.first;
  }

  private usableAtOrAfter(p: ClusterPool, v: bigint): bigint | null {
    for (const s of p.segments) {
      if (v <= s.last) return v < s.first ? s.first : v;
    }
    return null;
  }

  /**
   * One free address for an allocation that cannot wait for a refill: from the buffer, else claimed now, else
   * other nodes are asked to hand back unused ones (and the claim retried until handbackWaitMs); pool_exhausted only
   * when no address of the pool is free anywhere.
   */
  async claimFree(pool: string): Promise<BufferedAddress> {
    const local = this.takeBuffered(pool);
    if (local) return local;
    const deadline = this.now() + (this.o.handbackWaitMs ?? 3000);
    let asked = false;
    for (;;) {
      const claimed = await this.claimForWaiters(pool);
      // What it claimed, or what a background refill (or a handback) put into this node's own buffer meanwhile.
      const got = this.takeBuffered(pool);
      if (got) return got;
      if (claimed > 0 && this.now() < deadline) continue; // the other ADDs waiting took them all: claim again
      if (!asked) {
        await this.requestHandback(pool);
        asked = true;
      }
      if (this.now() >= deadline) {
        const owned = (await this.client.range(this.keys.poolIps(pool), { prefix: true, countOnly: true })).count;
        throw poolExhausted(pool, this.pool(pool).size, owned);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Waits for one claim into the buffer sized for the ADDs waiting (at most a transaction's worth), or for the
   * refill running: an empty buffer under a burst of ADDs costs a claim or two, not one each. (One each, near the
   * end of a /16, had 16 ADDs per node read the pool's ~50,000 keys at once, until etcd answered none of them.)
   */
  private async claimForWaiters(pool: string): Promise<number> {
    this.waiting.set(pool, (this.waiting.get(pool) ?? 0) + 1);
    try {
      const refill = this.refilling.get(pool);
      const refilled = refill ? await refill : 0;
      if (refilled > 0) return refilled;
      let claiming = this.claimingFor.get(pool);
      if (!claiming) {
        claiming = (async (): Promise<number> => {
          await new Promise((r) => setImmediate(r)); // the ADDs woken with this one join before it is sized
          const got = await this.claim(pool, Math.min(this.waiting.get(pool) ?? 1, this.maxClaim()));
          this.bufferClaimed(got);
          return got.length;
        })().finally(() => this.claimingFor.delete(pool));
        this.claimingFor.set(pool, claiming);
      }
      return await claiming;
    } finally {
      this.waiting.set(pool, this.waiting.get(pool)! - 1);
    }
  }

  /** Asks the other nodes to return their unused buffered addresses of `pool` (and `ips` even while they cool). */
  async requestHandback(pool: string, ips?: string[]): Promise<void> {
    const rec: HandbackRecord = { node: this.node, pool, at: this.now(), ...(ips?.length ? { ips } : {}) };
    const rev = await this.client.put(this.keys.handback(pool), JSON.stringify(rec));
    this.seenHandback.set(pool, rev);
    this.o.observer?.handback?.(pool, "requested", 1);
  }

  private async onHandback(kv: KeyValue): Promise<void> {
    const rec = parseJson<HandbackRecord>(kv.value, kv.key);
    if ((this.seenHandback.get(rec.pool) ?? 0) >= kv.modRevision || !this.pools.has(rec.pool)) return;
    this.seenHandback.set(rec.pool, kv.modRevision);
    if (rec.node === this.node) return;
    this.holdUntil.set(rec.pool, this.now() + (this.o.handbackHoldMs ?? 10_000));
    await this.handBack(rec.pool, rec.ips);
  }

  /**
   * Returns every unused buffered address of `pool` to the pool (each delete compares its revision). Addresses
   * still in their cooldown stay, unless listed in `usedElsewhere` (another node's sandboxes use them already).
   */
  async handBack(pool: string, usedElsewhere: string[] = []): Promise<number> {
    const buf = this.buffers.get(pool)!;
    const now = this.now();
    const listed = new Set(usedElsewhere);
    const entries = [...buf.entries()].filter(([ip]) => listed.has(ip) || (this.cooling.get(`${pool} ${ip}`) ?? 0) <= now);
    for (const [ip] of entries) buf.delete(ip); // out of the buffer first: no local allocation can take them meanwhile
    this.o.persist?.removed(
      pool,
      entries.map(([ip]) => ip),
    );
    this.reportBuffer(pool);
    let returned = 0;
    for (let i = 0; i < entries.length; i += 64) {
      const batch = entries.slice(i, i + 64);
      for (const [ip, rev] of batch) {
        const key = this.keys.ip(pool, ip);
        try {
          const r = await this.client.txn([{ key, target: "mod", equals: rev }], [{ del: { key } }]);
          if (r.succeeded) returned++;
          else this.conflict("handback");
        } catch {
          buf.set(ip, rev); // etcd unreachable: still ours
        }
      }
    }
    this.reportBuffer(pool);
    this.o.observer?.handback?.(pool, "returned", returned);
    return returned;
  }

  // ---------- sticky identities ----------

  /**
   * Binds a sticky identity to this node in one transaction: rebinds an existing one (compares the identity's and
   * its address's ModRevision) or creates it (CreateRevision 0) with an address from this node's buffer (compares
   * the buffer key's ModRevision and rewrites it to owner = identity). Losing a create race rebinds the winner's address.
   */
  async bindSticky(identity: StickyIdentity, req: BindRequest): Promise<StickyBinding> {
    if (!req.selectsNode) throw l2Domain(identity.pool, req.selector, this.node);
    const name = this.keys.identityName(identity);
    const skey = this.keys.sticky(identity);
    const attachment = req.attachment ? { ...req.attachment, node: this.node } : undefined;
    // What the last failed compare returned: the next pass decides on it without reading again.
    let known: { cur: KeyValue | null; ipKv?: KeyValue | null } | null = req.current !== undefined ? { cur: req.current } : null;
    let guessed = req.guess === true && known !== null;
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const cur: KeyValue | null = known ? known.cur : await this.client.get(skey);
      const fromGuess = guessed;
      guessed = false;
      const gen = this.gen();
      const at = this.now();
      if (cur) {
        const rec: StickyRecord = parseJson<StickyRecord>(cur.value, skey);
        const ikey = this.keys.ip(identity.pool, rec.ip);
        // Optimistic first pass: a bind writes the identity and its address in one txn, so they share a ModRevision;
        // comparing the address key against it saves a read, and a mismatch (a detach since) costs one retry.
        const ipKv: KeyValue | null | undefined = known?.ipKv;
        known = null;
        const ipOwner = ipKv ? parseJson<IpOwner>(ipKv.value, ikey) : null;
        if (ipOwner && !(ipOwner.owner === "sticky" && ipOwner.identity === name)) {
          throw new ClusterError(
            "inconsistent",
            `sticky identity ${name} names ${rec.ip}, but etcd key ${ikey} is owned by ` +
              `${ipOwner.owner} on node ${ipOwner.node}; release the identity (ipamctl release) to give it a new address`,
            false,
          );
        }
        const settled = {
          identity,
          ip: rec.ip,
          created: false,
          stickyModRevision: cur.modRevision,
          ipModRevision: ipKv?.modRevision ?? cur.modRevision,
          record: rec,
        };
        const old = rec.attachment;
        const nothingToBind = req.reserveOnly || (!attachment && rec.node === this.node);
        const heldElsewhere = old && old.node !== this.node && attachment && !(old.podUID && old.podUID === attachment.podUID);
        const sameSandbox = old && old.containerID === attachment?.containerID && rec.node === this.node; // idempotent ADD
        if (fromGuess && (nothingToBind || heldElsewhere || sameSandbox)) continue; // a guess decides nothing without a compare
        if (nothingToBind) return settled;
        if (heldElsewhere && (await this.client.get(this.keys.node(old.node)))) throw attachedElsewhere(name, old);
        if (sameSandbox) return settled;
        const next: StickyRecord = {
          ip: rec.ip,
          node: this.node,
          gen,
          at,
          ...(rec.pinned ? { pinned: true } : {}),
          ...(attachment ? { attachment } : {}),
        };
        const compares: Compare[] = [
          { key: skey, target: "mod", equals: cur.modRevision },
          ipKv === undefined
            ? { key: ikey, target: "mod", equals: cur.modRevision }
            : ipKv
              ? { key: ikey, target: "mod", equals: ipKv.modRevision }
              : { key: ikey, target: "create", equals: 0 },
        ];
        const ipOwnerWritten: IpOwner = { owner: "sticky", node: this.node, gen, at, identity: name };
        const success: TxnOp[] = [
          { put: { key: skey, value: JSON.stringify(next) } },
          { put: { key: ikey, value: JSON.stringify(ipOwnerWritten) } },
        ];
        let r;
        try {
          r = await this.client.txn(compares, success, [{ get: { key: skey } }, { get: { key: ikey } }]);
        } catch (e) {
          if (!(e instanceof EtcdOutcomeUnknown)) throw e;
          const landed = await this.landed([skey], gen);
          if (landed[0]) r = { succeeded: true, revision: landed[0].modRevision, responses: [] };
          else continue;
        }
        if (r.succeeded) {
          this.rememberBound(name, r.revision, next, ipOwnerWritten);
          return {
            identity,
            ip: rec.ip,
            created: false,
            ...(rec.node !== this.node ? { previousNode: rec.node } : {}),
            stickyModRevision: r.revision,
            ipModRevision: r.revision,
            record: next,
          };
        }
        const [sNow, iNow] = r.responses.map((x) => (x.kind === "get" ? (x.kvs[0] ?? null) : null));
        // A failed optimistic compare is expected after a detach: not a conflict with another node.
        if (ipKv !== undefined || sNow?.modRevision !== cur.modRevision) this.conflict("rebind");
        known = { cur: sNow ?? null, ipKv: sNow && parseJson<StickyRecord>(sNow.value, skey).ip === rec.ip ? (iNow ?? null) : undefined };
        continue;
      }
      known = null;
      const b = await this.claimFree(identity.pool);
      // Out of the persisted buffer before etcd takes it out of the buffer (a crash in between leaves SQLite a subset).
      await this.unpersist(identity.pool, b.ip);
      const c = this.stickyCreate(identity, b, req.reserveOnly && req.unbound ? "" : this.node, gen, at, attachment);
      let r;
      try {
        r = await this.client.txn(c.compares, c.puts, [{ get: { key: skey } }, { get: { key: c.ikey } }]);
      } catch (e) {
        if (!(e instanceof EtcdOutcomeUnknown)) throw e;
        const landed = await this.landed([skey], gen);
        const rev = landed[0]?.modRevision;
        if (rev) return { identity, ip: b.ip, created: true, stickyModRevision: rev, ipModRevision: rev, record: c.rec };
        continue; // the buffer entry's state is unknown: dropped here, a later resync finds it if it is still ours
      }
      if (r.succeeded) {
        this.rememberBound(name, r.revision, c.rec, c.owner);
        return { identity, ip: b.ip, created: true, stickyModRevision: r.revision, ipModRevision: r.revision, record: c.rec };
      }
      const [sNow, ipNow] = r.responses.map((x) => (x.kind === "get" ? x.kvs[0] : undefined));
      if (!fromGuess) this.conflict("sticky-create"); // a guess of "absent" that was wrong is not a race with another node
      if (ipNow && ipNow.modRevision === b.modRevision) this.putBack(b); // still ours: the identity was created elsewhere
      if (sNow) known = { cur: sNow }; // the identity exists: the next pass rebinds it from what the compare returned
    }
    throw new ClusterError(
      "inconsistent",
      `sticky identity ${name}: gave up after ${MAX_CAS_ATTEMPTS} conflicting transactions; retry`,
      true,
    );
  }

  /**
   * Reserve ahead in bulk: creates up to 64 absent identities with buffered addresses in one transaction, each with
   * bindSticky's two compares (its identity's CreateRevision 0, its buffer key's ModRevision; 128 in all, etcd's
   * default --max-txn-ops). All or nothing: after a failed compare, an unknown outcome or an empty buffer the entries
   * are null, and the caller creates those one by one with bindSticky (which handles every race).
   */
  async createSticky(identities: StickyIdentity[], o: { unbound: boolean }): Promise<(StickyBinding | null)[]> {
    const out: (StickyBinding | null)[] = identities.map(() => null);
    const taken: { i: number; identity: StickyIdentity; b: BufferedAddress }[] = [];
    for (const [i, identity] of identities.slice(0, STICKY_BATCH).entries()) {
      const b = this.takeBuffered(identity.pool);
      if (!b) break;
      taken.push({ i, identity, b });
    }
    if (taken.length === 0) return out;
    await Promise.all(taken.map(({ b }) => this.unpersist(b.pool, b.ip)));
    const gen = this.gen();
    const at = this.now();
    const boundTo = o.unbound ? "" : this.node;
    const records = taken.map(({ identity, b }) => this.stickyCreate(identity, b, boundTo, gen, at));
    let revision: number;
    try {
      const r = await this.client.txn(
        records.flatMap((c) => c.compares),
        records.flatMap((c) => c.puts),
        records.map(({ ikey }) => ({ get: { key: ikey } })),
      );
      if (!r.succeeded) {
        this.conflict("sticky-create");
        // The buffer entries no other node touched are still ours.
        for (const [k, x] of r.responses.entries()) {
          const kv = x.kind === "get" ? x.kvs[0] : undefined;
          if (kv && kv.modRevision === taken[k]!.b.modRevision) this.putBack(taken[k]!.b);
        }
        return out;
      }
      revision = r.revision;
    } catch (e) {
      if (!(e instanceof EtcdOutcomeUnknown)) throw e;
      const landed = await this.landed([records[0]!.skey], gen);
      if (!landed[0]) return out; // the buffer entries' state is unknown: dropped here, a later resync finds them if still ours
      revision = landed[0].modRevision;
    }
    for (const [k, { i, identity, b }] of taken.entries()) {
      out[i] = { identity, ip: b.ip, created: true, stickyModRevision: revision, ipModRevision: revision, record: records[k]!.rec };
    }
    return out;
  }

  /**
   * A new sticky identity on address `b`: its two compares (the identity absent; the address key unchanged since
   * `b.modRevision`, or absent when that is 0) and its two puts (the identity's record, the address key owned by
   * it), for bindSticky, createSticky and the join.
   */
  private stickyCreate(
    identity: StickyIdentity,
    b: BufferedAddress,
    boundTo: string,
    gen: string,
    at: number,
    attachment?: AttachmentRef,
    pinned = false,
  ): { skey: string; ikey: string; rec: StickyRecord; owner: IpOwner; compares: Compare[]; puts: TxnOp[] } {
    const skey = this.keys.sticky(identity);
    const ikey = this.keys.ip(identity.pool, b.ip);
    const rec: StickyRecord = {
      ip: b.ip,
      node: boundTo,
      gen,
      at,
      ...(pinned ? { pinned: true } : {}),
      ...(attachment ? { attachment } : {}),
    };
    const owner: IpOwner = { owner: "sticky", node: boundTo, gen, at, identity: this.keys.identityName(identity) };
    return {
      skey,
      ikey,
      rec,
      owner,
      compares: [
        { key: skey, target: "create", equals: 0 },
        b.modRevision ? { key: ikey, target: "mod", equals: b.modRevision } : { key: ikey, target: "create", equals: 0 },
      ],
      puts: [{ put: { key: skey, value: JSON.stringify(rec) } }, { put: { key: ikey, value: JSON.stringify(owner) } }],
    };
  }

  /**
   * Makes one exact address this attachment's (a requested `ips` address): create-if-absent, or rewrite this node's
   * buffer entry of it (compare its ModRevision). Another node's unused buffer is asked to hand back; anything else
   * holding it is ip_unavailable.
   */
  async claimExact(pool: string, ip: string, attachment: Omit<AttachmentRef, "node">): Promise<number> {
    this.pool(pool);
    this.checkFence();
    const deadline = this.now() + (this.o.handbackWaitMs ?? 3000);
    let asked = false;
    for (let attempt = 0; ; attempt++) {
      const r = await this.exactClaimPass(pool, ip, attachment, false);
      if (r && "rev" in r) return r.rev;
      if (r) {
        if (r.by.owner === "buffer" && this.now() < deadline) {
          if (!asked) {
            await this.requestHandback(pool);
            asked = true;
          }
          await new Promise((res) => setTimeout(res, 50));
          continue;
        }
        throw new ClusterError("ip_unavailable", `${ip} is held in etcd by ${describeOwner(r.by)}; request another address`, false);
      }
      if (attempt >= MAX_CAS_ATTEMPTS)
        throw new ClusterError("inconsistent", `claim of ${ip}: too many conflicting transactions; retry`, true);
    }
  }

  /**
   * One pass of an exact claim of `ip` for `attachment`: ours already, or written (create-if-absent, over this node's
   * buffer entry, with `overCooling` over a released identity's cooldown key) -> its revision; held otherwise -> by
   * whom; null: the compare failed, read again.
   */
  private async exactClaimPass(
    pool: string,
    ip: string,
    attachment: Omit<AttachmentRef, "node">,
    overCooling: boolean,
    overOwnAttachment = false,
  ): Promise<{ rev: number } | { by: IpOwner } | null> {
    const key = this.keys.ip(pool, ip);
    const kv = await this.client.get(key);
    const v = kv ? parseJson<IpOwner>(kv.value, key) : null;
    if (v?.owner === "attachment" && v.node === this.node && v.attachment.containerID === attachment.containerID)
      return { rev: kv!.modRevision };
    const mine = v?.owner === "buffer" && v.node === this.node;
    const ownOlder = overOwnAttachment && v?.owner === "attachment" && v.node === this.node;
    if (v && !mine && !ownOlder && !(overCooling && v.owner === "cooling")) return { by: v };
    if (mine) {
      this.buffers.get(pool)!.delete(ip);
      this.cooling.delete(`${pool} ${ip}`);
      this.reportBuffer(pool);
    }
    const gen = this.gen();
    const value = JSON.stringify({
      owner: "attachment",
      node: this.node,
      gen,
      at: this.now(),
      attachment: { ...attachment, node: this.node },
    } satisfies IpOwner);
    const rev = await this.casTxn(
      "claim-exact",
      [kv ? { key, target: "mod", equals: kv.modRevision } : { key, target: "create", equals: 0 }],
      [{ put: { key, value } }],
      key,
      gen,
    );
    if (mine) this.o.persist?.removed(pool, [ip]);
    return rev ? { rev } : null;
  }

  /**
   * Pins `ip` to a sticky identity in one transaction: the identity names the new address (pinned, bound here),
   * the new address key is created (or taken from this node's buffer), the previous address is deleted, or kept by
   * the sandbox that still uses it (owner attachment) when `force` is given; without force an attached identity
   * is refused.
   */
  async pinSticky(
    identity: StickyIdentity,
    ip: string,
    o: { attachment?: Omit<AttachmentRef, "node">; force?: boolean } = {},
  ): Promise<{ ip: string; revision: number; previousIp?: string; previousHeldBy?: AttachmentRef }> {
    const name = this.keys.identityName(identity);
    const skey = this.keys.sticky(identity);
    const nkey = this.keys.ip(identity.pool, ip);
    const attachment = o.attachment ? { ...o.attachment, node: this.node } : undefined;
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const r0 = await this.client.txn([], [{ get: { key: skey } }, { get: { key: nkey } }]);
      const [cur, nkv] = r0.responses.map((x) => (x.kind === "get" ? (x.kvs[0] ?? null) : null));
      const rec = cur ? parseJson<StickyRecord>(cur.value, skey) : null;
      const gen = this.gen();
      const at = this.now();
      const nv = nkv ? parseJson<IpOwner>(nkv.value, nkey) : null;
      const ownedByIdentity = nv?.owner === "sticky" && nv.identity === name;
      const mine = nv?.owner === "buffer" && nv.node === this.node;
      if (nv && !ownedByIdentity && !mine) {
        throw new ClusterError(
          "ip_unavailable",
          `${ip} is held in etcd by ${describeOwner(nv)}; release it first or pin another address`,
          false,
        );
      }
      const old = rec && rec.ip !== ip ? rec : null;
      if (old?.attachment && !o.force && old.attachment.containerID !== attachment?.containerID) {
        throw new ClusterError(
          "reservation_attached",
          `sticky identity ${name} is attached to sandbox ${old.attachment.containerID} on ` +
            `node ${old.attachment.node} with ${old.ip}; delete the pod first, or pass force (that sandbox keeps ${old.ip} until its DEL)`,
          false,
        );
      }
      const next: StickyRecord = {
        ip,
        node: this.node,
        gen,
        at,
        pinned: true,
        ...(attachment ? { attachment } : rec && !old && rec.attachment ? { attachment: rec.attachment } : {}),
      };
      const compares: Compare[] = [
        cur ? { key: skey, target: "mod", equals: cur.modRevision } : { key: skey, target: "create", equals: 0 },
        nkv ? { key: nkey, target: "mod", equals: nkv.modRevision } : { key: nkey, target: "create", equals: 0 },
      ];
      const ops: TxnOp[] = [
        { put: { key: skey, value: JSON.stringify(next) } },
        { put: { key: nkey, value: JSON.stringify({ owner: "sticky", node: this.node, gen, at, identity: name } satisfies IpOwner) } },
      ];
      if (old) {
        const okey = this.keys.ip(identity.pool, old.ip);
        const okv = await this.client.get(okey);
        const ov = okv ? parseJson<IpOwner>(okv.value, okey) : null;
        if (okv && ov?.owner === "sticky" && ov.identity === name) {
          compares.push({ key: okey, target: "mod", equals: okv.modRevision });
          const held = old.attachment && old.attachment.containerID !== attachment?.containerID ? old.attachment : undefined;
          ops.push(
            held
              ? {
                  put: {
                    key: okey,
                    value: JSON.stringify({ owner: "attachment", node: held.node, gen, at, attachment: held } satisfies IpOwner),
                  },
                }
              : { del: { key: okey } },
          );
          // The holder may be a dead node the reaper already unregistered: registered again, its key is found.
          if (held) ops.push(registrationOp(this.keys, held.node, at, this.node));
        }
      }
      if (mine) {
        this.buffers.get(identity.pool)!.delete(ip);
        this.cooling.delete(`${identity.pool} ${ip}`);
        this.reportBuffer(identity.pool);
      }
      const rev = await this.casTxn("pin", compares, ops, skey, gen);
      if (mine) this.o.persist?.removed(identity.pool, [ip]);
      if (rev) {
        const held = old?.attachment && old.attachment.containerID !== attachment?.containerID ? old.attachment : undefined;
        return { ip, revision: rev, ...(old ? { previousIp: old.ip } : {}), ...(held ? { previousHeldBy: held } : {}) };
      }
    }
    throw new ClusterError("inconsistent", `pin of ${name}: gave up after ${MAX_CAS_ATTEMPTS} conflicting transactions; retry`, true);
  }

  /**
   * The identity's key as the sticky watch last saw it (null: not seen), or undefined before the watch listed the
   * prefix. A guess for a bind's compares (BindRequest.guess), never an answer.
   */
  cachedSticky(identity: StickyIdentity): KeyValue | null | undefined {
    if (!this.watches[1] || this.watches[1].relists === 0) return undefined;
    const key = this.keys.sticky(identity);
    const seen = this.stickyView.get(key.slice(`${this.keys.prefix}/sticky/`.length));
    if (!seen) return null;
    const { modRevision, ...record } = seen;
    return { key, value: JSON.stringify(record), createRevision: 0, modRevision, version: 0 };
  }

  /** Reads sticky identities by key, in one read transaction (absent ones are left out). */
  async getSticky(ids: StickyIdentity[]): Promise<{ identity: StickyIdentity; record: StickyRecord; modRevision: number; kv: KeyValue }[]> {
    if (ids.length === 0) return [];
    const r = await this.client.txn(
      [],
      ids.map((id) => ({ get: { key: this.keys.sticky(id) } })),
    );
    return r.responses.flatMap((x, i) =>
      x.kind === "get" && x.kvs[0]
        ? [
            {
              identity: ids[i]!,
              record: parseJson<StickyRecord>(x.kvs[0].value, x.kvs[0].key),
              modRevision: x.kvs[0].modRevision,
              kv: x.kvs[0],
            },
          ]
        : [],
    );
  }

  /** Runs a compare-and-swap txn; on an unknown outcome, checks whether `checkKey` carries `gen`. Revision or 0 on a failed compare. */
  private async casTxn(op: string, compares: Compare[], success: TxnOp[], checkKey: string, gen: string): Promise<number> {
    try {
      const r = await this.client.txn(compares, success);
      if (!r.succeeded) {
        this.conflict(op);
        return 0;
      }
      return r.revision;
    } catch (e) {
      if (!(e instanceof EtcdOutcomeUnknown)) throw e;
      const landed = await this.landed([checkKey], gen);
      return landed[0]?.modRevision ?? 0;
    }
  }

  /** Cluster-wide list of sticky identities, read from etcd (not the cache). */
  async listSticky(pool?: string): Promise<{ identity: StickyIdentity; record: StickyRecord; modRevision: number }[]> {
    const prefix = pool ? this.keys.poolSticky(pool) : `${this.keys.prefix}/sticky/`;
    const r = await this.client.range(prefix, { prefix: true });
    return r.kvs.map((kv) => ({
      identity: this.keys.identityFromKey(kv.key),
      record: parseJson<StickyRecord>(kv.value, kv.key),
      modRevision: kv.modRevision,
    }));
  }

  // ---------- joining cluster mode ----------

  /**
   * Writes reservations made in single-node mode to etcd, 16 transactions at a time: a sticky one as its identity
   * bound to this node (with its attachment) and its address key, a plain attachment as its address key; each
   * create-if-absent (or over a key that only keeps claims off the address). Addresses in other nodes' buffers are
   * asked back, then tried again. What etcd holds otherwise is a conflict (the address or the identity is held twice
   * in the cluster): etcd's holder stays, the caller reports it.
   */
  async join(entries: JoinEntry[], o: { restored?: boolean } = {}): Promise<JoinOutcome[]> {
    const outcomes: JoinOutcome[] = [];
    const pass = async (indexes: number[]): Promise<void> => {
      for (let i = 0; i < indexes.length; i += 16) {
        const chunk = indexes.slice(i, i + 16);
        const done = await Promise.all(chunk.map((k) => this.joinOne(entries[k]!, o.restored === true)));
        for (const [j, k] of chunk.entries()) outcomes[k] = done[j]!;
      }
    };
    await pass(entries.map((_, k) => k));
    // Addresses in other nodes' buffers (unused there, or cooling after a release there): asked back, one request per
    // pool naming them all, then tried again until handbackWaitMs.
    const blocked = (): number[] => outcomes.flatMap((o, k) => (o.heldBy?.owner === "buffer" && o.heldBy.node !== this.node ? [k] : []));
    let waiting = blocked();
    const byPool = new Map<string, string[]>();
    for (const k of waiting) byPool.set(poolOf(entries[k]!), [...(byPool.get(poolOf(entries[k]!)) ?? []), entries[k]!.ip]);
    for (const [pool, ips] of byPool) await this.requestHandback(pool, ips);
    const deadline = this.now() + (this.o.handbackWaitMs ?? 3000);
    while (waiting.length > 0 && this.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      await pass(waiting);
      waiting = blocked();
    }
    for (const k of waiting) {
      const attachment = entries[k]!.attachment;
      if (attachment) outcomes[k]!.claimed = await this.putJoinClaim(poolOf(entries[k]!), entries[k]!.ip, attachment);
    }
    return outcomes;
  }

  /**
   * A joined sandbox's address still held by another node's buffer (a dead node cannot hand it back): the claim
   * `<prefix>/join/<pool>/<ip>` holds the key it should become. The reaper writes that instead of deleting the
   * buffer key (one transaction: no other node can claim the address between), and retryJoinClaims writes it when
   * the key is gone otherwise; this node's DEL of the sandbox deletes the claim. In etcd, so it survives a restart.
   */
  private async putJoinClaim(pool: string, ip: string, attachment: Omit<AttachmentRef, "node">): Promise<boolean> {
    const key = this.keys.joinClaim(pool, ip);
    const value: IpOwner = {
      owner: "attachment",
      node: this.node,
      gen: this.gen(),
      at: this.now(),
      attachment: { ...attachment, node: this.node },
    };
    const r = await this.client.txn(
      [{ key, target: "create", equals: 0 }],
      [{ put: { key, value: JSON.stringify(value) } }],
      [{ get: { key } }],
    );
    const kv = r.succeeded
      ? { value: JSON.stringify(value), modRevision: r.revision }
      : r.responses[0]?.kind === "get"
        ? r.responses[0].kvs[0]
        : undefined;
    const v = kv ? parseJson<IpOwner>(kv.value, key) : undefined;
    // Another joined node's sandbox claimed it first: held twice among the joined nodes, reported as the conflict is.
    if (!kv || v?.owner !== "attachment" || v.node !== this.node || v.attachment.containerID !== attachment.containerID) return false;
    this.joinClaims.set(key, { pool, ip, containerID: attachment.containerID, modRevision: kv.modRevision });
    return true;
  }

  private async loadJoinClaims(): Promise<void> {
    this.joinClaims.clear();
    for (const kv of (await this.client.range(this.keys.joinClaims(), { prefix: true })).kvs) {
      const v = parseJson<IpOwner>(kv.value, kv.key);
      if (v.owner !== "attachment" || v.node !== this.node) continue;
      const [pool, ip] = kv.key.slice(this.keys.joinClaims().length).split("/");
      this.joinClaims.set(kv.key, { pool: pool!, ip: ip!, containerID: v.attachment.containerID, modRevision: kv.modRevision });
    }
  }

  /** Whether this node has join claims waiting (retryJoinClaims has work). */
  get joinClaimsPending(): number {
    return this.joinClaims.size;
  }

  /**
   * Writes this node's claimed addresses whose buffer key is gone (handed back, released) and forgets the claims the
   * reaper carried out. Returns the addresses now held by their sandboxes' attachment keys.
   */
  async retryJoinClaims(): Promise<string[]> {
    const done: string[] = [];
    for (const [ckey, c] of this.joinClaims) {
      const ikey = this.keys.ip(c.pool, c.ip);
      const r = await this.client.txn([], [{ get: { key: ikey } }, { get: { key: ckey } }]);
      const [kv, claim] = r.responses.map((x) => (x.kind === "get" ? (x.kvs[0] ?? null) : null));
      const v = kv ? parseJson<IpOwner>(kv.value, ikey) : null;
      const ours = v?.owner === "attachment" && v.node === this.node && v.attachment.containerID === c.containerID;
      if (claim?.modRevision !== c.modRevision) {
        this.joinClaims.delete(ckey); // carried out by a reaper, or gone with the sandbox
        if (ours) done.push(c.ip);
        continue;
      }
      if (kv && !ours) continue; // still held: waits
      const w = ours
        ? await this.client.txn([{ key: ckey, target: "mod", equals: c.modRevision }], [{ del: { key: ckey } }])
        : await this.client.txn(
            [
              { key: ikey, target: "create", equals: 0 },
              { key: ckey, target: "mod", equals: c.modRevision },
            ],
            [{ put: { key: ikey, value: claim.value } }, { del: { key: ckey } }],
          );
      if (w.succeeded) {
        this.joinClaims.delete(ckey);
        done.push(c.ip);
      }
    }
    return done;
  }

  /** The sandbox of a join claim is gone (its release): the claim goes first, so no reaper hands the address to it. */
  private async dropJoinClaims(records: OutboxRecord[]): Promise<void> {
    for (const rec of records) {
      if (rec.op !== "release") continue;
      const ckey = this.keys.joinClaim(rec.pool, rec.ip);
      const c = this.joinClaims.get(ckey);
      if (c?.containerID !== rec.containerID) continue;
      // Failing compare: a reaper (or the retry) wrote the key already; the release then finds it as the attachment.
      await this.client.txn([{ key: ckey, target: "mod", equals: c.modRevision }], [{ del: { key: ckey } }]);
      this.joinClaims.delete(ckey);
    }
  }

  /** `restored`: etcd lost history; this node's own older attachment key of the address is SQLite's to replace. */
  private async joinOne(entry: JoinEntry, restored: boolean): Promise<JoinOutcome> {
    if (!("identity" in entry)) {
      const held = await this.joinAddress(entry.pool, entry.ip, entry.attachment, restored);
      if (held.ok) return { entry, status: "written" };
      return { entry, status: "conflict", detail: `${entry.ip} is held in etcd by ${describeOwner(held.by)}`, heldBy: held.by };
    }
    const { identity, ip } = entry;
    const name = this.keys.identityName(identity);
    const skey = this.keys.sticky(identity);
    const ikey = this.keys.ip(identity.pool, ip);
    // 0: absent; else the revision of a key that blocks only claims (a released identity's cooldown, or this node's
    // own buffer entry: after a restore, the key of an address the member took from the buffer after the snapshot):
    // the sandbox here uses the address.
    let ipRevision = 0;
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const attachment = entry.attachment ? { ...entry.attachment, node: this.node } : undefined;
      const c = this.stickyCreate(
        identity,
        { pool: identity.pool, ip, modRevision: ipRevision },
        this.node,
        this.gen(),
        this.now(),
        attachment,
        entry.pinned,
      );
      let r;
      try {
        r = await this.client.txn(c.compares, c.puts, [{ get: { key: skey } }, { get: { key: ikey } }]);
      } catch (e) {
        if (!(e instanceof EtcdOutcomeUnknown)) throw e;
        continue; // the next pass reads what landed: present, or written now
      }
      if (r.succeeded) return { entry, status: "written" };
      const [s, k] = r.responses.map((x) => (x.kind === "get" ? (x.kvs[0] ?? null) : null));
      const now = s ? parseJson<StickyRecord>(s.value, skey) : null;
      const held = k ? parseJson<IpOwner>(k.value, ikey) : null;
      // Present: written by an earlier, interrupted join of this node (another node's is a conflict, below).
      if (now?.ip === ip && now.node === this.node && held?.owner === "sticky" && held.identity === name)
        return { entry, status: "present" };
      if (!now) {
        if (!held) ipRevision = 0;
        else if (held.owner === "cooling" || (held.owner === "buffer" && held.node === this.node)) ipRevision = k!.modRevision;
        else return { entry, status: "conflict", detail: `${ip} of ${name} is held in etcd by ${describeOwner(held)}`, heldBy: held };
        continue;
      }
      const boundTo = now.node ? `node ${now.node}` : "no node";
      const detail = `etcd's sticky identity ${name} names ${now.ip} (bound to ${boundTo}), this node's record ${ip}`;
      // The identity is etcd's; a sandbox here uses this address until its DEL: its key keeps the other nodes off it.
      if (!entry.attachment || now.ip === ip) return { entry, status: "conflict", detail };
      const kept = await this.joinAddress(identity.pool, ip, entry.attachment, restored);
      if (kept.ok)
        return { entry, status: "conflict", detail: `${detail}; ${ip} stays with sandbox ${entry.attachment.containerID} until its DEL` };
      return { entry, status: "conflict", detail: `${detail}; ${ip} is held in etcd by ${describeOwner(kept.by)}`, heldBy: kept.by };
    }
    throw new ClusterError(
      "inconsistent",
      `joining ${name}: ${MAX_CAS_ATTEMPTS} transactions in a row conflicted or had an unknown outcome; retry`,
      true,
    );
  }

  /**
   * A sandbox's address as its attachment's key: created, or taken over from this node's own buffer entry or from a
   * released identity's cooldown (both only keep claims off it); anything else holding it is returned.
   */
  private async joinAddress(
    pool: string,
    ip: string,
    attachment: Omit<AttachmentRef, "node">,
    overOwn = false,
  ): Promise<{ ok: true } | { ok: false; by: IpOwner }> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const r = await this.exactClaimPass(pool, ip, attachment, true, overOwn);
      if (r && "rev" in r) return { ok: true };
      if (r) return { ok: false, by: r.by };
    }
    throw new ClusterError("inconsistent", `joining ${ip}: ${MAX_CAS_ATTEMPTS} conflicting transactions in a row; retry`, true);
  }

  // ---------- outbox: local changes carried to etcd ----------

  /**
   * Applies pending records in order. Each is idempotent (decided from etcd's current state and applied as a
   * compare-and-swap), so a record applied twice, or after a reaper or another node acted, is harmless. Stops at
   * the first etcd failure: `pending` is how many are left (the caller keeps them in SQLite).
   */
  async applyOutbox(records: OutboxRecord[]): Promise<{ outcomes: OutboxOutcome[]; pending: number; error?: Error }> {
    const outcomes: OutboxOutcome[] = [];
    try {
      if (this.joinClaims.size) await this.dropJoinClaims(records);
    } catch (e) {
      return { outcomes, pending: records.length, error: e as Error };
    }
    for (let i = 0; i < records.length; ) {
      const batch = this.addressBatch(records, i);
      try {
        const known = this.releasesAsKnown(batch);
        if (batch.length > 1 || known) {
          outcomes.push(...(await this.applyBatch(batch, known)));
          i += batch.length;
          continue;
        }
        outcomes.push({ id: records[i]!.id, ...(await this.applyOne(records[i]!)) });
        i++;
      } catch (e) {
        const pending = records.length - outcomes.length;
        this.o.observer?.outbox?.(pending);
        return { outcomes, pending, error: e as Error };
      }
    }
    this.o.observer?.outbox?.(0);
    return { outcomes, pending: 0 };
  }

  /** Consecutive attach/release records from `i` on distinct keys (at most 64): one read and one write for all. */
  private addressBatch(records: OutboxRecord[], i: number): (OutboxRecord & { op: "attach" | "release" })[] {
    const out: (OutboxRecord & { op: "attach" | "release" })[] = [];
    const keys = new Set<string>();
    for (let j = i; j < records.length && out.length < 64; j++) {
      const r = records[j]!;
      if (r.op !== "attach" && r.op !== "release") break;
      const key = `${r.pool} ${r.ip}`;
      if (keys.has(key)) break;
      keys.add(key);
      out.push(r);
    }
    return out;
  }

  /**
   * Releases back into this node's buffer of keys whose revision the records carry, none used here again: the
   * normal path would read each key, find this node's buffer value at that revision and write the release.
   */
  private releasesAsKnown(batch: (OutboxRecord & { op: "attach" | "release" })[]): boolean {
    for (const r of batch) {
      if (r.op !== "release" || !r.keepInBuffer || !r.modRevision || this.usedHere(r.pool, r.ip)) return false;
    }
    return batch.length > 0;
  }

  private async applyBatch(batch: (OutboxRecord & { op: "attach" | "release" })[], known: boolean): Promise<OutboxOutcome[]> {
    const keys = batch.map((r) => this.keys.ip(r.pool, r.ip));
    const gets: TxnOp[] = keys.map((key) => ({ get: { key } }));
    const gen = this.gen();
    const at = this.now();
    let read: TxnResult | undefined;
    if (known) {
      // One transaction: each key still at the revision its record carries, or the keys as they are (decided below).
      const value = this.releasedValue(gen, at);
      try {
        read = await this.client.txn(
          batch.map((r, i) => ({ key: keys[i]!, target: "mod", equals: (r as { modRevision: number }).modRevision })),
          keys.map((key) => ({ put: { key, value } })),
          gets,
        );
      } catch (e) {
        if (!(e instanceof EtcdOutcomeUnknown)) throw e;
      }
      if (read?.succeeded) return this.appliedBatch(batch, [], read.revision, at);
    }
    read ??= await this.client.txn([], gets); // no revisions to compare, or an unknown outcome: read the keys
    const kvs = read.responses.map((x) => (x.kind === "get" ? (x.kvs[0] ?? null) : null));
    const decided = batch.map((rec, i) => this.decideAddress(rec, keys[i]!, kvs[i]!, gen, at));
    const writes = decided.filter((d) => "op" in d) as { compare: Compare; op: TxnOp; keepInBuffer?: boolean }[];
    let ok = writes.length === 0;
    let revision = 0;
    if (!ok) {
      try {
        const r = await this.client.txn(
          writes.map((w) => w.compare),
          writes.map((w) => w.op),
        );
        ok = r.succeeded;
        revision = r.revision;
      } catch (e) {
        if (!(e instanceof EtcdOutcomeUnknown)) throw e;
      }
    }
    if (!ok) {
      // a compare failed (or the outcome is unknown): one by one, each re-reading
      this.conflict("outbox-batch");
      const out: OutboxOutcome[] = [];
      for (const rec of batch) out.push({ id: rec.id, ...(await this.applyOne(rec)) });
      return out;
    }
    return this.appliedBatch(batch, decided, revision, at);
  }

  /** An address key's value once its release is applied: back in this node's buffer, released at `at`. */
  private releasedValue(gen: string, at: number): string {
    return JSON.stringify({ owner: "buffer", node: this.node, gen, at, releasedAt: at } satisfies IpOwner);
  }

  /** The outcomes of a batch: a record decided without a write has its own, the others went through at `revision`. */
  private appliedBatch(
    batch: (OutboxRecord & { op: "attach" | "release" })[],
    decided: (Omit<OutboxOutcome, "id"> | { compare: Compare; op: TxnOp })[],
    revision: number,
    at: number,
  ): OutboxOutcome[] {
    const kept: BufferEntry[] = [];
    const outcomes = batch.map((rec, i) => {
      const d = decided[i];
      if (d && !("op" in d)) return { id: rec.id, ...d };
      const entry = rec.op === "release" && rec.keepInBuffer ? this.keptInBuffer(rec.pool, rec.ip, revision, at) : null;
      if (entry) kept.push(entry);
      return { id: rec.id, status: "applied" as const };
    });
    if (kept.length) this.persistAdded(kept); // one SQLite transaction for the batch, not one per address
    return outcomes;
  }

  /** The compare-and-swap an attach/release record needs given the key's current value, or its outcome without one. */
  private decideAddress(
    rec: OutboxOp & { op: "attach" | "release" },
    key: string,
    kv: KeyValue | null,
    gen: string,
    at: number,
  ): Omit<OutboxOutcome, "id"> | { compare: Compare; op: TxnOp } {
    const v = kv ? parseJson<IpOwner>(kv.value, key) : null;
    if (rec.op === "attach") {
      const attachment = { ...rec.attachment, node: this.node };
      const decided = attachDecided(this.node, v, rec);
      if (decided) return decided;
      const value = JSON.stringify({ owner: "attachment", node: this.node, gen, at, attachment } satisfies IpOwner);
      return {
        compare: kv ? { key, target: "mod", equals: kv.modRevision } : { key, target: "create", equals: 0 },
        op: { put: { key, value } },
      };
    }
    if (!releasableBy(this.node, v, rec.containerID)) return { status: "noop" };
    if (v.owner === "buffer" && this.usedHere(rec.pool, rec.ip)) return { status: "noop" }; // handed out here again since
    const op: TxnOp = rec.keepInBuffer ? { put: { key, value: this.releasedValue(gen, at) } } : { del: { key } };
    return { compare: { key, target: "mod", equals: kv!.modRevision }, op };
  }

  private rememberBound(name: string, revision: number, record: StickyRecord, owner: IpOwner): void {
    this.boundHints.delete(name);
    this.boundHints.set(name, { revision, record, owner });
    if (this.boundHints.size > BOUND_HINTS) this.boundHints.delete(this.boundHints.keys().next().value!);
  }

  /**
   * A detach of what this node's last bind wrote, when nothing changed since: both keys still carry the bind's
   * revision, so one transaction compares them and writes what applyAttempt would have written after reading them.
   * Otherwise what the compare met (the failure reads the two keys) for applyAttempt to decide on, or "unknown".
   */
  private async detachAsBound(
    rec: OutboxOp & { op: "detach-sticky" },
    name: string,
    skey: string,
    ikey: string,
    gen: string,
    at: number,
  ): Promise<"applied" | "unknown" | TxnResult | undefined> {
    const bound = this.boundHints.get(name);
    this.boundHints.delete(name); // one use: whatever the outcome, etcd's keys have moved on from it
    if (!bound || bound.record.attachment?.containerID !== rec.containerID || bound.record.ip !== rec.ip) return undefined;
    try {
      const r = await this.client.txn(
        [
          { key: skey, target: "mod", equals: bound.revision },
          { key: ikey, target: "mod", equals: bound.revision },
        ],
        [
          { put: { key: skey, value: JSON.stringify(detached(bound.record, gen, at)) } },
          { put: { key: ikey, value: JSON.stringify({ ...bound.owner, gen, at }) } },
        ],
        [{ get: { key: skey } }, { get: { key: ikey } }],
      );
      return r.succeeded ? "applied" : r;
    } catch (e) {
      if (!(e instanceof EtcdOutcomeUnknown)) throw e;
      return (await this.landed([skey], gen))[0] ? "applied" : "unknown";
    }
  }

  /** A released address back in the buffer (in memory); the caller persists the returned entry. */
  private keptInBuffer(pool: string, ip: string, modRevision: number, at: number): BufferEntry | null {
    // Used here again meanwhile (a plain attachment's key stays "buffer of this node"): not free, not buffered.
    if (this.usedHere(pool, ip)) return null;
    const entry = { pool, ip, modRevision, notBefore: at + (this.o.cooldownMs ?? 0) };
    if (entry.notBefore > this.now()) this.cooling.set(`${pool} ${ip}`, entry.notBefore);
    this.putBack(entry);
    return entry;
  }

  private async applyOne(rec: OutboxOp): Promise<Omit<OutboxOutcome, "id">> {
    for (let attempt = 0; attempt < MAX_CAS_ATTEMPTS; attempt++) {
      const r = await this.applyAttempt(rec);
      if (r) return r;
    }
    throw new ClusterError("inconsistent", `outbox ${rec.op}: ${MAX_CAS_ATTEMPTS} conflicting transactions in a row`, true);
  }

  /** One read-decide-CAS pass; null when the compare failed (re-read). */
  private async applyAttempt(rec: OutboxOp): Promise<Omit<OutboxOutcome, "id"> | null> {
    const gen = this.gen();
    const at = this.now();
    if (rec.op === "attach" || rec.op === "release") {
      const key = this.keys.ip(rec.pool, rec.ip);
      const kv = await this.client.get(key);
      const v = kv ? parseJson<IpOwner>(kv.value, key) : null;
      if (rec.op === "attach") {
        const attachment = { ...rec.attachment, node: this.node };
        const value = JSON.stringify({ owner: "attachment", node: this.node, gen, at, attachment } satisfies IpOwner);
        const decided = attachDecided(this.node, v, rec);
        if (decided) return decided;
        // Absent: reaped while this node was unreachable past the grace period; take it back if still free.
        const cmp: Compare = kv ? { key, target: "mod", equals: kv.modRevision } : { key, target: "create", equals: 0 };
        return (await this.casTxn("attach", [cmp], [{ put: { key, value } }], key, gen)) ? { status: "applied" } : null;
      }
      if (!releasableBy(this.node, v, rec.containerID)) return { status: "noop" };
      if (v.owner === "buffer" && this.usedHere(rec.pool, rec.ip)) return { status: "noop" };
      const op: TxnOp = rec.keepInBuffer ? { put: { key, value: this.releasedValue(gen, at) } } : { del: { key } };
      const rev = await this.casTxn("release", [{ key, target: "mod", equals: kv!.modRevision }], [op], key, gen);
      if (!rev && !rec.keepInBuffer && !(await this.client.get(key))) return { status: "applied" };
      if (!rev) return null;
      const entry = rec.keepInBuffer ? this.keptInBuffer(rec.pool, rec.ip, rev, at) : null;
      if (entry) this.persistAdded([entry]);
      return { status: "applied" };
    }
    const skey = this.keys.sticky(rec.identity);
    const name = this.keys.identityName(rec.identity);
    const hint = rec.op === "detach-sticky" && rec.ip ? this.keys.ip(rec.identity.pool, rec.ip) : undefined;
    let read: TxnResult | undefined;
    if (rec.op === "detach-sticky" && hint) {
      const known = await this.detachAsBound(rec, name, skey, hint, gen, at);
      if (known === "applied") return { status: "applied" };
      if (known === "unknown") return null;
      read = known;
    }
    read ??= hint ? await this.client.txn([], [{ get: { key: skey } }, { get: { key: hint } }]) : undefined;
    const cur = read ? (read.responses[0]?.kind === "get" ? (read.responses[0].kvs[0] ?? null) : null) : await this.client.get(skey);
    if (!cur) return { status: "noop" };
    const s = parseJson<StickyRecord>(cur.value, skey);
    if (rec.op === "detach-sticky") {
      if (s.attachment?.containerID !== rec.containerID) return { status: "noop" };
      const next = detached(s, gen, at);
      // Rewrites the address key too, so both keep one ModRevision (the next bind's optimistic compare holds).
      const ikey = this.keys.ip(rec.identity.pool, s.ip);
      const ipKv = ikey === hint && read?.responses[1]?.kind === "get" ? (read.responses[1].kvs[0] ?? null) : await this.client.get(ikey);
      const ipOwner = ipKv ? parseJson<IpOwner>(ipKv.value, ikey) : null;
      const compares: Compare[] = [{ key: skey, target: "mod", equals: cur.modRevision }];
      const ops: TxnOp[] = [{ put: { key: skey, value: JSON.stringify(next) } }];
      if (ipKv && ipOwner?.owner === "sticky" && ipOwner.identity === name) {
        compares.push({ key: ikey, target: "mod", equals: ipKv.modRevision });
        ops.push({ put: { key: ikey, value: JSON.stringify({ ...ipOwner, gen, at }) } });
      }
      return (await this.casTxn("detach", compares, ops, skey, gen)) ? { status: "applied" } : null;
    }
    if (s.attachment && !rec.force) {
      throw new ClusterError(
        "reservation_attached",
        `sticky identity ${name} is attached to sandbox ${s.attachment.containerID} on node ` +
          `${s.attachment.node}; delete the pod first, or pass force`,
        false,
      );
    }
    const ikey = this.keys.ip(rec.identity.pool, s.ip);
    const ipKv = await this.client.get(ikey);
    const ipOwner = ipKv ? parseJson<IpOwner>(ipKv.value, ikey) : null;
    const ops: TxnOp[] = [{ del: { key: skey } }];
    const compares: Compare[] = [{ key: skey, target: "mod", equals: cur.modRevision }];
    if (ipKv && ipOwner?.owner === "sticky" && ipOwner.identity === name) {
      compares.push({ key: ikey, target: "mod", equals: ipKv.modRevision });
      const cooling = s.attachment ? undefined : await this.coolingOp(ikey, name, at, gen);
      // An address a running sandbox uses stays held by that attachment until its DEL.
      ops.push(
        s.attachment
          ? {
              put: {
                key: ikey,
                value: JSON.stringify({
                  owner: "attachment",
                  node: s.attachment.node,
                  gen,
                  at,
                  attachment: s.attachment,
                } satisfies IpOwner),
              },
            }
          : (cooling ?? { del: { key: ikey } }),
      );
      if (s.attachment) ops.push(registrationOp(this.keys, s.attachment.node, at, this.node));
    }
    try {
      const r = await this.client.txn(compares, ops);
      if (!r.succeeded) {
        this.conflict("release-sticky");
        return null;
      }
    } catch (e) {
      if (!(e instanceof EtcdOutcomeUnknown)) throw e;
      return null; // re-read: absent means applied (noop next pass)
    }
    return { status: "applied" };
  }

  /**
   * The address key of a released sticky identity, kept through the cooldown under a lease of that length: no node
   * can claim it (a claim needs the key absent) until etcd deletes it, whichever node serves the pool next, so
   * neighbours' ARP caches and peers' connections age out first. Undefined without a cooldown.
   */
  private async coolingOp(key: string, identity: string, at: number, gen: string): Promise<TxnOp | undefined> {
    const ms = this.o.cooldownMs ?? 0;
    if (ms <= 0) return undefined;
    const lease = await this.client.leaseGrant(Math.ceil(ms / 1000));
    const value = JSON.stringify({ owner: "cooling", node: this.node, gen, at, identity, until: at + ms } satisfies IpOwner);
    return { put: { key, value, lease: lease.id } };
  }
}

/**
 * An attach record's outcome when the key's owner alone decides it: noop when `node` owns the address already (its
 * buffer, or this attachment), conflict when anything else does; undefined when the key is to be written.
 */
function attachDecided(node: string, v: IpOwner | null, rec: OutboxOp & { op: "attach" }): Omit<OutboxOutcome, "id"> | undefined {
  if (v?.node === node && (v.owner === "buffer" || (v.owner === "attachment" && v.attachment.containerID === rec.attachment.containerID)))
    return { status: "noop" };
  if (v && !(v.node === node && (v.owner === "buffer" || v.owner === "attachment"))) {
    return {
      status: "conflict",
      detail: `${rec.ip} is owned by ${v.owner} on node ${v.node} in etcd, but attached here to ${rec.attachment.containerID}`,
    };
  }
  return undefined;
}

/** A sticky identity's record once its sandbox's DEL is applied: the same binding, no attachment. */
function detached(s: StickyRecord, gen: string, at: number): StickyRecord {
  const { attachment: _gone, ...rest } = s;
  return { ...rest, gen, at };
}

/** Whether `node`'s release of `containerID`'s address may change its key: the node holds it as buffer or as that attachment. */
function releasableBy(node: string, v: IpOwner | null, containerID: string): v is Extract<IpOwner, { owner: "buffer" | "attachment" }> {
  if (!v || v.node !== node) return false;
  return v.owner === "buffer" || (v.owner === "attachment" && v.attachment.containerID === containerID);
}

function describeOwner(v: IpOwner): string {
  if (v.owner === "buffer") return `node ${v.node}'s buffer`;
  if (v.owner === "cooling") return `the cooldown after ${v.identity} was released (free from ${new Date(v.until).toISOString()})`;
  if (v.owner === "sticky") return `sticky identity ${v.identity} (bound to node ${v.node})`;
  return `sandbox ${v.attachment.containerID} on node ${v.node}`;
}
