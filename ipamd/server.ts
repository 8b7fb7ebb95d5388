// HTTP/1.1 + JSON API on a unix socket (api/API.md). Every change goes through mutate(): the
// ownership prepares it, the group commit applies its rule, the ownership learns the outcome.
import { chmodSync, lstatSync, mkdirSync, readlinkSync, renameSync, unlinkSync } from "node:fs";
import { lstatOrUndefined } from "../lib/files";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect, type Socket } from "node:net";
import { dirname } from "node:path";
import type { z } from "zod";
import type { AllocateRequest, ClusterStatus, KubeStatus, RegisterResponse, StatusResponse } from "../api/types";
import { Audit } from "./audit";
import { type Actor, capture, type Change, defaultActor, reasonOf } from "./changes";
import type { WallClock } from "./clock";
import type { ClusterOperator } from "./cluster/operator";
import { GroupCommitter } from "./commit";
import type { Config } from "./config";
import { ApiError } from "./errors";
import { ReservationEvents } from "./events";
import type { Metrics } from "./metrics";
import type { NodeIpam } from "./node";
import type { OwnershipOp, OwnershipTicket } from "./ownership";
import { peerCred, type PeerCred } from "./peercred";
import {
  allocateSchema,
  attachmentSchema,
  gcSchema,
  networkStatusSchema,
  pinSchema,
  releaseReservationSchema,
  reservationsQuerySchema,
  reserveSchema,
  statefulSetSchema,
} from "./schemas";
import type { DB } from "./store/database";
import type { ThrottledLog } from "./throttle";

declare const __BERTH_VERSION__: string | undefined;
/** package.json's version, defined by scripts/build.sh. */
export const VERSION = typeof __BERTH_VERSION__ === "string" ? __BERTH_VERSION__ : "0.0.0-dev";
const MAX_BODY_BYTES = 4 * 1024 * 1024; // a GC of ~50k attachments fits
/** No request body nests deeper than this; deeper JSON is refused before it is parsed. */
const MAX_JSON_DEPTH = 32;

type Handler = (ctx: {
  req: IncomingMessage;
  body: unknown;
  query: URLSearchParams;
  params: string[];
  /** The last commit when the request arrived (its headers): what "before this request" means. */
  receivedSeq: number;
  /** Who asks (SO_PEERCRED of the connection). */
  actor: Actor;
}) => unknown;
interface Route {
  method: "GET" | "POST";
  pattern: RegExp;
  name: string;
  handler: Handler;
}

/** Cluster mode: status, and the operator calls that act on the shared identities in etcd. */
export interface ClusterApi {
  status(): ClusterStatus;
  operator: ClusterOperator;
}

/**
 * Allocation held after start-up found evidence that this node's pods hold addresses the database
 * does not know (it was missing, empty or replaced): see daemon.ts.
 */
export interface AllocationHold {
  readonly active: boolean;
  readonly reasons: string[];
  /** Networks the evidence names that no GC has cleared yet. */
  readonly networks: string[];
  /** A GC of `network` listed `live` attachments (inside its commit). */
  gcSeen(network: string, live: number): void;
  /** The operator accepted the database as it is (inside a commit). */
  accept(): void;
}

interface DaemonOptions {
  config: Config;
  db: DB;
  log: ThrottledLog;
  metrics: Metrics;
  node: NodeIpam;
  clock: WallClock;
  hold: AllocationHold;
  cluster?: ClusterApi;
}

/** What the Kubernetes side (ipamd/kube) adds to ADD and to the status, when the API is watched. */
export interface KubeHooks {
  /** Before ADD's ownership step: the pod (from the watch cache, else fetched once) and its annotations applied. May refuse. */
  prepareAllocate(req: AllocateRequest): Promise<AllocateRequest>;
  /** ADD failed: an Event on the pod when it is something its owner must act on. */
  allocateFailed(req: AllocateRequest, error: unknown): void;
  status(): KubeStatus;
}

export class ApiServer {
  readonly server: Server;
  private readonly committer: GroupCommitter;
  private readonly routes: Route[] = [];
  private readonly creds = new WeakMap<Socket, PeerCred | null>();
  private readonly startedAt = performance.now();
  /** The socket file this process created (inode and change time, as an inode number is reused): the only one it may unlink. */
  private created?: { path: string; ino: bigint; ctimeNs: bigint };
  /** Set by the daemon once the Kubernetes side runs. */
  kube?: KubeHooks;
  /** The reservation stream (GET /v1/reservations?watch=true). */
  readonly events: ReservationEvents;
  private readonly audit: Audit;

