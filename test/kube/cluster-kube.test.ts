// The Kubernetes side in cluster mode: REAL ipamd daemons (built bundle, own socket, SQLite file and node name),
// each with the REAL @kubernetes/client-node against the strict test API server (test/helpers/kube, which enforces
// conf/kubernetes/rbac.yaml) and a REAL 3-member etcd. One node leads the cluster-wide releases (the release-leader
// Lease); what it releases is checked in etcd and in both SQLite files.
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ClusterNodeHandle, clusterSection, etcdIps, freshPrefix, sqliteRows } from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { cleanupIpamdTest, makeTempDir, startIpamd } from "../helpers/ipamd";
import { KubeApiServer } from "../helpers/kube/apiserver";
import { add, eventsFor, ip, memberPod, nodeObj, podObj, type StsOptions, stsObj, until } from "./helpers";

let api: KubeApiServer;
let etcd: EtcdCluster;
const prefix = freshPrefix("kube");
const POOL = "ck-v4";
const RACK_POOL = "ck-r7-v4";
const POOLS = [
  { name: POOL, subnet: "10.111.0.0/24", networks: ["underlay"] },
  // Selected only by the Node object's labels (the config gives none): a relabel must make it usable in etcd too.
  { name: RACK_POOL, subnet: "10.112.0.0/24", networks: ["rack7"], nodeSelector: { matchLabels: { rack: "r7" } } },
];
const nodes: ClusterNodeHandle[] = [];
let a: ClusterNodeHandle;
let b: ClusterNodeHandle;

async function node(name: string): Promise<ClusterNodeHandle> {
  const d = await startIpamd({
    dir: makeTempDir(`berth-ck-${name}-`),
    config: {
      node: { name },
      pools: POOLS,
      cooldownSeconds: 0,
      kubernetes: { leakGraceSeconds: 30, reconcileSeconds: 0.5, apiTimeoutSeconds: 3, leaderLeaseSeconds: 2, leaderRetrySeconds: 0.3 },
      // A long grace: a dead node's addresses come back early only because its Node object was deleted.
      cluster: clusterSection(etcd, prefix, { nodeGraceSeconds: 300, leaseTTLSeconds: 2, buffer: { low: 2, high: 4 } }),
    },
    args: ["--kubeconfig", api.kubeconfigPath],
  });
  const n = Object.assign(d, { name });
  nodes.push(n);
  return n;
}

beforeAll(async () => {
  [api, etcd] = await Promise.all([KubeApiServer.start({ bookmarkIntervalMs: 0 }), EtcdCluster.start()]);
  for (const n of ["ck-a", "ck-b", "ck-c"]) api.create("nodes", nodeObj(n, {}));
  [a, b] = await Promise.all([node("ck-a"), node("ck-b")]);
}, 120_000);
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
  await cleanupIpamdTest();
  await api?.close();
  await etcd?.destroy();
  for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
});

type Sticky = { ip: string; node: string; attachment?: { containerID: string; node: string } };
/** etcd's sticky identities of a StatefulSet: ordinal -> record. */
function stickyOf(namespace: string, sts: string): Map<number, Sticky> {
  const out = new Map<number, Sticky>();
  const base = `${prefix}/sticky/${POOL}/${namespace}/${sts}/`;
  for (const [k, v] of etcd.dump(base)) out.set(Number(k.slice(base.length).split("/")[0]), JSON.parse(v) as Sticky);
  return out;
}
const rowsWith = (n: ClusterNodeHandle, addr: string) => sqliteRows(n).filter((r) => r.ip === addr);
const leader = async (): Promise<ClusterNodeHandle[]> => {
  const out: ClusterNodeHandle[] = [];
  for (const n of [a, b]) if ((await n.client.status()).kubernetes?.releaseLeader) out.push(n);
  return out;
};
/**
 * No address held twice: no address in both SQLite files, and each attached row's address is, in etcd, owned
 * (as an attachment or a sticky identity bound there) by the node whose file holds it.
 */
