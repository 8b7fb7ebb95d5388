// "What it must show" 1: three ipamd nodes (own socket, database, name, labels) on one 3-member etcd. A StatefulSet
// member is ADDed on node A through the BUILT berth-macvlan plugin in a real namespace, DELeted, and ADDed on node B
// with a new container ID: the same address; node C lists it bound to B. The plugin runs the way a runtime runs it.
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, runIpamctl } from "../helpers/ipamd";
import {
  type ClusterNodeHandle,
  etcdIps,
  firstIp,
  freshPrefix,
  sqliteRows,
  startClusterNodes,
  underlayAttachment,
} from "../helpers/cluster";
import { EtcdCluster, laggingWatchProxy } from "../helpers/etcd";
import { ownership } from "../../cni/plugins/macvlan";
import { addresses, cni, destroyLab, type Lab, macvlan, makeLab, newPod, podLink } from "../cni/macvlan-fixture";
import { ipIn } from "../helpers/netns";

let etcd: EtcdCluster;
let lab: Lab;
let nodes: ClusterNodeHandle[] = [];
const prefix = freshPrefix("sticky");
const POOLS = [
  {
    name: "vlan101-v4",
    subnet: "10.81.0.0/24",
    gateway: "10.81.0.1",
    ranges: [{ start: "10.81.0.10", end: "10.81.0.200" }],
    networks: ["underlay"],
    nodeSelector: { matchLabels: { rack: "r1" } },
  },
];

beforeAll(async () => {
  etcd = await EtcdCluster.start();
  lab = makeLab("cls", ["10.81.0.1/24"]);
  nodes = await startClusterNodes(
    etcd,
    ["a", "b", "c"].map((n) => ({ name: `node-${n}`, labels: { rack: "r1" } })),
    {
      pools: POOLS,
      prefix,
      extra: { statefulSets: [{ namespace: "db", name: "web" }] },
    },
  );
}, 120_000);
afterAll(async () => {
  destroyLab(lab);
  await cleanupIpamdTest();
  await etcd?.destroy();
  for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
});

const conf = (n: ClusterNodeHandle) => ({
  cniVersion: "1.0.0",
  name: "underlay",
  type: "berth-macvlan",
  master: "m0",
  ipam: { type: "berth-ipam", socket: n.socket },
});
const args = (pod: string, uid: string) => `IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=${pod};K8S_POD_UID=${uid}`;

