// The release policy of StatefulSet addresses, shaped like persistentVolumeClaimRetentionPolicy
// (annotation berth.dev/ip-retention; defaults whenDeleted: Delete, whenScaled: Retain):
//   - deleted, or recreated with a new UID, under whenDeleted: Delete -> its identities are released;
//   - scaled down under whenScaled: Delete -> ordinals outside [start, start+replicas) are released
//     once their pods are gone (spec.ordinals.start respected);
//   - ttl -> identities detached for longer are released;
//   - berth.dev/reserve: "true" -> every replica's addresses are reserved as soon as the object exists.
// Every release is one ordinal, through the same rule as `ipamctl release` (releaseReservations,
// without force), and only after a fresh GET of the pod (it must not exist) and of the StatefulSet
// (it must still call for the release): a pod recreated meanwhile keeps its address, either because
// the re-check sees it or because its ADD attached the address and the rule then refuses.
// Where the addresses are (members.ts): this node's SQLite, or in cluster mode the shared identities
// in etcd (one release is then a compare-and-swap there); who acts: the ReleaseElector.
import type { V1StatefulSet } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { ReleaseReservationRequest, ReserveRequest } from "../../api/types";
import { ApiError } from "../errors";
import type { NodeIpam } from "../node";
import type { OwnershipOp, OwnershipTicket } from "../ownership";
import type { MemberAddresses } from "./members";
import { namedNodes, type Placement, placementMatches } from "../pools";
import type { Member } from "../statefulsets";
import {
  DEFAULT_RETENTION,
  InvalidAnnotation,
  parseReserve,
  parseRetention,
  POOLS,
  poolsFor,
  RESERVE,
  type Retention,
  RETENTION,
} from "./annotations";
import { type KubeConnection, statusOf, withDeadline } from "./connection";
import type { ReleaseElector } from "./elector";
import type { EventReason, EventRecorder } from "./events";
import { ADD_FETCH_MS, type Pods } from "./pods";
import type { ResilientWatch } from "./watch";

/** The two steps of a change, as the API server runs them (ApiServer.mutate). */
export type Mutate = <T>(op: OwnershipOp, rule: (ticket: OwnershipTicket) => T) => Promise<T>;

type Why = { kind: "deleted"; uid: string } | { kind: "scaled"; uid: string } | { kind: "ttl"; ttlMs: number };

export interface LifecycleDeps {
  kube: KubeConnection;
  statefulSets: ResilientWatch<V1StatefulSet>;
  pods: Pods;
  node: NodeIpam;
  nodeName: string;
  mutate: Mutate;
  /** Where members' addresses are read and ended (this node's rows, or etcd in cluster mode). */
  members: MemberAddresses;
  elector: ReleaseElector;
  /** Warning Events on the StatefulSet, beside the log line, for what its owner must fix. */
  events?: EventRecorder;
  log: Logger;
  timeoutMs: number;
  /** Counts each release by reason (metrics). */
  released?: (reason: Why["kind"], ips: string[]) => void;
}

export class StatefulSetLifecycle {
  private readonly queue = new Set<string>();
  private draining?: Promise<void>;

  /** The last warning per StatefulSet and kind: one that repeats every resync is said once, until it changes. */
  private readonly warned = new Map<string, string>();

  constructor(private readonly d: LifecycleDeps) {}

  /** Logs the warning and puts it on the StatefulSet as an Event (`msg`, then why: `err`). */
  private warnOnce(sts: V1StatefulSet, kind: "retention" | "reserve", reason: EventReason, err: string, msg: string): void {
    const { namespace, name, uid } = sts.metadata as { namespace: string; name: string; uid?: string };
    const statefulset = `statefulset ${namespace}/${name}`;
    const key = `${statefulset} ${kind}`;
    if (this.warned.get(key) === err) return;
    this.warned.set(key, err);
    this.d.log.warn({ statefulset, err }, msg);
    const action = kind === "retention" ? "ApplyRetentionPolicy" : "ReserveAddresses";
    this.d.events?.warnStatefulSet({ namespace, name, ...(uid ? { uid } : {}) }, reason, action, `${msg}: ${err}`);
  }