function noneHeldTwice(): void {
  const onA = new Map(sqliteRows(a).map((r) => [r.ip, r.owner]));
  const both = sqliteRows(b).filter((r) => onA.has(r.ip));
  expect(both.map((r) => `${r.ip}: ${onA.get(r.ip)} on ck-a, ${r.owner} on ck-b`)).toEqual([]);
  const keys = etcdIps(etcd, prefix, POOL);
  for (const n of [a, b]) {
    for (const r of sqliteRows(n).filter((x) => x.container_id)) expect([r.ip, keys.get(r.ip)?.node]).toEqual([r.ip, n.name]);
  }
}
const del = (n: ClusterNodeHandle, containerID: string) => n.client.release({ containerID, ifName: "eth0", network: "underlay" });

describe("1. the release leader (coordination.k8s.io Lease) in cluster mode", () => {
  it("exactly one of the two nodes leads, and the Lease names it with MicroTime renewals", async () => {
    await until("a leader", async () => (await leader()).length === 1);
    const [l] = await leader();
    const lease = api.get("coordination.k8s.io/leases", "kube-system", "berth-release-leader")!;
    expect((lease.spec as { holderIdentity: string }).holderIdentity).toBe(l!.name);
    expect((lease.spec as { renewTime: string }).renewTime).toMatch(/\.\d{6}Z$/);
    // Only the leader watches every Node: each node watches its own Node object, one watch covers all of them.
    const follower = [a, b].find((n) => n !== l)!;
    const nodesWatch = async (n: ClusterNodeHandle) =>
      (await n.client.status()).kubernetes?.watches?.find((w) => w.resource === "nodes")?.state;
    await until("the leader's watch of every Node", async () => (await nodesWatch(l!)) === "watching");
    expect(await nodesWatch(follower)).toBe("stopped");
    expect(api.openWatches("nodes")).toBe(3);
  }, 30_000);
});

describe("2. a StatefulSet pod found by its ownerReference moves to another node", () => {
  it("web-0 on ck-a, recreated on ck-b (new pod UID): the same address, bound to ck-b in etcd, in ck-b's SQLite only", async () => {
    api.create("apps/statefulsets", stsObj("c2", "web"));
    const uid1 = memberPod(api, "c2", "web", 0, "ck-a");
    const first = await add(a.client, "c2", "web-0", uid1);
    expect(first).toMatchObject({ owner: "c2/web/0", sticky: true });
    const addr = ip(first);
    expect(stickyOf("c2", "web").get(0)).toMatchObject({ ip: addr, node: "ck-a", attachment: { node: "ck-a" } });
    await del(a, first.containerID);
    api.remove("pods", "c2", "web-0");
    const uid2 = memberPod(api, "c2", "web", 0, "ck-b");
    const second = await add(b.client, "c2", "web-0", uid2);
    expect(ip(second)).toBe(addr);
    expect(stickyOf("c2", "web").get(0)).toMatchObject({ ip: addr, node: "ck-b", attachment: { containerID: second.containerID } });
    await until("ck-a's row to follow etcd", () => rowsWith(a, addr).length === 0);
    expect(rowsWith(b, addr)).toEqual([expect.objectContaining({ owner: "c2/web/0", container_id: second.containerID })]);
    // Not registered anywhere: neither node's config lists it, no ipamctl register.
    expect(etcd.dump(`${prefix}/statefulset/c2/`).size).toBe(0);
    noneHeldTwice();
  }, 60_000);
});

