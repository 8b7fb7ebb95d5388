// Ownership primitives against a REAL 3-member etcd: buffer claims, handback, sticky bind/rebind/create races,
// the L2-domain rule, attachments and the outbox while etcd has no quorum. Assertions read etcd with etcdctl.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildConfig } from "../../ipamd/config";
import type { Pool } from "../../ipamd/pools";
import { EtcdClient } from "../../ipamd/cluster/etcd";
import { ClusterError } from "../../ipamd/cluster/errors";
import type { IpOwner, StickyRecord } from "../../ipamd/cluster/keys";
import { NodeLiveness } from "../../ipamd/cluster/liveness";
import { ClusterOwnership, type OutboxRecord } from "../../ipamd/cluster/ownership";
import { EtcdCluster } from "../helpers/etcd";

let etcd: EtcdCluster;
const clients: EtcdClient[] = [];
const nodes: ClusterOwnership[] = [];
beforeAll(async () => {
  etcd = await EtcdCluster.start();
});
afterAll(async () => {
  for (const n of nodes) n.stop();
  for (const c of clients) c.close();
  await etcd?.destroy();
});

function pool(name: string, subnet: string, extra: Record<string, unknown> = {}): Pool {
  return buildConfig({ node: { name: "x" }, pools: [{ name, subnet, ...extra }] }).pools[0]!;
}

let prefixSeq = 0;
function cluster(pools: Pool[], names: string[], o: Partial<ConstructorParameters<typeof ClusterOwnership>[0]> = {}) {
  const prefix = `/t${prefixSeq++}`;
  const made = names.map((node) => {
    const client = new EtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 3000 });
    clients.push(client);
    const own = new ClusterOwnership({ client, node, pools, prefix, buffer: { low: 4, high: 16 }, ...o });
    nodes.push(own);
    return own;
  });
  return { prefix, nodes: made };
}

/** The pool's ip keys as etcd holds them (etcdctl, not our client). */
function ipKeys(prefix: string, poolName: string): Map<string, IpOwner> {
  const out = new Map<string, IpOwner>();
  for (const [k, v] of etcd.dump(`${prefix}/ip/${poolName}/`)) out.set(k.slice(k.lastIndexOf("/") + 1), JSON.parse(v) as IpOwner);
  return out;
}

