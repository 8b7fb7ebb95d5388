// The audit trail: one JSON log line per committed change of a reservation (field `audit` names
// what happened), one per StatefulSet (un)registration, and one per refused change: who asked
// (`actor`), the address, owner, pool, node, the attachment and pod, the reason and the event's
// sequence number in the reservation stream (events.ts), when the stream carries it (cluster mode streams sticky
// reservations from etcd instead).
import type { Logger } from "pino";
import { type Actor, actorFields } from "./changes";
import { ApiError } from "./errors";
import type { CommittedEvent } from "./events";
import type { OwnershipOp } from "./ownership";

export class Audit {
  constructor(
    private readonly log: Logger,
    private readonly node: string,
  ) {}

  /** The committed events of one request. */
  committed(op: OwnershipOp, actor: Actor, events: CommittedEvent[]): void {
    const who = actorFields(actor);
    for (const e of events) {
      const r = e.reservation;
      this.log.info(
        {
          audit: e.type,
          ...who,
          op: op.kind,
          reason: e.reason,
          seq: e.seq,
          ip: r.ip,
          owner: r.owner,
          pool: r.pool,
          node: this.node,
          sticky: r.sticky,
          pinned: r.pinned,
          ...(r.containerID ? { containerID: r.containerID, ifName: r.ifName, network: r.network } : {}),
          ...(r.podName ? { pod: `${r.podNamespace ?? ""}/${r.podName}` } : {}),
          ...(e.heldBy ? { heldBy: e.heldBy } : {}),
        },
        `${r.ip} ${e.type} (${r.owner}, pool ${r.pool}, ${e.reason})`,
      );
    }
    if (op.kind === "register" || op.kind === "unregister") {
      const sts = `${op.req.namespace}/${op.req.statefulset}`;
      this.log.info({ audit: `statefulset-${op.kind}ed`, ...who, op: op.kind, statefulset: sts, node: this.node }, `${sts} ${op.kind}ed`);
    }
  }

  /** A change that was refused (or failed): what was asked, by whom, and the error. */
  refused(op: OwnershipOp, actor: Actor, error: unknown): void {
    const code = error instanceof ApiError ? error.code : "internal";
    const message = error instanceof Error ? error.message : String(error);
    this.log.info(
      { audit: "refused", ...actorFields(actor), op: op.kind, code, node: this.node, ...asked(op) },
      `${op.kind} refused: ${message}`,
    );
  }

  /** Cluster mode: an operator change made in etcd (the local record follows through the sync). */
  operated(kind: string, actor: Actor, request: object, outcome: { result: unknown } | { error: unknown }): void {
    const who = actorFields(actor);
    if ("error" in outcome) {
      this.refused({ kind: kind as "reserve", req: request } as OwnershipOp, actor, outcome.error);
      return;
    }
    this.log.info(
      { audit: "cluster-operation", ...who, op: kind, node: this.node, request, result: outcome.result },
      `${kind} done in etcd`,
    );
  }
}

/** The request's identifying fields, for a refusal's line. */
function asked(op: OwnershipOp): Record<string, unknown> {
  if (!("req" in op)) return "reason" in op ? { reason: op.reason } : {};
  const r = op.req as unknown as Record<string, unknown>;
  const keep = [
    "containerID",
    "ifName",
    "network",
    "podNamespace",
    "podName",
    "namespace",
    "statefulset",
    "ordinal",
    "ip",
    "pool",
    "force",
  ];
  return Object.fromEntries(keep.filter((k) => r[k] !== undefined).map((k) => [k, r[k]]));
}