  constructor(private readonly o: DaemonOptions) {
    this.committer = new GroupCommitter(o.db, o.node.store, o.config.maxBatch, o.metrics, o.log);
    this.events = new ReservationEvents(o.db, o.config.nodeName, o.config.reservationEventsKept);
    this.audit = new Audit(o.log.log, o.config.nodeName);
    o.metrics.watchEvents(this.events);
    this.defineRoutes();
    this.server = createServer(
      {
        maxHeaderSize: 16 * 1024,
        headersTimeout: 10_000,
        requestTimeout: 30_000,
        keepAliveTimeout: 30_000,
        // Node checks the two timeouts above this often (default 30 s: a slow body lived ~57 s).
        connectionsCheckingInterval: 1_000,
      },
      (req, res) => {
        void this.handle(req, res);
      },
    );
    this.server.timeout = 120_000; // idle socket
    this.server.on("connection", (socket: Socket) => {
      try {
        this.creds.set(socket, peerCred(socket));
      } catch (e) {
        this.o.log.warn({ err: e }, "cannot read peer credentials; the peer may only read");
        this.creds.set(socket, null);
      }
    });
    // Node hands CONNECT to a 'connect' listener and, without one, drops the connection unanswered.
    this.server.on("connect", (_req: IncomingMessage, socket: Socket) => {
      const refusal = new ApiError("method_not_allowed", "CONNECT is not supported: ipamd is not a proxy; see api/API.md");
      const body = JSON.stringify(refusal.toJSON());
      socket.end(
        `HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\nallow: GET, POST\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
      this.o.metrics.requests.inc({ route: "unknown", status: "405" });
    });
    this.server.on("clientError", (err, socket) => {
      if (socket.writable) {
        const timedOut = (err as NodeJS.ErrnoException).code === "ERR_HTTP_REQUEST_TIMEOUT";
        const body = JSON.stringify(
          new ApiError(
            "invalid_request",
            timedOut
              ? "the request did not arrive within 30 s (headers within 10 s); send it whole"
              : `malformed HTTP request: ${err.message}`,
          ).toJSON(),
        );
        socket.end(
          `HTTP/1.1 ${timedOut ? "408 Request Timeout" : "400 Bad Request"}\r\ncontent-type: application/json\r\n` +
            `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
      } else socket.destroy();
    });
  }

  /**
   * The two steps of every change (see ownership.ts): prepare outside the transaction, then the
   * rule in the group commit; the ownership hears whether it became durable. What the rule changed
   * (changes.ts) is numbered into the reservation stream in the same commit, and once durable it
   * goes to the audit log, the counters and the watchers; a refusal is audited too.
   */
  async mutate<T>(op: OwnershipOp, rule: (ticket: OwnershipTicket) => T, actor: Actor = defaultActor(op)): Promise<T> {
    const { ownership, store, views } = this.o.node;
    const reason = reasonOf(op, actor);
    let ticket: OwnershipTicket;
    try {
      ticket = await ownership.prepare(op);
    } catch (e) {
      this.refused(op, actor, e);
      throw e;
    }
    let done: { value: T; changes: ReturnType<typeof capture>["changes"]; events: ReturnType<ReservationEvents["record"]> };
    try {
      done = await this.committer.submit(() => {
        try {
          const { value, changes } = capture(store, () => {
            const r = rule(ticket);
            ownership.inCommit?.(ticket, r);
            return r;
          });
          const now = this.o.clock.now();
          const events = this.events.record(changes, reason, (row) => views.reservation(row), now, this.streamed);
          return { value, changes, events };
        } finally {
          this.events.dropQueued();
        }
      });
    } catch (e) {
      ownership.abandoned(ticket, e);
      this.refused(op, actor, e);
      throw e;
    }
    this.events.publish(done.events.published);
    try {
      this.audit.committed(op, actor, done.events.audited);
      this.o.metrics.countChanges(op, reason, done.changes, done.value);
    } catch (e) {
      this.o.log.error({ err: e }, "cannot log or count a committed change");
    }
    await ownership.committed(ticket);
    return done.value;
  }

