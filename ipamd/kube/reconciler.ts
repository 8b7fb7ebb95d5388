// Leaks reconciled without CNI GC (containerd never sends it): at start and periodically, this
// node's attachments are compared with the pods on this node. An attachment whose pod is gone (no
// pod of that name, or one with another UID) for longer than the grace period is released, after a
// fresh GET of the pod just before, through the CNI GC rule: sticky addresses are detached and kept
// for their member, others freed; an attachment made after this round began is never touched (the
// rule compares attached_at with the round's start).
import type { Logger } from "pino";
import type { GcRequest } from "../../api/types";
import type { NodeIpam } from "../node";
import type { Row } from "../store/statements";
import type { Mutate } from "./lifecycle";
import type { Pods } from "./pods";

export class LeakReconciler {
  /** When each suspect attachment was first seen without its pod. */
  private readonly goneSince = new Map<string, number>();

  constructor(
    private readonly pods: Pods,
    private readonly node: NodeIpam,
    private readonly mutate: Mutate,
    private readonly graceMs: number,
    private readonly log: Logger,
  ) {}

  /** One round; the addresses released or detached. */
  async run(): Promise<string[]> {
    if (!this.pods.watch.synced) return []; // an empty cache would make every attachment look leaked
    const startedAt = Date.now();
    const rows = this.node.store.attached();
    const suspects = rows.filter((r) => r.pod_namespace && r.pod_name && !this.alive(r));
    const keys = new Set(suspects.map(keyOf));
    for (const k of this.goneSince.keys()) if (!keys.has(k)) this.goneSince.delete(k);
    for (const k of keys) if (!this.goneSince.has(k)) this.goneSince.set(k, startedAt);
    const due = suspects.filter((r) => this.goneSince.get(keyOf(r))! <= startedAt - this.graceMs);
    const confirmed: Row[] = [];
    for (const r of due) {
      try {
        const pod = await this.pods.get(r.pod_namespace!, r.pod_name!);
        if (pod && (!r.pod_uid || pod.metadata?.uid === r.pod_uid)) {
          this.goneSince.delete(keyOf(r));
          continue;
        } // it came back
        confirmed.push(r);
      } catch (e) {
        this.log.warn({ pod: `${r.pod_namespace}/${r.pod_name}`, err: (e as Error).message }, "cannot re-check a leak suspect; next round");
      }
    }
    const out: string[] = [];
    for (const network of new Set(confirmed.map((r) => r.network!))) {
      const leaked = new Set(confirmed.filter((r) => r.network === network).map(keyOf));
      const validAttachments = rows
        .filter((r) => r.network === network && !leaked.has(keyOf(r)))
        .map((r) => ({ containerID: r.container_id!, ifName: r.ifname! }));
      const req: GcRequest = { network, validAttachments };
      const res = await this.mutate({ kind: "gc", req }, (t) => this.node.rules.gc(req, startedAt, Date.now(), t));
      for (const r of confirmed.filter((c) => c.network === network)) this.goneSince.delete(keyOf(r));
      const ips = [...res.released, ...res.detached];
      if (ips.length) {
        this.log.info(
          {
            network,
            released: res.released,
            detached: res.detached,
            pods: confirmed.filter((c) => c.network === network).map((c) => `${c.pod_namespace}/${c.pod_name} (${c.pod_uid ?? "no uid"})`),
          },
          "reconciled attachments whose pods are gone",
        );
      }
      out.push(...ips);
    }
    return out;
  }

  private alive(r: Row): boolean {
    return this.pods.find(r.pod_namespace!, r.pod_name!, r.pod_uid ?? undefined) !== undefined;
  }
}

function keyOf(r: Row): string {
  return `${r.container_id}\0${r.ifname}\0${r.network}`;
}