describe("a StatefulSet member moves between nodes", () => {
  it("web-0 on node A, deleted, created on node B with a new container ID: same IP; node C lists it bound to B", async () => {
    const [a, b, c] = nodes as [ClusterNodeHandle, ClusterNodeHandle, ClusterNodeHandle];
    const podA = newPod(lab, "wa");
    const addA = cni(lab, macvlan(), {
      command: "ADD",
      config: conf(a),
      containerId: "ctr-on-a",
      netns: podA.path,
      ifName: "eth0",
      cniArgs: args("web-0", "uid-1"),
    });
    expect(addA.code, addA.stdout + addA.stderr).toBe(0);
    const ip = addA.json.ips[0].address as string;
    expect(ip).toMatch(/^10\.81\.0\.\d+\/24$/);
    expect(addresses(podA)).toEqual([ip]);
    const bare = ip.split("/")[0]!;
    // etcd: the identity is bound to A and attached to A's sandbox; the address key is the identity's.
    const sticky = JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/vlan101-v4/db/web/0/-`)!);
    expect(sticky).toMatchObject({ ip: bare, node: "node-a", attachment: { containerID: "ctr-on-a", node: "node-a", podUID: "uid-1" } });
    expect(etcdIps(etcd, prefix, "vlan101-v4").get(bare)).toMatchObject({ owner: "sticky", node: "node-a", identity: "db/web/0/-" });

    const delA = cni(lab, macvlan(), {
      command: "DEL",
      config: conf(a),
      containerId: "ctr-on-a",
      netns: podA.path,
      ifName: "eth0",
      cniArgs: args("web-0", "uid-1"),
    });
    expect(delA.code, delA.stdout).toBe(0);
    // The DEL is local; its detach reaches etcd through the outbox right after (status shows nothing pending).
    await expect.poll(async () => (await a.client.status()).cluster?.outboxPending, { timeout: 5000 }).toBe(0);
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/vlan101-v4/db/web/0/-`)!).attachment).toBeUndefined();

    const podB = newPod(lab, "wb");
    const addB = cni(lab, macvlan(), {
      command: "ADD",
      config: conf(b),
      containerId: "ctr-on-b",
      netns: podB.path,
      ifName: "eth0",
      cniArgs: args("web-0", "uid-2"),
    });
    expect(addB.code, addB.stdout + addB.stderr).toBe(0);
    expect(addB.json.ips[0].address).toBe(ip);
    expect(addresses(podB)).toEqual([ip]);
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/vlan101-v4/db/web/0/-`)!)).toMatchObject({
      ip: bare,
      node: "node-b",
      attachment: { containerID: "ctr-on-b", node: "node-b" },
    });
    expect(sqliteRows(b)).toContainEqual(expect.objectContaining({ ip: bare, owner: "db/web/0", container_id: "ctr-on-b", sticky: 1 }));

    // Node C never saw the member: its listing (API and ipamctl) comes from etcd.
    const listed = await c.client.reservations({ namespace: "db", statefulset: "web" });
    expect(listed.cluster).toEqual({ source: "etcd" });
    expect(listed.reservations).toEqual([
      expect.objectContaining({
        ip: bare,
        owner: "db/web/0",
        sticky: true,
        state: "attached",
        containerID: "ctr-on-b",
        node: "node-b",
      }),
    ]);
    const table = await runIpamctl(["--socket", c.socket, "reservations", "--namespace", "db"]);
    expect(table.code, table.stderr).toBe(0);
    const row = table.stdout.split("\n").find((l) => l.includes("db/web/0"))!;
    // IP POOL OWNER STATE STICKY PINNED POD NODE AGE (the container is in -o wide and in the JSON above)
    expect(
      row
        .split("│")
        .map((x) => x.trim())
        .filter(Boolean)
        .slice(0, 8),
    ).toEqual([ip, "vlan101-v4", "db/web/0", "attached", "yes", "no", "-", "node-b"]);
    // A's stale local row follows etcd: gone (the watch); B holds the only one.
    await expect.poll(() => sqliteRows(a).filter((r) => r.ip === bare), { timeout: 5000 }).toEqual([]);

    const delB = cni(lab, macvlan(), {
      command: "DEL",
      config: conf(b),
      containerId: "ctr-on-b",
      netns: podB.path,
      ifName: "eth0",
      cniArgs: args("web-0", "uid-2"),
    });
    expect(delB.code).toBe(0);
  }, 60_000);

  it("a repeated ADD of the live member that fails after IPAM keeps it attached in etcd: its next pod on B waits", async () => {
    const [a, b] = nodes as [ClusterNodeHandle, ClusterNodeHandle];
    const call = { containerId: "ctr-live", ifName: "eth0", cniArgs: args("web-1", "uid-11") };
    const podA = newPod(lab, "wl");
    const first = cni(lab, macvlan(), { command: "ADD", config: conf(a), ...call, netns: podA.path });
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const bare = (first.json.ips[0].address as string).split("/")[0]!;
    // The same attachment again, into a namespace where a foreign link has its temporary name: the macvlan
    // cannot be created (EEXIST) after ipamd answered with the live pod's address.
    const other = newPod(lab, "wx");
    const { tmpName } = ownership({ conf: { name: "underlay" }, containerId: "ctr-live", ifName: "eth0" } as never);
    ipIn(other, "link", "add", tmpName, "type", "veth", "peer", "name", "x0");
    const again = cni(lab, macvlan(), { command: "ADD", config: conf(a), ...call, netns: other.path });
    expect(again.code, again.stdout).not.toBe(0);
    await expect.poll(async () => (await a.client.status()).cluster?.outboxPending, { timeout: 5000 }).toBe(0);
    const key = `${prefix}/sticky/vlan101-v4/db/web/1/-`;
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/`).get(key)!)).toMatchObject({
      ip: bare,
      node: "node-a",
      attachment: { containerID: "ctr-live", node: "node-a" },
    });
    expect(sqliteRows(a)).toContainEqual(expect.objectContaining({ ip: bare, container_id: "ctr-live" }));
    // The member's next pod (another UID) on node B does not get the address while A's pod runs with it.
    const podB = newPod(lab, "wy");
    const addB = cni(lab, macvlan(), {
      command: "ADD",
      config: conf(b),
      containerId: "ctr-next",
      netns: podB.path,
      ifName: "eth0",
      cniArgs: args("web-1", "uid-12"),
    });
    expect(addB.json, addB.stdout).toMatchObject({ code: 11 });
    expect(addB.json.msg).toContain("node-a");
    expect(podLink(podB)).toBeUndefined();
    // What the plugin was answered: the live attachment's addresses, which this request did not allocate.
    const req = { containerID: "ctr-live", ifName: "eth0", network: "underlay", podNamespace: "db", podName: "web-1", podUID: "uid-11" };
    expect(await a.client.allocate(req)).toMatchObject({ sticky: true, existing: true, ips: [{ address: first.json.ips[0].address }] });
    expect(cni(lab, macvlan(), { command: "DEL", config: conf(a), ...call, netns: podA.path }).code).toBe(0);
  }, 60_000);

  it("an ordinary attachment's repeated ADD says existing in cluster mode too", async () => {
    const [a] = nodes as [ClusterNodeHandle];
    const req = { containerID: "ctr-plain", ifName: "eth0", network: "underlay" };
    const first = await a.client.allocate(req);
    expect(first).toMatchObject({ sticky: false, existing: false });
    expect(await a.client.allocate(req)).toEqual({ ...first, existing: true });
    await a.client.release(req);
  });
});

