// "What it must show" 4: the L2-domain rule (through the BUILT berth-ipam plugin: CNI error JSON naming the pool,
// its selector and the node), the node-death grace period (short in the test: a node back within it keeps
// everything, after it its buffered and plain addresses return but its sticky identities never do), and
// reserve-ahead / pin / release from one node used by a pod on another.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, runIpamctl } from "../helpers/ipamd";
import { etcdIps, freshPrefix, restartNode, startClusterNodes, until } from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { createNetns, removeNetns, type TestNetns } from "../helpers/netns";
import { pluginPath, runCni } from "../helpers/plugins";

let etcd: EtcdCluster;
let ns: TestNetns;
beforeAll(async () => {
  etcd = await EtcdCluster.start();
  ns = createNetns("l2");
}, 60_000);
afterAll(async () => {
  removeNetns(ns);
  await cleanupIpamdTest();
  await etcd?.destroy();
});

const STS = { statefulSets: [{ namespace: "db", name: "web" }] };
const at = (id: string, pod?: string) => ({
  containerID: id,
  ifName: "eth0",
  network: "underlay",
  ...(pod ? { podNamespace: "db", podName: pod, podUID: `uid-${id}` } : {}),
});

describe("the L2-domain rule", () => {
  it("a member's address is handed out only on a node its pool selects; elsewhere CNI error 102 names pool, " +
    "selector and node", async () => {
    const prefix = freshPrefix("l2");
    const pools = [
      { name: "rack1", subnet: "10.84.0.0/24", networks: ["underlay"], nodeSelector: { matchLabels: { rack: "r1" } } },
      { name: "rack2", subnet: "10.85.0.0/24", networks: ["underlay"], nodeSelector: { matchLabels: { rack: "r2" } } },
    ];
    const [a, b, c] = await startClusterNodes(
      etcd,
      [
        { name: "r1-a", labels: { rack: "r1" } },
        { name: "r1-b", labels: { rack: "r1" } },
        { name: "r2-c", labels: { rack: "r2" } },
      ],
      { pools, prefix, extra: STS },
    );
    const first = await a!.client.allocate(at("w0-a", "web-0"));
    expect(first.ips[0]).toMatchObject({ pool: "rack1" });
    await a!.client.release(at("w0-a"));
    const config = { cniVersion: "1.0.0", name: "underlay", type: "berth-ipam", socket: c!.socket };
    const add = runCni(pluginPath("berth-ipam"), {
      command: "ADD",
      config: { ...config, ipam: { type: "berth-ipam", socket: c!.socket } },
      containerId: "w0-c",
      netns: ns.path,
      ifName: "eth0",
      cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=web-0",
    });
    expect(add.code).not.toBe(0);
    expect(add.json.code).toBe(102);
    expect(add.json.msg).toContain('pool "rack1" does not select node r2-c (nodeSelector {"matchLabels":{"rack":"r1"}})');
    expect(add.json.details).toMatch(/schedule the pod onto a node whose labels/);
    // Nothing moved: still bound to a, and no identity was created in c's pool.
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/rack1/db/web/0/-`)!)).toMatchObject({ node: "r1-a" });
    expect(etcd.dump(`${prefix}/sticky/rack2/`).size).toBe(0);
    // In its L2 domain it moves freely.
    expect((await b!.client.allocate(at("w0-b", "web-0"))).ips[0]!.address).toBe(first.ips[0]!.address);
    for (const n of [a!, b!, c!]) await n.stop();
  }, 60_000);
});

describe("node death", () => {
  it("within the grace period a node keeps everything; after it, its buffer and plain attachments return, " +
    "its sticky identities stay", async () => {
    const prefix = freshPrefix("grace");
    const pools = [{ name: "g", subnet: "10.86.0.0/24", networks: ["underlay"] }];
    const o = { pools, prefix, extra: STS, cluster: { nodeGraceSeconds: 4, leaseTTLSeconds: 2, buffer: { low: 2, high: 4 } } };
    let [x, y] = await startClusterNodes(etcd, [{ name: "x" }, { name: "y" }], o);
    const plainX = (await x!.client.allocate(at("plain-x"))).ips[0]!.address.split("/")[0]!;
    const memberX = (await x!.client.allocate(at("web1-x", "web-1"))).ips[0]!.address.split("/")[0]!;
    await until("x's outbox applied", async () => (await x!.client.status()).cluster!.outboxPending === 0);
    const ofX = () => [...etcdIps(etcd, prefix, "g")].filter(([, v]) => v.node === "x");
    expect(
      ofX()
        .map(([ip, v]) => [ip, v.owner])
        .sort(),
    ).toEqual(
      expect.arrayContaining([
        [plainX, "buffer"], // a plain attachment's key stays "owned by x"
        [memberX, "sticky"],
      ]),
    );
    const before = ofX().length;
    expect(before).toBeGreaterThan(2); // its buffer too

    // Killed, back within the grace period: everything still there, the same allocation still answered.
    await x!.kill9();
    await until("x's liveness key to expire", () => !etcd.dump(`${prefix}/node/`).has(`${prefix}/node/x`));
    await until("y to see x gone", async () => (await y!.client.status()).cluster!.nodesInGrace.some((n) => n.node === "x"));
    x = await restartNode(x!);
    expect(ofX().length).toBe(before);
    expect((await x!.client.allocate(at("plain-x"))).ips[0]!.address.split("/")[0]).toBe(plainX);

    // Killed for good: after the grace period and a re-check, y's reaper returns x's buffer and plain attachment.
    await x!.kill9();
    await until("x's buffered and plain addresses to return", () => ofX().every(([, v]) => v.owner === "sticky"), 20_000);
    expect(ofX()).toEqual([[memberX, expect.objectContaining({ owner: "sticky", identity: "db/web/1/-" })]]);
    const metrics = await y!.client.metrics();
    expect(metrics).toMatch(/berth_ipamd_cluster_reaped_addresses_total\{owner="buffer"\} [1-9]/);
    // The member comes back on y with its address, without waiting for x's DEL that will never come.
    expect((await y!.client.allocate(at("web1-y", "web-1"))).ips[0]!.address.split("/")[0]).toBe(memberX);
    await y!.stop();
  }, 90_000);
});

describe("reserve ahead, pin and release are cluster-wide", () => {
  it("reserved on A, attached on B, pinned and released from C", async () => {
    const prefix = freshPrefix("reserve");
    const pools = [{ name: "rv", subnet: "10.87.0.0/24", gateway: "10.87.0.1", networks: ["underlay"] }];
    const [a, b, c] = await startClusterNodes(etcd, [{ name: "ra" }, { name: "rb" }, { name: "rc" }], { pools, prefix });
    const r = await runIpamctl([
      "--socket",
      a!.socket,
      "-o",
      "json",
      "reserve",
      "--namespace",
      "db",
      "--statefulset",
      "kafka",
      "--replicas",
      "3",
    ]);
    expect(r.code, r.stderr).toBe(0);
    type Listed = { reservations: { ordinal: number; ip: string; node: string; state: string }[] };
    const reserved = (JSON.parse(r.stdout) as Listed).reservations;
    expect(reserved.map((x) => [x.ordinal, x.node, x.state])).toEqual([
      [0, "ra", "detached"],
      [1, "ra", "detached"],
      [2, "ra", "detached"],
    ]);
    // B never heard of kafka: the registration is cluster-wide, so kafka-1 is a member there and gets its reserved address.
    const got = await b!.client.allocate({
      containerID: "k1-b",
      ifName: "eth0",
      network: "underlay",
      podNamespace: "db",
      podName: "kafka-1",
    });
    expect(got).toMatchObject({ owner: "db/kafka/1", sticky: true });
    expect(got.ips[0]!.address).toBe(`${reserved[1]!.ip}/24`);
    // Reserving again from C keeps them all where they are.
    const again = await c!.client.reserve({ namespace: "db", statefulset: "kafka", replicas: 3 });
    expect(again.reservations.map((x) => [x.ip, x.node])).toEqual(reserved.map((x, i) => [x.ip, i === 1 ? "rb" : "ra"]));

    // Pin from C: ordinal 2 gets 10.87.0.200; its reserved address returns to the pool.
    const pin = await runIpamctl([
      "--socket",
      c!.socket,
      "pin",
      "--namespace",
      "db",
      "--statefulset",
      "kafka",
      "--ordinal",
      "2",
      "--ip",
      "10.87.0.200",
    ]);
    expect(pin.code, pin.stderr).toBe(0);
    expect(pin.stdout).toContain(`pinned 10.87.0.200/24 (pool rv) to db/kafka/2; released ${reserved[2]!.ip}`);
    expect(etcdIps(etcd, prefix, "rv").get(reserved[2]!.ip)).toBeUndefined();
    expect(
      (await a!.client.allocate({ containerID: "k2-a", ifName: "eth0", network: "underlay", podNamespace: "db", podName: "kafka-2" }))
        .ips[0]!.address,
    ).toBe("10.87.0.200/24");

    // Release from C: kafka-0 (detached) goes at once; kafka-1 runs on B and needs force, then stays held by its sandbox.
    const refused = await runIpamctl(["--socket", c!.socket, "release", "--namespace", "db", "--statefulset", "kafka"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/in use by running containers: .*db\/kafka\/1, container k1-b on node rb/);
    const rel = await c!.client.releaseReservations({ namespace: "db", statefulset: "kafka", force: true });
    expect(rel.released.map((x) => x.owner).sort()).toEqual(["db/kafka/0", "db/kafka/1", "db/kafka/2"]);
    expect(rel.heldByContainer.map((x) => [x.ip, x.owner, x.node]).sort()).toEqual(
      [
        ["10.87.0.200", "k2-a/eth0", "ra"],
        [reserved[1]!.ip, "k1-b/eth0", "rb"],
      ].sort(),
    );
    expect(etcd.dump(`${prefix}/sticky/`).size).toBe(0);
    expect(etcd.dump(`${prefix}/statefulset/`).size).toBe(0); // a whole StatefulSet released: unregistered
    const keys = etcdIps(etcd, prefix, "rv");
    expect(keys.get(reserved[0]!.ip)).toBeUndefined();
    expect(keys.get(reserved[1]!.ip)).toMatchObject({ owner: "attachment", node: "rb", attachment: { containerID: "k1-b" } });
    // B's local row followed: held by its container, no longer sticky.
    await until("B's row to be handed to its attachment", async () =>
      (await b!.client.reservations({ ip: reserved[1]!.ip })).reservations.some((x) => x.owner === "k1-b/eth0" && !x.sticky),
    );
    await b!.client.release({ containerID: "k1-b", ifName: "eth0", network: "underlay" });
    await until("the DEL to free it in etcd", () => etcdIps(etcd, prefix, "rv").get(reserved[1]!.ip)?.owner !== "attachment");
    for (const n of [a!, b!, c!]) await n.stop();
  }, 90_000);
});
