// Where the release policy reads and ends StatefulSet members' addresses. Single-node mode: this
// node's SQLite rows, changed through the API server's two steps (LocalMembers). Cluster mode: the
// shared identities in etcd, through the same cluster-wide operator calls as `ipamctl release` and
// `ipamctl reserve` (ClusterMembers): each release is a compare-and-swap on the identity's key that
// refuses an identity a sandbox attached meanwhile, on whichever node.
import type { ReleaseReservationRequest, ReserveRequest } from "../../api/types";
import type { ClusterOperator } from "../cluster/operator";
import type { NodeIpam } from "../node";
import type { Placement } from "../pools";
import type { Mutate } from "./lifecycle";

export interface HeldOrdinal {
  ordinal: number;
  pinned: boolean;
  /** No sandbox uses it; since when (ms), when known. */
  detachedSince?: number;
}

export interface MemberAddresses {
  /** True when one node acts for the whole cluster (reserve at creation once, not per node). */
  readonly clusterWide: boolean;
  /** The StatefulSet's ordinals that hold sticky addresses, one entry per ordinal. */
  held(namespace: string, statefulset: string): Promise<HeldOrdinal[]>;
  /** Ends one ordinal's identities without force (ApiError reservation_attached when a sandbox uses one); the addresses freed. */
  release(req: ReleaseReservationRequest): Promise<string[]>;
  /**
   * Reserves every replica's identities (existing ones kept); the addresses. `placement` (the pod template's
   * nodeSelector and required node affinity): cluster-wide, the pools are those that select every node it allows.
   */
  reserve(req: ReserveRequest, placement?: Placement): Promise<string[]>;
}

export class LocalMembers implements MemberAddresses {
  readonly clusterWide = false;

  constructor(
    private readonly node: NodeIpam,
    private readonly mutate: Mutate,
  ) {}

  async held(namespace: string, statefulset: string): Promise<HeldOrdinal[]> {
    const byOrdinal = new Map<number, HeldOrdinal>();
    for (const r of this.node.store.byStatefulSet(namespace, statefulset)) {
      if (!r.sticky || r.ordinal === null) continue;
      const detached = !r.container_id && r.detached_at !== null;
      const prev = byOrdinal.get(r.ordinal);
      const next: HeldOrdinal = {
        ordinal: r.ordinal,
        pinned: (prev?.pinned ?? false) || r.pinned === 1,
        ...(detached && (!prev || prev.detachedSince !== undefined)
          ? { detachedSince: Math.max(prev?.detachedSince ?? 0, r.detached_at!) }
          : {}),
      };
      byOrdinal.set(r.ordinal, next);
    }
    return [...byOrdinal.values()];
  }

  async release(req: ReleaseReservationRequest): Promise<string[]> {
    const out = await this.mutate({ kind: "releaseReservations", req }, (t) => this.node.rules.releaseReservations(req, Date.now(), t));
    return out.released.map((r) => r.ip);
  }

  async reserve(req: ReserveRequest): Promise<string[]> {
    const out = await this.mutate({ kind: "reserve", req }, (t) => this.node.rules.reserve(req, Date.now(), t));
    return out.reservations.map((r) => r.ip);
  }
}

export class ClusterMembers implements MemberAddresses {
  readonly clusterWide = true;

  constructor(private readonly operator: ClusterOperator) {}

  async held(namespace: string, statefulset: string): Promise<HeldOrdinal[]> {
    const byOrdinal = new Map<number, HeldOrdinal>();
    for (const r of await this.operator.stickyOf(namespace, statefulset)) {
      const prev = byOrdinal.get(r.ordinal!);
      const detachedSince = r.state === "detached" ? Date.parse(r.createdAt) : undefined;
      byOrdinal.set(r.ordinal!, {
        ordinal: r.ordinal!,
        pinned: (prev?.pinned ?? false) || r.pinned,
        ...(detachedSince !== undefined && (!prev || prev.detachedSince !== undefined)
          ? { detachedSince: Math.max(prev?.detachedSince ?? 0, detachedSince) }
          : {}),
      });
    }
    return [...byOrdinal.values()];
  }

  async release(req: ReleaseReservationRequest): Promise<string[]> {
    const out = await this.operator.releaseReservations(req);
    const held = new Set(out.heldByContainer.map((r) => r.ip));
    return out.released.map((r) => r.ip).filter((ip) => !held.has(ip));
  }

  async reserve(req: ReserveRequest, placement?: Placement): Promise<string[]> {
    const out = await this.operator.reserve(req, { unbound: true, ...(placement ? { placement } : {}) });
    return out.reservations.map((r) => r.ip);
  }
}