  /**
   * Which row changes the stream carries: all of them, except in cluster mode a sticky reservation's, whose events
   * every node reads off etcd (cluster/sticky-events.ts) whichever node made the change, this one included.
   */
  private readonly streamed = (c: Change): boolean => !this.o.cluster || c.row.sticky !== 1;

  /** A change refused by its rule is audited; one that failed (a commit that could not be written) is logged, throttled. */
  private refused(op: OwnershipOp, actor: Actor, e: unknown): void {
    if (e instanceof ApiError && e.status < 500) {
      this.audit.refused(op, actor, e);
      this.o.metrics.countRefusal(e.code);
    } else {
      this.o.log.warn({ audit: "failed", op: op.kind, code: e instanceof ApiError ? e.code : "internal" }, "a change failed");
    }
  }

  /** Cluster mode's operator calls change etcd, not this node's commit: audited here (the local record follows by sync). */
  private async operated<T>(kind: OwnershipOp["kind"], actor: Actor, request: object, run: () => Promise<T> | T): Promise<T> {
    try {
      const result = await run();
      this.audit.operated(kind, actor, request, { result });
      return result;
    } catch (e) {
      this.audit.operated(kind, actor, request, { error: e });
      throw e;
    }
  }

  /** Commits `run` in the group commit without the ownership (the daemon's own housekeeping). */
  housekeeping<T>(run: () => T): Promise<T> {
    return this.committer.submit(run);
  }

  /** Writes the commit record (store/guard.ts) with a durable commit sequence; see commit.ts for when. */
  set recordCommit(fn: (seq: number) => Promise<void> | void) {
    this.committer.recordCommit = fn;
  }

