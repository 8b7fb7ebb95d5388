// etcd restored from an older snapshot (disaster recovery): every key written after the snapshot is gone while node A's
// SQLite still holds those addresses. A notices (its revision seen is above etcd's), writes them back, and node B
// taking the rest of a small pool never gets an address A holds; also when A was stopped across the restore.
// A REAL 3-member etcd, restored with etcdctl.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import { cleanupIpamdTest } from "../helpers/ipamd";
import {
  addWithRetries,
  type ClusterNodeHandle,
  etcdIps,
  firstIp,
  freshPrefix,
  restartNode,
  sqliteRows,
  startClusterNodes,
  underlayAttachment,
  until,
} from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { EtcdClient } from "../../ipamd/cluster/etcd";
import { RevisionGuard } from "../../ipamd/cluster/history";
import { ClusterStore } from "../../ipamd/cluster/local-store";
import { openStore } from "../../ipamd/store/database";

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

const held = new Map<string, string>(); // container -> ip on A

async function addOnA(id: string, podName?: string): Promise<void> {
  const r = await nodes[0]!.client.allocate({
    ...underlayAttachment(id),
    ...(podName ? { podNamespace: "db", podName, podUID: `uid-${id}` } : {}),
  });
  held.set(id, firstIp(r));
}
const outboxApplied = (n: ClusterNodeHandle) =>
  until(`${n.name}'s outbox applied`, async () => (await n.client.status()).cluster?.outboxPending === 0);
// A node compares every 2 s (HISTORY_CHECK_MS): after this, each has seen the newest revision, as every node has
// when a disaster-recovery snapshot is minutes or hours old (one that saw nothing past the snapshot cannot tell).
const everyNodeChecked = () => new Promise((r) => setTimeout(r, 2500));

/** B ADDs until pool_exhausted (a paused claim is retried as kubelet retries code 11): the addresses it got. */
async function takeTheRest(b: ClusterNodeHandle, tag: string): Promise<string[]> {
  const got: string[] = [];
  for (let k = 0; k < POOL_SIZE + 4; k++) {
    try {
      got.push(firstIp((await addWithRetries(b, underlayAttachment(`${tag}-${k}`), 50)).r));
    } catch (e) {
      expect(e).toBeInstanceOf(IpamdError);
      expect((e as IpamdError).code).toBe("pool_exhausted");
      break;
    }
  }
  return got;
}

/** B got the rest of the pool, none of it an address A holds; A's addresses are A's in etcd; nothing held twice. */
function expectNothingTwice(got: string[], a: ClusterNodeHandle): void {
  const mine = new Set(held.values());
  expect(got.filter((ip) => mine.has(ip))).toEqual([]);
  expect(new Set(got).size).toBe(got.length);
  expect(got.length).toBe(POOL_SIZE - held.size);
  const keys = etcdIps(etcd, prefix, "p");
  for (const ip of held.values()) expect(keys.get(ip), ip).toMatchObject({ node: "node-a" });
  expect(a.stderr()).not.toMatch(/the address is held twice|released in etcd/);
}