describe("a node's own bind wins over its watch when the watch lags", () => {
  // Node A's watch streams come through a proxy that delays them 600 ms (a lagging follower, a slow link): A sees
  // B's bind of web-2 only after A bound it again itself. A sync that took that older view for the truth turned A's
  // live row into a plain attachment, so A's DEL never detached the identity and web-2 could not start on B again.
  it("web-2 moves A -> B -> A while A's watch is 600 ms behind: A keeps its row, and its DEL lets B bind", async () => {
    const lagged = await Promise.all(etcd.endpoints.map((e) => laggingWatchProxy(e, 600)));
    const movePrefix = freshPrefix("lag");
    const opts = { pools: POOLS, prefix: movePrefix, extra: { statefulSets: [{ namespace: "db", name: "web" }] } };
    const [a] = await startClusterNodes(etcd, [{ name: "lag-a", labels: { rack: "r1" } }], {
      ...opts,
      cluster: { etcd: { endpoints: lagged.map((p) => p.endpoint) } },
    });
    const [b] = await startClusterNodes(etcd, [{ name: "lag-b", labels: { rack: "r1" } }], opts);
    const member = (containerID: string) => ({
      containerID,
      ifName: "eth0",
      network: "underlay",
      podNamespace: "db",
      podName: "web-2",
      podUID: containerID,
    });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    try {
      const ip = firstIp(await a!.client.allocate(member("lag-1")));
      await sleep(1500);
      await a!.client.release(underlayAttachment("lag-1"));
      expect(firstIp(await b!.client.allocate(member("lag-2")))).toBe(ip);
      // A's next sync runs while its view still shows B's bind, after A has bound the member again below.
      await sleep(150);
      await b!.client.release(underlayAttachment("lag-2"));
      expect(firstIp(await a!.client.allocate(member("lag-3")))).toBe(ip);
      await sleep(1500);
      expect(a!.stderr()).not.toContain("here still uses");
      expect(sqliteRows(a!)).toContainEqual(expect.objectContaining({ ip, container_id: "lag-3", sticky: 1 }));
      await a!.client.release(underlayAttachment("lag-3"));
      expect(firstIp(await b!.client.allocate(member("lag-4")))).toBe(ip);
      const key = `${movePrefix}/sticky/vlan101-v4/db/web/2/-`;
      expect(JSON.parse(etcd.dump(`${movePrefix}/sticky/`).get(key)!)).toMatchObject({
        ip,
        node: "lag-b",
        attachment: { containerID: "lag-4", node: "lag-b" },
      });
    } finally {
      for (const n of [a, b]) await n?.stop();
      for (const p of lagged) p.close();
    }
  }, 60_000);
});