  /**
   * Serves `socketPath`. Its directory must be root's and writable by nobody else (checked with
   * lstat: never a link), so nobody can plant or swap a path under it; ipamd creates it 0750 when
   * missing and never changes the mode of one it did not create. The socket is made 0660 by the
   * umask at bind time: no chmod or chown follows a path afterwards.
   */
  async listen(socketPath: string): Promise<void> {
    secureSocketDirectory(dirname(socketPath), socketPath);
    const existing = lstatOrUndefined(socketPath);
    if (existing) {
      if (existing.isSymbolicLink()) {
        let target = "?";
        try {
          target = readlinkSync(socketPath);
        } catch {
          /* unreadable */
        }
        throw new Error(
          `${socketPath} is a symbolic link (to ${target}) and ipamd does not follow links at its socket path; ` +
            "remove it (rm) and start again",
        );
      }
      if (!existing.isSocket()) throw new Error(`${socketPath} exists and is not a socket; remove it or pick another --socket`);
      if (await socketAnswers(socketPath)) {
        throw new Error(`another ipamd is already serving ${socketPath}; stop it first or pass a different --socket`);
      }
      unlinkSync(socketPath); // stale socket of a daemon that died
    }
    // Bound under a name of its own, then renamed into place: Node unlinks the path it bound when
    // the server closes, which must never be the path a newer daemon serves by then.
    const bound = `${socketPath}.${process.pid}.new`;
    if (lstatOrUndefined(bound)) unlinkSync(bound);
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      const umask = process.umask(0o117); // bind(2) creates the socket 0660 (root:root: ipamd runs as root)
      try {
        this.server.listen(bound, () => {
          this.server.off("error", reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    renameSync(bound, socketPath);
    const st = lstatSync(socketPath, { bigint: true });
    this.created = { path: socketPath, ino: st.ino, ctimeNs: st.ctimeNs };
  }

  /** Unlinks the socket only if it is still the one this process created (a newer daemon's stays). */
  unlinkSocket(): void {
    const c = this.created;
    if (!c) return;
    let st;
    try {
      st = lstatSync(c.path, { bigint: true });
    } catch {
      return;
    }
    if (st.ino === c.ino && st.ctimeNs === c.ctimeNs) unlinkSync(c.path);
  }

  /** Stops accepting, lets in-flight requests finish (their commits complete), closes idle connections. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const deadline = Date.now() + 10_000;
    while (!this.committer.idle && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    this.committer.close();
    this.events.close();
    setTimeout(() => this.server.closeAllConnections(), 2_000).unref();
    await closed;
  }

  private defineRoutes(): void {
    const { rules, views, statefulSets, pools } = this.o.node;
    const cluster = this.o.cluster?.operator;
    const route =
      (method: Route["method"]) =>
      (path: string, name: string, handler: Handler): void => {
        this.routes.push({ method, pattern: new RegExp(`^${path}$`), name, handler });
      };
    const get = route("GET");
    const post = route("POST");

    const { clock, hold } = this.o;
    const notHeld = (): void => {
      if (!hold.active) return;
      throw new ApiError(
        "database_unverified",
        `ipamd holds allocation: ${hold.reasons.join("; ")}. Running pods may hold addresses ` +
          "it does not know. Once no pod of this node uses an address it does not know (or after restoring the database), run " +
          "`ipamctl database accept`; a CNI GC listing no live attachment on " +
          `${hold.networks.length ? hold.networks.join(", ") : "the networks"} also clears it. The runtime retries`,
      );
    };
    post("/v1/allocate", "allocate", async ({ body, actor }) => {
      const asked = parse(allocateSchema, body);
      notHeld();
      const kube = this.kube;
      if (!kube) return this.mutate({ kind: "allocate", req: asked }, (t) => rules.allocate(asked, clock.now(), t), actor);
      try {
        const req = await kube.prepareAllocate(asked);
        return await this.mutate({ kind: "allocate", req }, (t) => rules.allocate(req, clock.now(), t), actor);
      } catch (e) {
        kube.allocateFailed(asked, e);
        throw e;
      }
    });
    post("/v1/release", "release", ({ body, actor }) => {
      const req = parse(attachmentSchema, body);
      return this.mutate({ kind: "release", req }, (t) => rules.release(req, clock.now(), t), actor);
    });
    post("/v1/check", "check", ({ body }) => rules.check(parse(attachmentSchema, body)));
    post("/v1/gc", "gc", ({ body, receivedSeq, actor }) => {
      const req = parse(gcSchema, body);
      return this.mutate(
        { kind: "gc", req },
        (t) => {
          const out = rules.gc(req, receivedSeq, clock.now(), t);
          if (hold.active) hold.gcSeen(req.network, req.validAttachments.length);
          return out;
        },
        actor,
      );
    });
    post("/v1/database/accept", "database_accept", async () => {
      const was = hold.active ? [...hold.reasons] : [];
      await this.housekeeping(() => hold.accept());
      if (was.length) this.o.log.log.warn({ reasons: was }, "operator accepted the database; allocation resumes");
      return { accepted: was.length > 0, reasons: was };
    });
    get("/v1/status", "status", async (): Promise<StatusResponse> => {
      const commit = await this.committer.probe();
      const degraded = !commit.ok || hold.active;
      return {
        status: degraded ? "degraded" : "ok",
        version: VERSION,
        node: { name: this.o.config.nodeName, labels: pools.labels },
        pools: this.o.config.pools.length,
        poolsSelected: pools.selected.map((p) => p.name),
        reservations: views.reservationCount(),
        uptimeSeconds: Math.round((performance.now() - this.startedAt) / 1000),
        database: this.o.config.database,
        cooldownSeconds: this.o.config.cooldownMs / 1000,
        detachedTTLSeconds: this.o.config.detachedTtlMs / 1000,
        commit: {
          ok: commit.ok,
          seq: this.o.node.store.committedSeq,
          ...(commit.ok ? {} : { error: commit.error, since: new Date(commit.at).toISOString() }),
        },
        ...(hold.active ? { hold: { reasons: hold.reasons, networks: hold.networks } } : {}),
        orphanedPools: views.orphanedPools(),
        kubernetes: this.kube?.status() ?? { mode: "off" },
        ...(this.o.cluster ? { cluster: this.o.cluster.status() } : {}),
      };
    });
    post("/v1/status/network", "status_network", ({ body }) => views.networkStatus(parse(networkStatusSchema, body), clock.now()));
    get("/v1/pools", "pools", () => ({ pools: views.poolUsage(clock.now()), orphaned: views.orphanedPools() }));
    get("/v1/pools/([^/]+)", "pool", ({ params }) => {
      const name = decodePathSegment(params[0]!);
      const pool = views.poolUsage(clock.now()).find((p) => p.name === name);
      if (!pool)
        throw new ApiError("not_found", `pool "${name}" is not defined (defined: ${this.o.config.pools.map((p) => p.name).join(", ")})`);
      return { pool };
    });
    get("/v1/reservations", "reservations", ({ query }) => {
      const filter = parse(reservationsQuerySchema, Object.fromEntries(query.entries()));
      return cluster ? cluster.reservations(filter) : views.reservations(filter);
    });
    post("/v1/reservations/reserve", "reserve", ({ body, actor }) => {
      const req = parse(reserveSchema, body);
      notHeld();
      if (cluster) return this.operated("reserve", actor, req, () => cluster.reserve(req));
      return this.mutate({ kind: "reserve", req }, (t) => rules.reserve(req, clock.now(), t), actor);
    });
    post("/v1/reservations/pin", "pin", ({ body, actor }) => {
      const req = parse(pinSchema, body);
      notHeld();
      if (cluster) return this.operated("pin", actor, req, () => cluster.pin(req));
      return this.mutate({ kind: "pin", req }, (t) => rules.pin(req, clock.now(), t), actor);
    });
    post("/v1/reservations/release", "reservations_release", ({ body, actor }) => {
      const req = parse(releaseReservationSchema, body);
      if (cluster) return this.operated("releaseReservations", actor, req, () => cluster.releaseReservations(req));
      return this.mutate({ kind: "releaseReservations", req }, (t) => rules.releaseReservations(req, clock.now(), t), actor);
    });
    get("/v1/statefulsets", "statefulsets", () => statefulSets.list());
    post("/v1/statefulsets/register", "statefulsets_register", ({ body, actor }) => {
      const req = parse(statefulSetSchema, body);
      if (cluster) return this.operated("register", actor, req, () => cluster.register(req));
      return this.mutate(
        { kind: "register", req },
        (): RegisterResponse => {
          statefulSets.register(req.namespace, req.statefulset, clock.now());
          return { registered: req };
        },
        actor,
      );
    });
    post("/v1/statefulsets/unregister", "statefulsets_unregister", ({ body, actor }) => {
      const req = parse(statefulSetSchema, body);
      if (cluster) return this.operated("unregister", actor, req, () => cluster.unregister(req));
      return this.mutate({ kind: "unregister", req }, () => statefulSets.unregister(req.namespace, req.statefulset), actor);
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const receivedSeq = this.o.node.store.committedSeq;
    const t0 = performance.now();
    let routeName = "unknown";
    try {
      const url = new URL(req.url ?? "/", "http://ipamd");
      if (req.method === "GET" && url.pathname === "/metrics") {
        routeName = "metrics";
        await this.o.metrics.serve(res);
        this.o.metrics.requests.inc({ route: routeName, status: "200" });
        return;
      }
      if (req.method === "GET" && url.pathname === "/v1/reservations" && url.searchParams.get("watch") === "true") {
        routeName = "reservations_watch";
        req.resume();
        this.events.watch(req, res, sinceParam(url.searchParams.get("since")));
        this.o.metrics.requests.inc({ route: routeName, status: "200" });
        return;
      }
      const candidates = this.routes.filter((r) => r.pattern.test(url.pathname));
      if (candidates.length === 0)
        throw new ApiError("not_found", `no such API path ${url.pathname}; see api/API.md (paths start with /v1/)`);
      const route = candidates.find((r) => r.method === req.method);
      if (!route) {
        res.setHeader("allow", candidates.map((r) => r.method).join(", "));
        throw new ApiError(
          "method_not_allowed",
          `${req.method} is not allowed on ${url.pathname}; use ${candidates.map((r) => r.method).join(" or ")}`,
        );
      }
      routeName = route.name;
      let body: unknown;
      if (route.method === "POST") {
        const cred = this.creds.get(req.socket);
        if (cred?.uid !== 0) {
          throw new ApiError(
            "forbidden",
            `only root may change IP allocations; this peer is uid ${cred?.uid ?? "unknown"} (read-only GET calls are allowed)`,
          );
        }
        body = await readJson(req);
      } else {
        req.resume();
      }
      const params = route.pattern.exec(url.pathname)!.slice(1);
      const cred = this.creds.get(req.socket);
      const actor: Actor = cred ? { uid: cred.uid, pid: cred.pid } : "ipamd";
      const result = await route.handler({ req, body, query: url.searchParams, params, receivedSeq, actor });
      send(res, 200, result);
      this.o.metrics.requests.inc({ route: routeName, status: "200" });
      this.o.metrics.requestSeconds.observe({ route: routeName, status: "200" }, (performance.now() - t0) / 1000);
      if (routeName === "allocate") this.o.metrics.allocationSeconds.observe((performance.now() - t0) / 1000);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError("internal", `internal error: ${(e as Error)?.message ?? String(e)}`);
      if (!(e instanceof ApiError)) this.o.log.error({ err: e, route: routeName }, "request failed");
      else if (err.status >= 500 || err.code === "forbidden") this.o.log.warn({ code: err.code, route: routeName }, err.message);
      else if (err.code === "previous_sandbox_attached") this.o.log.warn({ code: err.code, route: routeName }, err.message);
      this.o.metrics.errors.inc({ code: err.code });
      this.o.metrics.requests.inc({ route: routeName, status: String(err.status) });
      this.o.metrics.requestSeconds.observe({ route: routeName, status: String(err.status) }, (performance.now() - t0) / 1000);
      if (!res.headersSent) {
        if (err.code === "payload_too_large") res.setHeader("connection", "close");
        send(res, err.status, err.toJSON());
      } else res.destroy();
    }
  }
}

function sinceParam(text: string | null): number | undefined {
  if (text === null) return undefined;
  if (!/^\d{1,15}$/.test(text)) {
    throw new ApiError("invalid_request", `since must be a sequence number from the stream (a whole number), not "${text}"`, "since");
  }
  return Number(text);
}

function decodePathSegment(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ApiError("invalid_request", `${text} is not a valid percent-encoded path segment`);
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function parse<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path
    .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
    .join("")
    .replace(/^\./, "");
  const more = r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more problem(s))` : "";
  throw new ApiError("invalid_request", `${field || "body"}: ${issue.message}${more}`, field || undefined);
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > MAX_BODY_BYTES) {
      req.resume();
      reject(new ApiError("payload_too_large", `request body of ${declared} bytes exceeds the ${MAX_BODY_BYTES} byte limit`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        reject(new ApiError("payload_too_large", `request body exceeds the ${MAX_BODY_BYTES} byte limit`));
        return;
      }
      chunks.push(c);
    });
    req.on("error", (e) => {
      if (!failed) {
        failed = true;
        reject(e);
      }
    });
    req.on("end", () => {
      if (failed) return;
      const raw = Buffer.concat(chunks);
      if (jsonDepthOver(raw, MAX_JSON_DEPTH)) {
        reject(new ApiError("invalid_request", `request body nests JSON deeper than ${MAX_JSON_DEPTH} levels`));
        return;
      }
      const text = raw.toString("utf8");
      if (text.trim() === "") {
        reject(new ApiError("invalid_request", "request body is empty; send a JSON object"));
        return;
      }
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new ApiError("invalid_request", `request body is not valid JSON: ${(e as Error).message}`));
      }
    });
  });
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (v: boolean): void => {
      s.destroy();
      resolve(v);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}

/** True when `raw` (JSON text) opens more than `max` arrays/objects at once; strings are skipped. */
function jsonDepthOver(raw: Buffer, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * The socket's directory: created 0750 when missing; a directory (not a link), owned by root and
 * writable by nobody else, else refused: whoever may write it could plant a socket or a link there.
 */
export function secureSocketDirectory(dir: string, socketPath: string): void {
  const created = !lstatOrUndefined(dir);
  if (created) mkdirSync(dir, { recursive: true, mode: 0o750 });
  const st = lstatSync(dir);
  const fix = "give the socket a directory of its own that only root may write, e.g. --socket /run/berth/ipamd.sock";
  if (st.isSymbolicLink()) throw new Error(`the socket directory ${dir} of ${socketPath} is a symbolic link; ${fix}`);
  if (!st.isDirectory()) throw new Error(`the socket directory ${dir} of ${socketPath} is not a directory; ${fix}`);
  if (st.uid !== 0) throw new Error(`the socket directory ${dir} of ${socketPath} is owned by uid ${st.uid}, not root; ${fix}`);
  if (st.mode & 0o022) {
    throw new Error(
      `the socket directory ${dir} of ${socketPath} is writable by ${st.mode & 0o002 ? "every user" : "its group"} ` +
        `(mode 0${(st.mode & 0o7777).toString(8)}); ${fix}`,
    );
  }
  if (created) chmodSync(dir, 0o750); // ours: root and its group may reach the socket (the umask made it 0700)
}
