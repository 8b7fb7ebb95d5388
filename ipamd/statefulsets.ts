// StatefulSet membership. With the Kubernetes API (ipamd/kube), a pod is a member when its
// controller ownerReference is an apps/v1 StatefulSet. Without it (or for a pod the API does not
// know), only when its StatefulSet is known to ipamd (listed in the config, or registered through
// the API), never from the `-<digits>` name pattern alone.
import type { StatefulSetsResponse, UnregisterResponse } from "../api/types";
import type { Statements, TrackedStatefulSet } from "./store/statements";

/** A StatefulSet member: the sticky owner `namespace/statefulset/ordinal` (uid: the StatefulSet's, when the API told it). */
export interface Member {
  namespace: string;
  statefulset: string;
  ordinal: number;
  owner: string;
  uid?: string;
}

/** Membership as the Kubernetes API tells it. */
export interface MembershipSource {
  /** The member a pod is; null when the API says it is none; undefined when the API does not know the pod (UID-aware). */
  memberOf(namespace: string, podName: string, podUID?: string): Member | null | undefined;
}

const ORDINAL = /^(0|[1-9][0-9]{0,6})$/;

export function member(namespace: string, statefulset: string, ordinal: number, uid?: string): Member {
  return { namespace, statefulset, ordinal, owner: ownerOf({ namespace, statefulset, ordinal }), ...(uid ? { uid } : {}) };
}

/** A member's owner in the reservations table (and in listings): namespace/statefulset/ordinal. */
export function ownerOf(m: { namespace: string; statefulset: string; ordinal: number }): string {
  return `${m.namespace}/${m.statefulset}/${m.ordinal}`;
}

export class StatefulSets {
  private readonly configured: Set<string>;
  /** The Kubernetes API's answer, when ipamd watches it; its word is final for the pods it knows. */
  source?: MembershipSource;

  constructor(
    private readonly store: Statements,
    private readonly fromConfig: { namespace: string; name: string }[],
  ) {
    this.configured = new Set(fromConfig.map((s) => `${s.namespace}/${s.name}`));
  }

  /** The member a pod is, or null when it is not a pod of a known StatefulSet. */
  memberOf(namespace: string | undefined, podName: string | undefined, podUID?: string): Member | null {
    if (!namespace || !podName) return null;
    const fromApi = this.source?.memberOf(namespace, podName, podUID);
    if (fromApi !== undefined) return fromApi;
    const dash = podName.lastIndexOf("-");
    if (dash <= 0) return null;
    const name = podName.slice(0, dash);
    const ordinal = podName.slice(dash + 1);
    if (!ORDINAL.test(ordinal)) return null;
    // Only StatefulSets the daemon knows: a Deployment pod's random suffix can be all digits.
    const known = this.configured.has(`${namespace}/${name}`) || this.store.statefulSetKnown(namespace, name);
    return known ? member(namespace, name, Number(ordinal)) : null;
  }

  register(namespace: string, name: string, now: number): void {
    this.store.registerStatefulSet(namespace, name, now);
  }

  unregister(namespace: string, name: string): UnregisterResponse {
    const unregistered = this.store.unregisterStatefulSet(namespace, name);
    return { unregistered, configured: this.configured.has(`${namespace}/${name}`) };
  }

  /** Records the UID and retention policy last seen through the API (ipamd/kube), inside the caller's transaction. */
  track(t: TrackedStatefulSet): void {
    this.store.trackStatefulSet(t);
  }

  untrack(namespace: string, name: string): void {
    this.store.untrackStatefulSet(namespace, name);
  }

  tracked(namespace: string, name: string): TrackedStatefulSet | undefined {
    return this.store.trackedStatefulSet(namespace, name);
  }

  allTracked(): TrackedStatefulSet[] {
    return this.store.trackedStatefulSets();
  }

  list(): StatefulSetsResponse {
    const fromConfig = this.fromConfig.map((s) => ({ ...s, source: "config" as const }));
    const fromApi = this.store
      .registeredStatefulSets()
      .filter((s) => !this.configured.has(`${s.namespace}/${s.name}`))
      .map((s) => ({
        namespace: s.namespace,
        name: s.name,
        source: "api" as const,
        registeredAt: new Date(s.registered_at).toISOString(),
      }));
    return { statefulsets: [...fromConfig, ...fromApi] };
  }
}
