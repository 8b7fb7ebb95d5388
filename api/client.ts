// Small client of the ipamd API (api/API.md) over its unix socket. Imports nothing heavy: the CNI
// plugins and ipamctl load it.
import type { Agent } from "node:http";
import type {
  AllocateRequest, AllocateResponse, ApiErrorBody, AttachmentRequest, GcRequest, GcResponse, PinRequest, PinResponse, PoolUsage,
  RegisterResponse, ReleaseReservationRequest, ReleaseReservationsResponse, ReleaseResponse, ReservationFilter,
  ReservationsResponse, ReserveRequest, ReserveResponse, StatefulSetsResponse, StatusResponse, UnregisterResponse,
  NetworkStatusRequest, NetworkStatusResponse,
} from "./types";

export const DEFAULT_SOCKET = "/run/berth/ipamd.sock";

/** The daemon could not be reached (no socket, nobody listening, or no answer in time). */
export class IpamdUnreachable extends Error {
  constructor(readonly socketPath: string, readonly reason: string) {
    super(`ipamd is not reachable on ${socketPath}: ${reason}. Is ipamd running (and is this the right --socket)?`);
    this.name = "IpamdUnreachable";
  }
}

/** The daemon answered with an error. */
export class IpamdError extends Error {
  constructor(readonly code: string, message: string, readonly httpStatus: number, readonly field?: string) {
    super(message);
    this.name = "IpamdError";
  }
}

export interface ClientOptions {
  timeoutMs?: number;
  /** Reuse connections (for many calls from one process, e.g. ipamctl scripts, benchmarks). */
  keepAlive?: boolean;
  /** Sends one request, answers status and body (the CNI plugins' libc one); its errors carry an errno `code`. */
  transport?: Transport;
}

export type Transport = (method: string, path: string, body?: string) => Promise<{ status: number; body: string }>;

export class IpamdClient {
  private readonly timeoutMs: number;
  private readonly keepAlive: boolean;
  private agent?: Agent;
  private readonly transport?: Transport;

  constructor(readonly socketPath: string = DEFAULT_SOCKET, options: ClientOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.keepAlive = options.keepAlive ?? false;
    this.transport = options.transport;
  }