  /** Looks at one StatefulSet again soon (after a watch event, a pod deletion, or a resync). */
  enqueue(namespace: string, name: string): void {
    this.queue.add(`${namespace}/${name}`);
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
  }

  /** Every StatefulSet the watch has, and every one seen before (a deletion missed while ipamd was down). */
  resync(): void {
    for (const s of this.d.statefulSets.list()) this.enqueue(s.metadata!.namespace!, s.metadata!.name!);
    for (const t of this.d.node.statefulSets.allTracked()) this.enqueue(t.namespace, t.name);
  }

  /** Resolves when the queue is empty (tests and shutdown). */
  async idle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  /**
   * Before the ADD of a member: when the StatefulSet of that name last seen had another UID and said
   * whenDeleted: Delete, the new one must not inherit the address (the pod being added is the new
   * StatefulSet's, so the old pod of that name is gone): the old identity of this ordinal ends first.
   */
  async beforeMemberAdd(m: Member): Promise<void> {
    const tracked = this.d.node.statefulSets.tracked(m.namespace, m.statefulset);
    if (!m.uid || !tracked || tracked.uid === m.uid) return;
    const old = JSON.parse(tracked.retention) as Retention;
    if (old.whenDeleted !== "Delete") return;
    if (!(await this.d.members.held(m.namespace, m.statefulset)).some((h) => h.ordinal === m.ordinal)) return;
    await this.release(m.namespace, m.statefulset, m.ordinal, `StatefulSet recreated (UID ${tracked.uid} -> ${m.uid})`, "deleted");
  }

  private async drain(): Promise<void> {
    for (;;) {
      const next = this.queue.values().next();
      if (next.done) return;
      this.queue.delete(next.value);
      const [namespace, name] = next.value.split("/") as [string, string];
      try {
        await this.reconcile(namespace, name);
      } catch (e) {
        this.d.log.warn(
          { statefulset: next.value, err: (e as Error).message },
          "StatefulSet lifecycle step failed; retried at the next resync",
        );
      }
    }
  }

  private async reconcile(namespace: string, name: string): Promise<void> {
    const { statefulSets: watch, node, elector } = this.d;
    if (!watch.synced) return; // never decide from a partial or stale cache
    const current = watch.get(name, namespace);
    const tracked = node.statefulSets.tracked(namespace, name);
    const known = tracked ? (JSON.parse(tracked.retention) as Retention) : undefined;
    const retention = current ? this.retentionOf(current, known) : (known ?? DEFAULT_RETENTION);
    const leader = elector.isLeader();

    if (tracked && (!current || current.metadata?.uid !== tracked.uid)) {
      if (known!.whenDeleted === "Delete" && leader) {
        const what = current ? `StatefulSet recreated (UID ${tracked.uid} -> ${current.metadata!.uid})` : "StatefulSet deleted";
        let all = true;
        for (const ordinal of await this.ordinalsHeld(namespace, name)) {
          all = (await this.releaseChecked(namespace, name, ordinal, { kind: "deleted", uid: tracked.uid }, what)) && all;
        }
        if (!all) return; // a pod still lives: the next event or resync tries again
      }
      if (!current && (known!.whenDeleted === "Delete" || !(await this.ordinalsHeld(namespace, name)).length)) {
        await this.d.mutate({ kind: "unregister", req: { namespace, statefulset: name } }, () =>
          node.statefulSets.untrack(namespace, name),
        );
        return;
      }
    }
    if (current) await this.track(current, retention, tracked);
    if (!leader) return;

    if (current && retention.whenScaled === "Delete") {
      const { start, replicas } = range(current);
      for (const ordinal of await this.ordinalsHeld(namespace, name)) {
        if (ordinal >= start && ordinal < start + replicas) continue;
        await this.releaseChecked(
          namespace,
          name,
          ordinal,
          { kind: "scaled", uid: current.metadata!.uid! },
          `scaled down to ${replicas} replicas from ordinal ${start}`,
        );
      }
    }
    const ttlMs = retention.ttlMs;
    if (ttlMs) {
      const before = Date.now() - ttlMs;
      const expired = (await this.d.members.held(namespace, name)).filter(
        (h) => !h.pinned && h.detachedSince !== undefined && h.detachedSince < before,
      );
      for (const { ordinal } of expired) {
        await this.releaseChecked(namespace, name, ordinal, { kind: "ttl", ttlMs }, `detached for longer than its ttl (${ttlMs / 1000}s)`);
      }
    }
    if (current) await this.reserveAtCreation(current);
  }