describe("3. scale-down and deletion under Delete, released once for the cluster", () => {
  it("scale-down: a gone pod's ordinal is released, a living one's is not, one recreated meanwhile holds one address", async () => {
    const retention = { "berth.dev/ip-retention": JSON.stringify({ whenScaled: "Delete" }) };
    api.create("apps/statefulsets", stsObj("c3", "db", { replicas: 4, annotations: retention }));
    const on = [a, b, a, b];
    const adds = [];
    for (let o = 0; o < 4; o++) {
      const uid = memberPod(api, "c3", "db", o, on[o]!.name);
      adds.push(await add(on[o]!.client, "c3", `db-${o}`, uid));
    }
    const addr = adds.map(ip);
    expect(new Set(addr).size).toBe(4);

    // Scale to 1: db-1's pod is gone (DEL, deleted), db-2's pod still lives (detached by a DEL but not deleted),
    // db-3's pod is deleted and at once recreated on the other node, ADDed while the leader releases.
    await del(b, adds[1]!.containerID);
    api.remove("pods", "c3", "db-1");
    await del(a, adds[2]!.containerID);
    await del(b, adds[3]!.containerID);
    api.patch("apps/statefulsets", "c3", "db", { spec: { replicas: 1 } });
    api.remove("pods", "c3", "db-3");
    const uid3 = memberPod(api, "c3", "db", 3, "ck-a");
    const again3 = await add(a.client, "c3", "db-3", uid3);

    await until("db-1 released in etcd", () => !stickyOf("c3", "db").has(1));
    expect(etcdIps(etcd, prefix, POOL).has(addr[1]!)).toBe(false);
    await until("db-1's rows to follow etcd", () => [a, b].every((n) => rowsWith(n, addr[1]!).length === 0));
    // db-3 lives: its address is held once, by its identity, attached on ck-a (the same one, or a new one when the
    // release won the race before the ADD, the old then free).
    const s3 = stickyOf("c3", "db").get(3)!;
    expect(s3).toMatchObject({ ip: ip(again3), node: "ck-a", attachment: { containerID: again3.containerID } });
    if (ip(again3) !== addr[3]) expect(etcdIps(etcd, prefix, POOL).has(addr[3]!)).toBe(false);
    // db-2's pod lives: kept, through several resync rounds of the leader.
    await new Promise((r) => setTimeout(r, 2000));
    expect(stickyOf("c3", "db").get(2)).toMatchObject({ ip: addr[2] });
    noneHeldTwice();

    api.remove("pods", "c3", "db-2");
    await until("db-2 released once its pod is gone", () => !stickyOf("c3", "db").has(2));
    expect(etcdIps(etcd, prefix, POOL).has(addr[2]!)).toBe(false);
    expect([...stickyOf("c3", "db").keys()].sort()).toEqual([0, 3]);
    // One node acted: the release leader (every release is still a compare-and-swap in etcd).
    const actors = [a, b].filter((n) => n.stderr().includes("released a StatefulSet member's addresses"));
    expect(actors.map((n) => n.name)).toEqual((await leader()).map((n) => n.name));
    await until("db-2's rows to follow etcd", () => [a, b].every((n) => rowsWith(n, addr[2]!).length === 0));
    noneHeldTwice();
  }, 90_000);

  it("deletion (whenDeleted: Delete by default) releases every identity once the pods are gone; Retain keeps them", async () => {
    api.create("apps/statefulsets", stsObj("c3", "gone", { replicas: 2 }));
    api.create("apps/statefulsets", stsObj("c3", "kept", { annotations: { "berth.dev/ip-retention": '{"whenDeleted":"Retain"}' } }));
    const g0 = await add(a.client, "c3", "gone-0", memberPod(api, "c3", "gone", 0, "ck-a"));
    const g1 = await add(b.client, "c3", "gone-1", memberPod(api, "c3", "gone", 1, "ck-b"));
    const k0 = await add(b.client, "c3", "kept-0", memberPod(api, "c3", "kept", 0, "ck-b"));
    await del(a, g0.containerID);
    await del(b, g1.containerID);
    await del(b, k0.containerID);
    for (const p of ["gone-0", "gone-1", "kept-0"]) api.remove("pods", "c3", p);
    api.remove("apps/statefulsets", "c3", "gone");
    api.remove("apps/statefulsets", "c3", "kept");
    await until("gone's identities released", () => stickyOf("c3", "gone").size === 0);
    for (const x of [g0, g1]) {
      expect(etcdIps(etcd, prefix, POOL).has(ip(x))).toBe(false);
      await until("the rows to follow etcd", () => [a, b].every((n) => rowsWith(n, ip(x)).length === 0));
    }
    await new Promise((r) => setTimeout(r, 1500));
    expect(stickyOf("c3", "kept").get(0)).toMatchObject({ ip: ip(k0) });
    noneHeldTwice();
  }, 60_000);

  it("recreated with a new UID under Delete: the new pod on the other node gets a new address, the old is freed", async () => {
    api.create("apps/statefulsets", stsObj("c3", "re"));
    const old = await add(a.client, "c3", "re-0", memberPod(api, "c3", "re", 0, "ck-a"));
    await del(a, old.containerID);
    api.remove("pods", "c3", "re-0");
    api.remove("apps/statefulsets", "c3", "re");
    api.create("apps/statefulsets", stsObj("c3", "re"));
    const fresh = await add(b.client, "c3", "re-0", memberPod(api, "c3", "re", 0, "ck-b"));
    // The old incarnation's identity is released at the new pod's ADD. A cluster-wide release frees the address in
    // etcd at once (no cross-node cooldown yet), so the new pod may be handed that same, now free, address.
    expect(stickyOf("c3", "re").get(0)).toMatchObject({ ip: ip(fresh), node: "ck-b" });
    if (ip(fresh) !== ip(old)) await until("the old address free in etcd", () => !etcdIps(etcd, prefix, POOL).has(ip(old)));
    const same = ip(fresh) === ip(old) ? 1 : 0; // b's row of the new pod, when it got the freed address
    await until("the old row to follow etcd", () => rowsWith(a, ip(old)).length === 0 && rowsWith(b, ip(old)).length === same);
    noneHeldTwice();
  }, 60_000);
});