describe("buffer claims", () => {
  it("3 nodes claiming concurrently over a /22 never get one address twice", async () => {
    const p = pool("big", "10.30.0.0/22");
    const {
      prefix,
      nodes: [a, b, c],
    } = cluster([p], ["a", "b", "c"], { maxClaim: 40 });
    const got = new Map<string, string[]>();
    await Promise.all(
      [a!, b!, c!].map(async (n) => {
        const mine: string[] = [];
        for (;;) {
          const batch = await n.claim("big", 40);
          if (batch.length === 0) break;
          mine.push(...batch.map((x) => x.ip));
        }
        got.set(n.node, mine);
      }),
    );
    const all = [...got.values()].flat();
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBe(1022);
    const keys = ipKeys(prefix, "big");
    expect(keys.size).toBe(1022);
    for (const [node, ips] of got) for (const ip of ips) expect(keys.get(ip)).toMatchObject({ owner: "buffer", node });
    expect(a!.conflicts + b!.conflicts + c!.conflicts).toBeGreaterThan(0); // they did race
  });

  it("refills to the high watermark below the low one", async () => {
    const p = pool("rf", "10.31.0.0/24");
    const {
      prefix,
      nodes: [a],
    } = cluster([p], ["a"], { buffer: { low: 3, high: 8 } });
    await a!.start({ background: false });
    await a!.refill("rf");
    expect(a!.bufferSize("rf")).toBe(8);
    for (let i = 0; i < 5; i++) a!.takeBuffered("rf");
    expect(await a!.refill("rf")).toBe(0); // 3 left: not below low
    a!.takeBuffered("rf");
    expect(await a!.refill("rf")).toBe(6);
    expect(ipKeys(prefix, "rf").size).toBe(14);
  });

  it("claims a deficit of more than one transaction's worth in whole transactions", async () => {
    const p = pool("whole", "10.33.0.0/22");
    const {
      prefix,
      nodes: [a],
    } = cluster([p], ["a"], { buffer: { low: 20, high: 100 }, maxClaim: 40 });
    await a!.start({ background: false });
    expect(await a!.refill("whole")).toBe(80); // 100 short: 2 transactions of 40, not 2 and one of 20
    for (let i = 0; i < 61; i++) a!.takeBuffered("whole");
    expect(await a!.refill("whole")).toBe(80); // 19 left, 81 short: not 2 and one of 1
    expect(a!.bufferSize("whole")).toBe(99);
    expect(ipKeys(prefix, "whole").size).toBe(160);
    // A deficit of one transaction's worth or less is claimed whole (the test above: 6 of 8).
  });

  it("concurrent ADDs on an empty buffer share a claim or two, not one each", async () => {
    const p = pool("herd", "10.34.0.0/22");
    const {
      prefix,
      nodes: [a],
    } = cluster([p], ["a"]);
    await a!.start({ background: false });
    const client = clients.at(-1)!;
    const txn = client.txn.bind(client);
    let txns = 0;
    client.txn = (...args) => {
      txns++;
      return txn(...args);
    };
    const got = await Promise.all(Array.from({ length: 24 }, () => a!.claimFree("herd")));
    expect(new Set(got.map((x) => x.ip)).size).toBe(24);
    expect(txns).toBeLessThanOrEqual(3); // one each was 24
    const keys = ipKeys(prefix, "herd");
    for (const x of got) expect(keys.get(x.ip)).toMatchObject({ owner: "buffer", node: "a" });
  });

  it("a 32-address pool shared by 3 buffering nodes gives exactly 32 to one of them, then pool_exhausted", async () => {
    const p = pool("small", "10.32.0.0/27", { ranges: [{ start: "10.32.0.0", end: "10.32.0.31" }] });
    expect(p.size).toBe(32n);
    const {
      prefix,
      nodes: [a, b, c],
    } = cluster([p], ["a", "b", "c"], { buffer: { low: 4, high: 12 }, pollMs: 100, handbackWaitMs: 3000 });
    for (const n of [b!, c!]) {
      await n.start();
      await n.refill("small");
    }
    await a!.start();
    expect(b!.bufferSize("small") + c!.bufferSize("small")).toBe(24);
    const taken: string[] = [];
    for (let i = 0; i < 32; i++) {
      const addr = await a!.claimFree("small");
      taken.push(addr.ip);
      const r = await a!.applyOutbox([
        { id: i, createdAt: Date.now(), op: "attach", pool: "small", ip: addr.ip, attachment: { containerID: `c${i}`, ifName: "eth0" } },
      ]);
      expect(r.outcomes[0]!.status).toBe("noop"); // a plain attachment: the key already says "owned by a"
    }
    expect(new Set(taken).size).toBe(32);
    const err = await a!.claimFree("small").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClusterError);
    expect((err as ClusterError).code).toBe("pool_exhausted");
    expect((err as Error).message).toMatch(/pool "small" has no free address on any node \(32 of 32 owned/);
    const keys = ipKeys(prefix, "small");
    expect(keys.size).toBe(32);
    for (const v of keys.values()) expect(v).toMatchObject({ owner: "buffer", node: "a" });
    expect(b!.bufferSize("small") + c!.bufferSize("small")).toBe(0);
    expect(etcd.dump(`${prefix}/handback/`).get(`${prefix}/handback/small`)).toContain('"node":"a"');
  });

  it("hands back through the poll alone when no watch runs", async () => {
    const p = pool("pollonly", "10.33.0.0/29", { ranges: [{ start: "10.33.0.0", end: "10.33.0.3" }] });
    const {
      nodes: [a, b],
    } = cluster([p], ["a", "b"], { buffer: { low: 4, high: 4 } });
    await b!.start({ background: false });
    await b!.refill("pollonly");
    expect(b!.bufferSize("pollonly")).toBe(4);
    const pending = a!.claimFree("pollonly");
    await new Promise((r) => setTimeout(r, 300));
    await b!.poll(); // b has no watch: the poll sees the signal and hands back
    expect((await pending).ip).toMatch(/^10\.33\.0\.[0-3]$/);
    expect(b!.bufferSize("pollonly")).toBe(0);
  });
});

