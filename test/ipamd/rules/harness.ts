// The ownership rules in-process, on an in-memory SQLite database with the real schema, the real
// single-node ownership and the daemon's two steps (prepare, then the rule in a transaction).
// No socket, no build: these tests read like the rules in api/API.md.
import type {
  AllocateRequest,
  AllocateResponse,
  AttachmentRequest,
  GcResponse,
  PinRequest,
  PinResponse,
  ReleaseReservationRequest,
  ReleaseReservationsResponse,
  ReleaseResponse,
  Reservation,
  ReservationFilter,
  ReserveRequest,
  ReserveResponse,
} from "../../../api/types";
import { buildConfig } from "../../../ipamd/config";
import { assembleNode, type NodeIpam } from "../../../ipamd/node";
import type { AddressOwnership, OwnershipOp, OwnershipTicket } from "../../../ipamd/ownership";
import type { NodePools } from "../../../ipamd/pools";
import { type DB, openStore } from "../../../ipamd/store/database";
import type { Statements } from "../../../ipamd/store/statements";

export const NET = "net1";

export interface Rules {
  db: DB;
  node: NodeIpam;
  /** The clock the rules see (ms); advance it to let cooldowns and TTLs pass. */
  now: number;
  add(containerID: string, extra?: Partial<AllocateRequest>): Promise<AllocateResponse>;
  del(containerID: string, extra?: Partial<AttachmentRequest>): Promise<ReleaseResponse>;
  /** GC of `network` (default net1) that began after commit `startedSeq` (default: the last commit). */
  gc(valid: string[], opts?: { network?: string; startedSeq?: number }): Promise<GcResponse>;
  reserve(req: Omit<ReserveRequest, "namespace"> & { namespace?: string }): Promise<ReserveResponse>;
  pin(req: Omit<PinRequest, "namespace"> & { namespace?: string }): Promise<PinResponse>;
  releaseReservations(req: ReleaseReservationRequest): Promise<ReleaseReservationsResponse>;
  reap(): Promise<string[]>;
  reservations(filter?: ReservationFilter): Reservation[];
  /** The addresses of an ADD answer, without prefix. */
  ips(r: AllocateResponse): string[];
}

export interface RulesOptions {
  /** Wraps the single-node ownership (to watch the seam). */
  ownership?: (local: AddressOwnership, store: Statements, pools: NodePools) => AddressOwnership;
}

/** A node on `config` (defaults: node n1, the StatefulSet default/web known) and a fresh database. */
export function rulesOn(config: Record<string, unknown>, options: RulesOptions = {}): Rules {
  const cfg = buildConfig({ node: { name: "n1" }, statefulSets: [{ namespace: "default", name: "web" }], ...config });
  const db = openStore(":memory:");
  let node: NodeIpam;
  if (options.ownership) {
    const local = assembleNode(db, cfg).ownership;
    node = assembleNode(db, cfg, (store, pools) => options.ownership!(local, store, pools));
  } else {
    node = assembleNode(db, cfg);
  }
  const h: Rules = {
    db,
    node,
    now: 1_700_000_000_000,
    add: (containerID, extra = {}) => {
      const req = { containerID, ifName: "eth0", network: NET, ...extra };
      return apply({ kind: "allocate", req }, (t) => node.rules.allocate(req, h.now, t));
    },
    del: (containerID, extra = {}) => {
      const req = { containerID, ifName: "eth0", network: NET, ...extra };
      return apply({ kind: "release", req }, (t) => node.rules.release(req, h.now, t));
    },
    gc: (valid, { network = NET, startedSeq = node.store.committedSeq } = {}) => {
      const req = { network, validAttachments: valid.map((v) => ({ containerID: v, ifName: "eth0" })) };
      return apply({ kind: "gc", req }, (t) => node.rules.gc(req, startedSeq, h.now, t));
    },
    reserve: (r) => {
      const req = { namespace: "default", ...r };
      return apply({ kind: "reserve", req }, (t) => node.rules.reserve(req, h.now, t));
    },
    pin: (r) => {
      const req = { namespace: "default", ...r };
      return apply({ kind: "pin", req }, (t) => node.rules.pin(req, h.now, t));
    },
    releaseReservations: (req) => apply({ kind: "releaseReservations", req }, (t) => node.rules.releaseReservations(req, h.now, t)),
    reap: () => apply({ kind: "reapExpired" }, (t) => node.rules.reapExpired(h.now, t)),
    reservations: (filter = {}) => node.views.reservations(filter).reservations,
    ips: (r) => r.ips.map((i) => i.address.split("/")[0]!),
  };

  /**
   * The daemon's two steps: prepare, then the rule in a transaction that is one commit of the
   * sequence (a failed rule leaves nothing behind).
   */
  async function apply<T>(op: OwnershipOp, rule: (t: OwnershipTicket) => T): Promise<T> {
    const ticket = await node.ownership.prepare(op);
    let result: T;
    let seq = 0;
    try {
      result = db.transaction(() => {
        seq = node.store.beginCommit();
        return rule(ticket);
      })();
    } catch (e) {
      node.ownership.abandoned(ticket, e);
      throw e;
    }
    node.store.committed(seq);
    node.ownership.committed(ticket);
    return result;
  }
  return h;
}

/** A v4 pool of `count` addresses from 10.0.0.10, open to every node and network. */
export function pool(name = "p4", count = 20, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, subnet: "10.0.0.0/24", ranges: [{ start: "10.0.0.10", end: `10.0.0.${9 + count}` }], ...extra };
}

/** web-<ordinal> of the known StatefulSet default/web. */
export function webPod(ordinal: number, extra: Partial<AllocateRequest> = {}): Partial<AllocateRequest> {
  return { podNamespace: "default", podName: `web-${ordinal}`, ...extra };
}