  private retentionOf(sts: V1StatefulSet, fallback: Retention | undefined): Retention {
    const where = `statefulset ${sts.metadata!.namespace}/${sts.metadata!.name}`;
    try {
      return parseRetention(sts.metadata?.annotations?.[RETENTION], where);
    } catch (e) {
      if (!(e instanceof InvalidAnnotation)) throw e;
      this.warnOnce(
        sts,
        "retention",
        "InvalidAnnotation",
        e.message,
        "ignoring an invalid retention annotation; keeping the policy last seen",
      );
      return fallback ?? DEFAULT_RETENTION;
    }
  }

  /** Records the UID and policy when they changed (so a deletion is recognised after a restart too). */
  private async track(sts: V1StatefulSet, retention: Retention, tracked: { uid: string; retention: string } | undefined): Promise<void> {
    const { namespace, name, uid } = sts.metadata as { namespace: string; name: string; uid: string };
    const policy = JSON.stringify(retention);
    if (tracked && tracked.uid === uid && tracked.retention === policy) return;
    await this.d.mutate({ kind: "register", req: { namespace, statefulset: name } }, () =>
      this.d.node.statefulSets.track({ namespace, name, uid, retention: policy, seen_at: Date.now() }),
    );
  }

  private async ordinalsHeld(namespace: string, name: string): Promise<number[]> {
    return (await this.d.members.held(namespace, name)).map((h) => h.ordinal);
  }

  /** Re-checks the pod and the StatefulSet now, then releases the ordinal's identities. True when released. */
  private async releaseChecked(namespace: string, name: string, ordinal: number, why: Why, what: string): Promise<boolean> {
    if (!this.d.elector.isLeader()) return false;
    const podName = `${name}-${ordinal}`;
    let sts: V1StatefulSet | undefined;
    try {
      // A GET by name, whatever node the pod is on (cluster mode: it may be on any node).
      if (await this.d.pods.get(namespace, podName)) return false; // the pod lives (or is back): its address stays
      sts = await this.getStatefulSet(namespace, name);
    } catch (e) {
      this.d.log.warn({ member: `${namespace}/${name}/${ordinal}`, err: (e as Error).message }, "cannot re-check before a release; later");
      return false;
    }
    if (why.kind === "deleted" && sts?.metadata?.uid === why.uid) return false; // not gone after all
    if (why.kind === "scaled") {
      if (!sts || sts.metadata?.uid !== why.uid) return false; // deleted or replaced: that path decides
      const { start, replicas } = range(sts);
      if (ordinal >= start && ordinal < start + replicas) return false; // scaled up again
      if (this.retentionOf(sts, undefined).whenScaled !== "Delete") return false;
    }
    return this.release(namespace, name, ordinal, what, why.kind);
  }

