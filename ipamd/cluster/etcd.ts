// A small etcd v3 client. The KV calls (Range, Put, DeleteRange, Txn) and the streaming watch are gRPC over
// node:http2, one connection per endpoint, with a hand-written protobuf subset (etcd-proto.ts); leases go over etcd's
// JSON gateway (/v3/lease/*) on node:http(s) with keep-alive. Why gRPC: the gateway decodes every request from JSON
// into protobuf by reflection and encodes the answer back, which cost etcd ~45% more CPU per claim transaction, and
// it re-encodes every watch event for every watcher (docs/cluster.md). Why not the npm etcd3 client: see
// docs/cluster.md. Only v3 API common to etcd 3.4 and 3.5.
//
// Every request carries the gRPC metadata hasleader=true (through the gateway: `Grpc-Metadata-hasleader: true`):
// a member without a leader then fails a request at once with "etcdserver: no leader" and cancels a watch
// instead of leaving it silent.
// Retries: a request that never reached etcd (connect refused/timed out, TLS failure, no leader, a stream never
// given an ID) goes to the next endpoint, for every kind of request. One that may have been applied (reset or
// timeout after sending) is retried only when it is an idempotent read; a write then fails with EtcdOutcomeUnknown
// and the caller re-reads.
// After the member in use stops answering, requests wait until the next member names a leader other than it (see
// settleLeader): a leader's death otherwise sends them into the void until their deadline.
// A request that times out on an established connection is followed by an HTTP/2 PING: no answer (member frozen or
// partitioned, the TCP connection never reset) drops the connection and every request on it; an answer means the
// member is alive but slow, so no election is waited for.
import * as http from "node:http";
import * as http2 from "node:http2";
import * as https from "node:https";
import {
  type KeyValue,
  type ProtoWatchResponse,
  ProtoWriter,
  readMemberId,
  readRange,
  readRevisionAnd,
  readTxn,
  readWatchResponse,
  type TxnOpResult,
  unframe,
} from "./etcd-proto";
import { TlsFiles } from "./tls-files";

export type { KeyValue, TxnOpResult };

export interface EtcdTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface EtcdClientOptions extends EtcdTls {
  endpoints: string[];
  /** Per-request deadline, connect included. */
  requestTimeoutMs?: number;
  /**
   * How often a connection that carries a watch is sent an HTTP/2 PING (etcd's Go client: DialKeepAliveTime). One
   * unanswered within a quarter of the request timeout drops the connection, and its watches end (to resume on the
   * next member): a member frozen or cut off without a reset otherwise leaves them silent. Default 10,000 ms; at
   * least 5,000 ms, etcd's default --grpc-keepalive-min-time (a client that pings more often is sent GOAWAY
   * ENHANCE_YOUR_CALM and loses the connection).
   */
  keepAliveMs?: number;
  /**
   * When every endpoint refused (no leader, connect refused), try all again with backoff for this long before
   * failing: rides out a leader election (etcd's default election timeout is 1 s, and a dead leader takes up to two
   * of them to notice, plus the vote), still fails fast when the quorum is gone. Default 3000 ms.
   */
  retryBudgetMs?: number;
  observer?: EtcdObserver;
}

export type ConnectionState = "connected" | "degraded" | "unreachable";

/** Numbers for metrics; the daemon wires them to prom-client. */
export interface EtcdObserver {
  request?(op: string, endpoint: string, seconds: number, outcome: "ok" | "error" | "unreachable"): void;
  state?(state: ConnectionState, detail: string): void;
  /** The TLS files changed: read again (ok), or unusable and the previous ones kept. */
  tlsReload?(ok: boolean, detail: string): void;
}

export interface RangeResult {
  kvs: KeyValue[];
  count: number;
  more: boolean;
  revision: number;
}
export interface RangeOptions {
  prefix?: boolean;
  /** Explicit exclusive end of the range (instead of prefix). */
  rangeEnd?: string;
  keysOnly?: boolean;
  countOnly?: boolean;
  limit?: number;
  /** Read at a past revision (fails with EtcdCompacted when compacted away). */
  revision?: number;
}

/** With `rangeEnd`, the compare holds for every key in [key, rangeEnd), and when none exists (not for "value"). */
export type Compare =
  | { key: string; rangeEnd?: string; target: "create" | "mod" | "version"; equals: number }
  | { key: string; rangeEnd?: string; target: "value"; equals: string };

export type TxnOp =
  | { put: { key: string; value: string; lease?: string } }
  | { get: { key: string } & RangeOptions }
  | { del: { key: string; prefix?: boolean } };

export interface TxnResult {
  succeeded: boolean;
  revision: number;
  responses: TxnOpResult[];
}

