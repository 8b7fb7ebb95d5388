// "What it must show" 3: faults, each followed by the no-duplicate and no-lost-acknowledgement check:
// kill -9 of an ipamd in the middle of a storm, then restart; kill -9 of one etcd member (quorum holds: no ADD fails
// beyond the client's retries); two of three members stopped (ordinary ADD from the buffer works, a cross-node sticky
// ADD fails with CNI code 11 naming etcd and the endpoints, DEL works), then started (pending releases applied,
// nothing lost); an etcd attachment key SQLite never committed (undone at restart); compaction while a node is
// stopped (it re-lists and is correct).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdUnreachable } from "../../api/client";
import { EtcdClient } from "../../ipamd/cluster/etcd";
import { cleanupIpamdTest } from "../helpers/ipamd";
import {
  type Acks,
  addWithRetries,
  type ClusterNodeHandle,
  etcdIps,
  expectConsistent,
  freshPrefix,
  restartNode,
  sqliteRows,
  startClusterNodes,
  underlayAttachment,
  until,
} from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { createNetns, removeNetns, type TestNetns } from "../helpers/netns";
import { pluginPath, runCni } from "../helpers/plugins";

let etcd: EtcdCluster;
let nodes: ClusterNodeHandle[] = [];
let ns: TestNetns;
const prefix = freshPrefix("faults");
const POOLS = [{ name: "f", subnet: "10.88.0.0/22", networks: ["underlay"] }];
const acks: Acks = new Map();
let seq = 0;

beforeAll(async () => {
  etcd = await EtcdCluster.start();
  ns = createNetns("flt");
  nodes = await startClusterNodes(
    etcd,
    ["a", "b", "c"].map((n) => ({ name: `node-${n}` })),
    {
      pools: POOLS,
      prefix,
      extra: { statefulSets: [{ namespace: "db", name: "m" }] },
      cluster: { buffer: { low: 8, high: 32 } },
    },
  );
}, 120_000);
afterAll(async () => {
  removeNetns(ns);
  await cleanupIpamdTest();
  await etcd?.destroy();
});

const check = () => expectConsistent(etcd, prefix, ["f"], nodes, acks, 30_000);
const memberReq = (id: string, ordinal: number) => ({
  ...underlayAttachment(id),
  podNamespace: "db",
  podName: `m-${ordinal}`,
  podUID: `uid-${id}`,
});

/** Workers ADD (half members, each ordinal attached at most once at a time) and DEL, like kubelets on 3 nodes. */
async function storm(
  ops: number,
  o: { onOp?: (i: number) => Promise<void> | void; retries?: number } = {},
): Promise<{ failedAdds: string[]; retries: number }> {
  const free = Array.from({ length: 60 }, (_, i) => i);
  const live: { id: string; node: number; ordinal?: number }[] = [];
  const failedAdds: string[] = [];
  let retries = 0;
  let next = 0;
  const del = async (p: { id: string; node: number; ordinal?: number }): Promise<void> => {
    acks.delete(p.id); // a DEL may take effect even when its answer is lost
    for (let i = 0; ; i++) {
      try {
        await nodes[p.node]!.client.release(underlayAttachment(p.id));
        break;
      } catch (e) {
        if (!(e instanceof IpamdUnreachable) || i > 100) throw e;
        await new Promise((r) => setTimeout(r, 200)); // the runtime retries DEL until it succeeds
      }
    }
    if (p.ordinal !== undefined) free.push(p.ordinal);
  };
  await Promise.all(
    Array.from({ length: 12 }, async () => {
      for (let i = next++; i < ops; i = next++) {
        await o.onOp?.(i);
        if (live.length > 40 || (live.length > 0 && i % 3 === 2)) {
          await del(live.splice(Math.floor(Math.random() * live.length), 1)[0]!);
          continue;
        }
        const node = i % 3;
        const id = `s${seq++}`;
        const ordinal = i % 2 === 0 ? free.shift() : undefined;
        try {
          const { r, retries: t } = await addWithRetries(
            nodes[node]!,
            ordinal === undefined ? underlayAttachment(id) : memberReq(id, ordinal),
            o.retries ?? 20,
          );
          retries += t;
          acks.set(id, { node: nodes[node]!.name, ip: r.ips[0]!.address.split("/")[0]!, owner: r.owner });
          live.push({ id, node, ordinal });
        } catch (e) {
          failedAdds.push(`${id} on ${nodes[node]!.name}: ${(e as Error).message}`);
          await del({ id, node, ordinal }); // a runtime DELs a sandbox whose ADD failed
        }
      }
    }),
  );
  for (const p of live.splice(0)) await del(p); // the next storm starts with every ordinal free
  return { failedAdds, retries };
}