describe("an ordinary DEL's release", () => {
  it("carries its address's revision from the buffer: one transaction; a key written since, decided on what the compare met", async () => {
    const p = pool("rel", "10.46.0.0/24");
    const {
      prefix,
      nodes: [a],
    } = cluster([p], ["a"]);
    await a!.start({ background: false });
    await a!.refill("rel");
    const txns = async (): Promise<number> => (await etcd.requests()).get("Txn") ?? 0;
    const [one, two] = [a!.takeBuffered("rel")!, a!.takeBuffered("rel")!]; // two ordinary ADDs: no etcd write
    const release = (id: number, x: typeof one, modRevision: number): OutboxRecord => ({
      id,
      createdAt: 0,
      op: "release",
      pool: "rel",
      ip: x.ip,
      containerID: `c${id}`,
      keepInBuffer: true,
      modRevision,
    });
    let before = await txns();
    expect((await a!.applyOutbox([release(1, one, one.modRevision)])).outcomes).toEqual([{ id: 1, status: "applied" }]);
    expect((await txns()) - before).toBe(1);
    expect(ipKeys(prefix, "rel").get(one.ip)).toMatchObject({ owner: "buffer", node: "a", releasedAt: expect.any(Number) });
    expect(a!.isBuffered("rel", one.ip)).toBe(true);

    // The revision is stale (the key was written since): the compare fails, returning the key, and the release is
    // written from what it returned, without another read.
    before = await txns();
    expect((await a!.applyOutbox([release(2, two, two.modRevision - 1)])).outcomes).toEqual([{ id: 2, status: "applied" }]);
    expect((await txns()) - before).toBe(2);
    expect(ipKeys(prefix, "rel").get(two.ip)).toMatchObject({ owner: "buffer", node: "a", releasedAt: expect.any(Number) });
    expect(a!.isBuffered("rel", two.ip)).toBe(true);
  });
});

