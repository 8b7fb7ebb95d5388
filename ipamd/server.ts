// HTTP/1.1 + JSON API on a unix socket, with group commit: requests that arrive together are
// applied in one SQLite transaction, and their replies are sent only after that commit.
import { chmodSync, chownSync, existsSync, mkdirSync, realpathSync, statSync, unlinkSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect, type Socket } from "node:net";
import { dirname } from "node:path";
import type { Logger } from "pino";
import type { z } from "zod";
import { Allocator } from "./allocator";
import type { Config } from "./config";
import { ApiError } from "./errors";
import type { Metrics } from "./metrics";
import { peerCred, type PeerCred } from "./peercred";
import {
  allocateSchema, attachmentSchema, gcSchema, pinSchema, releaseReservationSchema, reservationsQuerySchema,
  reserveSchema, statefulSetSchema,
} from "./schemas";
import type { DB } from "./store";

declare const __BERTH_VERSION__: string | undefined;
/** package.json's version, defined by scripts/build.sh. */
export const VERSION = typeof __BERTH_VERSION__ === "string" ? __BERTH_VERSION__ : "0.0.0-dev";
const MAX_BODY_BYTES = 4 * 1024 * 1024; // a GC of ~50k attachments fits

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

type Handler = (ctx: { req: IncomingMessage; body: unknown; query: URLSearchParams; params: string[]; receivedAt: number }) => unknown;
interface Route { method: "GET" | "POST"; pattern: RegExp; name: string; handler: Handler }

export interface DaemonOptions { config: Config; db: DB; log: Logger; metrics: Metrics; allocator: Allocator }

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

  get commit(): GroupCommitter { return this.committer; }

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
    const a = this.o.allocator;
    const route = (method: Route["method"]) => (path: string, name: string, handler: Handler): void => {
      this.routes.push({ method, pattern: new RegExp(`^${path}$`), name, handler });
    };
    const get = route("GET");
    const post = route("POST");

    post("/v1/allocate", "allocate", ({ body }) => {
      const req = parse(allocateSchema, body);
      return this.committer.submit(() => a.allocate(req, Date.now()));
    });
    post("/v1/release", "release", ({ body }) => {
      const req = parse(attachmentSchema, body);
      return this.committer.submit(() => a.release(req, Date.now()));
    });
    post("/v1/check", "check", ({ body }) => a.check(parse(attachmentSchema, body)));
    post("/v1/gc", "gc", ({ body, receivedAt }) => {
      const req = parse(gcSchema, body);
      return this.committer.submit(() => a.gc(req, receivedAt, Date.now()));
    });
    get("/v1/status", "status", () => ({
      status: "ok", version: VERSION,
      node: { name: this.o.config.nodeName, labels: this.o.config.nodeLabels },
      pools: this.o.config.pools.length,
      poolsSelected: a.nodePools.map((p) => p.name),
      reservations: a.reservationCount(),
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      database: this.o.config.database,
      cooldownSeconds: this.o.config.cooldownMs / 1000,
      detachedTTLSeconds: this.o.config.detachedTtlMs / 1000,
    }));
    get("/v1/pools", "pools", () => ({ pools: a.poolUsage(Date.now()) }));
    get("/v1/pools/([^/]+)", "pool", ({ params }) => {
      const name = decodePathSegment(params[0]!);
      const pool = a.poolUsage(Date.now()).find((p) => p.name === name);
      if (!pool) throw new ApiError("not_found", `pool "${name}" is not defined (defined: ${this.o.config.pools.map((p) => p.name).join(", ")})`);
      return { pool };
    });
    get("/v1/reservations", "reservations", ({ query }) => {
      const filter = parse(reservationsQuerySchema, Object.fromEntries(query.entries()));
      return a.listReservations(filter);
    });
    post("/v1/reservations/reserve", "reserve", ({ body }) => {
      const req = parse(reserveSchema, body);
      return this.committer.submit(() => a.reserve(req, Date.now()));
    });
    post("/v1/reservations/pin", "pin", ({ body }) => {
      const req = parse(pinSchema, body);
      return this.committer.submit(() => a.pin(req, Date.now()));
    });
    post("/v1/reservations/release", "reservations_release", ({ body }) => {
      const req = parse(releaseReservationSchema, body);
      return this.committer.submit(() => a.releaseReservations(req, Date.now()));
    });
    get("/v1/statefulsets", "statefulsets", () => a.listStatefulSets());
    post("/v1/statefulsets/register", "statefulsets_register", ({ body }) => {
      const req = parse(statefulSetSchema, body);
      return this.committer.submit(() => { a.registerStatefulSet(req.namespace, req.statefulset, Date.now()); return { registered: req }; });
    });
    post("/v1/statefulsets/unregister", "statefulsets_unregister", ({ body }) => {
      const req = parse(statefulSetSchema, body);
      return this.committer.submit(() => a.unregisterStatefulSet(req.namespace, req.statefulset));
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
      if (candidates.length === 0) throw new ApiError("not_found", `no such API path ${url.pathname}; see ipamd/API.md (paths start with /v1/)`);
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
