// Node liveness, the reaper (grace period, re-check, several reapers at once, sticky survives) and the watch loop
// (resume on another member, re-list after compaction), against a REAL 3-member etcd.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildConfig } from "../../ipamd/config";
import type { Pool } from "../../ipamd/pools";
import { EtcdClient, EtcdOutcomeUnknown, type WatchEvent } from "../../ipamd/cluster/etcd";
import type { ClusterError } from "../../ipamd/cluster/errors";
import type { IpOwner } from "../../ipamd/cluster/keys";
import { NodeLiveness, Reaper } from "../../ipamd/cluster/liveness";
import { ClusterOwnership } from "../../ipamd/cluster/ownership";
import { WatchLoop } from "../../ipamd/cluster/watch";
import { EtcdCluster } from "../helpers/etcd";

let etcd: EtcdCluster;
const clients: EtcdClient[] = [];
beforeAll(async () => {
  etcd = await EtcdCluster.start();
});
afterAll(async () => {
  for (const c of clients) c.close();
  await etcd?.destroy();
});

const client = (endpoints = etcd.endpoints): EtcdClient => {
  const c = new EtcdClient({ endpoints });
  clients.push(c);
  return c;
};
const pool = (name: string, subnet: string): Pool => buildConfig({ node: { name: "x" }, pools: [{ name, subnet }] }).pools[0]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async (what: string, cond: () => boolean, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
};
function ipKeys(prefix: string, poolName: string): Map<string, IpOwner> {
  const out = new Map<string, IpOwner>();
  for (const [k, v] of etcd.dump(`${prefix}/ip/${poolName}/`)) out.set(k.slice(k.lastIndexOf("/") + 1), JSON.parse(v) as IpOwner);
  return out;
}

describe("node death", () => {
  it(
    "frees a dead node's buffer and attachments after the grace period, never its sticky identities; " + "two reapers free each key once",
    async () => {
      const prefix = "/live1";
      const p = pool("r", "10.50.0.0/24");
      const a = new ClusterOwnership({ client: client(), node: "a", pools: [p], prefix, buffer: { low: 2, high: 6 } });
      const aLive = new NodeLiveness({ client: client(), node: "a", prefix, ttlSeconds: 2 });
      const bLive = new NodeLiveness({ client: client(), node: "b", prefix, ttlSeconds: 30 });
      await aLive.start();
      await bLive.renew();
      await a.start({ background: false });
      await a.refill("r");
      const sticky = await a.bindSticky(
        { pool: "r", namespace: "db", statefulset: "x", ordinal: 0, iface: "eth0" },
        { selectsNode: true, attachment: { containerID: "sticky-ctr", ifName: "eth0", podUID: "u0" } },
      );
      const att = a.takeBuffered("r")!;
      await a.applyOutbox([
        { id: 1, createdAt: 0, op: "attach", pool: "r", ip: att.ip, attachment: { containerID: "plain", ifName: "eth0" } },
      ]);
      const before = ipKeys(prefix, "r");
      const aKeys = [...before].filter(([, v]) => v.owner !== "sticky").map(([ip]) => ip);
      expect(aKeys.length).toBe(1 + a.bufferSize("r"));

      const reapers = [1, 2].map(() => new Reaper({ client: client(), pools: ["r"], graceMs: 1500, prefix }));
      expect((await reapers[0]!.reapOnce()).freed).toEqual([]); // a is alive
      await aLive.stop(false); // a dies: its lease expires in 2 s
      await until("a's liveness key to expire", () => !etcd.dump(`${prefix}/node/`).has(`${prefix}/node/a`));
      const first = await Promise.all(reapers.map((r) => r.reapOnce()));
      for (const r of first) {
        expect(r.freed).toEqual([]);
        expect(r.waiting.map((w) => w.node)).toEqual(["a"]);
      }
      await sleep(1600);
      const second = await Promise.all(reapers.map((r) => r.reapOnce()));
      const freed = second.flatMap((r) => r.freed.map((f) => f.ip)).sort();
      expect(freed).toEqual([...aKeys].sort()); // each key freed by exactly one reaper
      const after = ipKeys(prefix, "r");
      expect([...after.keys()]).toEqual([sticky.ip]);
      expect(after.get(sticky.ip)).toMatchObject({ owner: "sticky", node: "a" });
      expect(etcd.dump(`${prefix}/sticky/`).size).toBe(1);

      // The member's old node is dead: another node may take the identity over without waiting for a's DEL.
      const b = new ClusterOwnership({ client: client(), node: "b", pools: [p], prefix });
      const moved = await b.bindSticky(
        { pool: "r", namespace: "db", statefulset: "x", ordinal: 0, iface: "eth0" },
        { selectsNode: true, attachment: { containerID: "new", ifName: "eth0", podUID: "u1" } },
      );
      expect(moved).toMatchObject({ ip: sticky.ip, previousNode: "a" });
      await bLive.stop(true);
    },
  );

  it("a node back within the grace period keeps everything", async () => {
    const prefix = "/live2";
    const p = pool("r", "10.51.0.0/24");
    const a = new ClusterOwnership({ client: client(), node: "a", pools: [p], prefix, buffer: { low: 2, high: 4 } });
    const aLive = new NodeLiveness({ client: client(), node: "a", prefix, ttlSeconds: 1 });
    await aLive.renew();
    await a.start({ background: false });
    await a.refill("r");
    const reaper = new Reaper({ client: client(), pools: ["r"], graceMs: 2000, prefix });
    await until("a's key to expire", () => !etcd.dump(`${prefix}/node/`).has(`${prefix}/node/a`));
    expect((await reaper.reapOnce()).waiting.map((w) => w.node)).toEqual(["a"]);
    await aLive.start(); // back: a new lease, kept alive
    expect(aLive.leaseLost).toBe(1);
    await sleep(2100);
    const r = await reaper.reapOnce();
    expect(r.freed).toEqual([]);
    expect(ipKeys(prefix, "r").size).toBe(4);
    await aLive.stop(true);
  });

  it("refuses buffered addresses once its liveness went unconfirmed for the fence period", async () => {
    let confirmed = Date.now();
    const a = new ClusterOwnership({
      client: client(),
      node: "a",
      pools: [pool("f", "10.52.0.0/24")],
      prefix: "/live3",
      liveness: { lastConfirmedAt: () => confirmed, fenceAfterMs: 5000 },
    });
    await a.start({ background: false });
    await a.refill("f");
    expect(a.takeBuffered("f")).not.toBeNull();
    confirmed = Date.now() - 6000;
    const e = (() => {
      try {
        a.takeBuffered("f");
        return null;
      } catch (err) {
        return err as ClusterError;
      }
    })();
    expect(e?.code).toBe("fenced");
    expect(e?.message).toMatch(/node a has not renewed its etcd liveness for 6 s/);
  });
});

