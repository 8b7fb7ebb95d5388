// Objects and waits shared by the tests of ipamd's Kubernetes side (the test API server is a fixture, not a cluster).
import type { IpamdClient } from "../../api/client";
import type { AllocateResponse } from "../../api/types";
import type { KubeApiServer, KubeObject } from "../helpers/kube/apiserver";

export const nodeObj = (name: string, labels: Record<string, string>): KubeObject => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: { name, labels },
});

export interface PodOptions {
  owner?: { kind: string; name: string; uid: string; apiVersion?: string };
  annotations?: Record<string, string>;
}

export function podObj(namespace: string, name: string, nodeName: string, o: PodOptions = {}): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace,
      ...(o.annotations ? { annotations: o.annotations } : {}),
      ...(o.owner
        ? {
            ownerReferences: [
              {
                apiVersion: o.owner.apiVersion ?? "apps/v1",
                kind: o.owner.kind,
                name: o.owner.name,
                uid: o.owner.uid,
                controller: true,
                blockOwnerDeletion: true,
              },
            ],
          }
        : {}),
    },
    spec: { nodeName, containers: [{ name: "c", image: "busybox" }] },
  };
}

export interface StsOptions {
  replicas?: number;
  start?: number;
  annotations?: Record<string, string>;
  template?: Record<string, string>;
  nodeSelector?: Record<string, string>;
  /** requiredDuringSchedulingIgnoredDuringExecution's nodeSelectorTerms: each term's matchExpressions. */
  affinity?: { key: string; operator: string; values?: string[] }[][];
  /** The same terms' matchFields, by index (metadata.name). */
  affinityFields?: { key: string; operator: string; values?: string[] }[][];
}

export function stsObj(namespace: string, name: string, o: StsOptions = {}): KubeObject {
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: { name, namespace, ...(o.annotations ? { annotations: o.annotations } : {}) },
    spec: {
      replicas: o.replicas ?? 1,
      serviceName: name,
      selector: { matchLabels: { app: name } },
      ...(o.start !== undefined ? { ordinals: { start: o.start } } : {}),
      template: {
        metadata: { labels: { app: name }, ...(o.template ? { annotations: o.template } : {}) },
        spec: {
          ...(o.nodeSelector ? { nodeSelector: o.nodeSelector } : {}),
          ...(o.affinity || o.affinityFields
            ? {
                affinity: {
                  nodeAffinity: {
                    requiredDuringSchedulingIgnoredDuringExecution: {
                      nodeSelectorTerms: Array.from(
                        { length: Math.max(o.affinity?.length ?? 0, o.affinityFields?.length ?? 0) },
                        (_, i) => ({
                          ...(o.affinity?.[i] ? { matchExpressions: o.affinity[i] } : {}),
                          ...(o.affinityFields?.[i] ? { matchFields: o.affinityFields[i] } : {}),
                        }),
                      ),
                    },
                  },
                },
              }
            : {}),
          containers: [{ name: "c", image: "busybox" }],
        },
      },
    },
  };
}

/** Creates the StatefulSet and its member pod `ordinal` on `node`; returns the pod's UID. */
export function memberPod(
  api: KubeApiServer,
  namespace: string,
  sts: string,
  ordinal: number,
  node: string,
  annotations?: Record<string, string>,
): string {
  const set = api.get("apps/statefulsets", namespace, sts)!;
  const pod = api.create(
    "pods",
    podObj(namespace, `${sts}-${ordinal}`, node, { owner: { kind: "StatefulSet", name: sts, uid: set.metadata.uid! }, annotations }),
  );
  return pod.metadata.uid!;
}

export async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await ok()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let containers = 0;

/** ADD as a runtime would for the pod: a fresh container ID each time. */
export function add(
  client: IpamdClient,
  namespace: string,
  name: string,
  uid: string | undefined,
  extra: Record<string, unknown> = {},
): Promise<AllocateResponse & { containerID: string }> {
  const containerID = `ctr-${name}-${++containers}`;
  return client
    .allocate({
      containerID,
      ifName: "eth0",
      network: "underlay",
      podNamespace: namespace,
      podName: name,
      ...(uid ? { podUID: uid } : {}),
      ...extra,
    })
    .then((r) => ({ ...r, containerID }));
}

export const ip = (r: AllocateResponse): string => r.ips[0]!.address.split("/")[0]!;

/** The ips of reservations of one StatefulSet, by ordinal. */
export async function reservedIps(client: IpamdClient, namespace: string, statefulset: string): Promise<Record<number, string>> {
  const { reservations } = await client.reservations({ namespace, statefulset });
  return Object.fromEntries(reservations.map((r) => [r.ordinal!, r.ip]));
}

/** Events (events.k8s.io/v1) the fixture holds for a pod. */
export function eventsFor(api: KubeApiServer, namespace: string, pod: string, kind = "Pod"): KubeObject[] {
  return api.list("events.k8s.io/events", namespace).filter((e) => {
    const about = e.regarding as { kind?: string; name?: string } | undefined;
    return about?.kind === kind && about.name === pod;
  });
}
