// HTTP/1.1 + JSON API on a unix socket (api/API.md). Every change goes through mutate(): the
// ownership prepares it, the group commit applies its rule, the ownership learns the outcome.
import { chmodSync, chownSync, existsSync, mkdirSync, realpathSync, statSync, unlinkSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect, type Socket } from "node:net";
import { dirname } from "node:path";
import type { Logger } from "pino";
import type { z } from "zod";
import type { ClusterStatus, RegisterResponse, StatusResponse } from "../api/types";
import type { ClusterOperator } from "./cluster/operator";
import { GroupCommitter } from "./commit";
import type { Config } from "./config";
import { ApiError } from "./errors";
import type { Metrics } from "./metrics";
import type { NodeIpam } from "./node";
import type { OwnershipOp, OwnershipTicket } from "./ownership";
import { peerCred, type PeerCred } from "./peercred";
import {
  allocateSchema, attachmentSchema, gcSchema, pinSchema, releaseReservationSchema, reservationsQuerySchema,
  reserveSchema, statefulSetSchema,
} from "./schemas";
import type { DB } from "./store/database";

declare const __BERTH_VERSION__: string | undefined;
/** package.json's version, defined by scripts/build.sh. */
export const VERSION = typeof __BERTH_VERSION__ === "string" ? __BERTH_VERSION__ : "0.0.0-dev";
const MAX_BODY_BYTES = 4 * 1024 * 1024; // a GC of ~50k attachments fits

type Handler = (ctx: { req: IncomingMessage; body: unknown; query: URLSearchParams; params: string[]; receivedAt: number }) => unknown;
interface Route { method: "GET" | "POST"; pattern: RegExp; name: string; handler: Handler }

/** Cluster mode: status, and the operator calls that act on the shared identities in etcd. */
export interface ClusterApi {
  status(): ClusterStatus;
  operator: ClusterOperator;
}

interface DaemonOptions { config: Config; db: DB; log: Logger; metrics: Metrics; node: NodeIpam; cluster?: ClusterApi }

export class ApiServer {
  readonly server: Server;
  private readonly committer: GroupCommitter;
  private readonly routes: Route[] = [];
  private readonly creds = new WeakMap<Socket, PeerCred | null>();
  private readonly startedAt = Date.now();

  constructor(private readonly o: DaemonOptions) {
    this.committer = new GroupCommitter(o.db, o.config.maxBatch, o.metrics, o.log);
    this.defineRoutes();
    this.server = createServer({
      maxHeaderSize: 16 * 1024,
      headersTimeout: 10_000,
      requestTimeout: 30_000,
      keepAliveTimeout: 30_000,
    }, (req, res) => { void this.handle(req, res); });
    this.server.timeout = 120_000; // idle socket
    this.server.on("connection", (socket: Socket) => {
      try { this.creds.set(socket, peerCred(socket)); } catch (e) {
        this.o.log.warn({ err: e }, "cannot read peer credentials; the peer may only read");
        this.creds.set(socket, null);
      }
    });
    this.server.on("clientError", (err, socket) => {
      if (socket.writable) {
        const body = JSON.stringify(new ApiError("invalid_request", `malformed HTTP request: ${err.message}`).toJSON());
        socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      } else socket.destroy();
    });
  }

  /**
   * The two steps of every change (see ownership.ts): prepare outside the transaction, then the
   * rule in the group commit; the ownership hears whether it became durable.
   */
  async mutate<T>(op: OwnershipOp, rule: (ticket: OwnershipTicket) => T): Promise<T> {
    const { ownership } = this.o.node;
    const ticket = await ownership.prepare(op);
    let result: T;
    try {
      result = await this.committer.submit(() => {
        const r = rule(ticket);
        ownership.inCommit?.(ticket, r);
        return r;
      });
    } catch (e) {
      ownership.abandoned(ticket, e);
      throw e;
    }
    await ownership.committed(ticket);
    return result;
  }