describe("sticky identities", () => {
  const id = (ordinal: number) => ({ pool: "st", namespace: "db", statefulset: "redis", ordinal, iface: "eth0" });

  it("creates from the buffer, rebinds on another node with the same address, and refuses a node outside the L2 domain", async () => {
    const p = pool("st", "10.40.0.0/24");
    const {
      prefix,
      nodes: [a, b, c],
    } = cluster([p], ["a", "b", "c"]);
    for (const n of [a!, b!, c!]) await n.start({ background: false });
    await a!.refill("st");
    const before = a!.bufferSize("st");
    const made = await a!.bindSticky(id(0), { selectsNode: true, attachment: { containerID: "ctr-a", ifName: "eth0", podUID: "uid-1" } });
    expect(made.created).toBe(true);
    expect(a!.bufferSize("st")).toBe(before - 1);
    let s = JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/st/db/redis/0/eth0`)!) as StickyRecord;
    expect(s).toMatchObject({ ip: made.ip, node: "a", attachment: { containerID: "ctr-a", podUID: "uid-1", node: "a" } });
    expect(ipKeys(prefix, "st").get(made.ip)).toMatchObject({ owner: "sticky", node: "a", identity: "db/redis/0/eth0" });

    // Still attached on a (a live node, another pod UID): b must wait.
    const alive = new NodeLiveness({ client: clients[0]!, node: "a", prefix, ttlSeconds: 30 });
    await alive.renew();
    const busy = (await b!
      .bindSticky(id(0), { selectsNode: true, attachment: { containerID: "ctr-b", ifName: "eth0", podUID: "uid-2" } })
      .catch((e: unknown) => e)) as ClusterError;
    expect(busy.code).toBe("attached_elsewhere");
    expect(busy.retryable).toBe(true);
    expect(busy.message).toContain("sandbox ctr-a (pod UID uid-1) on node a");

    await alive.stop(true);
    // a's DEL reached etcd (outbox): b gets the same address.
    await a!.applyOutbox([{ id: 1, createdAt: 0, op: "detach-sticky", identity: id(0), containerID: "ctr-a" }]);
    const moved = await b!.bindSticky(id(0), { selectsNode: true, attachment: { containerID: "ctr-b", ifName: "eth0", podUID: "uid-2" } });
    expect(moved).toMatchObject({ ip: made.ip, created: false, previousNode: "a" });
    s = JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/st/db/redis/0/eth0`)!) as StickyRecord;
    expect(s).toMatchObject({ ip: made.ip, node: "b", attachment: { containerID: "ctr-b", node: "b" } });
    expect(ipKeys(prefix, "st").get(made.ip)).toMatchObject({ owner: "sticky", node: "b" });
    // c lists it bound to b.
    expect((await c!.listSticky("st")).map((x) => [x.identity.ordinal, x.record.ip, x.record.node])).toEqual([[0, made.ip, "b"]]);

    const l2 = (await c!
      .bindSticky(id(0), { selectsNode: false, selector: { matchLabels: { rack: "r1" } } })
      .catch((e: unknown) => e)) as ClusterError;
    expect(l2.code).toBe("l2_domain");
    expect(l2.message).toContain('pool "st" does not select node c (nodeSelector {"matchLabels":{"rack":"r1"}})');
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/st/db/redis/0/eth0`)!)).toMatchObject({ node: "b" });
  });

  it("two nodes creating the same identity at once: exactly one creates, the other gets the winner's address", async () => {
    const p = pool("st", "10.41.0.0/24");
    const {
      prefix,
      nodes: [a, b],
    } = cluster([p], ["a", "b"]);
    for (const n of [a!, b!]) {
      await n.start({ background: false });
      await n.refill("st");
    }
    for (let ordinal = 0; ordinal < 20; ordinal++) {
      const [ra, rb] = await Promise.all([a!, b!].map((n) => n.bindSticky(id(ordinal), { selectsNode: true })));
      expect([ra!.created, rb!.created].filter(Boolean)).toHaveLength(1);
      expect(ra!.ip).toBe(rb!.ip);
    }
    const sticky = etcd.dump(`${prefix}/sticky/`);
    expect(sticky.size).toBe(20);
    const ips = [...sticky.values()].map((v) => (JSON.parse(v) as StickyRecord).ip);
    expect(new Set(ips).size).toBe(20);
    const keys = ipKeys(prefix, "st");
    for (const ip of ips) expect(keys.get(ip)!.owner).toBe("sticky");
    // The losers' candidate addresses went back to their buffers, not leaked: every ip key is sticky or buffered by its holder.
    const buffered = new Set([...a!.buffered("st"), ...b!.buffered("st")]);
    for (const [ip, v] of keys) if (v.owner === "buffer") expect(buffered.has(ip)).toBe(true);
  });

  it("reserve ahead in bulk: 64 identities a transaction; one another node created makes the batch create none", async () => {
    const p = pool("st", "10.43.0.0/24");
    const {
      prefix,
      nodes: [a, b],
    } = cluster([p], ["a", "b"], { buffer: { low: 4, high: 128 } });
    for (const n of [a!, b!]) await n.start({ background: false });
    await a!.ensureBuffered("st", 80);
    const before = a!.bufferSize("st");
    const ids = Array.from({ length: 70 }, (_, i) => id(100 + i));
    const made = await a!.createSticky(ids, { unbound: true });
    // At most 64 a transaction (128 compares): the rest are left to bindSticky.
    expect(made.filter(Boolean)).toHaveLength(64);
    expect(made.slice(64)).toEqual([null, null, null, null, null, null]);
    expect(a!.bufferSize("st")).toBe(before - 64);
    const sticky = etcd.dump(`${prefix}/sticky/`);
    expect(sticky.size).toBe(64);
    const keys = ipKeys(prefix, "st");
    for (const x of made.slice(0, 64)) {
      expect(x).toMatchObject({ created: true, stickyModRevision: made[0]!.stickyModRevision });
      expect(JSON.parse(sticky.get(`${prefix}/sticky/st/db/redis/${x!.identity.ordinal}/eth0`)!)).toMatchObject({ ip: x!.ip, node: "" });
      expect(keys.get(x!.ip)).toMatchObject({ owner: "sticky", node: "", identity: `db/redis/${x!.identity.ordinal}/eth0` });
    }
    expect(new Set(made.slice(0, 64).map((x) => x!.ip)).size).toBe(64);

    // b creates ordinal 166 first: a's batch of 164..169 fails its compare, creates nothing, and keeps its buffer.
    const other = await b!.bindSticky(id(166), { selectsNode: true, reserveOnly: true });
    const size = a!.bufferSize("st");
    const none = await a!.createSticky(ids.slice(64), { unbound: true });
    expect(none).toEqual([null, null, null, null, null, null]);
    expect(a!.bufferSize("st")).toBe(size);
    expect(etcd.dump(`${prefix}/sticky/`).size).toBe(65);
    for (const ip of a!.buffered("st")) expect(ipKeys(prefix, "st").get(ip)).toMatchObject({ owner: "buffer", node: "a" });
    expect(ipKeys(prefix, "st").get(other.ip)).toMatchObject({ owner: "sticky", node: "b" });
  });

  it("reserve ahead on one node, used by a pod on another; release ends it cluster-wide", async () => {
    const p = pool("st", "10.42.0.0/24");
    const {
      prefix,
      nodes: [a, b],
    } = cluster([p], ["a", "b"]);
    for (const n of [a!, b!]) await n.start({ background: false });
    const r = await a!.bindSticky(id(3), { selectsNode: true, reserveOnly: true });
    expect(r.created).toBe(true);
    const again = await b!.bindSticky(id(3), { selectsNode: true, reserveOnly: true });
    expect(again).toMatchObject({ ip: r.ip, created: false });
    const used = await b!.bindSticky(id(3), { selectsNode: true, attachment: { containerID: "x", ifName: "eth0" } });
    expect(used).toMatchObject({ ip: r.ip, previousNode: "a" });
    const refused = await a!.applyOutbox([{ id: 1, createdAt: 0, op: "release-sticky", identity: id(3) }]);
    expect((refused.error as ClusterError).code).toBe("reservation_attached");
    const forced = await a!.applyOutbox([{ id: 2, createdAt: 0, op: "release-sticky", identity: id(3), force: true }]);
    expect(forced.outcomes).toEqual([{ id: 2, status: "applied" }]);
    expect(etcd.dump(`${prefix}/sticky/`).size).toBe(0);
    // The running sandbox keeps its address as an attachment until its DEL.
    expect(ipKeys(prefix, "st").get(r.ip)).toMatchObject({ owner: "attachment", node: "b", attachment: { containerID: "x" } });
    const del = await b!.applyOutbox([{ id: 3, createdAt: 0, op: "release", pool: "st", ip: r.ip, containerID: "x" }]);
    expect(del.outcomes[0]!.status).toBe("applied");
    expect(ipKeys(prefix, "st").has(r.ip)).toBe(false);
  });

  it("a DEL of the pod this node bound detaches in one transaction; after another write since, from what its compare met", async () => {
    const p = pool("st", "10.45.0.0/24");
    const {
      prefix,
      nodes: [a, b],
    } = cluster([p], ["a", "b"]);
    for (const n of [a!, b!]) await n.start({ background: false });
    const skey = `${prefix}/sticky/st/db/redis/5/eth0`;
    /** The key's value and ModRevision as etcdctl reads them. */
    const read = (key: string): { value: Record<string, unknown>; modRevision: number } => {
      const kv = (JSON.parse(etcd.etcdctl(["get", key, "-w", "json"])) as { kvs: { value: string; mod_revision: number }[] }).kvs[0]!;
      return { value: JSON.parse(Buffer.from(kv.value, "base64").toString()) as Record<string, unknown>, modRevision: kv.mod_revision };
    };
    const txns = async (): Promise<number> => (await etcd.requests()).get("Txn") ?? 0;
    const attach = (containerID: string) => ({ selectsNode: true, attachment: { containerID, ifName: "eth0", podUID: containerID } });

    const bound = await a!.bindSticky(id(5), attach("ctr-1"));
    const ikey = `${prefix}/ip/st/${bound.ip}`;
    let before = await txns();
    const del = await a!.applyOutbox([{ id: 1, createdAt: 0, op: "detach-sticky", identity: id(5), containerID: "ctr-1", ip: bound.ip }]);
    expect(del).toMatchObject({ pending: 0, outcomes: [{ id: 1, status: "applied" }] });
    expect((await txns()) - before).toBe(1); // compare and write, no read first
    let s = read(skey);
    expect(s.value).toMatchObject({ ip: bound.ip, node: "a" });
    expect(s.value).not.toHaveProperty("attachment");
    expect(read(ikey)).toEqual({
      value: expect.objectContaining({ owner: "sticky", node: "a", identity: "db/redis/5/eth0" }),
      modRevision: s.modRevision,
    });
    // The next bind, on another node, meets both keys at one revision: the address moves with the identity.
    expect(await b!.bindSticky(id(5), attach("ctr-2"))).toMatchObject({ ip: bound.ip, previousNode: "a" });

    // Written since this node's bind (pinned from another node): the one transaction's compare fails, and the detach
    // is decided on what it returned, keeping the pin.
    await a!.bindSticky(id(5), attach("ctr-3"));
    await b!.pinSticky(id(5), bound.ip);
    before = await txns();
    const late = await a!.applyOutbox([{ id: 2, createdAt: 0, op: "detach-sticky", identity: id(5), containerID: "ctr-3", ip: bound.ip }]);
    expect(late.outcomes).toEqual([{ id: 2, status: "applied" }]);
    expect((await txns()) - before).toBe(2); // the failed compare (it returned both keys) and the write
    s = read(skey);
    expect(s.value).toMatchObject({ ip: bound.ip, node: "b", pinned: true }); // the pin binds it where it was made
    expect(s.value).not.toHaveProperty("attachment");
    expect(read(ikey).modRevision).toBe(s.modRevision);

    // Applied again (a retried outbox record): nothing to detach, nothing written.
    const again = await a!.applyOutbox([{ id: 3, createdAt: 0, op: "detach-sticky", identity: id(5), containerID: "ctr-3", ip: bound.ip }]);
    expect(again.outcomes).toEqual([{ id: 3, status: "noop" }]);
    expect(read(skey).modRevision).toBe(s.modRevision);
  });

  it("a released identity's address cools down cluster-wide: no node claims it until the key's lease ends it", async () => {
    const p = pool("cool", "10.44.0.0/24", { ranges: [{ start: "10.44.0.9", end: "10.44.0.9" }] });
    const {
      prefix,
      nodes: [a, b],
    } = cluster([p], ["a", "b"], { cooldownMs: 2000, buffer: { low: 0, high: 1 }, handbackWaitMs: 200 });
    for (const n of [a!, b!]) await n.start({ background: false });
    const member = { pool: "cool", namespace: "db", statefulset: "pg", ordinal: 0, iface: "eth0" };
    const r = await a!.bindSticky(member, { selectsNode: true, reserveOnly: true });
    expect(r.ip).toBe("10.44.0.9");
    const released = await a!.applyOutbox([{ id: 1, createdAt: 0, op: "release-sticky", identity: member }]);
    expect(released.outcomes).toEqual([{ id: 1, status: "applied" }]);
    expect(etcd.dump(`${prefix}/sticky/`).size).toBe(0);
    const key = `${prefix}/ip/cool/10.44.0.9`;
    expect(ipKeys(prefix, "cool").get("10.44.0.9")).toMatchObject({ owner: "cooling", node: "a", identity: "db/pg/0/eth0" });
    const held = JSON.parse(etcd.etcdctl(["get", key, "-w", "json"])) as { kvs: { lease?: number }[] };
    expect(held.kvs[0]!.lease).toBeGreaterThan(0);
    // Another node finds nothing free while it cools ...
    expect(await b!.claim("cool", 1)).toEqual([]);
    const err = await b!.bindSticky({ ...member, ordinal: 1 }, { selectsNode: true, reserveOnly: true }).catch((e: unknown) => e);
    expect((err as ClusterError).code).toBe("pool_exhausted");
    // ... and claims it once etcd has ended the lease.
    const deadline = Date.now() + 10_000;
    while (ipKeys(prefix, "cool").has("10.44.0.9") && Date.now() < deadline) await new Promise((res) => setTimeout(res, 200));
    expect(ipKeys(prefix, "cool").has("10.44.0.9")).toBe(false);
    expect((await b!.claim("cool", 1)).map((x) => x.ip)).toEqual(["10.44.0.9"]);
  });
});

describe("etcd without quorum", () => {
  it("buffer still serves, a sticky bind fails naming etcd and the endpoints, the outbox waits and applies once", async () => {
    const p = pool("q", "10.43.0.0/24");
    const {
      prefix,
      nodes: [a],
    } = cluster([p], ["a"]);
    await a!.start({ background: false });
    await a!.refill("q");
    const sticky = await a!.bindSticky(
      { pool: "q", namespace: "db", statefulset: "pg", ordinal: 0, iface: "eth0" },
      { selectsNode: true, attachment: { containerID: "s0", ifName: "eth0" } },
    );
    const first = a!.takeBuffered("q")!;
    await a!.applyOutbox([
      { id: 0, createdAt: 0, op: "attach", pool: "q", ip: first.ip, attachment: { containerID: "c0", ifName: "eth0" } },
    ]);
    await etcd.loseQuorum(1);
    const outbox: OutboxRecord[] = [];
    try {
      const local = a!.takeBuffered("q"); // ordinary ADD: no etcd round trip
      expect(local).not.toBeNull();
      outbox.push({
        id: 1,
        createdAt: Date.now(),
        op: "attach",
        pool: "q",
        ip: local!.ip,
        attachment: { containerID: "c1", ifName: "eth0" },
      });
      outbox.push({ id: 2, createdAt: Date.now(), op: "release", pool: "q", ip: first.ip, containerID: "c0" }); // DEL of c0
      outbox.push({
        id: 3,
        createdAt: Date.now(),
        op: "detach-sticky",
        identity: { pool: "q", namespace: "db", statefulset: "pg", ordinal: 0, iface: "eth0" },
        containerID: "s0",
      });
      const err = (await a!
        .bindSticky({ pool: "q", namespace: "db", statefulset: "pg", ordinal: 1, iface: "eth0" }, { selectsNode: true })
        .catch((e: unknown) => e)) as Error;
      expect(err.message).toMatch(/^etcd unreachable/);
      for (const e of etcd.endpoints) expect(err.message).toContain(e);
      const r = await a!.applyOutbox(outbox);
      expect(r.pending).toBe(3);
      expect(r.error!.message).toMatch(/^etcd unreachable/);
    } finally {
      await etcd.restoreAll();
    }
    const r = await a!.applyOutbox(outbox);
    expect(r).toMatchObject({
      pending: 0,
      outcomes: [
        { id: 1, status: "noop" }, // the buffer key of a already says what a plain attachment needs
        { id: 2, status: "applied" },
        { id: 3, status: "applied" },
      ],
    });
    const again = await a!.applyOutbox(outbox); // idempotent
    expect(again.outcomes.map((o) => o.status)).toEqual(["noop", "noop", "noop"]);
    const keys = ipKeys(prefix, "q");
    expect(keys.has(first.ip)).toBe(false);
    expect(keys.get(outbox[0]!.op === "attach" ? outbox[0]!.ip : "")).toMatchObject({ owner: "buffer", node: "a" });
    const rec = JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/q/db/pg/0/eth0`)!) as StickyRecord;
    expect(rec.ip).toBe(sticky.ip);
    expect(rec.attachment).toBeUndefined();
  });
});

