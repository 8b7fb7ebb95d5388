// The Kubernetes side of ipamd, assembled: the connection, three watches (this Node, the pods on
// this node, every StatefulSet), membership from ownerReferences, annotations at ADD, the release
// policy, the leak reconciler, Events, and their state in GET /v1/status and the metrics. Every
// change it makes goes through the API server's two steps (ownership, then the rule in the group
// commit), as any request does. Cluster mode adds the release-leader Lease (one node acts on the
// cluster-wide releases, through the operator calls on etcd) and a watch of every Node (a deleted
// Node's buffered and non-sticky addresses return at once).
import type { V1Node, V1Pod, V1StatefulSet } from "@kubernetes/client-node";
import { Counter, Gauge } from "prom-client";
import type { Logger } from "pino";
import type { AllocateRequest } from "../../api/types";
import { StickyPoolOffNode } from "../allocator";
import type { ClusterNode } from "../cluster/node";
import type { ClusterOperator } from "../cluster/operator";
import type { Config } from "../config";
import { ApiError } from "../errors";
import type { Metrics } from "../metrics";
import type { NodeIpam } from "../node";
import type { NodeSelector } from "../pools";
import type { KubeHooks } from "../server";
import { InvalidAnnotation, IPS, ipsFor, POOLS, poolsFor } from "./annotations";
import { connectKube, type KubeConnection, withDeadline } from "./connection";
import { LeaseElector, type ReleaseElector, SoleNode } from "./elector";
import { EventRecorder } from "./events";
import { type Mutate, StatefulSetLifecycle } from "./lifecycle";
import { ClusterMembers, LocalMembers } from "./members";
import { memberOfPod, Pods } from "./pods";
import { LeakReconciler } from "./reconciler";
import { ResilientWatch } from "./watch";

export interface KubeSideOptions {
  config: Config;
  node: NodeIpam;
  mutate: Mutate;
  log: Logger;
  metrics: Metrics;
  version: string;
  /** Who acts on cluster-wide releases; default: the release-leader Lease in cluster mode, else this node (SoleNode). */
  elector?: ReleaseElector;
  /** Cluster mode: the shared identities (operator calls) and the reaper of dead nodes. */
  cluster?: { operator: ClusterOperator; node: Pick<ClusterNode, "nodeDeleted" | "nodeSeen" | "membership"> };
}

/** The coordination.k8s.io/v1 Lease that names the node acting on cluster-wide releases (RBAC: leases in kube-system). */
export const RELEASE_LEASE = { namespace: "kube-system", name: "berth-release-leader" };

