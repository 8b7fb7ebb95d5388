// One list+watch of one resource, kept alive: client-node's ListWatch relists only after a 410 and
// stops for good on any other error (a 500, a cut stream, a refused connection; docs/kubernetes.md),
// so every error restarts it here after a backoff (0.5 s doubling to 30 s, reset once it is synced
// again). Its cache survives restarts; a relist reports what vanished meanwhile as deletes.
import { type KubeConfig, type KubernetesObject, type KubernetesListObject, ListWatch, Watch } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { KubeWatchStatus } from "../../api/types";
import type { KubeConnection } from "./connection";

export interface WatchSpec<T extends KubernetesObject> {
  /** For status, metrics and logs: "node", "pods", "statefulsets". */
  resource: string;
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  fieldSelector?: string;
}

type Handler<T> = (obj: T) => void;

/**
 * client-node's ListWatch (2.0.1) can open a watch after its stop(): stopped while it lists, waits to reconnect or
 * waits for the watch request's answer, it has nothing to abort yet, and the stream then runs for good (a follower
 * would keep watching every Node). This Watch closes a stream asked for while its owner is stopped, or before its
 * owner's last stop (a stop and a start while it was asked for: the new start opens its own).
 */
class StoppableWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly generation: () => number | null,
  ) {
    super(kc);
  }

  override async watch(...args: Parameters<Watch["watch"]>): Promise<AbortController> {
    const asked = this.generation();
    const controller = await super.watch(...args);
    if (asked === null || this.generation() !== asked) controller.abort();
    return controller;
  }
}

const BASE_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;

export class ResilientWatch<T extends KubernetesObject> {
  private readonly lw: ListWatch<T>;
  private state: KubeWatchStatus["state"] = "stopped"; // until start()
  private since = Date.now();
  private restarts = 0;
  private backoffMs = BASE_BACKOFF_MS;
  private lastError?: string;
  private retryAt?: number;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** Counts the stops: a stream asked for before the last one is closed when it opens. */
  private generation = 0;
  private running = false;
  private readonly syncedWaiters: (() => void)[] = [];
  /** Called on every state change (metrics). */
  onState?: (status: KubeWatchStatus) => void;

  constructor(
    kube: KubeConnection,
    private readonly spec: WatchSpec<T>,
    private readonly log: Logger,
  ) {
    const watch = new StoppableWatch(kube.kc, () => (this.stopped ? null : this.generation));
    this.lw = new ListWatch<T>(spec.path, watch, spec.list, false, undefined, spec.fieldSelector);
    this.lw.on("error", (e) => this.failed(e));
  }

  on(event: "add" | "update" | "delete", handler: Handler<T>): void {
    this.lw.on(event, handler);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.lw.get(name, namespace);
  }

  list(): readonly T[] {
    return this.lw.list();
  }

  /** Listed and watching now: the cache is as fresh as the stream. */
  get synced(): boolean {
    return this.state === "watching";
  }

  /** Resolves once the first list has been applied (or at once when it has). */
  whenSynced(): Promise<void> {
    return this.state === "watching" ? Promise.resolve() : new Promise((r) => this.syncedWaiters.push(r));
  }

  start(): void {
    this.stopped = false;
    void this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.generation++;
    if (this.timer) clearTimeout(this.timer);
    this.setState("stopped");
    await this.lw.stop();
  }

  status(): KubeWatchStatus {
    return {
      resource: this.spec.resource,
      state: this.state,
      since: new Date(this.since).toISOString(),
      restarts: this.restarts,
      objects: this.lw.list().length,
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(this.retryAt && this.state === "backoff" ? { retryAt: new Date(this.retryAt).toISOString() } : {}),
    };
  }

  private async run(): Promise<void> {
    if (this.stopped || this.running) return;
    this.running = true;
    this.setState("starting");
    const failuresBefore = this.restarts;
    try {
      // Resolves once listed (when needed) and the watch request is answered; an error on the way
      // goes to the error handler instead.
      await this.lw.start();
    } finally {
      this.running = false;
    }
    if (this.stopped || this.state === "backoff" || this.restarts !== failuresBefore) return;
    this.backoffMs = BASE_BACKOFF_MS;
    this.setState("watching");
    for (const w of this.syncedWaiters.splice(0)) w();
  }

  private failed(e: unknown): void {
    if (this.stopped) return;
    const message = describe(e);
    this.restarts++;
    this.lastError = message;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.retryAt = Date.now() + delay;
    this.setState("backoff");
    this.log.warn({ resource: this.spec.resource, error: message, retryInMs: delay }, "Kubernetes watch failed; restarting it");
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.lw.stop().then(() => this.run());
    }, delay);
    this.timer.unref();
  }

  private setState(state: KubeWatchStatus["state"]): void {
    if (this.state !== state) {
      this.state = state;
      this.since = Date.now();
    }
    this.onState?.(this.status());
  }
}

function describe(e: unknown): string {
  const err = e as { code?: number; statusCode?: number; body?: string; message?: string; cause?: { message?: string } };
  if (typeof err?.statusCode === "number") return `HTTP ${err.statusCode}: ${err.message ?? ""}`; // Watch's own errors
  if (typeof err?.code === "number") {
    let reason = "";
    try {
      reason = (JSON.parse(err.body ?? "") as { message?: string }).message ?? "";
    } catch {
      /* not a Status */
    }
    return `HTTP ${err.code}${reason ? `: ${reason}` : ""}`;
  }
  const cause = err?.cause?.message ? ` (${err.cause.message})` : "";
  return `${err?.message ?? String(e)}${cause}`;
}