  async listen(socketPath: string): Promise<void> {
    const dir = dirname(socketPath);
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o750 });
    refuseSharedDirectory(dir, socketPath);
    chmodSync(dir, 0o750);
    if (existsSync(socketPath)) {
      if (await socketAnswers(socketPath)) {
        throw new Error(`another ipamd is already serving ${socketPath}; stop it first or pass a different --socket`);
      }
      if (!statSync(socketPath).isSocket()) throw new Error(`${socketPath} exists and is not a socket; remove it or pick another --socket`);
      unlinkSync(socketPath); // stale socket of a daemon that died
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(socketPath, () => { this.server.off("error", reject); resolve(); });
    });
    chmodSync(socketPath, 0o660);
    try { chownSync(socketPath, 0, 0); chownSync(dir, 0, 0); } catch (e) {
      this.o.log.warn({ err: e }, "cannot chown the socket to root:root (not running as root?)");
    }
  }

  /** Stops accepting, lets in-flight requests finish (their commits complete), closes idle connections. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const deadline = Date.now() + 10_000;
    while (!this.committer.idle && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    this.committer.close();
    setTimeout(() => this.server.closeAllConnections(), 2_000).unref();
    await closed;
  }

  private defineRoutes(): void {
    const { rules, views, statefulSets, pools } = this.o.node;
    const cluster = this.o.cluster?.operator;
    const route = (method: Route["method"]) => (path: string, name: string, handler: Handler): void => {
      this.routes.push({ method, pattern: new RegExp(`^${path}$`), name, handler });
    };
    const get = route("GET");
    const post = route("POST");

    post("/v1/allocate", "allocate", ({ body }) => {
      const req = parse(allocateSchema, body);
      return this.mutate({ kind: "allocate", req }, (t) => rules.allocate(req, Date.now(), t));
    });
    post("/v1/release", "release", ({ body }) => {
      const req = parse(attachmentSchema, body);
      return this.mutate({ kind: "release", req }, (t) => rules.release(req, Date.now(), t));
    });
    post("/v1/check", "check", ({ body }) => rules.check(parse(attachmentSchema, body)));
    post("/v1/gc", "gc", ({ body, receivedAt }) => {
      const req = parse(gcSchema, body);
      return this.mutate({ kind: "gc", req }, (t) => rules.gc(req, receivedAt, Date.now(), t));
    });
    get("/v1/status", "status", (): StatusResponse => ({
      status: "ok", version: VERSION,
      node: { name: this.o.config.nodeName, labels: this.o.config.nodeLabels },
      pools: this.o.config.pools.length,
      poolsSelected: pools.selected.map((p) => p.name),
      reservations: views.reservationCount(),
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      database: this.o.config.database,
      cooldownSeconds: this.o.config.cooldownMs / 1000,
      detachedTTLSeconds: this.o.config.detachedTtlMs / 1000,
      ...(this.o.cluster ? { cluster: this.o.cluster.status() } : {}),
    }));
    get("/v1/pools", "pools", () => ({ pools: views.poolUsage(Date.now()) }));
    get("/v1/pools/([^/]+)", "pool", ({ params }) => {
      const name = decodePathSegment(params[0]!);
      const pool = views.poolUsage(Date.now()).find((p) => p.name === name);
      if (!pool) throw new ApiError("not_found", `pool "${name}" is not defined (defined: ${this.o.config.pools.map((p) => p.name).join(", ")})`);
      return { pool };
    });
    get("/v1/reservations", "reservations", ({ query }) => {
      const filter = parse(reservationsQuerySchema, Object.fromEntries(query.entries()));
      return cluster ? cluster.reservations(filter) : views.reservations(filter);
    });
    post("/v1/reservations/reserve", "reserve", ({ body }) => {
      const req = parse(reserveSchema, body);
      if (cluster) return cluster.reserve(req);
      return this.mutate({ kind: "reserve", req }, (t) => rules.reserve(req, Date.now(), t));
    });
    post("/v1/reservations/pin", "pin", ({ body }) => {
      const req = parse(pinSchema, body);
      if (cluster) return cluster.pin(req);
      return this.mutate({ kind: "pin", req }, (t) => rules.pin(req, Date.now(), t));
    });
    post("/v1/reservations/release", "reservations_release", ({ body }) => {
      const req = parse(releaseReservationSchema, body);
      if (cluster) return cluster.releaseReservations(req);
      return this.mutate({ kind: "releaseReservations", req }, (t) => rules.releaseReservations(req, Date.now(), t));
    });
    get("/v1/statefulsets", "statefulsets", () => statefulSets.list());
    post("/v1/statefulsets/register", "statefulsets_register", ({ body }) => {
      const req = parse(statefulSetSchema, body);
      if (cluster) return cluster.register(req);
      return this.mutate({ kind: "register", req }, (): RegisterResponse => {
        statefulSets.register(req.namespace, req.statefulset, Date.now());
        return { registered: req };
      });
    });
    post("/v1/statefulsets/unregister", "statefulsets_unregister", ({ body }) => {
      const req = parse(statefulSetSchema, body);
      if (cluster) return cluster.unregister(req);
      return this.mutate({ kind: "unregister", req }, () => statefulSets.unregister(req.namespace, req.statefulset));
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const receivedAt = Date.now();
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
      const candidates = this.routes.filter((r) => r.pattern.test(url.pathname));
      if (candidates.length === 0) throw new ApiError("not_found", `no such API path ${url.pathname}; see api/API.md (paths start with /v1/)`);
      const route = candidates.find((r) => r.method === req.method);
      if (!route) {
        res.setHeader("allow", candidates.map((r) => r.method).join(", "));
        throw new ApiError("method_not_allowed", `${req.method} is not allowed on ${url.pathname}; use ${candidates.map((r) => r.method).join(" or ")}`);
      }
      routeName = route.name;
      let body: unknown;
      if (route.method === "POST") {
        const cred = this.creds.get(req.socket);
        if (!cred || cred.uid !== 0) {
          throw new ApiError("forbidden", `only root may change IP allocations; this peer is uid ${cred?.uid ?? "unknown"} (read-only GET calls are allowed)`);
        }
        body = await readJson(req);
      } else {
        req.resume();
      }
      const params = route.pattern.exec(url.pathname)!.slice(1);
      const result = await route.handler({ req, body, query: url.searchParams, params, receivedAt });
      send(res, 200, result);
      this.o.metrics.requests.inc({ route: routeName, status: "200" });
      if (routeName === "allocate") this.o.metrics.allocationSeconds.observe((performance.now() - t0) / 1000);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError("internal", `internal error: ${(e as Error)?.message ?? String(e)}`);
      if (!(e instanceof ApiError)) this.o.log.error({ err: e, route: routeName }, "request failed");
      else if (err.status >= 500 || err.code === "forbidden") this.o.log.warn({ code: err.code, route: routeName }, err.message);
      this.o.metrics.errors.inc({ code: err.code });
      this.o.metrics.requests.inc({ route: routeName, status: String(err.status) });
      if (!res.headersSent) {
        if (err.code === "payload_too_large") res.setHeader("connection", "close");
        send(res, err.status, err.toJSON());
      } else res.destroy();
    }
  }
}

function decodePathSegment(text: string): string {
  try { return decodeURIComponent(text); } catch {
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
  const field = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("").replace(/^\./, "");
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
    req.on("error", (e) => { if (!failed) { failed = true; reject(e); } });
    req.on("end", () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString("utf8");
      if (text.trim() === "") { reject(new ApiError("invalid_request", "request body is empty; send a JSON object")); return; }
      try { resolve(JSON.parse(text)); } catch (e) {
        reject(new ApiError("invalid_request", `request body is not valid JSON: ${(e as Error).message}`));
      }
    });
  });
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (v: boolean): void => { s.destroy(); resolve(v); };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}

const SYSTEM_DIRECTORIES = new Set(["/", "/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm", "/var", "/var/lib"]);

/**
 * The socket's directory is made root-only (0750) so that only root and its group reach the
 * daemon: refuse to do that to a directory others share (/tmp, /run, any sticky or
 * world-writable one) rather than lock the whole host out of it.
 */
function refuseSharedDirectory(dir: string, socketPath: string): void {
  const real = realpathSync(dir);
  const mode = statSync(real).mode;
  if (SYSTEM_DIRECTORIES.has(real) || (mode & 0o1000) !== 0 || (mode & 0o002) !== 0) {
    throw new Error(`the socket ${socketPath} would be in the shared directory ${real}; ipamd makes its socket's ` +
      "directory root-only (0750), so give the socket a directory of its own, e.g. --socket /run/berth/ipamd.sock");
  }
}
