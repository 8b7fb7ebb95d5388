// Prometheus metrics (own registry, so tests and embedders never collide with the default one).
// The whole scrape passes `promtool check metrics` (test/ipamd/metrics.test.ts); durations are in seconds.
import type { ServerResponse } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { AllocateResponse, PoolUsage } from "../api/types";
import type { Change } from "./changes";
import type { OwnershipOp } from "./ownership";

declare const __BERTH_VERSION__: string | undefined;
declare const __BERTH_COMMIT__: string | undefined;

/**
 * prom-client's default Node.js metrics include gauges named *_total (a counter's suffix, which
 * promtool rejects); each is the sum over the `type` label of the gauge of the same name without it.
 */
const GAUGES_NAMED_LIKE_COUNTERS = ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"];

/** How often the event loop lag is sampled (nodejs_eventloop_lag_*): 10 wakeups a second when idle. */
const LAG_SAMPLE_MS = 100;

export class Metrics {
  readonly registry = new Registry();
  readonly allocationSeconds = new Histogram({
    name: "berth_ipamd_allocation_duration_seconds",
    help: "Time from receiving an allocate request to sending its committed reply",
    buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: "berth_ipamd_requests_total",
    help: "Requests by route and HTTP status",
    labelNames: ["route", "status"],
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: "berth_ipamd_errors_total",
    help: "Error replies by error code",
    labelNames: ["code"],
    registers: [this.registry],
  });
  readonly batchSize = new Histogram({
    name: "berth_ipamd_commit_batch_size",
    help: "Requests applied per group-commit transaction",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
    registers: [this.registry],
  });
  readonly commitSeconds = new Histogram({
    name: "berth_ipamd_commit_duration_seconds",
    help: "Duration of one group-commit transaction including fsync",
    buckets: [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25],
    registers: [this.registry],
  });
  readonly requestSeconds = new Histogram({
    name: "berth_ipamd_request_duration_seconds",
    help: "Time from receiving an API request to sending its reply (committed, for changes), by route and HTTP status",
    labelNames: ["route", "status"],
    buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });

  readonly allocations = new Counter({
    name: "berth_ipamd_allocations_total",
    help: "Addresses handed to CNI ADDs, by reason (new, sticky-again, pinned, idempotent)",
    labelNames: ["reason"],
    registers: [this.registry],
  });
  readonly releases = new Counter({
    name: "berth_ipamd_releases_total",
    help:
      "Addresses released (freed into the cooldown, or their reservation ended), by reason " +
      "(cni-del, spool, gc, leak-reconciled, operator, statefulset-lifecycle, ttl, cni-add, cluster-sync)",
    labelNames: ["reason"],
    registers: [this.registry],
  });
  readonly detaches = new Counter({
    name: "berth_ipamd_detaches_total",
    help: "Sticky addresses detached from their container and kept for their member, by reason (cni-del, spool, gc, leak-reconciled)",
    labelNames: ["reason"],
    registers: [this.registry],
  });
  readonly reserved = new Counter({
    name: "berth_ipamd_reservations_created_total",
    help: "Reservations made without a container (reserve ahead, pin), by reason (reserve-ahead, operator, statefulset-lifecycle)",
    labelNames: ["reason"],
    registers: [this.registry],
  });
  readonly gcRuns = new Counter({
    name: "berth_ipamd_gc_runs_total",
    help: "Committed garbage collections, by reason (gc: a CNI GC; leak-reconciled: the Kubernetes leak reconciler)",
    labelNames: ["reason"],
    registers: [this.registry],
  });
  readonly takeovers = new Counter({
    name: "berth_ipamd_takeovers_total",
    help: "Sticky addresses a new sandbox of the same pod took over from its previous sandbox",
    registers: [this.registry],
  });
  readonly takeoversRefused = new Counter({
    name: "berth_ipamd_takeovers_refused_total",
    help: "ADDs refused because a previous pod still holds the member's address, by reason (previous_sandbox_attached, attached_elsewhere)",
    labelNames: ["reason"],
    registers: [this.registry],
  });

