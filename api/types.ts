// The ipamd API contract (api/API.md), shared by the daemon, the client, the plugins and ipamctl.
// Types only: the daemon validates request bodies against these shapes (ipamd/schemas.ts).

// ---------- requests ----------

/** One interface of one container on one CNI network: the key of a CNI attachment. */
export interface AttachmentRequest {
  containerID: string;
  ifName: string;
  network: string;
}

/** POST /v1/allocate. */
export interface AllocateRequest extends AttachmentRequest {
  podNamespace?: string;
  podName?: string;
  podUID?: string;
  /** Only these pools (names). */
  pools?: string[];
  /** Exact addresses, at most one per family, bare or address/prefix. */
  ips?: string[];
}

/** POST /v1/gc: attachments on `network` that are still alive. */
export interface GcRequest {
  network: string;
  validAttachments: { containerID: string; ifName: string }[];
}

/** POST /v1/reservations/reserve. */
export interface ReserveRequest {
  namespace: string;
  statefulset: string;
  replicas: number;
  pools?: string[];
  network?: string;
  /** The first ordinal (a StatefulSet's spec.ordinals.start; default 0): ordinals ordinalStart..ordinalStart+replicas-1. */
  ordinalStart?: number;
}

/** POST /v1/reservations/pin. */
export interface PinRequest {
  namespace: string;
  statefulset: string;
  ordinal: number;
  ip: string;
  force?: boolean;
}

/** POST /v1/reservations/release: by `ip`, or by `namespace` + `statefulset` (optionally `ordinal`, `pool`). */
export interface ReleaseReservationRequest {
  ip?: string;
  namespace?: string;
  statefulset?: string;
  ordinal?: number;
  pool?: string;
  force?: boolean;
}

/** POST /v1/statefulsets/register and /unregister. */
export interface StatefulSetRequest {
  namespace: string;
  statefulset: string;
}

// ---------- responses ----------

export interface AllocatedIp {
  pool: string;
  family: 4 | 6;
  address: string; // "10.99.0.5/24"
  gateway?: string;
  vlan?: number;
}

export interface AllocateResponse {
  owner: string;
  sticky: boolean;
  /**
   * true: the attachment already held these addresses and this request allocated nothing (a repeated
   * ADD; CHECK always says true). Daemons before this field omit it: treat that as false.
   */
  existing?: boolean;
  ips: AllocatedIp[];
  routes: { dst: string; gw?: string }[];
  dns: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
}

export interface ReleaseResponse {
  released: string[];
  kept: string[];
}
export interface GcResponse {
  released: string[];
  detached: string[];
}

/** Addresses held under a pool name that is no longer in the config; `insidePools`: configured pools that contain some of them. */
export interface OrphanedPool {
  name: string;
  held: number;
  attached: number;
  insidePools: string[];
}

export interface StatusResponse {
  /** "degraded": a commit cannot succeed now (see `commit`), or allocation is held (see `hold`). */
  status: "ok" | "degraded";
  version: string;
  node: { name: string; labels: Record<string, string> };
  pools: number;
  poolsSelected: string[];
  reservations: number;
  uptimeSeconds: number;
  database: string;
  cooldownSeconds: number;
  detachedTTLSeconds: number;
  /** Whether the last commit (or a probe of the write path) succeeded. */
  commit: { ok: boolean; seq: number; error?: string; since?: string };
  /** Allocation is refused until an operator accepts the database (ipamctl database accept) or a GC clears it. */
  hold?: { reasons: string[]; networks: string[] };
  orphanedPools: OrphanedPool[];
  /** The Kubernetes side: how ipamd reaches the API and the state of each watch ("off": no API, labels from the config). */
  kubernetes: KubeStatus;
  /** Cluster mode only. */
  cluster?: ClusterStatus;
}

/** GET /v1/status in cluster mode: etcd, this node's liveness, buffer and outbox. */
export interface ClusterStatus {
  etcd: {
    state: "connected" | "degraded" | "unreachable" | "connecting";
    endpoints: string[];
    /** The endpoint requests go to first. */
    current: string;
    /** Why the state is what it is (the last failure per endpoint), empty when connected. */
    detail: string;
    prefix: string;
  };
  liveness: { confirmedSecondsAgo: number | null; fenced: boolean; graceSeconds: number; leaseTTLSeconds: number };
  /** Unused addresses this node holds per pool (claimed from etcd). */
  buffer: Record<string, number>;
  /** Local changes (releases, detaches) not yet applied to etcd. */
  outboxPending: number;
  /** Outbox records etcd contradicted (logged; each needs a look). */
  outboxConflicts: number;
  /** The sticky identities' watch: revision reflected, lists (start-up, compaction), compactions met. */
  watch: { revision: number; relists: number; compactions: number };
  /** Dead-looking nodes inside the grace period, as this node's reaper sees them. */
  nodesInGrace: { node: string; goneSeconds: number }[];
}

/** One watch (list + watch, restarted with backoff on any error). */
export interface KubeWatchStatus {
  resource: string;
  /** starting: listing; watching: synced and streaming; backoff: failed, restarting at retryAt. */
  state: "starting" | "watching" | "backoff" | "stopped";
  since: string;
  restarts: number;
  objects: number;
  lastError?: string;
  retryAt?: string;
}

export interface KubeStatus {
  mode: "off" | "in-cluster" | "kubeconfig";
  server?: string;
  userAgent?: string;
  watches?: KubeWatchStatus[];
  /** Whether this node acts on cluster-wide releases (StatefulSet deletion, scale-down, TTL, reserve at creation). */
  releaseLeader?: boolean;
}

