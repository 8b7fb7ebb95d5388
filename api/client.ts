// Small client of the ipamd API (api/API.md) over its unix socket. Imports nothing heavy: the CNI
// plugins and ipamctl load it. Before it trusts an answer it checks that the process listening on
// the socket is root (SO_PEERCRED): a socket planted by another user is not ipamd.
import type { Agent, ClientRequest } from "node:http";
import type { Socket } from "node:net";
import type { PeerCred } from "../lib/peercred";
import type {
  AllocateRequest,
  AllocateResponse,
  ApiErrorBody,
  AttachmentRequest,
  GcRequest,
  GcResponse,
  OrphanedPool,
  PinRequest,
  PinResponse,
  PoolUsage,
  RegisterResponse,
  ReleaseReservationRequest,
  ReleaseReservationsResponse,
  ReleaseResponse,
  Reservation,
  ReservationFilter,
  ReservationsResponse,
  ReserveRequest,
  ReserveResponse,
  StatefulSetsResponse,
  StatusResponse,
  UnregisterResponse,
  NetworkStatusRequest,
  NetworkStatusResponse,
  WatchLine,
} from "./types";
import { ExchangeError, send } from "./unix-http";

export const DEFAULT_SOCKET = "/run/berth/ipamd.sock";

/** The daemon could not be reached (no socket, nobody listening, or no answer in time). */
export class IpamdUnreachable extends Error {
  constructor(
    readonly socketPath: string,
    readonly reason: string,
  ) {
    super(`ipamd is not reachable on ${socketPath}: ${reason}. Is ipamd running (and is this the right --socket)?`);
    this.name = "IpamdUnreachable";
  }
}

/** Something listens on the socket, but not as root: it is not ipamd, and nothing it says is trusted. */
export class IpamdUntrusted extends IpamdUnreachable {
  constructor(socketPath: string, reason: string) {
    super(socketPath, reason);
    this.name = "IpamdUntrusted";
  }
}

/** Refuses a peer that is not root. */
function trustRootPeer(socketPath: string, peer: PeerCred | null): void {
  if (!peer) throw new IpamdUntrusted(socketPath, "the credentials of the process listening on it cannot be read (SO_PEERCRED)");
  if (peer.uid !== 0) {
    throw new IpamdUntrusted(
      socketPath,
      `the process listening on it (pid ${peer.pid}) runs as uid ${peer.uid}, not root, so it is not ` +
        `ipamd and its answers are not trusted (see who made the socket: ls -l ${socketPath}; remove it and restart ipamd)`,
    );
  }
}

/** The daemon answered with an error. */
export class IpamdError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly httpStatus: number,
    readonly field?: string,
  ) {
    super(message);
    this.name = "IpamdError";
  }
}

interface ClientOptions {
  timeoutMs?: number;
  /** Reuse connections (for many calls from one process, e.g. ipamctl scripts, benchmarks). */
  keepAlive?: boolean;
}

export class IpamdClient {
  private readonly timeoutMs: number;
  private readonly keepAlive: boolean;
  private agent?: Agent;

  constructor(
    readonly socketPath: string = DEFAULT_SOCKET,
    options: ClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.keepAlive = options.keepAlive ?? false;
  }