describe("the write-back after an etcd restore", () => {
  // After a restore etcd has the key of an address a member took from the node's buffer after the snapshot as that
  // node's buffer again. It once took that for another holder ("held twice") and the member's row lost its identity.
  it("turns the node's own buffer key of a sticky row's address into the identity's", async () => {
    const p = pool("wb", "10.37.0.0/29");
    const {
      prefix,
      nodes: [a],
    } = cluster([p], ["a"]);
    await a!.start({ background: false });
    await a!.refill("wb");
    const x = a!.buffered("wb")[0]!;
    expect(ipKeys(prefix, "wb").get(x)).toMatchObject({ owner: "buffer", node: "a" });
    const identity = { pool: "wb", namespace: "db", statefulset: "pg", ordinal: 3, iface: "-" };
    const [out] = await a!.join([{ identity, ip: x, pinned: false, attachment: { containerID: "c3", ifName: "eth0" } }], {
      restored: true,
    });
    expect(out).toMatchObject({ status: "written" });
    expect(ipKeys(prefix, "wb").get(x)).toMatchObject({ owner: "sticky", node: "a", identity: "db/pg/3/-" });
    const rec = JSON.parse(etcd.dump(`${prefix}/sticky/`).get(`${prefix}/sticky/wb/db/pg/3/-`)!) as StickyRecord;
    expect(rec).toMatchObject({ ip: x, node: "a", attachment: { containerID: "c3", node: "a" } });
  });
});