export interface WatchEvent {
  type: "put" | "delete";
  kv: KeyValue;
}
export interface WatchHandlers {
  /** Events of one revision batch, in order; `revision` is the header revision of the batch. */
  onEvents(events: WatchEvent[], revision: number): void;
  /** The start revision is compacted away: re-list, then watch again from the list's revision + 1. */
  onCompacted(compactRevision: number): void;
  /** The watch ended (no leader, member gone, stream closed); watch again from the last revision + 1. */
  onEnd(error: EtcdError): void;
  onCreated?(revision: number, endpoint: string): void;
}
export interface WatchHandle {
  readonly endpoint: string;
  close(): void;
}

// ---------- errors ----------

export class EtcdError extends Error {
  constructor(
    message: string,
    readonly endpoint?: string,
  ) {
    super(message);
  }
}
/** No endpoint could serve the request; names each endpoint with why. */
export class EtcdUnavailable extends EtcdError {
  constructor(
    readonly op: string,
    readonly tried: { endpoint: string; reason: string }[],
  ) {
    super(
      `etcd unreachable: ${op} failed on every endpoint (${tried.map((t) => `${t.endpoint}: ${t.reason}`).join("; ")}); ` +
        "check that a quorum of etcd members is up and reachable from this node, and the TLS files",
    );
  }
}
/** A write may or may not have been applied (connection lost after sending): re-read to find out. */
export class EtcdOutcomeUnknown extends EtcdError {
  constructor(
    readonly op: string,
    endpoint: string,
    reason: string,
  ) {
    super(`etcd ${op} on ${endpoint}: outcome unknown (${reason}); re-read the keys to see whether it was applied`, endpoint);
  }
}
/** etcd answered with an error status (bad request, compacted revision, too many ops...). */
export class EtcdRequestError extends EtcdError {
  constructor(
    readonly op: string,
    endpoint: string,
    readonly grpcCode: number,
    readonly detail: string,
  ) {
    super(`etcd ${op} on ${endpoint} failed: ${detail} (gRPC code ${grpcCode})`, endpoint);
  }
}
export class EtcdCompacted extends EtcdError {
  constructor(
    readonly compactRevision: number,
    endpoint: string,
  ) {
    super(`etcd revision compacted (compact revision ${compactRevision}); re-list`, endpoint);
  }
}

// ---------- wire helpers ----------

const num = (s: string | number | undefined): number => (s === undefined ? 0 : Number(s));

/** The key just after every key with this prefix (etcd's --prefix); "\0" (all keys) for an all-0xff prefix. */
function prefixEnd(prefix: string): Buffer {
  const bytes = Buffer.from(prefix, "utf8");
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      const end = Buffer.from(bytes.subarray(0, i + 1));
      end[i]! += 1;
      return end;
    }
  }
  return Buffer.from([0]);
}

// ---------- protobuf (gRPC) encoders: etcdserverpb field numbers ----------

function rangeProto(key: string, o: RangeOptions = {}): ProtoWriter {
  const m = new ProtoWriter().bytes(1, key);
  if (o.prefix) m.bytes(2, prefixEnd(key));
  else if (o.rangeEnd !== undefined) m.bytes(2, o.rangeEnd);
  return m
    .int(3, o.limit ?? 0)
    .int(4, o.revision ?? 0)
    .bool(8, o.keysOnly)
    .bool(9, o.countOnly);
}

function putProto(key: string, value: string, lease?: string): ProtoWriter {
  const m = new ProtoWriter().bytes(1, key).bytes(2, value);
  return lease ? m.int(3, BigInt(lease)) : m;
}

function deleteProto(key: string, prefix?: boolean): ProtoWriter {
  const m = new ProtoWriter().bytes(1, key);
  return prefix ? m.bytes(2, prefixEnd(key)) : m;
}

/** Compare: result 1 (EQUAL = 0), target 2, key 3, version 4 | create_revision 5 | mod_revision 6 | value 7, range_end 64. */
function compareProto(c: Compare): ProtoWriter {
  const target = { version: 0, create: 1, mod: 2, value: 3 }[c.target];
  const m = new ProtoWriter().int(2, target).bytes(3, c.key);
  if (c.target === "value") m.bytes(7, c.equals);
  else m.int({ version: 4, create: 5, mod: 6 }[c.target], c.equals, true);
  return c.rangeEnd !== undefined ? m.bytes(64, c.rangeEnd) : m;
}

/** RequestOp: request_range 1, request_put 2, request_delete_range 3. */
function opProto(op: TxnOp): ProtoWriter {
  if ("put" in op) return new ProtoWriter().message(2, putProto(op.put.key, op.put.value, op.put.lease));
  if ("get" in op) {
    const { key, ...o } = op.get;
    return new ProtoWriter().message(1, rangeProto(key, o));
  }
  return new ProtoWriter().message(3, deleteProto(op.del.key, op.del.prefix));
}

/**
 * How a failed attempt ended: `unsent` never reached etcd's state machine, `unknown` may have (`responded`: an HTTP
 * answer came, unreadable).
 */
type Failure =
  | { kind: "unsent" | "unknown"; reason: string; responded?: boolean; alive?: boolean }
  | { kind: "answer"; code: number; message: string };
type Attempt<T> = { ok: true; value: T } | { ok: false; failure: Failure };