  constructor(usage: () => PoolUsage[]) {
    const prefix = "berth_ipamd_";
    // The event loop lag is sampled by a timer: prom-client's 10 ms woke an idle daemon 100 times a second.
    collectDefaultMetrics({ register: this.registry, prefix, eventLoopMonitoringPrecision: LAG_SAMPLE_MS });
    for (const name of GAUGES_NAMED_LIKE_COUNTERS) this.registry.removeSingleMetric(prefix + name);
    new Gauge({
      name: "berth_ipamd_build_info",
      help: "Always 1; the labels say which ipamd build runs on which Node.js",
      labelNames: ["version", "commit", "nodejs"],
      registers: [this.registry],
    }).set(
      {
        version: typeof __BERTH_VERSION__ === "string" ? __BERTH_VERSION__ : "0.0.0-dev",
        commit: typeof __BERTH_COMMIT__ === "string" ? __BERTH_COMMIT__ : "unknown",
        nodejs: process.versions.node,
      },
      1,
    );
    // A scrape collects every gauge in the same tick: read the pool usage once per scrape.
    let snapshot: PoolUsage[] | null = null;
    const current = (): PoolUsage[] => {
      if (!snapshot) {
        snapshot = usage();
        queueMicrotask(() => {
          snapshot = null;
        });
      }
      return snapshot;
    };
    const poolGauge = (name: string, help: string, pick: (u: PoolUsage) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ["pool"],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const u of current()) this.set({ pool: u.name }, pick(u));
        },
      });
    };
    poolGauge("berth_ipamd_pool_used_addresses", "Addresses attached to running containers", (u) => u.used);
    poolGauge(
      "berth_ipamd_pool_reserved_addresses",
      "Addresses held by detached reservations (sticky, reserved ahead, pinned)",
      (u) => u.reserved,
    );
    poolGauge("berth_ipamd_pool_cooling_addresses", "Released addresses waiting for the cooldown", (u) => u.cooling);
    poolGauge("berth_ipamd_pool_free_addresses", "Addresses available now", (u) => Number(u.free));
    poolGauge("berth_ipamd_pool_size_addresses", "Usable addresses in the pool", (u) => Number(u.total));
  }

  /** Counts the committed changes of one request (`reason` from changes.ts reasonOf). */
  countChanges(op: OwnershipOp, reason: string, changes: Change[], result: unknown): void {
    if (op.kind === "allocate" && changes.length === 0) {
      const ips = (result as AllocateResponse | undefined)?.ips?.length ?? 0;
      if (ips > 0) this.allocations.inc({ reason: "idempotent" }, ips);
    }
    if (op.kind === "gc") this.gcRuns.inc({ reason });
    for (const c of changes) {
      if (c.event === "attached" && op.kind === "allocate") this.allocations.inc({ reason: c.allocation ?? "new" });
      else if (c.event === "released") this.releases.inc({ reason });
      else if (c.event === "detached") this.detaches.inc({ reason });
      else if (c.event === "reserved") this.reserved.inc({ reason });
      if (c.takeover) this.takeovers.inc();
    }
  }

  /** A change was refused: the refusals of a member's ADD while a previous pod holds its address are counted. */
  countRefusal(code: string): void {
    if (code === "previous_sandbox_attached" || code === "attached_elsewhere") this.takeoversRefused.inc({ reason: code });
  }

  /** The reservation stream's state, read at each scrape. */
  watchEvents(events: { lastSeq: number; watching: number }): void {
    new Gauge({
      name: "berth_ipamd_reservation_event_sequence",
      help: "The last sequence number of the reservation stream (GET /v1/reservations?watch=true)",
      registers: [this.registry],
      collect() {
        this.set(events.lastSeq);
      },
    });
    new Gauge({
      name: "berth_ipamd_reservation_watchers",
      help: "Clients following the reservation stream now",
      registers: [this.registry],
      collect() {
        this.set(events.watching);
      },
    });
  }

  /** Answers GET /metrics with the Prometheus text of this registry. */
  async serve(res: ServerResponse): Promise<void> {
    const text = await this.registry.metrics();
    res.writeHead(200, { "content-type": this.registry.contentType });
    res.end(text);
  }
}
