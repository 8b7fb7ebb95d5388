// What a committed change did, read off the rows it touched (store/statements.ts `observer`):
// who asked, each reservation that was reserved, attached, detached or released, and why. The
// audit log (audit.ts), the counters (metrics.ts) and the reservation stream (events.ts) all
// read it, once the change is durable (ApiServer.mutate).
import type { OwnershipOp } from "./ownership";
import type { Row, RowChange, Statements } from "./store/statements";

/** Who asked for a change: the API peer (SO_PEERCRED), or one of the daemon's own sides. */
export type Actor = { uid: number; pid: number } | "kubernetes" | "reconciler" | "spool" | "ttl" | "ipamd";

export type EventType = "reserved" | "attached" | "detached" | "released";

/** One reservation's change in one request. */
export interface Change {
  event: EventType;
  /** The reservation as it is now; for `released`, as it was. */
  row: Row;
  /** A new sandbox of the same pod took the address from its previous sandbox. */
  takeover?: boolean;
  /** `released` of a sticky reservation whose address a running container keeps (containerID/ifName now owns it). */
  heldBy?: string;
  /** For `attached` in an ADD: new, sticky-again or pinned. */
  allocation?: "new" | "sticky-again" | "pinned";
}

/** Collects the row changes made while `run` runs (synchronously, inside the request's savepoint). */
export function capture<T>(store: Statements, run: () => T): { value: T; changes: Change[] } {
  const changes: Change[] = [];
  const previous = store.observer;
  store.observer = (c) => {
    previous?.(c);
    const change = describe(c, changes);
    if (change) changes.push(change);
  };
  try {
    return { value: run(), changes };
  } finally {
    store.observer = previous;
  }
}

function describe(c: RowChange, earlier: Change[]): Change | undefined {
  switch (c.change) {
    case "insert": {
      const row = c.after!;
      if (!row.container_id) return { event: "reserved", row };
      return { event: "attached", row, allocation: row.pinned ? "pinned" : "new" };
    }
    case "attach": {
      const row = c.after!;
      const from = c.before?.container_id;
      return { event: "attached", row, allocation: "sticky-again", ...(from && from !== row.container_id ? { takeover: true } : {}) };
    }
    case "detach":
      return { event: "detached", row: c.after! };
    case "setPinned": {
      // Pinned right after it was attached or reserved in the same request: one change, pinned.
      const same = [...earlier].reverse().find((e) => e.row.id === c.after!.id && e.event !== "released");
      if (same) {
        same.row = c.after!;
        return undefined;
      }
      return { event: "reserved", row: c.after! };
    }
    case "handToAttachment":
      return { event: "released", row: c.before!, heldBy: c.after!.owner };
    case "remove":
      return c.before ? { event: "released", row: c.before } : undefined;
  }
}

/** Why a change happened, from the operation and who asked: the `reason` of the audit lines and the counters. */
export function reasonOf(op: OwnershipOp, actor: Actor): string {
  switch (op.kind) {
    case "allocate":
      return "cni-add";
    case "release":
      return actor === "spool" ? "spool" : "cni-del";
    case "gc":
      return actor === "kubernetes" ? "leak-reconciled" : "gc";
    case "reserve":
      return actor === "kubernetes" ? "statefulset-lifecycle" : "reserve-ahead";
    case "pin":
      return "operator";
    case "releaseReservations":
      return actor === "kubernetes" ? "statefulset-lifecycle" : "operator";
    case "reapExpired":
      return "ttl";
    case "sync":
      return "cluster-sync";
    case "register":
    case "unregister":
      return actor === "kubernetes" ? "statefulset-lifecycle" : "operator";
  }
}

/** The actor as log fields: `actor` is "peer" with its uid and pid, or the daemon side's name. */
export function actorFields(actor: Actor): Record<string, unknown> {
  return typeof actor === "string" ? { actor } : { actor: "peer", peerUid: actor.uid, peerPid: actor.pid };
}

/** Who asks for changes nobody outside asked for. */
export function defaultActor(op: OwnershipOp): Actor {
  if (op.kind === "reapExpired") return "ttl";
  if (op.kind === "sync") return "reconciler";
  return "ipamd";
}