describe("watch loop", () => {
  it("resumes on another member from its last revision when the member in use dies: no event lost", async () => {
    const c = client();
    const w = client([...etcd.endpoints]);
    const seen: WatchEvent[] = [];
    const loop = new WatchLoop(w, "/wl/", { onList: () => undefined, onEvents: (ev) => seen.push(...ev) });
    loop.start();
    await until("first list", () => loop.relists === 1);
    for (let i = 0; i < 5; i++) await c.put(`/wl/${i}`, "x");
    await until("5 events", () => seen.length === 5);
    const used = etcd.endpoints.indexOf(w.currentEndpoint);
    await etcd.kill9(used);
    const writer = client(etcd.endpoints.filter((_, i) => i !== used)); // the writer is not under test here
    // If the killed member led, a put sent during the election may time out with an unknown outcome: put again
    // (same key, same value: idempotent; the watch must still see the key's first write in order).
    for (let i = 5; i < 10; i++) {
      for (let tries = 0; ; tries++) {
        try {
          await writer.put(`/wl/${i}`, "x");
          break;
        } catch (e) {
          if (!(e instanceof EtcdOutcomeUnknown) || tries > 3) throw e;
        }
      }
    }
    await until("10 keys", () => new Set(seen.map((e) => e.kv.key)).size === 10, 15_000);
    const firstSeen = [...new Set(seen.map((e) => e.kv.key))];
    expect(firstSeen).toEqual(Array.from({ length: 10 }, (_, i) => `/wl/${i}`));
    loop.stop();
    await etcd.restart(used);
  });

  it("re-lists when restarted from a compacted revision", async () => {
    const c = client();
    const lists: string[][] = [];
    const events: WatchEvent[] = [];
    const first = new WatchLoop(c, "/wc/", { onList: (kvs) => lists.push(kvs.map((k) => k.key)), onEvents: (ev) => events.push(...ev) });
    await c.put("/wc/a", "1");
    first.start();
    await until("list", () => lists.length === 1);
    const stoppedAt = first.revision;
    first.stop(); // the node stops...
    await c.put("/wc/b", "2");
    await c.delete("/wc/a");
    etcd.compact(); // ...and history is compacted meanwhile
    const second = new WatchLoop(c, "/wc/", { onList: (kvs) => lists.push(kvs.map((k) => k.key)), onEvents: (ev) => events.push(...ev) });
    second.start(stoppedAt);
    await until("re-list", () => lists.length === 2);
    expect(lists[1]).toEqual(["/wc/b"]);
    await c.put("/wc/c", "3");
    await until("event after re-list", () => events.some((e) => e.kv.key === "/wc/c"));
    second.stop();
  });
});
