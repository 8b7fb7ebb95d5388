// etcd restored from an older snapshot (disaster recovery): every key written after the snapshot is gone while node A's
// SQLite still holds those addresses. A notices (its revision seen is above etcd's), writes them back, and node B
// taking the rest of a small pool never gets an address A holds. A REAL 3-member etcd, restored with etcdctl.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import { cleanupIpamdTest } from "../helpers/ipamd";
import { addWithRetries, type ClusterNodeHandle, etcdIps, freshPrefix, sqliteRows, startClusterNodes, until } from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";

let etcd: EtcdCluster;
let nodes: ClusterNodeHandle[] = [];
const prefix = freshPrefix("restore");
const POOL_SIZE = 24;
const POOLS = [{ name: "p", subnet: "10.84.0.0/24", ranges: [{ start: "10.84.0.10", end: "10.84.0.33" }], networks: ["underlay"] }];

beforeAll(async () => {
  etcd = await EtcdCluster.start();
  nodes = await startClusterNodes(
    etcd,
    ["a", "b"].map((n) => ({ name: `node-${n}` })),
    {
      pools: POOLS,
      prefix,
      extra: { statefulSets: [{ namespace: "db", name: "web" }] },
      cluster: { buffer: { low: 2, high: 4 }, leaseTTLSeconds: 2 },
    },
  );
}, 120_000);
afterAll(async () => {
  await cleanupIpamdTest();
  await etcd?.destroy();
});

const att = (id: string) => ({ containerID: id, ifName: "eth0", network: "underlay" });
const bare = (r: { ips: { address: string }[] }): string => r.ips[0]!.address.split("/")[0]!;

describe("etcd restored from an older snapshot", () => {
  it("node A notices, writes its addresses back, and node B never gets one of them", async () => {
    const [a, b] = nodes as [ClusterNodeHandle, ClusterNodeHandle];
    const held = new Map<string, string>(); // container -> ip on A
    const add = async (id: string, podName?: string): Promise<void> => {
      const r = await a.client.allocate({ ...att(id), ...(podName ? { podNamespace: "db", podName, podUID: `uid-${id}` } : {}) });
      held.set(id, bare(r));
    };
    const applied = () => until("A's outbox applied", async () => (await a.client.status()).cluster?.outboxPending === 0);
    await add("a-1");
    await add("a-2");
    await applied();
    const snapshot = etcd.snapshotSave();
    // After the snapshot: plain attachments (new buffer claims among them) and a StatefulSet member.
    for (const id of ["a-3", "a-4", "a-5", "a-6"]) await add(id);
    await add("a-web-0", "web-0");
    await applied();
    const stickyKey = `${prefix}/sticky/p/db/web/0/-`;
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/`).get(stickyKey)!)).toMatchObject({ ip: held.get("a-web-0"), node: "node-a" });
    const revisionBefore = etcd.revision();

    expect(etcd.snapshotRevision(snapshot)).toBeLessThan(revisionBefore);

    await etcd.restoreSnapshot(snapshot);
    // At once, racing A: B takes the rest of the pool (claims wait a lease TTL after the restore: retried like
    // kubelet retries code 11).
    const got: string[] = [];
    for (let k = 0; k < POOL_SIZE + 4; k++) {
      try {
        got.push(bare((await addWithRetries(b, att(`b-${k}`), 50)).r));
      } catch (e) {
        expect(e).toBeInstanceOf(IpamdError);
        expect((e as IpamdError).code).toBe("pool_exhausted");
        break;
      }
    }
    const mine = new Set(held.values());
    expect(got.filter((ip) => mine.has(ip))).toEqual([]);
    expect(new Set(got).size).toBe(got.length);
    expect(got.length).toBe(POOL_SIZE - held.size);

    await until("A notices etcd lost history", () => /etcd lost history/.test(a.stderr()), 20_000);
    expect(a.stderr()).toMatch(/etcd's revision \d+ is lower than revision \d+ this node has seen/);
    expect(await a.client.metrics()).toMatch(/berth_ipamd_etcd_history_lost_total 1/);
    await until("A's recovery done", () => /addresses are back in etcd/.test(a.stderr()), 20_000);
    // Every address A holds is A's in etcd again; the sticky identity is back, bound to A.
    const keys = etcdIps(etcd, prefix, "p");
    for (const ip of held.values()) expect(keys.get(ip), ip).toMatchObject({ node: "node-a" });
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/`).get(stickyKey)!)).toMatchObject({ ip: held.get("a-web-0"), node: "node-a" });
    // A's record is untouched: every address still attached to its container there, the member's still sticky.
    expect(sqliteRows(a)).toContainEqual(expect.objectContaining({ ip: held.get("a-web-0"), owner: "db/web/0", sticky: 1 }));
    expect(a.stderr()).not.toMatch(/the address is held twice|released in etcd/);
    const rows = (await a.client.reservations({})).reservations;
    for (const [id, ip] of held) expect(rows).toContainEqual(expect.objectContaining({ ip, containerID: id }));
  }, 180_000);
});
