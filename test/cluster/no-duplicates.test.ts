// "What it must show" 2: no address held twice. 3 nodes x 200 concurrent ADDs from one shared /22 (half StatefulSet
// members, half not), then DELs and re-ADDs across nodes, checked in etcd (etcdctl) and in every node's SQLite file.
// A pool of 32 addresses shared by 3 nodes gives exactly 32, then pool_exhausted on every node.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import { cleanupIpamdTest } from "../helpers/ipamd";
import {
  type Acks,
  addWithRetries,
  type ClusterNodeHandle,
  etcdIps,
  expectConsistent,
  freshPrefix,
  startClusterNodes,
} from "../helpers/cluster";
import { EtcdCluster, laggingWatchProxy } from "../helpers/etcd";

let etcd: EtcdCluster;
let nodes: ClusterNodeHandle[] = [];
const prefix = freshPrefix("nodup");
const POOLS = [
  { name: "big", subnet: "10.82.0.0/22", networks: ["big"] },
  { name: "small", subnet: "10.83.0.0/26", ranges: [{ start: "10.83.0.0", end: "10.83.0.31" }], networks: ["small"] },
];

beforeAll(async () => {
  etcd = await EtcdCluster.start();
  nodes = await startClusterNodes(
    etcd,
    ["a", "b", "c"].map((n) => ({ name: `node-${n}` })),
    {
      pools: POOLS,
      prefix,
      extra: { statefulSets: [{ namespace: "db", name: "s" }] },
    },
  );
}, 120_000);
afterAll(async () => {
  await cleanupIpamdTest();
  await etcd?.destroy();
});

const plain = (id: string) => ({ containerID: id, ifName: "eth0", network: "big" });
const member = (id: string, ordinal: number) => ({ ...plain(id), podNamespace: "db", podName: `s-${ordinal}`, podUID: `${id}-uid` });

/**
 * 3 nodes x 200 concurrent ADDs (half members), then DELs and re-ADDs across nodes, each step checked in etcd and in
 * every node's SQLite.
 */
async function storm(nodes: ClusterNodeHandle[], prefix: string): Promise<void> {
  const acks: Acks = new Map();
  const first = await Promise.all(
    nodes.flatMap((n, i) =>
      Array.from({ length: 200 }, async (_, k) => {
        const isMember = k % 2 === 0;
        const ordinal = i * 100 + k / 2;
        const id = `${n.name}-${k}`;
        const r = await n.client.allocate(isMember ? member(id, ordinal) : plain(id));
        const ip = r.ips[0]!.address.split("/")[0]!;
        acks.set(id, { node: n.name, ip, owner: r.owner });
        return { id, n, ip, isMember, ordinal, sticky: r.sticky };
      }),
    ),
  );
  expect(first.filter((x) => x.sticky)).toHaveLength(300);
  const ips = first.map((x) => x.ip);
  expect(new Set(ips).size).toBe(600);
  await expectConsistent(etcd, prefix, ["big", "small"], nodes, acks);
  expect(etcd.dump(`${prefix}/sticky/big/`).size).toBe(300);

  // DEL everything (concurrently), then re-ADD: members on the next node with new container IDs, others anywhere.
  await Promise.all(
    first.map(async (x) => {
      const rel = await x.n.client.release(plain(x.id));
      expect(x.isMember ? rel.kept : rel.released).toEqual([x.ip]);
      acks.delete(x.id);
    }),
  );
  await expectConsistent(etcd, prefix, ["big", "small"], nodes, acks);
  const byOrdinal = new Map(first.filter((x) => x.isMember).map((x) => [x.ordinal, x.ip]));
  let retries = 0;
  const second = await Promise.all(
    first.map(async (x, j) => {
      const i = nodes.indexOf(x.n);
      const n = nodes[(i + (x.isMember ? 1 : 2)) % 3]!;
      const id = `again-${j}`;
      const { r, retries: tries } = await addWithRetries(n, x.isMember ? member(id, x.ordinal) : plain(id));
      retries += tries;
      const ip = r.ips[0]!.address.split("/")[0]!;
      acks.set(id, { node: n.name, ip, owner: r.owner });
      if (x.isMember) expect(ip).toBe(byOrdinal.get(x.ordinal)); // the member keeps its address on another node
      return ip;
    }),
  );
  expect(new Set(second).size).toBe(600);
  expect(retries).toBe(0); // every DEL had reached etcd before (the consistency check waited for the outboxes)
  await expectConsistent(etcd, prefix, ["big", "small"], nodes, acks);
  for (const n of nodes) {
    const listed = (await n.client.reservations({ namespace: "db", statefulset: "s" })).reservations;
    expect(listed).toHaveLength(300); // every node lists the cluster's members, each with the node it is bound to
    for (const r of listed) expect(acks.get(r.containerID!)?.node).toBe(r.node);
  }
}