export interface KubeSide {
  hooks: KubeHooks;
  connection: KubeConnection;
  /** One leak-reconcile round and one lifecycle resync, now (also run at start and every reconcileSeconds). */
  reconcile(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the Kubernetes side, or returns undefined when no API is configured (labels and StatefulSets from the config). */
export async function startKubernetes(o: KubeSideOptions): Promise<KubeSide | undefined> {
  const { config, node, log } = o;
  const settings = config.kubernetes;
  const kube = connectKube(settings, o.version, config.nodeName);
  if (!kube) return undefined;
  const klog = log.child({ component: "kubernetes" });
  const nodeName = config.nodeName;
  const timeoutMs = settings.apiTimeoutMs;
  const elector =
    o.elector ??
    (o.cluster
      ? new LeaseElector(
          kube.leases,
          {
            ...RELEASE_LEASE,
            identity: nodeName,
            leaseDurationMs: settings.leaderLeaseMs,
            retryMs: settings.leaderRetryMs,
            timeoutMs,
          },
          klog,
        )
      : new SoleNode());

  const nodeWatch = new ResilientWatch<V1Node>(
    kube,
    {
      resource: "node",
      path: "/api/v1/nodes",
      fieldSelector: `metadata.name=${nodeName}`,
      list: () => kube.core.listNode({ fieldSelector: `metadata.name=${nodeName}` }),
    },
    klog,
  );
  const podWatch = new ResilientWatch<V1Pod>(
    kube,
    {
      resource: "pods",
      path: "/api/v1/pods",
      fieldSelector: `spec.nodeName=${nodeName}`,
      list: () => kube.core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${nodeName}` }),
    },
    klog,
  );
  const stsWatch = new ResilientWatch<V1StatefulSet>(
    kube,
    {
      resource: "statefulsets",
      path: "/apis/apps/v1/statefulsets",
      list: () => kube.apps.listStatefulSetForAllNamespaces(),
    },
    klog,
  );
  // Cluster mode: every Node, for the deletion of another node's object (the reaper's cue). Only the release
  // leader watches them (one watch of every Node in the cluster, not one per node); the others reap a dead node
  // after the grace period, as without Kubernetes.
  const allNodes = o.cluster
    ? new ResilientWatch<V1Node>(kube, { resource: "nodes", path: "/api/v1/nodes", list: () => kube.core.listNode() }, klog)
    : undefined;
  const leaderOnly = elector instanceof LeaseElector ? allNodes : undefined;
  const watches = [nodeWatch, podWatch, stsWatch, ...(allNodes ? [allNodes] : [])];

  const up = new Gauge({
    name: "berth_ipamd_kube_watch_up",
    help: "1 while the watch is listed and streaming, 0 while it is (re)starting or stopped (every Node: release leader only)",
    labelNames: ["resource"],
    registers: [o.metrics.registry],
  });
  const restarts = new Gauge({
    name: "berth_ipamd_kube_watch_restarts",
    help: "Restarts of the watch after an error since ipamd started",
    labelNames: ["resource"],
    registers: [o.metrics.registry],
  });
  const releases = new Counter({
    name: "berth_ipamd_kube_released_addresses_total",
    help: "Addresses released by the Kubernetes side, by reason (deleted, scaled, ttl, leaked, node-deleted)",
    labelNames: ["reason"],
    registers: [o.metrics.registry],
  });
  for (const w of watches) {
    w.onState = (s) => {
      up.set({ resource: s.resource }, s.state === "watching" ? 1 : 0);
      restarts.set({ resource: s.resource }, s.restarts);
    };
  }

  const pods = new Pods(podWatch, kube, klog, timeoutMs);
  node.statefulSets.source = pods;
  if (o.cluster) o.cluster.node.membership.source = pods; // the etcd step of an ADD asks the same pods
  const events = new EventRecorder(kube, nodeName, klog, timeoutMs);
  const lifecycle = new StatefulSetLifecycle({
    kube,
    statefulSets: stsWatch,
    pods,
    node,
    nodeName,
    mutate: o.mutate,
    members: o.cluster ? new ClusterMembers(o.cluster.operator) : new LocalMembers(node, o.mutate),
    elector,
    events,
    log: klog,
    timeoutMs,
    released: (reason, ips) => {
      if (ips.length) releases.inc({ reason }, ips.length);
    },
  });
  const leaks = new LeakReconciler(pods, node, o.mutate, settings.leakGraceMs, klog);

  const relabel = (n: V1Node): void => {
    const labels = n.metadata?.labels ?? {};
    const before = node.pools.selected.map((p) => p.name).join(",");
    const selected = node.pools.relabel(labels);
    if (selected.join(",") !== before) klog.info({ labels, pools: selected }, "node labels changed: pools re-selected");
  };
  nodeWatch.on("add", relabel);
  nodeWatch.on("update", relabel);
  nodeWatch.on("delete", () => klog.warn({ node: nodeName }, "the Node object is gone; keeping the labels last seen"));
  if (allNodes && o.cluster) {
    const cluster = o.cluster.node;
    const seen = (n: V1Node): void => cluster.nodeSeen(n.metadata!.name!);
    allNodes.on("add", seen);
    allNodes.on("update", seen);
    allNodes.on("delete", (n) => {
      const name = n.metadata!.name!;
      if (name === nodeName) return;
      const leader = elector.isLeader();
      klog.info({ node: name, reapNow: leader }, "a Node object was deleted: its buffered and non-sticky addresses return without grace");
      cluster.nodeDeleted(name, leader).then(
        (r) => {
          const freed = r?.freed.filter((f) => f.node === name).length ?? 0;
          if (freed) releases.inc({ reason: "node-deleted" }, freed);
        },
        (e: unknown) => klog.warn({ node: name, err: (e as Error).message }, "cannot reap the deleted node now; the reaper retries"),
      );
    });
  }
  const stsChanged = (s: V1StatefulSet): void => lifecycle.enqueue(s.metadata!.namespace!, s.metadata!.name!);
  stsWatch.on("add", stsChanged);
  stsWatch.on("update", stsChanged);
  stsWatch.on("delete", stsChanged);
  podWatch.on("delete", (p) => {
    // a scale-down's pod is gone: its ordinal may be released now
    const m = memberOfPod(p);
    if (m) lifecycle.enqueue(m.namespace, m.statefulset);
  });

  const takeover = node.rules.onTakeover;
  node.rules.onTakeover = (row, req) => {
    takeover?.(row, req);
    const a = req as AllocateRequest;
    if (a.podNamespace && a.podName) {
      events.warn(
        { namespace: a.podNamespace, name: a.podName, uid: a.podUID },
        "AddressTakeover",
        "AllocateAddress",
        `${row.owner}'s address ${row.ip} was still attached to container ${row.container_id} (pod ${row.pod_namespace}/` +
          `${row.pod_name}${row.pod_uid ? `, UID ${row.pod_uid}` : ""}) and was taken over by this pod's container ` +
          `${a.containerID}: the old sandbox's CNI DEL never came; make sure it is gone`,
      );
    }
  };

  const hooks: KubeHooks = {
    async prepareAllocate(req: AllocateRequest): Promise<AllocateRequest> {
      if (!req.podNamespace || !req.podName) return req;
      const pod = await pods.lookup(req.podNamespace, req.podName, req.podUID);
      if (!pod) return req;
      const m = memberOfPod(pod);
      const sts = m
        ? (stsWatch.get(m.statefulset, m.namespace) ?? (await lifecycle.fetchStatefulSet(m.namespace, m.statefulset)))
        : undefined;
      const own = pod.metadata?.annotations ?? {};
      const template = sts?.spec?.template?.metadata?.annotations ?? {};
      const pick = (a: string): [string | undefined, string] =>
        a in own
          ? [own[a], `pod ${req.podNamespace}/${req.podName}`]
          : [template[a], `the pod template of statefulset ${m?.namespace}/${m?.statefulset}`];
      const [poolsValue, poolsWhere] = pick(POOLS);
      const pools = req.pools?.length ? req.pools : poolsFor(poolsValue, req.ifName, poolsWhere);
      const [ipsValue, ipsWhere] = pick(IPS);
      const ips = req.ips?.length ? req.ips : ipsFor(ipsValue, req.ifName, m?.ordinal ?? 0, ipsWhere);
      if (m) await lifecycle.beforeMemberAdd(m);
      return { ...req, ...(pools ? { pools } : {}), ...(ips ? { ips } : {}) };
    },
    allocateFailed(req: AllocateRequest, e: unknown): void {
      if (!req.podNamespace || !req.podName) return;
      const pod = { namespace: req.podNamespace, name: req.podName, uid: req.podUID };
      if (e instanceof InvalidAnnotation) events.warn(pod, "InvalidAnnotation", "AllocateAddress", e.message);
      else if (e instanceof StickyPoolOffNode) {
        events.warn(
          pod,
          "StickyPoolNotOnNode",
          "AllocateAddress",
          nodesOf(kube, e.pool.selector, timeoutMs).then((nodes) => `${e.message}. Nodes the pool selects: ${nodes}`),
        );
      } else if (e instanceof ApiError && e.code === "no_pool") events.warn(pod, "NoPoolForNode", "AllocateAddress", e.message);
      else if (e instanceof ApiError && e.code === "pool_exhausted") events.warn(pod, "PoolExhausted", "AllocateAddress", e.message);
      else if (e instanceof ApiError && e.code === "previous_sandbox_attached") {
        events.warn(pod, "PreviousSandboxAttached", "AllocateAddress", e.message);
      }
    },
    status: () => ({
      mode: kube.mode,
      server: kube.server,
      userAgent: kube.userAgent,
      watches: watches.map((w) => w.status()),
      releaseLeader: elector.isLeader(),
    }),
  };

  const reconcile = async (): Promise<void> => {
    lifecycle.resync();
    await lifecycle.idle();
    const ips = await leaks.run();
    if (ips.length) releases.inc({ reason: "leaked" }, ips.length);
  };
  let round: Promise<void> | undefined;
  const tick = (): Promise<void> => {
    round ??= reconcile()
      .catch((e) => {
        klog.error({ err: e }, "Kubernetes reconcile round failed");
      })
      .finally(() => {
        round = undefined;
      });
    return round;
  };

  // A new leader looks at everything at once (what the previous one left, deletions while none led).
  if (elector instanceof LeaseElector) {
    elector.onChange = (leading) => {
      if (leading) {
        leaderOnly?.start();
        void tick();
      } else void leaderOnly?.stop();
    };
  }
  for (const w of watches) if (w !== leaderOnly) w.start();
  elector.start();
  // The first ADDs should see the Node's labels: wait a little for them, never for long (the API may be down).
  await Promise.race([nodeWatch.whenSynced(), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  void Promise.all([podWatch.whenSynced(), stsWatch.whenSynced()]).then(() => tick());
  const timer = setInterval(() => void tick(), settings.reconcileMs);
  timer.unref();
  klog.info({ mode: kube.mode, source: kube.source, server: kube.server, userAgent: kube.userAgent }, "watching the Kubernetes API");

  return {
    hooks,
    connection: kube,
    reconcile: tick,
    async stop() {
      clearInterval(timer);
      await Promise.all(watches.map((w) => w.stop()));
      await elector.stop();
      await round;
      await events.flush();
    },
  };
}

/** "a, b, c" (at most 10): the nodes whose labels the selector matches, as the API lists them now. */
async function nodesOf(kube: KubeConnection, selector: NodeSelector, timeoutMs: number): Promise<string> {
  try {
    const list = await withDeadline(kube.core.listNode({ labelSelector: labelSelector(selector) }), timeoutMs, "list nodes");
    const names = list.items.map((n) => n.metadata?.name ?? "?");
    return names.length === 0 ? "none" : names.slice(0, 10).join(", ") + (names.length > 10 ? ` and ${names.length - 10} more` : "");
  } catch (e) {
    return `unknown (cannot list nodes: ${(e as Error).message})`;
  }
}

/** A pool's nodeSelector in the apiserver's label selector syntax. */
export function labelSelector(s: NodeSelector): string {
  const terms = Object.entries(s.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of s.matchExpressions ?? []) {
    if (e.operator === "In") terms.push(`${e.key} in (${(e.values ?? []).join(",")})`);
    else if (e.operator === "NotIn") terms.push(`${e.key} notin (${(e.values ?? []).join(",")})`);
    else if (e.operator === "Exists") terms.push(e.key);
    else terms.push(`!${e.key}`);
  }
  return terms.join(",");
}