const sticky = (ordinal: number) => {
  const v = etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/p/db/web/${ordinal}/-`);
  return v ? JSON.parse(v) : undefined;
};

describe("etcd restored from an older snapshot", () => {
  it("node A notices, writes its addresses back, and node B never gets one of them", async () => {
    const [a, b] = nodes as [ClusterNodeHandle, ClusterNodeHandle];
    await addOnA("a-1");
    await addOnA("a-2");
    await outboxApplied(a);
    const snapshot = etcd.snapshotSave();
    // After the snapshot: plain attachments (new buffer claims among them) and a StatefulSet member.
    for (const id of ["a-3", "a-4", "a-5", "a-6"]) await addOnA(id);
    await addOnA("a-web-0", "web-0");
    await outboxApplied(a);
    expect(sticky(0)).toMatchObject({ ip: held.get("a-web-0"), node: "node-a" });
    expect(etcd.snapshotRevision(snapshot)).toBeLessThan(etcd.revision());
    await everyNodeChecked();

    await etcd.restoreSnapshot(snapshot);
    // At once, racing A's recovery: B takes the rest of the pool.
    expectNothingTwice(await takeTheRest(b, "b"), a);

    expect(a.stderr()).toMatch(/etcd's revision \d+ is lower than revision \d+ this node has seen: etcd lost history/);
    expect(b.stderr()).toMatch(/etcd lost history/); // B saw it too: it paused its claims
    expect(await a.client.metrics()).toMatch(/berth_ipamd_etcd_history_lost_total 1/);
    await until("A's recovery done", () => /addresses are back in etcd/.test(a.stderr()), 20_000);
    expect(sticky(0)).toMatchObject({ ip: held.get("a-web-0"), node: "node-a" });
    // A's record is untouched: every address still attached to its container there, the member's still sticky.
    expect(sqliteRows(a)).toContainEqual(expect.objectContaining({ ip: held.get("a-web-0"), owner: "db/web/0", sticky: 1 }));
    const rows = (await a.client.reservations({})).reservations;
    for (const [id, ip] of held) expect(rows).toContainEqual(expect.objectContaining({ ip, containerID: id }));
  }, 180_000);

  it("a node stopped across the restore notices at start-up (its revision seen is in SQLite)", async () => {
    const b = nodes[1]!;
    for (let k = 0; k < POOL_SIZE; k++) await b.client.release(underlayAttachment(`b-${k}`));
    await outboxApplied(b);
    const snapshot = etcd.snapshotSave();
    await addOnA("a-7");
    await addOnA("a-web-1", "web-1");
    await outboxApplied(nodes[0]!);
    await everyNodeChecked();
    expect(await nodes[0]!.stop()).toBe(0);
    await etcd.restoreSnapshot(snapshot);
    const a = await restartNode(nodes[0]!);
    nodes[0] = a;
    await until("A's recovery at start-up", () => /addresses are back in etcd/.test(a.stderr()), 20_000);
    expect(a.stderr()).toMatch(/etcd's revision \d+ is lower than revision \d+ this node has seen/);
    expectNothingTwice(await takeTheRest(b, "b2"), a);
    expect(sticky(1)).toMatchObject({ ip: held.get("a-web-1"), node: "node-a" });
    expect(sticky(0)).toMatchObject({ ip: held.get("a-web-0"), node: "node-a" });
  }, 180_000);
});

describe("the revision seen, in SQLite", () => {
  it("vouches for the claims after a passed check for 1 s, and not once a connection to etcd was made again", async () => {
    const client = new EtcdClient({ endpoints: [etcd.endpoints[2]!] });
    const guard = new RevisionGuard(client, new ClusterStore(openStore(":memory:")), `${prefix}/probe-marker`);
    try {
      expect(guard.vouched()).toBe(false); // never checked
      expect(await guard.check()).toBeNull();
      expect(guard.vouched()).toBe(true);
      await new Promise((r) => setTimeout(r, 1100));
      expect(guard.vouched()).toBe(false); // too long ago
      expect(await guard.check()).toBeNull();
      expect(guard.vouched()).toBe(true);
      // The member restarts (as every member does in a restore from a snapshot): the next request connects again.
      await etcd.stop(2);
      await etcd.restart(2);
      await until("the client reconnected", async () => {
        await client.range(`${prefix}/probe-marker`).catch(() => undefined);
        return client.connectionsMade >= 2;
      });
      expect(guard.vouched()).toBe(false);
      expect(await guard.check()).toBeNull();
      expect(guard.vouched()).toBe(true);
    } finally {
      client.close();
    }
  }, 60_000);

  it("is written by a check at most every 2 s (not at every claim's check), and at a clean stop", async () => {
    const client = new EtcdClient({ endpoints: etcd.endpoints });
    const local = new ClusterStore(openStore(":memory:"));
    const guard = new RevisionGuard(client, local, `${prefix}/probe-marker`);
    try {
      expect(await guard.check()).toBeNull();
      const saved = local.state("etcd_revision_seen");
      expect(Number(saved)).toBeGreaterThan(0);
      for (let k = 0; k < 5; k++) {
        await client.put(`${prefix}/probe-${k}`, "x"); // a claim, then the next claim's check
        expect(await guard.check()).toBeNull();
      }
      expect(local.state("etcd_revision_seen")).toBe(saved);
      const last = await client.put(`${prefix}/probe-last`, "x");
      guard.persist();
      expect(Number(local.state("etcd_revision_seen"))).toBeGreaterThanOrEqual(last);
    } finally {
      client.close();
    }
  }, 60_000);
});