/** The member's certificate failed verification: not signed by the CA this node trusts, expired, or another name. */
const UNTRUSTED_SERVER = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** A connection failure as the error names it, without Node's advice about its own flags (not what a node can act on). */
function failureText(code: string, message: string): string {
  const text = `${code}: ${message.replace(/; if the root CA is installed locally, try running Node\.js with --use-system-ca/, "")}`;
  return UNTRUSTED_SERVER.has(code) ? `${text} (the member's certificate, checked against cluster.etcd.caFile)` : text;
}

/**
 * Follows a gRPC stream's headers and trailers; once it closed, the call's outcome: grpc-status (undefined when
 * none came: not a gRPC answer), its message (percent-decoded), the HTTP status.
 */
function grpcOutcome(stream: http2.ClientHttp2Stream): () => { status?: string; message: string; httpStatus: string } {
  let headers: http2.IncomingHttpHeaders = {};
  let trailers: http2.IncomingHttpHeaders = {};
  stream.on("response", (h) => {
    headers = h;
  });
  stream.on("trailers", (t) => {
    trailers = t;
  });
  return () => {
    const status = trailers["grpc-status"] ?? headers["grpc-status"];
    const raw = String(trailers["grpc-message"] ?? headers["grpc-message"] ?? "");
    let message = raw;
    try {
      message = decodeURIComponent(raw);
    } catch {}
    return { ...(status !== undefined ? { status: String(status) } : {}), message, httpStatus: String(headers[":status"] ?? "none") };
  };
}

/** An agent made with TLS files since replaced: its idle connections close now, its busy ones once their request ends. */
function retire(agent: http.Agent): void {
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
  agent.on("free", (socket) => socket.destroy());
}

const UNSENT_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ECONNABORTED"]);

export class EtcdClient {
  readonly endpoints: string[];
  private readonly timeoutMs: number;
  private readonly retryBudgetMs: number;
  private readonly agents = new Map<string, { agent: http.Agent; generation: number }>();
  private readonly sessions = new Map<string, http2.ClientHttp2Session>();
  /** Sessions whose connection was established (a request on one may have reached etcd). */
  private readonly connected = new WeakSet<http2.ClientHttp2Session>();
  private readonly tls: TlsFiles;
  /** The member ID behind each endpoint, from its answers' headers (learned once per connection over gRPC). */
  private readonly memberOf = new Map<string, string>();
  private readonly learned = new WeakSet<http2.ClientHttp2Session>();
  /** The PING in progress on a session (a request on it timed out, or the keep-alive): concurrent callers share it. */
  private readonly pinging = new WeakMap<http2.ClientHttp2Session, Promise<boolean>>();
  /**
   * The endpoints whose connection failed since a member last named a leader that is none of them (several: a dead
   * endpoint the client fails over through must not take the lost leader's place).
   */
  private readonly lost = new Set<string>();
  /** The status poll of each endpoint in progress: concurrent requests share it. */
  private readonly settling = new Map<string, Promise<string | null>>();
  private current = 0;
  private state: ConnectionState | null = null;
  private closed = false;

