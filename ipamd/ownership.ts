// THE SEAM: who may own an address. The rules (allocator.ts) decide what a request does; this
// interface decides which address is free for it, and records what the rules gave back.
//
// Every mutating request runs in two steps:
//   1. `const ticket = await ownership.prepare(op)`, outside any transaction. Single node: a
//      no-op. Cluster mode: the etcd work the request needs before it may commit (bind a sticky
//      identity to this node, claim a requested address, refill the node's buffer), every change
//      a compare-and-swap.
//   2. `committer.submit(() => rules.x(req, now, ticket))`: the rules run in the request's
//      savepoint of the SQLite group commit and call the synchronous methods below with the
//      ticket; nothing in them may wait on the network.
// Then exactly one of `committed(ticket)` (the local commit is durable: cluster mode applies
// releases and ended identities to etcd, through an outbox that survives etcd being down) or
// `abandoned(ticket, error)` (the request failed or its commit did: undo what prepare claimed).
//
// The local SQLite record (`reservations`: which attachment or member holds which address on
// this node) stays the rules' business in both modes; the ownership owns the address space
// around it (single node: the per-pool cursor of never-used addresses and the cooldown table).
import type {
  AllocateRequest,
  AttachmentRequest,
  GcRequest,
  PinRequest,
  ReleaseReservationRequest,
  ReserveRequest,
  StatefulSetRequest,
} from "../api/types";
import type { Located, Pool } from "./pools";
import type { Row } from "./store/statements";

/** A mutating request, as `prepare` sees it. */
export type OwnershipOp =
  | { kind: "allocate"; req: AllocateRequest }
  | { kind: "release"; req: AttachmentRequest }
  | { kind: "gc"; req: GcRequest }
  | { kind: "reserve"; req: ReserveRequest }
  | { kind: "pin"; req: PinRequest }
  | { kind: "releaseReservations"; req: ReleaseReservationRequest }
  | { kind: "register" | "unregister"; req: StatefulSetRequest }
  | { kind: "reapExpired" }
  /** The ownership's own fix-ups of the local record (cluster mode: follow what etcd says of sticky identities). */
  | { kind: "sync"; reason: string };

/** What `prepare` learnt or claimed for one request; an implementation extends it with its own state. */
export interface OwnershipTicket {
  readonly op: OwnershipOp;
}

export interface AddressOwnership {
  /** Step 1, before the transaction: may await the network. Must not touch SQLite's write path. */
  prepare(op: OwnershipOp): Promise<OwnershipTicket>;

  // ---- step 2, inside the request's savepoint (synchronous) ----

  /** A free address from the first of `pools` that has one; throws ApiError pool_exhausted naming why. */
  take(pools: readonly Pool[], now: number, ticket: OwnershipTicket): Located;
  /**
   * A specific address (requested in `ips`, or pinned) that no row on this node holds any more:
   * make it ours, or throw ApiError ip_unavailable. It skips the cooldown.
   */
  claim(address: Located, now: number, ticket: OwnershipTicket): void;
  /** An address the rules freed (its row is gone): back to the pool, after the cooldown. */
  giveBack(ip: string, pool: string, now: number, ticket: OwnershipTicket): void;

  /** A sticky identity's (owner = namespace/statefulset/ordinal) addresses on this node: at most one per pool. */
  findSticky(owner: string, ticket: OwnershipTicket): Row[];
  /** The rules bound (created or attached) the sticky identity of `row.owner` to `row.ip` in `row.pool`. */
  bindSticky(row: Row, ticket: OwnershipTicket): void;
  /** The rules ended the sticky identity of `row.owner` in `row.pool` (release, pin elsewhere, TTL). */
  endSticky(row: Row, ticket: OwnershipTicket): void;

  /**
   * Optional, inside the savepoint right after the rule returned `result`: record what the rule did that the
   * calls above do not show (cluster mode: a DEL's detached sticky addresses go to the outbox in the same commit).
   */
  inCommit?(ticket: OwnershipTicket, result: unknown): void;

  // ---- after the commit (exactly one of these per ticket) ----

  /**
   * The request's changes are durable in SQLite; its reply is sent when this returns (or its promise settles:
   * cluster mode lets a DEL wait, briefly and bounded, until etcd has its release).
   */
  committed(ticket: OwnershipTicket): void | Promise<void>;
  /** The request failed, or the commit holding it did: nothing of it is durable. */
  abandoned(ticket: OwnershipTicket, error: unknown): void;
}