/** POST /v1/status/network: could ADD allocate for this network (and ipam.pools) on this node now? */
export interface NetworkStatusRequest {
  network: string;
  pools?: string[];
}

/** Ready: every family of the usable pools has a free address. Otherwise an error: no_pool or pool_exhausted. */
export interface NetworkStatusResponse {
  network: string;
  pools: { name: string; family: 4 | 6; free: string }[];
}

export interface PoolUsage {
  name: string;
  family: 4 | 6;
  subnet: string;
  gateway?: string;
  vlan?: number;
  networks?: string[];
  selected: boolean; // this node's labels match the pool's selector
  nodeSelector: unknown;
  ranges: { start: string; end: string }[];
  total: string; // decimal; may exceed 2^53 for IPv6
  used: number; // attached to a running container
  reserved: number; // held but detached (sticky, reserved ahead, pinned)
  cooling: number; // released, waiting for the cooldown
  orphaned?: number; // addresses of this pool held under a pool name no longer in the config
  free: string; // decimal: total - used - reserved - cooling
  routes: { dst: string; gw?: string }[];
  dns: Record<string, unknown>;
}

export interface Reservation {
  ip: string;
  address: string; // with prefix
  pool: string;
  family: 4 | 6;
  owner: string;
  kind: "statefulset" | "attachment";
  sticky: boolean;
  pinned: boolean;
  state: "attached" | "detached";
  namespace?: string;
  statefulset?: string;
  ordinal?: number;
  containerID?: string;
  ifName?: string;
  network?: string;
  podNamespace?: string;
  podName?: string;
  podUID?: string;
  createdAt: string;
  attachedAt?: string;
  detachedAt?: string;
  /** Cluster mode: the node the reservation is bound to (sticky), or that holds the attachment. */
  node?: string;
}

/** One line of GET /v1/reservations?watch=true: a change of one reservation, under the daemon's sequence number. */
export interface ReservationEvent {
  seq: number;
  type: "reserved" | "attached" | "detached" | "released";
  at: string;
  /**
   * The node that made the change: this ipamd for its own rows; in cluster mode, for a sticky reservation, the node
   * that wrote it to etcd (for `released`, the node it was bound to: etcd does not record who deleted it).
   */
  node: string;
  /**
   * Why: cni-add, cni-del, spool, gc, leak-reconciled, reserve-ahead, operator, statefulset-lifecycle, ttl, cluster-sync;
   * in cluster mode, a sticky reservation's change in etcd: cluster-reserve, cluster-attach, cluster-detach, cluster-pin,
   * cluster-rebind, cluster-release, or cluster-relist (the net change found by a re-list after an etcd compaction).
   */
  reason: string;
  /** As it is after the change; for `released`, as it was. */
  reservation: Reservation;
  /** `released` of a sticky reservation whose address the running container keeps: its new owner (containerID/ifName). */
  heldBy?: string;
  /** Cluster mode, a sticky reservation's event: the etcd revision of the change. */
  etcdRevision?: number;
}
/** Every line of the watch stream: an event, a bookmark (the current sequence), or the error that ends the stream. */
export type WatchLine = ReservationEvent | { type: "bookmark"; seq: number } | { type: "error"; message: string };

/** Query of GET /v1/reservations; every field narrows the list. */
export interface ReservationFilter {
  namespace?: string;
  statefulset?: string;
  pool?: string;
  owner?: string;
  ip?: string;
  state?: "attached" | "detached";
  limit?: number;
  /** The `next` cursor of the previous page. */
  after?: string;
}
export interface ReservationsResponse {
  reservations: Reservation[];
  truncated: boolean;
  /** The cursor of the next page (API.md: pages of at most 5000). */
  next?: string;
  /**
   * Cluster mode: where the sticky reservations come from: "etcd" (read now, every node's), or "cache" (etcd
   * unreachable: this node's last watched view; `detail` says why).
   */
  cluster?: { source: "etcd" | "cache"; detail?: string };
}
export interface ReserveResponse {
  statefulset: { namespace: string; name: string };
  reservations: Reservation[];
}
/**
 * `released`: the member's previous addresses it no longer owns; `heldByContainer`: those of them a running
 * container still uses (freed by its CNI DEL or GC).
 */
export interface PinResponse {
  reservation: Reservation;
  released: string[];
  heldByContainer: string[];
}
/**
 * `released`: the reservations ended, as they were; `heldByContainer`: those whose address a running container
 * still holds, as they are now.
 */
export interface ReleaseReservationsResponse {
  released: Reservation[];
  heldByContainer: Reservation[];
}
/** `configured`: listed in the ipamd config, so its pods stay members until the config changes. */
export interface UnregisterResponse {
  unregistered: boolean;
  configured: boolean;
}
export interface StatefulSetsResponse {
  statefulsets: { namespace: string; name: string; source: "config" | "api"; registeredAt?: string }[];
}

export interface RegisterResponse {
  registered: StatefulSetRequest;
}

// ---------- errors ----------

/** The `code` of an error answer; api/API.md lists each with its HTTP status. */
export type ApiErrorCode =
  | "invalid_request"
  | "no_pool"
  | "pool_exhausted"
  | "ip_unavailable"
  | "forbidden"
  | "not_found"
  | "method_not_allowed"
  | "payload_too_large"
  | "reservation_attached"
  | "shutting_down"
  | "internal"
  | "previous_sandbox_attached"
  | "database_unverified"
  // cluster mode
  | "cluster_unavailable"
  | "attached_elsewhere"
  | "l2_domain"
  // GET /v1/reservations?watch=true&since=: the events after `since` are no longer kept (410)
  | "events_expired";

/** The body of every non-2xx answer. */
export interface ApiErrorBody {
  error: { code: ApiErrorCode; message: string; field?: string };
}
