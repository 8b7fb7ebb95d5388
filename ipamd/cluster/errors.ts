// Errors of the cluster ownership layer. `retryable` ones become CNI code 11 ("try again later") for a sticky ADD.
export class ClusterError extends Error {
  constructor(
    readonly code:
      | "pool_exhausted"
      | "l2_domain"
      | "attached_elsewhere"
      | "fenced"
      | "inconsistent"
      | "reservation_attached"
      | "ip_unavailable",
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

export const poolExhausted = (pool: string, size: bigint, owned: number): ClusterError =>
  new ClusterError(
    "pool_exhausted",
    `pool "${pool}" has no free address on any node (${owned} of ${size} owned in etcd; other nodes were asked to hand back ` +
      "unused buffered addresses); release unused reservations or add a range to the pool",
    false,
  );

export const l2Domain = (pool: string, selector: unknown, node: string): ClusterError =>
  new ClusterError(
    "l2_domain",
    `pool "${pool}" does not select node ${node} (nodeSelector ${JSON.stringify(selector ?? {})}): a sticky address of this pool ` +
      "is only handed out on a node of its L2 domain; schedule the pod onto a node the selector matches, or fix the node labels",
    false,
  );

export const attachedElsewhere = (identity: string, a: { containerID: string; podUID?: string; node: string }): ClusterError =>
  new ClusterError(
    "attached_elsewhere",
    `sticky identity ${identity} is still attached to sandbox ${a.containerID}` +
      `${a.podUID ? ` (pod UID ${a.podUID})` : ""} on node ${a.node}, which is alive and has not applied its CNI DEL yet; ` +
      "retry after the old pod is deleted",
    true,
  );

export const fenced = (node: string, silentMs: number): ClusterError =>
  new ClusterError(
    "fenced",
    `node ${node} has not renewed its etcd liveness for ${Math.round(silentMs / 1000)} s: its buffered addresses may already have ` +
      "been returned to the pool by other nodes; refusing to hand them out until etcd is reachable again",
    true,
  );