  allocate(args: AllocateRequest): Promise<AllocateResponse> {
    return this.call("POST", "/v1/allocate", args);
  }
  release(args: AttachmentRequest): Promise<ReleaseResponse> {
    return this.call("POST", "/v1/release", args);
  }
  check(args: AttachmentRequest): Promise<AllocateResponse> {
    return this.call("POST", "/v1/check", args);
  }
  gc(network: string, validAttachments: GcRequest["validAttachments"]): Promise<GcResponse> {
    return this.call("POST", "/v1/gc", { network, validAttachments } satisfies GcRequest);
  }
  status(): Promise<StatusResponse> {
    return this.call("GET", "/v1/status");
  }
  networkStatus(args: NetworkStatusRequest): Promise<NetworkStatusResponse> {
    return this.call("POST", "/v1/status/network", args);
  }
  pools(): Promise<{ pools: PoolUsage[]; orphaned?: OrphanedPool[] }> {
    return this.call("GET", "/v1/pools");
  }
  pool(name: string): Promise<{ pool: PoolUsage }> {
    return this.call("GET", `/v1/pools/${encodeURIComponent(name)}`);
  }
  reservations(filter: ReservationFilter = {}): Promise<ReservationsResponse> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v !== undefined && v !== "") q.set(k, String(v));
    const qs = q.toString();
    return this.call("GET", `/v1/reservations${qs ? `?${qs}` : ""}`);
  }
  /** Every page of GET /v1/reservations (API.md: pages of at most 5000), up to `filter.limit` in all. */
  async allReservations(filter: ReservationFilter = {}): Promise<ReservationsResponse> {
    const all: Reservation[] = [];
    let page: ReservationsResponse | undefined;
    do {
      const limit = filter.limit === undefined ? undefined : filter.limit - all.length;
      page = await this.reservations({ ...filter, limit, ...(page?.next ? { after: page.next } : {}) });
      all.push(...page.reservations);
    } while (page.next && (filter.limit === undefined || all.length < filter.limit));
    return { reservations: all, truncated: page.truncated, ...(page.cluster ? { cluster: page.cluster } : {}) };
  }
  reserve(args: ReserveRequest): Promise<ReserveResponse> {
    return this.call("POST", "/v1/reservations/reserve", args);
  }
  pin(args: PinRequest): Promise<PinResponse> {
    return this.call("POST", "/v1/reservations/pin", args);
  }
  releaseReservations(args: ReleaseReservationRequest): Promise<ReleaseReservationsResponse> {
    return this.call("POST", "/v1/reservations/release", args);
  }
  statefulSets(): Promise<StatefulSetsResponse> {
    return this.call("GET", "/v1/statefulsets");
  }
  registerStatefulSet(namespace: string, statefulset: string): Promise<RegisterResponse> {
    return this.call("POST", "/v1/statefulsets/register", { namespace, statefulset });
  }
  unregisterStatefulSet(namespace: string, statefulset: string): Promise<UnregisterResponse> {
    return this.call("POST", "/v1/statefulsets/unregister", { namespace, statefulset });
  }
  /**
   * Follows GET /v1/reservations?watch=true (from `since`, else from now): calls `onLine` with each
   * line (events and bookmarks) until the stream ends or `signal` aborts. Resolves when the stream
   * ends (the daemon stopped: reconnect with the last seq); rejects with IpamdError on a refusal
   * (410 events_expired: the events after `since` are gone) and IpamdUnreachable when it cannot connect.
   */
  async watchReservations(since: number | undefined, onLine: (line: WatchLine) => void, signal?: AbortSignal): Promise<void> {
    const { request } = await import("node:http");
    const { peerCredOf, socketFd } = await import("../lib/peercred");
    const path = `/v1/reservations?watch=true${since === undefined ? "" : `&since=${since}`}`;
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, method: "GET", path, headers: { accept: "application/x-ndjson" }, signal });
      req.on("socket", (socket: Socket) => {
        const verify = (): void => {
          const fd = socketFd(socket);
          try {
            trustRootPeer(this.socketPath, fd === undefined ? null : peerCredOf(fd));
          } catch (e) {
            req.destroy(e as Error);
          }
        };
        if (socket.connecting) socket.once("connect", verify);
        else verify();
      });
      req.on("response", (res) => {
        let text = "";
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          res.on("data", (c: string) => {
            text += c;
          });
          res.on("end", () => {
            let err: Partial<ApiErrorBody["error"]> = {};
            try {
              err = (JSON.parse(text) as ApiErrorBody).error ?? {};
            } catch {
              /* not JSON */
            }
            reject(new IpamdError(err.code ?? "unknown", err.message ?? `HTTP ${res.statusCode}`, res.statusCode ?? 0, err.field));
          });
          return;
        }
        res.on("data", (c: string) => {
          text += c;
          let nl = text.indexOf("\n");
          while (nl >= 0) {
            const line = text.slice(0, nl);
            text = text.slice(nl + 1);
            if (line.trim()) onLine(JSON.parse(line) as WatchLine);
            nl = text.indexOf("\n");
          }
        });
        res.on("end", () => resolve());
        res.on("error", () => resolve());
      });
      req.on("error", (e: NodeJS.ErrnoException) => {
        if (signal?.aborted) resolve();
        else reject(e instanceof IpamdUnreachable ? e : new IpamdUnreachable(this.socketPath, reasonOf(e)));
      });
      req.end();
    });
  }
  async metrics(): Promise<string> {
    return this.raw("GET", "/metrics").then((r) => r.body);
  }

  close(): void {
    this.agent?.destroy();
  }

  async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body === undefined ? undefined : JSON.stringify(body));
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body);
    } catch {
      throw new IpamdError(
        "bad_response",
        `ipamd answered ${method} ${path} with HTTP ${res.status} and a body that is not JSON`,
        res.status,
      );
    }
    if (res.status >= 200 && res.status < 300) return parsed as T;
    const err: Partial<ApiErrorBody["error"]> = (parsed as Partial<ApiErrorBody>).error ?? {};
    throw new IpamdError(err.code ?? "unknown", err.message ?? `HTTP ${res.status}`, res.status, err.field);
  }

  raw(method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
    // A plugin makes one call per process: under Bun it is one synchronous exchange through libc
    // (bun:ffi, already loaded by the plugins; fetch would start an HTTP client thread for it, and
    // node:http would add ~5 ms to every plugin start). The request leaves before this returns.
    // Long-lived clients that keep connections (benchmarks, scripts) and everything under Node
    // use node:http.
    return process.versions.bun && !this.keepAlive ? this.rawSync(method, path, body) : this.rawHttp(method, path, body);
  }

  private rawSync(method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
    const unreachable = (e: unknown): unknown =>
      e instanceof ExchangeError ? new IpamdUnreachable(this.socketPath, reasonOf(e as NodeJS.ErrnoException)) : e;
    let answer: () => { status: number; body: string };
    try {
      answer = send(this.socketPath, { method, path, body }, this.timeoutMs, (peer) => trustRootPeer(this.socketPath, peer));
    } catch (e) {
      return Promise.reject(unreachable(e));
    }
    return Promise.resolve().then(() => {
      try {
        return answer();
      } catch (e) {
        throw unreachable(e);
      }
    });
  }

  private async rawHttp(method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
    const { Agent, request } = await import("node:http");
    const { peerCredOf, socketFd } = await import("../lib/peercred");
    if (this.keepAlive && !this.agent) this.agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const verify = (req: ClientRequest, socket: Socket): void => {
      if (trusted.has(socket)) return;
      const fd = socketFd(socket);
      try {
        trustRootPeer(this.socketPath, fd === undefined ? null : peerCredOf(fd));
        trusted.add(socket);
      } catch (e) {
        req.destroy(e as Error);
      }
    };
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { accept: "application/json" };
      if (body !== undefined) {
        headers["content-type"] = "application/json";
        headers["content-length"] = Buffer.byteLength(body);
      }
      const req = request({ socketPath: this.socketPath, method, path, headers, agent: this.agent ?? false }, (res) => {
        if (!trusted.has(req.socket!)) {
          req.destroy(new IpamdUntrusted(this.socketPath, "the peer was not checked"));
          return;
        }
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
        });
        res.on("error", (e) => {
          clearTimeout(timer);
          reject(new IpamdUnreachable(this.socketPath, e.message));
        });
      });
      const timer = setTimeout(() => {
        req.destroy(new Error(`no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      req.on("socket", (socket: Socket) => {
        if (socket.connecting) socket.once("connect", () => verify(req, socket));
        else verify(req, socket);
      });
      req.on("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(e instanceof IpamdUnreachable ? e : new IpamdUnreachable(this.socketPath, reasonOf(e)));
      });
      if (body !== undefined) req.write(body);
      req.end();
    });
  }
}

/** Sockets whose peer was checked (a keep-alive connection is checked once). */
const trusted = new WeakSet<Socket>();

function reasonOf(e: NodeJS.ErrnoException): string {
  return e.code === "ENOENT"
    ? "the socket does not exist"
    : e.code === "ECONNREFUSED"
      ? "nothing is listening on the socket (connection refused)"
      : e.code === "EACCES"
        ? "permission denied on the socket (run as root or a member of its group)"
        : e.code === "EAGAIN"
          ? "the socket's connection backlog is full (EAGAIN): the daemon is overloaded or stuck"
          : e.code === "ETIMEDOUT"
            ? `no answer in time: ${e.message}`
            : e.message;
}
