// etcd out of reach of one node: (1) restarted while etcd has no quorum, a node serves ordinary ADDs from the
// buffer persisted in its SQLite, and none of them is an address etcd gives another node (checked in etcd once the
// quorum is back); (2) the fence: a node cut off from etcd for longer than the grace period (SIGSTOP: its lease
// expires, another node's reaper frees its buffer and hands it out) refuses to hand out buffered addresses when it
// runs again, and re-reads its buffer from etcd before it serves one.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import {
  type Acks,
  addWithRetries,
  etcdIps,
  expectConsistent,
  firstIp,
  freshPrefix,
  restartNode,
  sqliteBuffer,
  startClusterNodes,
  underlayAttachment,
  until,
} from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { cleanupIpamdTest } from "../helpers/ipamd";

let etcd: EtcdCluster;
beforeAll(async () => {
  etcd = await EtcdCluster.start();
}, 120_000);
afterAll(async () => {
  await cleanupIpamdTest();
  await etcd?.destroy();
});

describe("a node without etcd", () => {
  it("restarted while etcd has no quorum: ordinary ADDs from its SQLite buffer, never another node's address", async () => {
    const prefix = freshPrefix("offline");
    const pools = [{ name: "o", subnet: "10.91.0.0/26", networks: ["underlay"] }];
    const cluster = { buffer: { low: 4, high: 8 } };
    let [a, b] = await startClusterNodes(etcd, [{ name: "a" }, { name: "b" }], { pools, prefix, cluster });
    const acks: Acks = new Map();
    for (const [n, id] of [
      [a!, "a-0"],
      [b!, "b-0"],
      [b!, "b-1"],
    ] as const) {
      const r = await n.client.allocate(underlayAttachment(id));
      acks.set(id, { node: n.name, ip: firstIp(r), owner: r.owner });
    }
    // 8 claimed, one used: 7 left (no refill above the low mark of 4)
    await until("a's buffer", async () => (await a!.client.status()).cluster!.buffer.o! >= 6);
    await until("b's buffer", async () => (await b!.client.status()).cluster!.buffer.o! >= 6);
    expect(await a!.stop()).toBe(0);
    const persisted = new Set(sqliteBuffer(a!).map((e) => e.ip));
    expect(persisted.size).toBeGreaterThanOrEqual(6);
    // a-0's address stays in the persisted buffer as its key stays a's buffer; read back, the row's use is subtracted.
    expect(persisted.has(acks.get("a-0")!.ip)).toBe(true);
    const ofB = new Set([...etcdIps(etcd, prefix, "o")].filter(([, v]) => v.node === "b").map(([ip]) => ip));

    await etcd.loseQuorum(0);
    try {
      a = await restartNode(a!);
      await until("a to report etcd unreachable", async () => (await a!.client.status()).cluster!.etcd.state === "unreachable");
      for (let i = 1; i <= 5; i++) {
        const r = await a.client.allocate(underlayAttachment(`a-${i}`));
        expect(persisted.has(firstIp(r))).toBe(true); // from the persisted buffer
        expect(ofB.has(firstIp(r))).toBe(false);
        acks.set(`a-${i}`, { node: "a", ip: firstIp(r), owner: r.owner });
      }
      expect(firstIp(await a.client.allocate(underlayAttachment("a-0")))).toBe(acks.get("a-0")!.ip); // the same answer as before
      expect(new Set([...acks.values()].map((x) => x.ip)).size).toBe(acks.size);
    } finally {
      await etcd.restoreAll();
    }
    await until("a to reach etcd again", async () => (await a!.client.status()).cluster!.etcd.state !== "unreachable", 30_000);
    // In etcd every address a handed out offline is a's; b still holds its own.
    const keys = etcdIps(etcd, prefix, "o");
    for (const [id, x] of acks) expect(keys.get(x.ip), id).toMatchObject({ node: x.node });
    await expectConsistent(etcd, prefix, ["o"], [a!, b!], acks);
  }, 120_000);

  it("the fence: cut off longer than the grace period, it stops handing out buffered addresses and re-reads its buffer first", async () => {
    const prefix = freshPrefix("fence");
    const pools = [{ name: "f", subnet: "10.92.0.0/27", networks: ["underlay"] }];
    const cluster = { nodeGraceSeconds: 3, leaseTTLSeconds: 2, buffer: { low: 4, high: 8 } };
    const [x, y] = await startClusterNodes(etcd, [{ name: "x" }, { name: "y" }], { pools, prefix, cluster });
    await until("x's buffer to be full", async () => (await x!.client.status()).cluster!.buffer.f! >= 8);
    // The claimed addresses reach SQLite in a later group commit than the one that fills the buffer in memory.
    await until("x's buffer in its SQLite file", () => sqliteBuffer(x!).length >= 8);
    const bufferedByX = new Set(sqliteBuffer(x!).map((e) => e.ip));
    const ofX = () => [...etcdIps(etcd, prefix, "f")].filter(([, v]) => v.node === "x");
    expect(ofX().length).toBeGreaterThanOrEqual(8);

    process.kill(x!.proc.pid!, "SIGSTOP");
    const acks: Acks = new Map();
    let stolen: string[] = [];
    try {
      await until("y's reaper to free x's buffer after the grace period", () => ofX().length === 0, 30_000);
      // y takes what is free, x's former buffer with it (a /27 has 30 usable addresses).
      for (let i = 0; i < 26; i++) {
        const r = await y!.client.allocate(underlayAttachment(`y-${i}`));
        acks.set(`y-${i}`, { node: "y", ip: firstIp(r), owner: r.owner });
      }
      stolen = [...acks.values()].map((a) => a.ip).filter((ip) => bufferedByX.has(ip));
      expect(stolen.length).toBeGreaterThan(0);
    } finally {
      process.kill(x!.proc.pid!, "SIGCONT");
    }
    // Running again, its lease long gone: no buffered address before etcd confirmed it and the buffer was re-read.
    const first = await x!.client.allocate(underlayAttachment("x-0")).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(IpamdError);
    expect((first as IpamdError).code).toBe("cluster_unavailable");
    expect((first as Error).message).toMatch(/node x has not renewed its etcd liveness for \d+ s/);
    const { r } = await addWithRetries(x!, underlayAttachment("x-0"), 60);
    expect(stolen).not.toContain(firstIp(r));
    acks.set("x-0", { node: "x", ip: firstIp(r), owner: r.owner });
    expect((await x!.client.status()).cluster!.liveness.fenced).toBe(false);
    for (const ip of stolen) expect(sqliteBuffer(x!).map((e) => e.ip)).not.toContain(ip);
    await expectConsistent(etcd, prefix, ["f"], [x!, y!], acks);
  }, 120_000);
});