describe("join claims", () => {
  it("an address another node's buffer gives up later (a late handback) is written as the joined sandbox's by the retry", async () => {
    const p = pool("jc", "10.36.0.0/29");
    const {
      prefix,
      nodes: [a, b],
    } = cluster([p], ["a", "b"], { handbackWaitMs: 200 });
    await b!.start({ background: false }); // b answers no handback: it only polls when told to here
    await b!.refill("jc");
    const x = b!.buffered("jc")[0]!;
    await a!.start({ background: false });
    const [joined] = await a!.join([{ pool: "jc", ip: x, attachment: { containerID: "ax", ifName: "eth0" } }]);
    expect(joined).toMatchObject({ status: "conflict", claimed: true, heldBy: { owner: "buffer", node: "b" } });
    expect(await a!.retryJoinClaims()).toEqual([]); // still b's
    expect(await b!.handBack("jc", [x])).toBeGreaterThan(0);
    expect(await a!.retryJoinClaims()).toEqual([x]);
    expect(ipKeys(prefix, "jc").get(x)).toMatchObject({ owner: "attachment", node: "a", attachment: { containerID: "ax" } });
    expect(etcd.dump(`${prefix}/join/`).size).toBe(0);
    expect(a!.joinClaimsPending).toBe(0);
  });
});