describe("faults", () => {
  it("kill -9 of an ipamd in the middle of a storm, then restart", async () => {
    let restarted: Promise<void> | undefined;
    const r = await storm(600, {
      onOp: async (i) => {
        if (i !== 200) return;
        await nodes[1]!.kill9();
        // Back after a second, as systemd or the DaemonSet restarts it; workers meanwhile retry their DELs.
        restarted = new Promise((res) => setTimeout(res, 1000)).then(async () => {
          nodes[1] = await restartNode(nodes[1]!);
        });
      },
    });
    await restarted;
    // Only ADDs sent to the killed node while it was down may fail; they were DELeted like a runtime does.
    for (const f of r.failedAdds) expect(f).toMatch(/on node-b: ipamd is not reachable/);
    await check();
  }, 180_000);

  it("kill -9 of one etcd member (the leader) in the middle of a storm: no ADD fails beyond the client's retries", async () => {
    const leader = etcd.leader();
    const r = await storm(600, {
      retries: 3,
      onOp: async (i) => {
        if (i === 150) await etcd.kill9(leader);
      },
    });
    expect(r.failedAdds).toEqual([]);
    await check();
    await etcd.restart(leader);
  }, 180_000);

  it("two of three etcd members stopped: buffer ADD works, cross-node sticky ADD fails with code 11 naming etcd, DEL works; " +
    "then healed", async () => {
    const [a, b] = nodes as [ClusterNodeHandle, ClusterNodeHandle];
    const m0 = await a.client.allocate(memberReq("q-m0-a", 59));
    acks.set("q-m0-a", { node: a.name, ip: m0.ips[0]!.address.split("/")[0]!, owner: m0.owner });
    await a.client.release(underlayAttachment("q-m0-a"));
    acks.delete("q-m0-a");
    const plainBefore = await b.client.allocate(underlayAttachment("q-plain-before"));
    await until("b's outbox applied", async () => (await b.client.status()).cluster!.outboxPending === 0);
    await etcd.loseQuorum(2);
    try {
      // Ordinary ADD: from the node's buffer, no etcd round trip.
      for (let i = 0; i < 5; i++) {
        const r = await b.client.allocate(underlayAttachment(`q-plain-${i}`));
        acks.set(`q-plain-${i}`, { node: b.name, ip: r.ips[0]!.address.split("/")[0]!, owner: r.owner });
      }
      // Cross-node sticky ADD through the built plugin: CNI code 11 naming etcd and every endpoint tried.
      const add = runCni(pluginPath("berth-ipam"), {
        command: "ADD",
        config: { cniVersion: "1.0.0", name: "underlay", type: "berth-ipam", ipam: { type: "berth-ipam", socket: b.socket } },
        containerId: "q-m0-b",
        netns: ns.path,
        ifName: "eth0",
        cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=m-59",
      });
      expect(add.code).not.toBe(0);
      expect(add.json.code).toBe(11);
      expect(add.json.msg).toMatch(/needs etcd: etcd unreachable/);
      for (const e of etcd.endpoints) expect(add.json.msg).toContain(e);
      // DEL works; its release waits in the outbox.
      expect(await b.client.release(underlayAttachment("q-plain-before"))).toEqual({
        released: [plainBefore.ips[0]!.address.split("/")[0]],
        kept: [],
      });
      const del = runCni(pluginPath("berth-ipam"), {
        command: "DEL",
        config: { cniVersion: "1.0.0", name: "underlay", type: "berth-ipam", ipam: { type: "berth-ipam", socket: b.socket } },
        containerId: "q-plain-0",
        netns: ns.path,
        ifName: "eth0",
      });
      expect(del.code, del.stdout).toBe(0);
      acks.delete("q-plain-0");
      const s = await b.client.status();
      expect(s.cluster!.etcd.state).toBe("unreachable");
      expect(s.cluster!.outboxPending).toBeGreaterThanOrEqual(2);
      expect(await b.client.metrics()).toMatch(/berth_ipamd_etcd_connection_state\{state="unreachable"\} 1/);
      // The listing still answers, from the node's watched view.
      expect((await b.client.reservations({ owner: "db/m/59" })).cluster?.source).toBe("cache");
    } finally {
      await etcd.restoreAll();
    }
    await until("b's pending releases to reach etcd", async () => (await b.client.status()).cluster!.outboxPending === 0, 30_000);
    expect((await b.client.status()).cluster!.etcd.state).not.toBe("unreachable");
    const moved = await addWithRetries(b, memberReq("q-m0-b", 59));
    expect(moved.r.ips[0]!.address).toBe(m0.ips[0]!.address);
    acks.set("q-m0-b", { node: b.name, ip: moved.r.ips[0]!.address.split("/")[0]!, owner: moved.r.owner });
    await check();
  }, 120_000);

  it("an attachment key in etcd that the node's SQLite never committed (a crash between the two): undone at restart", async () => {
    const b = nodes[1]!;
    const bufferedInEtcd = () =>
      [...etcdIps(etcd, prefix, "f")].filter(([, v]) => v.node === b.name && v.owner === "buffer").map(([ip]) => ip);
    await until("b's buffer in etcd", () => bufferedInEtcd().length > 0);
    expect(await b.stop()).toBe(0);
    const ip = bufferedInEtcd().find((x) => !sqliteRows(b).some((r) => r.ip === x))!;
    const attachment = { containerID: "never-committed", ifName: "eth0", node: b.name };
    const writer = new EtcdClient({ endpoints: etcd.endpoints });
    try {
      await writer.put(
        `${prefix}/ip/f/${ip}`,
        JSON.stringify({ owner: "attachment", node: b.name, gen: "test", at: Date.now(), attachment }),
      );
    } finally {
      writer.close();
    }
    nodes[1] = await restartNode(b);
    await until("b to give the address back to its buffer", () => {
      const v = etcdIps(etcd, prefix, "f").get(ip);
      return v?.owner === "buffer" && v.node === b.name;
    });
    expect(sqliteRows(nodes[1]!).some((r) => r.ip === ip)).toBe(false);
    await check();
  }, 120_000);

  it("etcd compaction while a node is stopped: it re-lists and is correct", async () => {
    const [a, , c] = nodes as [ClusterNodeHandle, ClusterNodeHandle, ClusterNodeHandle];
    const onC = await c.client.allocate(memberReq("cmp-c", 58));
    const ip = onC.ips[0]!.address.split("/")[0]!;
    await c.client.release(underlayAttachment("cmp-c"));
    await until("c's outbox applied", async () => (await c.client.status()).cluster!.outboxPending === 0);
    expect(await c.stop()).toBe(0);
    // While c is down the member moves to a and the history is compacted past c's saved revision.
    const onA = await a.client.allocate(memberReq("cmp-a", 58));
    expect(onA.ips[0]!.address.split("/")[0]).toBe(ip);
    acks.set("cmp-a", { node: a.name, ip, owner: onA.owner });
    for (let i = 0; i < 20; i++) await a.client.reserve({ namespace: "db", statefulset: "filler", replicas: i + 1 });
    etcd.compact();
    expect(sqliteRows(c).some((r) => r.ip === ip)).toBe(true); // c's stale row, from before
    nodes[2] = await restartNode(c);
    await until("c to meet the compaction and list again", async () => (await nodes[2]!.client.status()).cluster!.watch.compactions >= 1);
    await until("c's stale row to go", () => !sqliteRows(nodes[2]!).some((r) => r.ip === ip));
    expect((await nodes[2]!.client.reservations({ owner: "db/m/58" })).reservations).toEqual([
      expect.objectContaining({ ip, node: "node-a", containerID: "cmp-a" }),
    ]);
    await check();
  }, 120_000);
});