  allocate(args: AllocateRequest): Promise<AllocateResponse> { return this.call("POST", "/v1/allocate", args); }
  release(args: AttachmentRequest): Promise<ReleaseResponse> { return this.call("POST", "/v1/release", args); }
  check(args: AttachmentRequest): Promise<AllocateResponse> { return this.call("POST", "/v1/check", args); }
  gc(network: string, validAttachments: GcRequest["validAttachments"]): Promise<GcResponse> {
    return this.call("POST", "/v1/gc", { network, validAttachments } satisfies GcRequest);
  }
  status(): Promise<StatusResponse> { return this.call("GET", "/v1/status"); }
  networkStatus(args: NetworkStatusRequest): Promise<NetworkStatusResponse> { return this.call("POST", "/v1/status/network", args); }
  pools(): Promise<{ pools: PoolUsage[] }> { return this.call("GET", "/v1/pools"); }
  pool(name: string): Promise<{ pool: PoolUsage }> { return this.call("GET", `/v1/pools/${encodeURIComponent(name)}`); }
  reservations(filter: ReservationFilter = {}): Promise<ReservationsResponse> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v !== undefined && v !== "") q.set(k, String(v));
    const qs = q.toString();
    return this.call("GET", `/v1/reservations${qs ? `?${qs}` : ""}`);
  }
  reserve(args: ReserveRequest): Promise<ReserveResponse> { return this.call("POST", "/v1/reservations/reserve", args); }
  pin(args: PinRequest): Promise<PinResponse> { return this.call("POST", "/v1/reservations/pin", args); }
  releaseReservations(args: ReleaseReservationRequest): Promise<ReleaseReservationsResponse> {
    return this.call("POST", "/v1/reservations/release", args);
  }
  statefulSets(): Promise<StatefulSetsResponse> { return this.call("GET", "/v1/statefulsets"); }
  registerStatefulSet(namespace: string, statefulset: string): Promise<RegisterResponse> {
    return this.call("POST", "/v1/statefulsets/register", { namespace, statefulset });
  }
  unregisterStatefulSet(namespace: string, statefulset: string): Promise<UnregisterResponse> {
    return this.call("POST", "/v1/statefulsets/unregister", { namespace, statefulset });
  }
  async metrics(): Promise<string> { return this.raw("GET", "/metrics").then((r) => r.body); }

  close(): void { this.agent?.destroy(); }

  async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body === undefined ? undefined : JSON.stringify(body));
    let parsed: unknown;
    try { parsed = JSON.parse(res.body); } catch {
      throw new IpamdError("bad_response", `ipamd answered ${method} ${path} with HTTP ${res.status} and a body that is not JSON`, res.status);
    }
    if (res.status >= 200 && res.status < 300) return parsed as T;
    const err: Partial<ApiErrorBody["error"]> = (parsed as Partial<ApiErrorBody>).error ?? {};
    throw new IpamdError(err.code ?? "unknown", err.message ?? `HTTP ${res.status}`, res.status, err.field);
  }

  raw(method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
    if (this.transport) {
      return this.transport(method, path, body).catch((e: NodeJS.ErrnoException) => { throw new IpamdUnreachable(this.socketPath, reasonOf(e)); });
    }
    // A plugin makes one call per process: under Bun, fetch speaks HTTP over the unix socket
    // natively and costs nothing to load, while node:http adds ~5 ms to every plugin start.
    // Long-lived clients that keep connections (benchmarks, scripts) and everything under Node
    // use node:http: Bun's fetch is slow to open hundreds of unix connections at once.
    return process.versions.bun && !this.keepAlive ? this.rawFetch(method, path, body) : this.rawHttp(method, path, body);
  }

  private async rawFetch(method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    try {
      const res = await fetch(`http://ipamd${path}`, {
        method, headers, body, signal: AbortSignal.timeout(this.timeoutMs),
        // Bun's option: the socket to connect to; keepalive false closes it after the answer.
        unix: this.socketPath, keepalive: false,
      } as RequestInit);
      return { status: res.status, body: await res.text() };
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new IpamdUnreachable(this.socketPath, err.name === "TimeoutError" ? `no answer within ${this.timeoutMs} ms` : reasonOf(err));
    }
  }

  private async rawHttp(method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
    const { Agent, request } = await import("node:http");
    if (this.keepAlive && !this.agent) this.agent = new Agent({ keepAlive: true, maxSockets: 1 });
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { accept: "application/json" };
      if (body !== undefined) { headers["content-type"] = "application/json"; headers["content-length"] = Buffer.byteLength(body); }
      const req = request({ socketPath: this.socketPath, method, path, headers, agent: this.agent ?? false }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => { clearTimeout(timer); resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }); });
        res.on("error", (e) => { clearTimeout(timer); reject(new IpamdUnreachable(this.socketPath, e.message)); });
      });
      const timer = setTimeout(() => {
        req.destroy(new Error(`no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      req.on("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new IpamdUnreachable(this.socketPath, reasonOf(e)));
      });
      if (body !== undefined) req.write(body);
      req.end();
    });
  }
}

function reasonOf(e: NodeJS.ErrnoException): string {
  return e.code === "ENOENT" ? "the socket does not exist"
    : e.code === "ECONNREFUSED" ? "nothing is listening on the socket (connection refused)"
    : e.code === "EACCES" ? "permission denied on the socket (run as root or a member of its group)"
    : e.code === "EAGAIN" ? "the socket's connection backlog is full (EAGAIN): the daemon is overloaded or stuck"
    // Bun's fetch adds its own guess, which is wrong for a unix socket.
    : e.message.replace(/\s*Was there a typo in the url or port\?/i, "");
}