  constructor(private readonly o: EtcdClientOptions) {
    if (o.endpoints.length === 0) throw new Error("etcd: no endpoints given; set cluster.etcd.endpoints");
    this.endpoints = o.endpoints.map((e) => e.replace(/\/+$/, ""));
    for (const e of this.endpoints) {
      const u = new URL(e);
      if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`etcd endpoint ${e}: expected http:// or https://`);
    }
    this.timeoutMs = o.requestTimeoutMs ?? 2000;
    this.retryBudgetMs = o.retryBudgetMs ?? 3000;
    const { caFile, certFile, keyFile } = o;
    this.tls = new TlsFiles({ caFile, certFile, keyFile }, (ok, detail) => o.observer?.tlsReload?.(ok, detail));
  }

  get connectionState(): ConnectionState | null {
    return this.state;
  }
  /** The endpoint the next request goes to first. */
  get currentEndpoint(): string {
    return this.endpoints[this.current]!;
  }

  close(): void {
    this.closed = true;
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    for (const a of this.agents.values()) a.agent.destroy();
    this.agents.clear();
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
  }

  /** The highest header revision of any KV answer (history.ts compares it with a fresh read: a restored etcd). */
  get highestRevision(): number {
    return this.highest;
  }
  /** After etcd lost history (restored from a snapshot): its revision counts from `revision` again. */
  resetHighestRevision(revision: number): void {
    this.highest = revision;
  }
  private highest = 0;
  /**
   * gRPC connections established so far. A restore from a snapshot restarts every member, so while this stays the
   * same, the members that answer are the processes that answered before (history.ts: a check still holds).
   */
  connectionsMade = 0;
  /** The connections with watch streams open (their endpoint, how many streams): those the keep-alive PINGs. */
  private readonly watching = new Map<http2.ClientHttp2Session, { endpoint: string; streams: number }>();
  private keepAliveTimer: NodeJS.Timeout | null = null;

  private watchOpened(endpoint: string, session: http2.ClientHttp2Session): () => void {
    this.watching.set(session, { endpoint, streams: (this.watching.get(session)?.streams ?? 0) + 1 });
    if (!this.keepAliveTimer) {
      this.keepAliveTimer = setInterval(
        () => {
          for (const [s, w] of this.watching) if (!s.destroyed) void this.answersPing(w.endpoint, s, this.keepAliveSilence());
        },
        Math.max(5000, this.o.keepAliveMs ?? 10_000),
      );
      this.keepAliveTimer.unref();
    }
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      const left = (this.watching.get(session)?.streams ?? 1) - 1;
      if (left > 0) this.watching.set(session, { endpoint, streams: left });
      else this.watching.delete(session);
      if (this.watching.size === 0 && this.keepAliveTimer) {
        clearInterval(this.keepAliveTimer);
        this.keepAliveTimer = null;
      }
    };
  }

  private saw(revision: number): number {
    if (revision > this.highest) this.highest = revision;
    return revision;
  }

  // ---------- KV ----------

  async range(key: string, o: RangeOptions = {}): Promise<RangeResult> {
    const buf = await this.unary("range", "Range", rangeProto(key, o), true);
    const r = readRange(buf, ...unframe(buf));
    return { kvs: r.kvs, count: r.count, more: r.more, revision: this.saw(r.revision) };
  }

  async get(key: string): Promise<KeyValue | null> {
    return (await this.range(key)).kvs[0] ?? null;
  }

  async put(key: string, value: string, o: { lease?: string } = {}): Promise<number> {
    const buf = await this.unary("put", "Put", putProto(key, value, o.lease), false);
    return this.saw(readRevisionAnd(buf, ...unframe(buf)).revision);
  }

  async delete(key: string, o: { prefix?: boolean } = {}): Promise<number> {
    const buf = await this.unary("delete", "DeleteRange", deleteProto(key, o.prefix), false);
    const r = readRevisionAnd(buf, ...unframe(buf), 2);
    this.saw(r.revision);
    return r.n;
  }

  /** If every compare holds, the success ops, else the failure ops; all at one revision. */
  async txn(compare: Compare[], success: TxnOp[], failure: TxnOp[] = []): Promise<TxnResult> {
    const readOnly = success.every((op) => "get" in op) && failure.every((op) => "get" in op);
    const m = new ProtoWriter();
    for (const c of compare) m.message(1, compareProto(c));
    for (const op of success) m.message(2, opProto(op));
    for (const op of failure) m.message(3, opProto(op));
    const buf = await this.unary("txn", "Txn", m, readOnly);
    const r = readTxn(buf, ...unframe(buf));
    return { succeeded: r.succeeded, revision: this.saw(r.revision), responses: r.responses };
  }

  // ---------- leases ----------

  async leaseGrant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
    const r = (await this.call("lease grant", "/v3/lease/grant", { TTL: ttlSeconds }, false)) as {
      ID: string;
      TTL: string;
      error?: string;
    };
    if (r.error) throw new EtcdError(`etcd lease grant failed: ${r.error}`);
    return { id: r.ID, ttl: num(r.TTL) };
  }

  /** One keepalive; returns the remaining TTL (0: the lease is gone). Idempotent. */
  async leaseKeepAlive(id: string): Promise<number> {
    const r = (await this.call("lease keepalive", "/v3/lease/keepalive", { ID: id }, true)) as {
      result?: { TTL?: string };
      error?: { message: string };
    };
    if (r.error) throw new EtcdError(`etcd lease keepalive failed: ${r.error.message}`);
    return num(r.result?.TTL);
  }

  async leaseRevoke(id: string): Promise<void> {
    try {
      await this.call("lease revoke", "/v3/lease/revoke", { ID: id }, true);
    } catch (e) {
      if (e instanceof EtcdRequestError && /lease not found/.test(e.detail)) return;
      throw e;
    }
  }

  // ---------- watch ----------

  /**
   * One watch stream on one endpoint (the first that accepts it). It never reconnects by itself: on
   * onEnd the caller watches again from its last revision + 1 (see WatchLoop).
   */
  watch(key: string, o: { prefix?: boolean; startRevision?: number; prevKv?: boolean }, h: WatchHandlers): WatchHandle {
    const endpoint = this.endpoints[this.current]!;
    let done = false;
    let stream: http2.ClientHttp2Stream | null = null;
    let unwatch = (): void => undefined;
    const finish = (err: EtcdError): void => {
      if (done) return;
      done = true;
      unwatch();
      clearTimeout(connectTimer);
      if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      h.onEnd(err);
    };
    const handle: WatchHandle = {
      endpoint,
      close: () => {
        done = true;
        unwatch();
        clearTimeout(connectTimer);
        if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
      },
    };
    const started = performance.now();
    const noAnswer = `etcd watch on ${endpoint}: no answer within ${this.timeoutMs} ms`;
    const connectTimer = setTimeout(() => finish(new EtcdError(noAnswer, endpoint)), this.timeoutMs);
    const created = (): void => {
      clearTimeout(connectTimer);
      this.o.observer?.request?.("watch", endpoint, (performance.now() - started) / 1000, "ok");
    };
    let session: http2.ClientHttp2Session;
    try {
      session = this.sessionFor(endpoint);
      stream = session.request(
        { ":method": "POST", ":path": "/etcdserverpb.Watch/Watch", "content-type": "application/grpc", te: "trailers", hasleader: "true" },
        { endStream: false },
      );
    } catch (e) {
      this.rotate(endpoint);
      queueMicrotask(() => finish(new EtcdError(`etcd watch on ${endpoint} failed: ${(e as Error).message}`, endpoint)));
      return handle;
    }
    unwatch = this.watchOpened(endpoint, session);
    const outcome = grpcOutcome(stream);
    // gRPC length-prefixed messages; one may span DATA frames, or a frame hold several.
    let pending: Buffer = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (!done && pending.length >= 5) {
        const len = pending.readUInt32BE(1);
        if (pending.length < 5 + len) return;
        let msg: ProtoWatchResponse;
        try {
          if (pending[0] !== 0) throw new Error("compressed gRPC message (not requested)");
          msg = readWatchResponse(pending, 5, 5 + len);
        } catch (e) {
          finish(new EtcdError(`etcd watch on ${endpoint}: unreadable message: ${(e as Error).message}`, endpoint));
          return;
        }
        pending = pending.subarray(5 + len);
        this.watchMessage(msg, endpoint, h, finish, created);
      }
    });
    stream.on("error", (e: NodeJS.ErrnoException) => {
      const code = e.code ?? e.name;
      if (!code.startsWith("ERR_HTTP2_STREAM") && this.sessions.get(endpoint) === session) this.sessions.delete(endpoint);
      this.rotate(endpoint);
      finish(new EtcdError(`etcd watch on ${endpoint} failed: ${failureText(code, e.message)}`, endpoint));
    });
    stream.on("close", () => {
      const { status, message } = outcome();
      if (status !== undefined && status !== "0") {
        if (/no leader/.test(message)) this.rotate(endpoint);
        finish(new EtcdError(`etcd watch on ${endpoint} ended: ${message || `gRPC status ${status}`}`, endpoint));
        return;
      }
      finish(new EtcdError(`etcd watch on ${endpoint}: stream closed`, endpoint));
    });
    // WatchRequest.create_request 1: WatchCreateRequest key 1, range_end 2, start_revision 3, prev_kv 6.
    const create = new ProtoWriter().bytes(1, key);
    if (o.prefix) create.bytes(2, prefixEnd(key));
    create.int(3, o.startRevision ?? 0).bool(6, o.prevKv);
    stream.write(new ProtoWriter().message(1, create).frame());
    return handle;
  }

  private watchMessage(
    r: ProtoWatchResponse,
    endpoint: string,
    h: WatchHandlers,
    finish: (e: EtcdError) => void,
    created: () => void,
  ): void {
    if (r.compactRevision > 0) {
      h.onCompacted(r.compactRevision);
      finish(new EtcdCompacted(r.compactRevision, endpoint));
      return;
    }
    if (r.created) {
      created();
      h.onCreated?.(r.revision, endpoint);
    }
    if (r.canceled) {
      finish(new EtcdError(`etcd watch on ${endpoint} canceled: ${r.cancelReason || "no reason given"}`, endpoint));
      return;
    }
    if (r.events.length) h.onEvents(r.events, r.revision);
  }

  // ---------- transport ----------

  private agentFor(endpoint: string): http.Agent {
    const secure = endpoint.startsWith("https:");
    const tls = secure ? this.tls.current() : {};
    const had = this.agents.get(endpoint);
    if (had && had.generation === this.tls.generation) return had.agent;
    if (had) retire(had.agent);
    const agent = secure
      ? new https.Agent({ keepAlive: true, maxSockets: 64, ...tls })
      : new http.Agent({ keepAlive: true, maxSockets: 64 });
    this.agents.set(endpoint, { agent, generation: this.tls.generation });
    return agent;
  }

  /** One HTTP/2 connection per endpoint for gRPC, reused; a closed or failed one is replaced on the next call. */
  private sessionFor(endpoint: string): http2.ClientHttp2Session {
    let s = this.sessions.get(endpoint);
    if (s && !s.closed && !s.destroyed) return s;
    const created = http2.connect(endpoint, endpoint.startsWith("https:") ? this.tls.current() : {});
    s = created;
    const forget = (): void => {
      if (this.sessions.get(endpoint) === created) this.sessions.delete(endpoint);
    };
    s.on("error", forget); // each stream reports it
    s.on("close", forget);
    s.on("goaway", forget);
    s.once("connect", () => {
      this.connected.add(created);
      this.connectionsMade++;
    });
    s.unref();
    this.sessions.set(endpoint, s);
    return s;
  }

  private attemptGrpc(endpoint: string, path: string, frame: Buffer): Promise<Attempt<Buffer>> {
    return new Promise((resolve) => {
      let settled = false;
      let stream: http2.ClientHttp2Stream | undefined;
      let session: http2.ClientHttp2Session | undefined;
      const isConnected = (): boolean => session !== undefined && this.connected.has(session);
      const done = (r: Attempt<Buffer>): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(r);
      };
      const failed = (kind: "unsent" | "unknown", reason: string): void => done({ ok: false, failure: { kind, reason } });
      const timer = setTimeout(() => {
        const connected = isConnected();
        const reason = `no answer within ${this.timeoutMs} ms`;
        if (!connected) {
          stream?.close(http2.constants.NGHTTP2_CANCEL);
          session?.destroy(); // never connected: the next call connects again
          failed("unsent", reason);
          return;
        }
        settled = true; // the cancelled stream's close reports nothing; the PING decides what this attempt says
        stream!.close(http2.constants.NGHTTP2_CANCEL);
        void this.answersPing(endpoint, session!).then((alive) =>
          resolve({
            ok: false,
            failure: { kind: "unknown", reason: alive ? `${reason} (it answers PING: alive but slow)` : this.silence(), alive },
          }),
        );
      }, this.timeoutMs);
      try {
        session = this.sessionFor(endpoint);
        stream = session.request({
          ":method": "POST",
          ":path": path,
          "content-type": "application/grpc",
          te: "trailers",
          hasleader: "true",
        });
      } catch (e) {
        failed("unsent", (e as Error).message);
        return;
      }
      const chunks: Buffer[] = [];
      const outcome = grpcOutcome(stream);
      stream.on("data", (c: Buffer) => chunks.push(c));
      // Not yet given a stream ID: its request never left this process.
      const pending = (): boolean => stream!.pending || stream!.id === undefined;
      const sessionLost = (): void => {
        if (this.sessions.get(endpoint) === session) this.sessions.delete(endpoint); // the next call connects again
        session!.destroy();
      };
      stream.on("error", (e: NodeJS.ErrnoException) => {
        const code = e.code ?? e.name;
        if (!code.startsWith("ERR_HTTP2_STREAM")) sessionLost();
        // Refused, or never on a connection etcd accepted: nothing reached etcd.
        const unsent =
          !isConnected() ||
          pending() ||
          UNSENT_CODES.has(code) ||
          /certificate|SSL|TLS/i.test(e.message) ||
          /REFUSED_STREAM/.test(e.message) ||
          code === "ERR_HTTP2_GOAWAY_SESSION" ||
          code === "ERR_HTTP2_INVALID_SESSION";
        failed(unsent ? "unsent" : "unknown", failureText(code, e.message));
      });
      stream.on("close", () => {
        const { status, message, httpStatus } = outcome();
        if (status === undefined) {
          if (settled) return;
          sessionLost();
          failed(isConnected() && !pending() ? "unknown" : "unsent", `stream closed without a gRPC status (HTTP ${httpStatus})`);
          return;
        }
        if (status !== "0") {
          done({ ok: false, failure: { kind: "answer", code: Number(status), message } });
          return;
        }
        const answer = Buffer.concat(chunks);
        if (!this.learned.has(session!)) {
          this.learned.add(session!);
          try {
            const id = readMemberId(answer, ...unframe(answer));
            if (id) this.memberOf.set(endpoint, id);
          } catch {} // the caller's own decoding reports a bad answer
        }
        done({ ok: true, value: answer });
      });
      stream.end(frame);
    });
  }

  private get pingTimeoutMs(): number {
    return Math.max(50, Math.floor(this.timeoutMs / 4));
  }

  private keepAliveSilence(): string {
    return `no answer to a keep-alive PING within ${this.pingTimeoutMs} ms: ` + "connection dropped (member frozen or partitioned?)";
  }

  private silence(): string {
    return (
      `a request on this connection got no answer within ${this.timeoutMs} ms, nor a PING within ${this.pingTimeoutMs} ms: ` +
      "connection dropped (member frozen or partitioned?)"
    );
  }

  /**
   * After a request on `session` timed out, and every keepAliveMs while it carries a watch: does the member still
   * answer an HTTP/2 PING (within a quarter of the request timeout)? One that does not (frozen, partitioned: the TCP
   * connection is never reset) would hold every request on that connection for a full timeout, and its watches
   * silent, so the session is destroyed: the requests and watches on it end at once and the next ones connect again.
   */
  private answersPing(endpoint: string, session: http2.ClientHttp2Session, silence = this.silence()): Promise<boolean> {
    let p = this.pinging.get(session);
    if (p) return p;
    p = new Promise<boolean>((resolve) => {
      const dead = (): void => {
        clearTimeout(timer);
        this.pinging.delete(session);
        if (this.sessions.get(endpoint) === session) this.sessions.delete(endpoint);
        session.destroy(Object.assign(new Error(silence), { code: "ETIMEDOUT" }));
        resolve(false);
      };
      const timer = setTimeout(dead, this.pingTimeoutMs);
      try {
        session.ping((err) => {
          if (err) return dead();
          clearTimeout(timer);
          this.pinging.delete(session); // the next timeout (or keep-alive) pings again
          resolve(true);
        });
      } catch {
        dead(); // destroyed meanwhile
      }
    });
    this.pinging.set(session, p);
    return p;
  }

  private request(endpoint: string, path: string, body: string, timeoutMs: number | null): http.ClientRequest {
    const u = new URL(endpoint + path);
    const mod = u.protocol === "https:" ? https : http;
    const req = mod.request({
      host: u.hostname,
      port: u.port,
      path: u.pathname,
      method: "POST",
      agent: this.agentFor(endpoint),
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), "grpc-metadata-hasleader": "true" },
      ...(timeoutMs ? { signal: AbortSignal.timeout(timeoutMs) } : {}),
    });
    req.end(body);
    return req;
  }

  private attempt(endpoint: string, path: string, body: string): Promise<Attempt<unknown>> {
    return new Promise((resolve) => {
      let connected = false;
      const req = this.request(endpoint, path, body, this.timeoutMs);
      req.on("socket", (s) => {
        if (!s.connecting) connected = true;
        else
          s.once(endpoint.startsWith("https:") ? "secureConnect" : "connect", () => {
            connected = true;
          });
      });
      req.on("error", (e: NodeJS.ErrnoException) => {
        const code = e.code ?? e.name;
        const aborted = e.name === "AbortError" || code === "ABORT_ERR" || e.name === "TimeoutError";
        const reason = aborted ? `no answer within ${this.timeoutMs} ms` : failureText(code, e.message);
        // A reused keep-alive socket the server had closed fails before etcd saw anything (Node's documented retry case).
        const unsent =
          !connected || UNSENT_CODES.has(code) || (req.reusedSocket && code === "ECONNRESET") || /certificate|SSL|TLS/i.test(e.message);
        resolve({ ok: false, failure: { kind: unsent ? "unsent" : "unknown", reason } });
      });
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", (e) => resolve({ ok: false, failure: { kind: "unknown", reason: e.message, responded: true } }));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: { code?: number; message?: string; error?: unknown; result?: unknown };
          try {
            json = JSON.parse(text.split("\n")[0]!);
          } catch {
            const reason = `HTTP ${res.statusCode}: unreadable answer ${text.slice(0, 200)}`;
            resolve({ ok: false, failure: { kind: "unknown", reason, responded: true } });
            return;
          }
          if (res.statusCode === 200 && !(json.error && typeof json.error === "object" && !json.result)) {
            const id = (json as { header?: { member_id?: string } }).header?.member_id;
            if (id) this.memberOf.set(endpoint, id);
            resolve({ ok: true, value: json });
            return;
          }
          const err = (typeof json.error === "object" && json.error ? json.error : json) as {
            code?: number;
            grpc_code?: number;
            message?: string;
          };
          const code = err.code ?? err.grpc_code ?? 2;
          resolve({ ok: false, failure: { kind: "answer", code, message: err.message ?? text.slice(0, 200) } });
        });
      });
    });
  }

  /** A JSON-gateway request (leases; the watch has its own stream). */
  private call(op: string, path: string, body: object, idempotent: boolean): Promise<unknown> {
    const text = JSON.stringify(body);
    return this.withRetries(op, idempotent, (endpoint) => this.attempt(endpoint, path, text));
  }

  /** A unary gRPC call of etcdserverpb.KV (`method`: Range, Put, DeleteRange, Txn); the answer's bytes. */
  private unary(op: string, method: string, message: ProtoWriter, idempotent: boolean): Promise<Buffer> {
    const frame = message.frame();
    return this.withRetries(op, idempotent, (endpoint) => this.attemptGrpc(endpoint, `/etcdserverpb.KV/${method}`, frame));
  }

  private async withRetries<T>(op: string, idempotent: boolean, attempt: (endpoint: string) => Promise<Attempt<T>>): Promise<T> {
    if (this.closed) throw new EtcdError(`etcd ${op}: client closed`);
    const deadline = performance.now() + this.retryBudgetMs;
    for (let round = 0; ; round++) {
      try {
        return await this.callRound(op, idempotent, attempt);
      } catch (e) {
        const wait = Math.min(50 * 2 ** round, 400);
        if (!(e instanceof EtcdUnavailable) || this.closed || performance.now() + wait > deadline) {
          if (e instanceof EtcdUnavailable) this.setState("unreachable", e.message);
          throw e;
        }
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /** One pass over the endpoints, from the current one. */
  private async callRound<T>(op: string, idempotent: boolean, attempt: (endpoint: string) => Promise<Attempt<T>>): Promise<T> {
    const tried: { endpoint: string; reason: string }[] = [];
    const start = this.current;
    for (let i = 0; i < this.endpoints.length; i++) {
      const endpoint = this.endpoints[(start + i) % this.endpoints.length]!;
      // Closed meanwhile (an attempt in flight fails then): no new connection to the next member.
      if (this.closed) throw new EtcdError(`etcd ${op}: client closed`);
      if (this.lost.size) {
        const silent = await this.settleLeader(endpoint);
        if (this.closed) throw new EtcdError(`etcd ${op}: client closed`);
        if (silent !== null) {
          // Its status poll got no answer: a request would fare no better, and a write would end with an unknown outcome.
          this.lost.add(endpoint);
          tried.push({ endpoint, reason: silent });
          this.o.observer?.request?.(op, endpoint, 0, "unreachable");
          this.rotate(endpoint);
          continue;
        }
      }
      const t0 = performance.now();
      const r = await attempt(endpoint);
      const seconds = (performance.now() - t0) / 1000;
      if (r.ok) {
        this.o.observer?.request?.(op, endpoint, seconds, "ok");
        this.current = this.endpoints.indexOf(endpoint);
        this.setState(tried.length ? "degraded" : "connected", tried.map((t) => `${t.endpoint}: ${t.reason}`).join("; "));
        return r.value;
      }
      const f = r.failure;
      if (f.kind === "answer") {
        // "no leader" (hasleader, Unavailable) and "too many requests" (ResourceExhausted: the member's apply queue is
        // far behind) are refusals before anything is applied: try the next member.
        const refused = (f.code === 14 && /no leader|not capable/.test(f.message)) || (f.code === 8 && /too many requests/.test(f.message));
        if (!refused) {
          this.o.observer?.request?.(op, endpoint, seconds, "error");
          if (f.code === 11 && /compacted/.test(f.message)) throw new EtcdCompacted(0, endpoint);
          // Other Unavailable answers (leader changed, timeout) may hide an applied write.
          if (f.code === 14 || f.code === 4 || f.code === 2) {
            if (!idempotent) throw new EtcdOutcomeUnknown(op, endpoint, f.message);
            tried.push({ endpoint, reason: f.message });
            continue;
          }
          throw new EtcdRequestError(op, endpoint, f.code, f.message);
        }
        tried.push({ endpoint, reason: f.message });
      } else {
        // A member that answered PING is alive (slow): no election to wait for before the next member is used.
        if (!f.alive) this.lost.add(endpoint);
        if (f.kind === "unknown" && !idempotent) {
          this.o.observer?.request?.(op, endpoint, seconds, "error");
          this.rotate(endpoint);
          throw new EtcdOutcomeUnknown(op, endpoint, f.reason);
        }
        tried.push({ endpoint, reason: f.reason });
      }
      this.o.observer?.request?.(op, endpoint, seconds, "unreachable");
      this.rotate(endpoint);
    }
    throw new EtcdUnavailable(op, tried);
  }

  /**
   * The members at `lost` stopped answering. When one was the leader, the others go on forwarding requests to it
   * until their election timeout, and a request sent meanwhile hangs until its deadline with an unknown outcome.
   * So `next` is asked for its leader first, and requests wait (at most one request timeout, all of them on one
   * status poll) while it still names a lost member other than itself (a lost member that names itself is alive and
   * leads). "No leader" ends the wait for that member (requests to it are refused at once, nothing applied); the next
   * one is asked in turn, until one names another leader. The retries ride out the election, or fail fast when the
   * quorum is gone. Resolves to why `next` did not answer its status (connection failed, no answer in time): the
   * request skips it then; null otherwise.
   */
  private settleLeader(next: string): Promise<string | null> {
    let p = this.settling.get(next);
    if (!p) {
      p = this.leaderOtherThanLost(next).finally(() => this.settling.delete(next));
      this.settling.set(next, p);
    }
    return p;
  }

  private async leaderOtherThanLost(next: string): Promise<string | null> {
    const lost = [...this.lost];
    const lostIds = new Set(lost.flatMap((e) => this.memberOf.get(e) ?? []));
    const deadline = performance.now() + this.timeoutMs;
    while (lostIds.size && !this.closed && performance.now() < deadline) {
      const r = await this.attempt(next, "/v3/maintenance/status", "{}");
      // An answer that is not ok: no leader yet (the request is refused at once). No answer: `next` is down too.
      if (!r.ok) return r.failure.kind === "answer" || r.failure.responded ? null : r.failure.reason;
      const status = r.value as { leader?: string; header?: { member_id?: string } };
      const leader = String(status.leader ?? "0");
      if (leader === "0") return null;
      if (!lostIds.has(leader) || leader === status.header?.member_id) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    for (const e of lost) this.lost.delete(e);
    return null;
  }

  private rotate(failed: string): void {
    if (this.endpoints[this.current] === failed) this.current = (this.current + 1) % this.endpoints.length;
  }

  private setState(state: ConnectionState, detail: string): void {
    if (state === this.state) return;
    this.state = state;
    this.o.observer?.state?.(state, detail);
  }
}