  /** The release itself: the operator's rule, without force, so an address a pod attached meanwhile is never freed. */
  private async release(namespace: string, name: string, ordinal: number, what: string, reason: Why["kind"]): Promise<boolean> {
    const req: ReleaseReservationRequest = { namespace, statefulset: name, ordinal };
    try {
      const ips = await this.d.members.release(req);
      if (ips.length) {
        this.d.log.info({ member: `${namespace}/${name}/${ordinal}`, ips, why: what }, "released a StatefulSet member's addresses");
      }
      this.d.released?.(reason, ips);
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.code === "reservation_attached") return false; // its pod came back and attached
      throw e;
    }
  }

  /** A StatefulSet the watch does not have yet (its pod's ADD came first): one GET; undefined when absent or the API cannot tell. */
  async fetchStatefulSet(namespace: string, name: string): Promise<V1StatefulSet | undefined> {
    try {
      return await this.getStatefulSet(namespace, name, Math.min(this.d.timeoutMs, ADD_FETCH_MS));
    } catch (e) {
      this.d.log.warn({ statefulset: `${namespace}/${name}`, err: (e as Error).message }, "cannot fetch the StatefulSet at ADD");
      return undefined;
    }
  }

  private async getStatefulSet(namespace: string, name: string, timeoutMs = this.d.timeoutMs): Promise<V1StatefulSet | undefined> {
    try {
      return await withDeadline(
        this.d.kube.apps.readNamespacedStatefulSet({ namespace, name }),
        timeoutMs,
        `get statefulset ${namespace}/${name}`,
      );
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  /**
   * berth.dev/reserve: "true": addresses for every replica now, before any pod exists. A node reserves
   * only when the pods may land on it (the template's nodeSelector and required node affinity match its
   * labels) and the pools (berth.dev/pools of the template, else the node's) select it. Cluster-wide, the
   * pools are those that select every node the template allows.
   */
  private async reserveAtCreation(sts: V1StatefulSet): Promise<void> {
    const { namespace, name } = sts.metadata as { namespace: string; name: string };
    const where = `statefulset ${namespace}/${name}`;
    let reserve: boolean;
    let pools: string[] | undefined;
    try {
      reserve = parseReserve(sts.metadata?.annotations?.[RESERVE], where);
      if (!reserve) return;
      pools = poolsFor(sts.spec?.template?.metadata?.annotations?.[POOLS], "*", `the pod template of ${where}`);
    } catch (e) {
      this.warnOnce(sts, "reserve", "InvalidAnnotation", (e as Error).message, "not reserving at creation: invalid annotation");
      return;
    }
    // Cluster mode: once, for the whole cluster (the leader), bound to no node until a pod attaches.
    const placement = placementOf(sts);
    if (!this.d.members.clusterWide && !placementMatches(placement, this.d.node.pools.labels, this.d.nodeName)) return;
    if (this.d.members.clusterWide && namedNodes(placement).length > 0) {
      try {
        placement.nodes = await this.nodeLabels(namedNodes(placement));
      } catch (e) {
        const err = `cannot read the nodes its node affinity names (matchFields metadata.name): ${(e as Error).message}`;
        this.warnOnce(sts, "reserve", "ReserveFailed", err, "cannot reserve addresses at creation");
        return;
      }
    }
    const { start, replicas } = range(sts);
    const held = new Set(await this.ordinalsHeld(namespace, name));
    let missing = false;
    for (let o = start; o < start + replicas; o++) if (!held.has(o)) missing = true;
    if (!missing) return;
    const req: ReserveRequest = { namespace, statefulset: name, replicas, ordinalStart: start, ...(pools ? { pools } : {}) };
    try {
      const ips = await this.d.members.reserve(req, placement);
      this.d.log.info({ statefulset: where, ips, clusterWide: this.d.members.clusterWide }, "reserved addresses at creation");
    } catch (e) {
      this.warnOnce(sts, "reserve", "ReserveFailed", (e as Error).message, "cannot reserve addresses at creation");
    }
  }

  /** The labels of the nodes named (a name with no Node object is left out: no pod of the template runs there). */
  private async nodeLabels(names: string[]): Promise<Map<string, Record<string, string>>> {
    const out = new Map<string, Record<string, string>>();
    for (const name of names) {
      const list = await withDeadline(
        this.d.kube.core.listNode({ fieldSelector: `metadata.name=${name}` }),
        this.d.timeoutMs,
        `get node ${name}`,
      );
      for (const n of list.items) if (n.metadata?.name === name) out.set(name, n.metadata.labels ?? {});
    }
    return out;
  }
}

/**
 * Where the StatefulSet's pods may run: the template's nodeSelector and its required node affinity's terms, with their
 * matchFields (metadata.name, the only field the scheduler takes there). Preferred terms say nothing of where pods
 * may not run, so they do not narrow the pools.
 */
function placementOf(sts: V1StatefulSet): Placement {
  const spec = sts.spec?.template?.spec;
  const terms = spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? [];
  const fields = terms.map((t) => t.matchFields ?? []);
  return {
    ...(spec?.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
    ...(terms.length > 0 ? { affinityTerms: terms.map((t) => t.matchExpressions ?? []) } : {}),
    ...(fields.some((f) => f.length > 0) ? { affinityFields: fields } : {}),
  };
}

function range(sts: V1StatefulSet): { start: number; replicas: number } {
  return { start: sts.spec?.ordinals?.start ?? 0, replicas: sts.spec?.replicas ?? 1 };
}
