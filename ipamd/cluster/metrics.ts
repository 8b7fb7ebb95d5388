// Prometheus metrics of cluster mode, on the daemon's registry: etcd round trips, transaction conflicts, buffer size
// per pool, outbox (pending releases), etcd connection state and TLS reloads, handbacks, reaped addresses and the
// reaper's pool scans.
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { ConnectionState, EtcdObserver } from "./etcd";
import type { OwnershipObserver } from "./ownership";

const STATES: ConnectionState[] = ["connected", "degraded", "unreachable"];

export class ClusterMetrics {
  readonly etcdSeconds: Histogram<"op" | "outcome">;
  readonly conflicts: Counter<"op">;
  readonly buffer: Gauge<"pool">;
  readonly outboxPending: Gauge;
  readonly outboxConflicts: Counter;
  readonly state: Gauge<"state">;
  readonly handbacks: Counter<"pool" | "event">;
  readonly reaped: Counter<"owner">;
  readonly reaperScans: Counter<"kind">;
  readonly historyLosses: Counter;
  readonly tlsReloads: Counter<"outcome">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.etcdSeconds = new Histogram({
      name: "berth_ipamd_etcd_request_duration_seconds",
      help: "etcd round trips by operation and outcome (ok, error, unreachable)",
      labelNames: ["op", "outcome"],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2],
      registers,
    });
    this.conflicts = new Counter({
      name: "berth_ipamd_etcd_txn_conflicts_total",
      help: "etcd compare-and-swap transactions whose compare failed (re-read and retried)",
      labelNames: ["op"],
      registers,
    });
    this.buffer = new Gauge({
      name: "berth_ipamd_cluster_buffer_addresses",
      help: "Unused addresses this node holds in etcd per pool",
      labelNames: ["pool"],
      registers,
    });
    this.outboxPending = new Gauge({
      name: "berth_ipamd_cluster_outbox_pending",
      help: "Local changes (releases, detaches) not yet applied to etcd",
      registers,
    });
    this.outboxConflicts = new Counter({
      name: "berth_ipamd_cluster_outbox_conflicts_total",
      help: "Outbox records etcd contradicted (see the log)",
      registers,
    });
    this.state = new Gauge({
      name: "berth_ipamd_etcd_connection_state",
      help: "1 for the current etcd connection state (connected, degraded, unreachable)",
      labelNames: ["state"],
      registers,
    });
    this.handbacks = new Counter({
      name: "berth_ipamd_cluster_handbacks_total",
      help: "Handback requests sent and addresses returned, per pool",
      labelNames: ["pool", "event"],
      registers,
    });
    this.reaped = new Counter({
      name: "berth_ipamd_cluster_reaped_addresses_total",
      help: "Addresses of dead nodes returned to their pools after the grace period",
      labelNames: ["owner"],
      registers,
    });
    this.reaperScans = new Counter({
      name: "berth_ipamd_cluster_reaper_pool_scans_total",
      help: "Reaper passes that read every pool's address keys: for dead nodes past the grace period, or the hourly backstop (full)",
      labelNames: ["kind"],
      registers,
    });
    this.historyLosses = new Counter({
      name: "berth_ipamd_etcd_history_lost_total",
      help: "Times etcd's revision was lower than one this node had seen (restored from an older snapshot); see the log",
      registers,
    });
    this.tlsReloads = new Counter({
      name: "berth_ipamd_etcd_tls_reloads_total",
      help: "Times the etcd TLS files changed: read again (ok), or unusable and the previous ones kept (failed); see the log",
      labelNames: ["outcome"],
      registers,
    });
  }

  etcdObserver(
    onState: (state: ConnectionState, detail: string) => void,
    onTlsReload: (ok: boolean, detail: string) => void,
  ): EtcdObserver {
    return {
      tlsReload: (ok, detail) => {
        this.tlsReloads.inc({ outcome: ok ? "ok" : "failed" });
        onTlsReload(ok, detail);
      },
      request: (op, _endpoint, seconds, outcome) => this.etcdSeconds.observe({ op, outcome }, seconds),
      state: (state, detail) => {
        for (const s of STATES) this.state.set({ state: s }, s === state ? 1 : 0);
        onState(state, detail);
      },
    };
  }

  ownershipObserver(): OwnershipObserver {
    // Set on every ADD that takes from the buffer: the labelled child is looked up once per pool.
    const bufferOf = new Map<string, { set(v: number): void }>();
    return {
      conflict: (op) => this.conflicts.inc({ op }),
      buffer: (pool, size) => {
        let g = bufferOf.get(pool);
        if (!g) bufferOf.set(pool, (g = this.buffer.labels({ pool })));
        g.set(size);
      },
      outbox: () => undefined, // the daemon sets outboxPending from SQLite, which survives restarts
      handback: (pool, event, count) => this.handbacks.inc({ pool, event }, count),
    };
  }
}