describe("reserve at creation in cluster mode", () => {
  it("reserves once for the cluster, bound to no node, in neither SQLite file; the pod then attaches the reserved address", async () => {
    api.create("apps/statefulsets", stsObj("c5", "kafka", { replicas: 3, annotations: { "berth.dev/reserve": "true" } }));
    await until("three identities", () => stickyOf("c5", "kafka").size === 3);
    await new Promise((r) => setTimeout(r, 1500)); // further resync rounds on both nodes add nothing
    const reserved = stickyOf("c5", "kafka");
    expect([...reserved.keys()].sort()).toEqual([0, 1, 2]);
    for (const r of reserved.values()) expect(r).toMatchObject({ node: "" });
    for (const r of reserved.values()) {
      expect(etcdIps(etcd, prefix, POOL).get(r.ip)).toMatchObject({ owner: "sticky", node: "" });
      for (const n of [a, b]) expect(rowsWith(n, r.ip)).toEqual([]);
    }
    const k1 = await add(b.client, "c5", "kafka-1", memberPod(api, "c5", "kafka", 1, "ck-b"));
    expect(ip(k1)).toBe(reserved.get(1)!.ip);
    expect(stickyOf("c5", "kafka").get(1)).toMatchObject({ node: "ck-b", attachment: { containerID: k1.containerID } });
    noneHeldTwice();
  }, 60_000);
});

describe("4. node deletion", () => {
  it("a dead node's buffered and plain addresses return as soon as its Node object is deleted; its sticky identities stay", async () => {
    const c = await node("ck-c");
    api.create("apps/statefulsets", stsObj("c4", "st"));
    const plain = await add(c.client, "c4", "nginx", "uid-nginx");
    api.create("pods", podObj("c4", "nginx", "ck-c"));
    const member = await add(c.client, "c4", "st-0", memberPod(api, "c4", "st", 0, "ck-c"));
    const ofC = () => [...etcdIps(etcd, prefix, POOL)].filter(([, v]) => v.node === "ck-c");
    expect(ofC().some(([, v]) => v.owner === "buffer")).toBe(true);
    // A plain attachment leaves its key as ck-c's buffer (docs/cluster.md): ck-c owns it, which is what node loss frees.
    expect(ofC().find(([k]) => k === ip(plain))?.[1]).toMatchObject({ owner: "buffer", node: "ck-c" });
    await c.kill9();
    await until("ck-c's liveness key to expire", () => !etcd.dump(`${prefix}/node/`).has(`${prefix}/node/ck-c`));
    await new Promise((r) => setTimeout(r, 1500));
    expect(ofC().filter(([, v]) => v.owner !== "sticky").length).toBeGreaterThan(0); // the 300 s grace holds them
    api.remove("nodes", undefined, "ck-c");
    await until("ck-c's buffer and attachments to return", () => ofC().every(([, v]) => v.owner === "sticky"), 10_000);
    expect(stickyOf("c4", "st").get(0)).toMatchObject({ ip: ip(member), node: "ck-c" });
    expect(etcdIps(etcd, prefix, POOL).get(ip(member))).toMatchObject({ owner: "sticky" });
    expect(etcdIps(etcd, prefix, POOL).has(ip(plain))).toBe(false);
  }, 60_000);
});

