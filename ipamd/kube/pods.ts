// The pods on this node (a watch with fieldSelector=spec.nodeName=<node>) and what they are: a pod
// is a StatefulSet member when its controller ownerReference is an apps/v1 StatefulSet (the member
// carries that StatefulSet's UID) and its name is <statefulset>-<ordinal>. A Deployment pod whose
// random suffix is all digits is no member: its controller is a ReplicaSet. At ADD, a pod not yet in
// the cache is fetched once; the ADD never waits for the watch.
import type { V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type Member, member, type MembershipSource } from "../statefulsets";
import { type KubeConnection, statusOf, withDeadline } from "./connection";
import type { ResilientWatch } from "./watch";

const ORDINAL = /^(0|[1-9][0-9]{0,8})$/;
/** A pod fetched at ADD is kept this long for the rules, until the watch has it. */
const FETCHED_TTL_MS = 5 * 60_000;
/** At most this long on the ADD path (the plugin's own deadline is 10 s), whatever the API deadline. */
export const ADD_FETCH_MS = 2000;

/** The pod's StatefulSet membership by its controller ownerReference (null: not a member). */
export function memberOfPod(pod: V1Pod): Member | null {
  const { namespace, name } = pod.metadata ?? {};
  const ref = pod.metadata?.ownerReferences?.find((r) => r.controller);
  if (!namespace || !name || !ref || ref.kind !== "StatefulSet" || ref.apiVersion !== "apps/v1") return null;
  const prefix = `${ref.name}-`;
  if (!name.startsWith(prefix)) return null;
  const ordinal = name.slice(prefix.length);
  return ORDINAL.test(ordinal) ? member(namespace, ref.name, Number(ordinal), ref.uid) : null;
}

export class Pods implements MembershipSource {
  private readonly fetched = new Map<string, { pod: V1Pod; at: number }>();

  constructor(
    readonly watch: ResilientWatch<V1Pod>,
    private readonly kube: KubeConnection,
    private readonly log: Logger,
    private readonly timeoutMs: number,
  ) {
    const forget = (p: V1Pod): void => {
      const k = key(p.metadata?.namespace, p.metadata?.name);
      if (this.fetched.get(k)?.pod.metadata?.uid === p.metadata?.uid) this.fetched.delete(k);
    };
    watch.on("add", forget);
    watch.on("delete", forget);
  }

  /** The pod from the cache (or fetched lately), when it is the one with `uid` (any, without a uid). */
  find(namespace: string, name: string, uid?: string): V1Pod | undefined {
    const cached = this.watch.get(name, namespace);
    if (cached && (!uid || cached.metadata?.uid === uid)) return cached;
    const f = this.fetched.get(key(namespace, name));
    if (f && f.at > Date.now() - FETCHED_TTL_MS && (!uid || f.pod.metadata?.uid === uid)) return f.pod;
    return undefined;
  }

  /** find(), else one GET (bounded by the API deadline). Undefined when the API does not have it or cannot be asked. */
  async lookup(namespace: string, name: string, uid?: string): Promise<V1Pod | undefined> {
    const known = this.find(namespace, name, uid);
    if (known) return known;
    try {
      const pod = await this.get(namespace, name, Math.min(this.timeoutMs, ADD_FETCH_MS));
      if (!pod || (uid && pod.metadata?.uid !== uid)) return undefined;
      this.fetched.set(key(namespace, name), { pod, at: Date.now() });
      if (this.fetched.size > 10_000) this.fetched.clear();
      return pod;
    } catch (e) {
      this.log.warn(
        { pod: `${namespace}/${name}`, err: (e as Error).message },
        "cannot fetch the pod at ADD; membership from the config and registrations only",
      );
      return undefined;
    }
  }

  /** One GET of the pod, now (re-checks before a release): undefined when it does not exist; throws when the API cannot tell. */
  async get(namespace: string, name: string, timeoutMs = this.timeoutMs): Promise<V1Pod | undefined> {
    try {
      return await withDeadline(this.kube.core.readNamespacedPod({ namespace, name }), timeoutMs, `get pod ${namespace}/${name}`);
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  memberOf(namespace: string, podName: string, podUID?: string): Member | null | undefined {
    const pod = this.find(namespace, podName, podUID);
    return pod ? memberOfPod(pod) : undefined;
  }
}

function key(namespace: string | undefined, name: string | undefined): string {
  return `${namespace ?? ""}/${name ?? ""}`;
}