describe("no address held twice", () => {
  it("3 nodes x 200 concurrent ADDs (half members), then DELs and re-ADDs across nodes", async () => {
    await storm(nodes, prefix);
  }, 180_000);

  // Each node's watch streams 300 ms behind (a lagging follower, a slow link): every node learns of the others' binds
  // after its own. A node that took its late view for the truth turned live sticky rows into plain attachments.
  it("the same with every node's watch 300 ms behind", async () => {
    const lagged = await Promise.all(etcd.endpoints.map((e) => laggingWatchProxy(e, 300)));
    const lagPrefix = freshPrefix("nodup-lag");
    const behind = await startClusterNodes(
      etcd,
      ["a", "b", "c"].map((n) => ({ name: `lag-${n}` })),
      {
        pools: POOLS,
        prefix: lagPrefix,
        cluster: { etcd: { endpoints: lagged.map((p) => p.endpoint) } },
        extra: { statefulSets: [{ namespace: "db", name: "s" }] },
      },
    );
    try {
      await storm(behind, lagPrefix);
    } finally {
      for (const n of behind) await n.stop();
      for (const p of lagged) p.close();
    }
  }, 180_000);

  it("a pool of 32 shared by 3 nodes gives exactly 32, then pool_exhausted", async () => {
    const results = await Promise.all(
      Array.from({ length: 48 }, async (_, k) => {
        const n = nodes[k % 3]!;
        try {
          const r = await n.client.allocate({ containerID: `small-${k}`, ifName: "eth0", network: "small" });
          return { ok: r.ips[0]!.address.split("/")[0]!, node: n.name };
        } catch (e) {
          expect(e).toBeInstanceOf(IpamdError);
          return { err: (e as IpamdError).code, message: (e as Error).message };
        }
      }),
    );
    const ok = results.filter((r) => r.ok).map((r) => r.ok!);
    expect(ok).toHaveLength(32);
    expect(new Set(ok).size).toBe(32);
    for (const r of results.filter((x) => x.err)) {
      expect(r.err).toBe("pool_exhausted");
      expect(r.message).toMatch(/pool "small" has no free address on any node \(32 of 32 owned in etcd/);
    }
    for (const n of nodes) {
      const e = await n.client
        .allocate({ containerID: `small-extra-${n.name}`, ifName: "eth0", network: "small" })
        .catch((x: unknown) => x);
      expect((e as IpamdError).code).toBe("pool_exhausted");
    }
    // A repeated ADD (the runtime retrying) in the exhausted pool is answered from the node's record: same address.
    const first = results.findIndex((r) => r.ok);
    const again = await nodes[first % 3]!.client.allocate({ containerID: `small-${first}`, ifName: "eth0", network: "small" });
    expect(again.ips[0]!.address.split("/")[0]).toBe(results[first]!.ok);
    const keys = etcdIps(etcd, prefix, "small");
    expect(keys.size).toBe(32);
    // Each held by the node that handed it out; a plain attachment leaves its key "buffer of that node".
    const holder = new Map(results.filter((r) => r.ok).map((r) => [r.ok!, r.node!]));
    for (const [ip, v] of keys) expect(v).toMatchObject({ owner: "buffer", node: holder.get(ip) });
  }, 120_000);
});