describe("5. pools selected by the Node object's labels", () => {
  it("a node labelled rack=r7 only in the API allocates from the rack's pool; unlabelled, it hands the buffer back", async () => {
    api.create("nodes", nodeObj("ck-d", { rack: "r7" }));
    const d = await node("ck-d");
    const got = await add(d.client, "c5", "web-x", undefined, { network: "rack7" });
    expect(ip(got)).toMatch(/^10\.112\.0\./);
    expect(etcdIps(etcd, prefix, RACK_POOL).get(ip(got))).toMatchObject({ node: "ck-d" });
    const ofD = () => [...etcdIps(etcd, prefix, RACK_POOL)].filter(([, v]) => v.node === "ck-d" && v.owner === "buffer");
    await until("ck-d's buffer of the rack pool", () => ofD().length > 1);
    // Another node, not in rack r7, neither buffers nor allocates there.
    expect([...etcdIps(etcd, prefix, RACK_POOL)].filter(([, v]) => v.node !== "ck-d")).toEqual([]);
    const refused = await add(a.client, "c5", "web-y", undefined, { network: "rack7" }).catch((e: unknown) => e);
    expect((refused as { code?: string }).code).toBe("no_pool");
    // Reserve at creation (by the leader, which rack r7 does not include) in the pools of the template's nodeSelector.
    api.create(
      "apps/statefulsets",
      stsObj("c5", "zk", {
        replicas: 2,
        annotations: { "berth.dev/reserve": "true" },
        template: { "berth.dev/pools": JSON.stringify([RACK_POOL]) },
        nodeSelector: { rack: "r7" },
      }),
    );
    const zk = () => {
      const base = `${prefix}/sticky/${RACK_POOL}/c5/zk/`;
      return new Map([...etcd.dump(base)].map(([k, v]) => [Number(k.slice(base.length).split("/")[0]), JSON.parse(v) as Sticky]));
    };
    await until("zk's two identities in the rack pool", () => zk().size === 2);
    for (const r of zk().values()) expect(r).toMatchObject({ node: "" });
    const zk1 = await add(d.client, "c5", "zk-1", memberPod(api, "c5", "zk", 1, "ck-d"), { network: "rack7" });
    expect(ip(zk1)).toBe(zk().get(1)!.ip);
    expect(zk().get(1)).toMatchObject({ node: "ck-d", attachment: { containerID: zk1.containerID } });
    // Required node affinity instead of a nodeSelector: rack In (r7) is r7's pool; rack In (r7, r8) spans racks, so
    // no pool selects every node the pods may run on, and nothing is reserved (an address must work where the pod lands).
    const sticky = (sts: string) => etcd.dump(`${prefix}/sticky/${RACK_POOL}/c5/${sts}/`);
    /** Two replicas reserved at creation in the rack pool, placed by `placement`. */
    const reserving = (sts: string, placement: Pick<StsOptions, "affinity" | "affinityFields">) =>
      api.create(
        "apps/statefulsets",
        stsObj("c5", sts, {
          replicas: 2,
          annotations: { "berth.dev/reserve": "true" },
          template: { "berth.dev/pools": JSON.stringify([RACK_POOL]) },
          ...placement,
        }),
      );
    reserving("kf", { affinity: [[{ key: "rack", operator: "In", values: ["r7"] }]] });
    reserving("wide", { affinity: [[{ key: "rack", operator: "In", values: ["r7", "r8"] }]] });
    await until("kf's two identities in the rack pool", () => sticky("kf").size === 2);
    for (const v of sticky("kf").values()) expect(JSON.parse(v)).toMatchObject({ node: "" });
    const refusal = (sts: string) =>
      [a, b, d]
        .flatMap((n) => n.stderr().split("\n"))
        .find((l) => l.includes(`c5/${sts}`) && l.includes("cannot reserve addresses at creation"));
    const refusedWide = () => refusal("wide");
    await until("the leader's refusal to reserve wide", () => refusedWide() !== undefined);
    const why =
      `pool "${RACK_POOL}" does not select the nodes of node affinity rack In (r7, r8) ` +
      `(its nodeSelector {"matchLabels":{"rack":"r7"}} does not select every one of them)`;
    expect((JSON.parse(refusedWide()!) as { err: string }).err).toBe(why);
    expect(sticky("wide").size).toBe(0);
    await until("the refusal as an Event on the StatefulSet", () => eventsFor(api, "c5", "wide", "StatefulSet").length > 0);
    expect(eventsFor(api, "c5", "wide", "StatefulSet")).toEqual([
      expect.objectContaining({ reason: "ReserveFailed", note: `cannot reserve addresses at creation: ${why}` }),
    ]);
    // Pinned by node name (matchFields metadata.name, as the scheduler takes it): the leader reads the named Node
    // objects. ck-d is in rack r7, so r7's pool works wherever the pods land; ck-d or ck-a (no rack) spans racks.
    const named = (sts: string, names: string[]) =>
      reserving(sts, { affinityFields: [[{ key: "metadata.name", operator: "In", values: names }]] });
    named("pinned", ["ck-d"]);
    named("spread", ["ck-d", "ck-a"]);
    await until("pinned's two identities in the rack pool", () => sticky("pinned").size === 2);
    for (const v of sticky("pinned").values()) expect(JSON.parse(v)).toMatchObject({ node: "" });
    await until("the leader's refusal to reserve spread", () => refusal("spread") !== undefined);
    expect((JSON.parse(refusal("spread")!) as { err: string }).err).toBe(
      `pool "${RACK_POOL}" does not select the nodes of node affinity metadata.name In (ck-d, ck-a) ` +
        `(its nodeSelector {"matchLabels":{"rack":"r7"}} does not select every one of them)`,
    );
    expect(sticky("spread").size).toBe(0);
    // Every node reads a retention annotation (each keeps the policy): all of them say it is invalid, in one Event.
    api.create("apps/statefulsets", stsObj("c5", "odd", { annotations: { "berth.dev/ip-retention": "{not json" } }));
    const saidOdd = () =>
      [a, b, d].filter((n) =>
        n
          .stderr()
          .split("\n")
          .some((l) => l.includes("c5/odd") && l.includes("invalid retention annotation")),
      );
    await until("every node's warning", () => saidOdd().length === 3);
    await until("the Event", () => eventsFor(api, "c5", "odd", "StatefulSet").length > 0);
    await new Promise((r) => setTimeout(r, 500));
    expect(eventsFor(api, "c5", "odd", "StatefulSet")).toEqual([
      expect.objectContaining({ reason: "InvalidAnnotation", action: "ApplyRetentionPolicy" }),
    ]);
    // The label goes: the unused buffer goes back to the pool; the attached addresses stay with their pods.
    api.patch("nodes", undefined, "ck-d", { metadata: { labels: { rack: "r8" } } });
    await until("ck-d's unused rack-pool addresses handed back", () => ofD().filter(([k]) => k !== ip(got)).length === 0, 10_000);
    // No node (the leader included) keeps a buffer in a pool that does not select it.
    expect([...etcdIps(etcd, prefix, RACK_POOL)].filter(([, v]) => v.owner === "buffer" && v.node !== "ck-d")).toEqual([]);
    expect(etcdIps(etcd, prefix, RACK_POOL).get(ip(got))).toMatchObject({ node: "ck-d" });
  }, 60_000);
});

describe("6. RBAC in cluster mode", () => {
  it("no request was refused (401/403): the Lease, every Node, pods and StatefulSets are within conf/kubernetes/rbac.yaml", () => {
    const refused = api.requests.filter((r) => r.status === 401 || r.status === 403);
    expect(refused.map((r) => `${r.method} ${r.path} -> ${r.status}`)).toEqual([]);
    const used = new Set(api.requests.filter((r) => r.resource).map((r) => `${r.resource} ${r.verb}`));
    expect([...used]).toEqual(
      expect.arrayContaining(["coordination.k8s.io/leases get", "coordination.k8s.io/leases update", "nodes watch"]),
    );
  });
});
