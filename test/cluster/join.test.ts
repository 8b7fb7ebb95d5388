// Joining cluster mode: a node whose database has reservations from single-node mode (a running node switched to a
// `cluster` section) writes them to etcd before it serves, against a REAL 3-member etcd: its sticky reservations
// become identities bound to it (a member then keeps its address on another node), its plain attachments address
// keys; no other node is handed one of those addresses. An address etcd already gives another node is logged as held
// twice, and without etcd such a node does not start.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import { clusterSection, etcdIps, firstIp, freshPrefix, sqliteRows, underlayAttachment, until } from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { cleanupIpamdTest, makeTempDir, startIpamd } from "../helpers/ipamd";

let etcd: EtcdCluster;
beforeAll(async () => {
  etcd = await EtcdCluster.start();
}, 120_000);
afterAll(async () => {
  await cleanupIpamdTest();
  await etcd?.destroy();
});

const POOLS = [{ name: "j", subnet: "10.93.0.0/28", networks: ["underlay"] }]; // 14 usable addresses
const member = (id: string, ordinal: number) => ({
  ...underlayAttachment(id),
  podNamespace: "db",
  podName: `web-${ordinal}`,
  podUID: `uid-${id}`,
});
const singleNode = (name: string) => ({
  node: { name },
  pools: POOLS,
  cooldownSeconds: 0,
  statefulSets: [{ namespace: "db", name: "web" }],
});

describe("a node with single-node reservations joins cluster mode", () => {
  it("writes them to etcd before it serves; no other node gets their addresses; a member keeps its address on another node", async () => {
    const prefix = freshPrefix("join");
    const dir = makeTempDir("berth-join-a-");
    let a = await startIpamd({ dir, config: singleNode("a") });
    const plain = firstIp(await a.client.allocate(underlayAttachment("p1")));
    const web0 = firstIp(await a.client.allocate(member("m0", 0)));
    const reserved = (await a.client.reserve({ namespace: "db", statefulset: "web", replicas: 3 })).reservations;
    const held = [plain, ...reserved.map((r) => r.ip)];
    expect(reserved.map((r) => r.ip)[0]).toBe(web0);
    expect(await a.stop()).toBe(0);

    a = await startIpamd({ dir, config: { ...singleNode("a"), cluster: clusterSection(etcd, prefix) } });
    const sticky = new Map([...etcd.dump(`${prefix}/sticky/j/db/web/`)].map(([k, v]) => [k.split("/").at(-2), JSON.parse(v)]));
    expect(Object.fromEntries(sticky)).toEqual({
      "0": expect.objectContaining({ ip: web0, node: "a", attachment: expect.objectContaining({ containerID: "m0", node: "a" }) }),
      "1": expect.objectContaining({ ip: reserved[1]!.ip, node: "a" }),
      "2": expect.objectContaining({ ip: reserved[2]!.ip, node: "a" }),
    });
    expect(sticky.get("1")!.attachment).toBeUndefined();
    const keys = etcdIps(etcd, prefix, "j");
    expect(keys.get(plain)).toMatchObject({ owner: "attachment", node: "a", attachment: { containerID: "p1" } });
    for (const r of reserved) expect(keys.get(r.ip)).toMatchObject({ owner: "sticky", node: "a", identity: `db/web/${r.ordinal}/-` });
    expect(
      sqliteRows(a)
        .map((r) => r.ip)
        .sort(),
    ).toEqual([...held].sort()); // SQLite keeps them all
    expect(a.stderr()).toContain('"written":4,"present":0,"conflicts":0');

    // Another node takes every free address of the pool, and none of a's.
    const b = await startIpamd({
      dir: makeTempDir("berth-join-b-"),
      config: { ...singleNode("b"), cluster: clusterSection(etcd, prefix) },
    });
    const got: string[] = [];
    for (let i = 0; i < 14; i++) {
      const r = await b.client.allocate(underlayAttachment(`b${i}`)).catch((e: unknown) => e);
      if (r instanceof IpamdError) {
        expect(r.code).toBe("pool_exhausted");
        break;
      }
      got.push(firstIp(r as { ips: { address: string }[] }));
    }
    expect(got.length).toBe(14 - held.length);
    expect(got.filter((ip) => held.includes(ip))).toEqual([]);

    // web-0 moves to b: the address it had in single-node mode follows it.
    await a.client.release(underlayAttachment("m0"));
    expect(firstIp(await b.client.allocate(member("m0-b", 0)))).toBe(web0);
    // A restart is no second join.
    expect(await a.stop()).toBe(0);
    a = await a.restart();
    expect(a.stderr()).not.toContain("joined cluster mode");
    // Back to single-node mode, it says that it will not join again.
    expect(await a.stop()).toBe(0);
    a = await startIpamd({ dir, config: singleNode("a") });
    expect(a.stderr()).toContain("this database ran in cluster mode before: in single-node mode it does not follow etcd");
  }, 120_000);

  it("an address etcd gives another node is logged as held twice, etcd's holder keeps it; without etcd no start", async () => {
    const prefix = freshPrefix("join2");
    const a = await startIpamd({
      dir: makeTempDir("berth-join2-a-"),
      config: { ...singleNode("a"), cluster: clusterSection(etcd, prefix) },
    });
    const ofA = firstIp(await a.client.allocate(underlayAttachment("pa")));
    // c ran in single-node mode on the same pool meanwhile, and handed out the same address.
    const dir = makeTempDir("berth-join2-c-");
    let c = await startIpamd({ dir, config: singleNode("c") });
    let ofC = "";
    for (let i = 0; ofC !== ofA && i < 14; i++) ofC = firstIp(await c.client.allocate(underlayAttachment(`pc${i}`)));
    expect(ofC).toBe(ofA);
    expect(await c.stop()).toBe(0);
    // Without etcd (nothing listens on these ports) it refuses to start: its addresses must be in etcd first.
    const down = { etcd: { endpoints: ["http://127.0.0.1:1", "http://127.0.0.1:2"], prefix } };
    const refused = await startIpamd({ dir, config: { ...singleNode("c"), cluster: down } }).catch((e: unknown) => e as Error);
    expect((refused as Error).message).toMatch(
      /cannot join cluster mode: etcd unreachable: .*This database has \d+ reservations from single-node mode, which ipamd writes to etcd/,
    );
    c = await startIpamd({ dir, config: { ...singleNode("c"), cluster: clusterSection(etcd, prefix) } });
    const conflict = c
      .stderr()
      .split("\n")
      .find((l) => l.includes("joining cluster mode") && l.includes(ofA));
    expect(JSON.parse(conflict!)).toMatchObject({
      level: 50,
      ip: ofA,
      msg:
        `joining cluster mode: ${ofA} is held in etcd by node a's buffer; the address is held twice in the cluster: ` +
        "etcd's holder keeps it, a sandbox here keeps it until its DEL (move one of them to another address); " +
        `claimed for that sandbox (${prefix}/join/): the key becomes its attachment once that buffer gives it up`,
    });
    expect(etcdIps(etcd, prefix, "j").get(ofA)).toMatchObject({ owner: "buffer", node: "a" }); // a plain attachment's key
    expect(sqliteRows(c).some((r) => r.ip === ofA)).toBe(true); // the sandbox here keeps it until its DEL

    // The same member ran alone on e too, at an address of its own: the identity stays etcd's (bound to a), and
    // e's sandbox keeps its address, held in etcd as that sandbox's attachment so that no node is handed it.
    const onA = firstIp(await a.client.allocate(member("wa", 0)));
    const dirE = makeTempDir("berth-join2-e-");
    let e = await startIpamd({ dir: dirE, config: singleNode("e") });
    expect(firstIp(await e.client.allocate({ ...member("we", 0), ips: ["10.93.0.12"] }))).toBe("10.93.0.12");
    expect(await e.stop()).toBe(0);
    e = await startIpamd({ dir: dirE, config: { ...singleNode("e"), cluster: clusterSection(etcd, prefix) } });
    expect(e.stderr()).toContain(
      `etcd's sticky identity db/web/0/- names ${onA} (bound to node a), this node's record 10.93.0.12; ` +
        "10.93.0.12 stays with sandbox we until its DEL",
    );
    expect(etcdIps(etcd, prefix, "j").get("10.93.0.12")).toMatchObject({
      owner: "attachment",
      node: "e",
      attachment: { containerID: "we" },
    });
    expect(JSON.parse(etcd.dump(`${prefix}/sticky/j/db/web/0/-`).values().next().value!)).toMatchObject({ ip: onA, node: "a" });
    await until("e's row to become the sandbox's attachment", () =>
      sqliteRows(e).some((r) => r.ip === "10.93.0.12" && r.owner === "we/eth0" && r.sticky === 0),
    );
  }, 120_000);

  it("an address in another node's unused buffer is handed back to the joining node", async () => {
    const prefix = freshPrefix("join3");
    const h = await startIpamd({
      dir: makeTempDir("berth-join3-h-"),
      config: { ...singleNode("h"), cluster: clusterSection(etcd, prefix) },
    });
    await until("h to buffer the whole pool", async () => (await h.client.status()).cluster!.buffer.j === 14);
    const dir = makeTempDir("berth-join3-f-");
    let f = await startIpamd({ dir, config: singleNode("f") });
    await f.client.allocate({ ...member("wf", 5), ips: ["10.93.0.13"] });
    await f.client.reserve({ namespace: "db", statefulset: "web", replicas: 7 }); // 0-4 and 6 from f's first addresses
    expect(await f.stop()).toBe(0);
    f = await startIpamd({ dir, config: { ...singleNode("f"), cluster: clusterSection(etcd, prefix) } });
    expect(f.stderr()).toContain('"written":7,"present":0,"conflicts":0');
    const sticky = etcd.dump(`${prefix}/sticky/j/db/web/`);
    expect(sticky.size).toBe(7);
    for (const v of sticky.values()) expect(JSON.parse(v)).toMatchObject({ node: "f" });
    expect(JSON.parse(sticky.get(`${prefix}/sticky/j/db/web/5/-`)!)).toMatchObject({ ip: "10.93.0.13", attachment: { containerID: "wf" } });
    const keys = etcdIps(etcd, prefix, "j");
    for (const r of sqliteRows(f)) expect(keys.get(r.ip)).toMatchObject({ owner: "sticky", node: "f" });
  }, 120_000);

  it("an address cooling in another node's buffer, or after a released identity, is the joining sandbox's", async () => {
    const prefix = freshPrefix("join5");
    const cooling = { cooldownSeconds: 4 };
    const h = await startIpamd({
      dir: makeTempDir("berth-join5-h-"),
      config: { ...singleNode("h"), ...cooling, cluster: clusterSection(etcd, prefix) },
    });
    const released = firstIp(await h.client.allocate(underlayAttachment("h0")));
    await h.client.release(underlayAttachment("h0")); // cools in h's buffer
    const ofMember = firstIp(await h.client.allocate(member("h3", 3)));
    await h.client.release(underlayAttachment("h3"));
    await h.client.releaseReservations({ namespace: "db", statefulset: "web", ordinal: 3 }); // a cooling key on a lease
    expect(etcdIps(etcd, prefix, "j").get(ofMember)).toMatchObject({ owner: "cooling" });
    const dir = makeTempDir("berth-join5-f-");
    let f = await startIpamd({ dir, config: { ...singleNode("f"), ...cooling } });
    await f.client.allocate({ ...underlayAttachment("pf"), ips: [released] });
    await f.client.allocate({ ...member("wf", 4), ips: [ofMember] });
    expect(await f.stop()).toBe(0);
    f = await startIpamd({ dir, config: { ...singleNode("f"), ...cooling, cluster: clusterSection(etcd, prefix) } });
    expect(f.stderr()).toContain('"written":2,"present":0,"conflicts":0');
    expect(etcdIps(etcd, prefix, "j").get(released)).toMatchObject({ owner: "attachment", node: "f", attachment: { containerID: "pf" } });
    expect(etcdIps(etcd, prefix, "j").get(ofMember)).toMatchObject({ owner: "sticky", node: "f", identity: "db/web/4/-" });
    await new Promise((r) => setTimeout(r, 4500)); // both cooldowns over: the keys stay, h hands out neither
    expect(etcdIps(etcd, prefix, "j").get(ofMember)).toMatchObject({ owner: "sticky", node: "f" });
    const got: string[] = [];
    for (let i = 0; i < 14; i++) {
      const r = await h.client.allocate(underlayAttachment(`h${i + 10}`)).catch(() => undefined);
      if (!r) break;
      got.push(firstIp(r));
    }
    expect(got.length).toBeGreaterThan(0);
    expect(got).not.toContain(released);
    expect(got).not.toContain(ofMember);
  }, 120_000);

  it("a joined sandbox's address in a dead node's buffer is its attachment once that node is reaped, no other node's", async () => {
    const prefix = freshPrefix("join6");
    // c's claims wait up to 2 s for a handback: a buffers free addresses once b is reaped, and under CPU load a
    // handback within 0.5 s was too tight (y stayed in a's buffer, c was told pool_exhausted).
    const fast = { nodeGraceSeconds: 3, leaseTTLSeconds: 2, handbackWaitSeconds: 2 };
    const b = await startIpamd({
      dir: makeTempDir("berth-join6-b-"),
      config: { ...singleNode("b"), cluster: clusterSection(etcd, prefix, fast) },
    });
    await until("b to buffer the whole pool", async () => (await b.client.status()).cluster!.buffer.j === 14);
    await b.kill9(); // b cannot hand its buffer back; its liveness key expires with its lease
    const [x, y] = ["10.93.0.5", "10.93.0.6"];
    const dir = makeTempDir("berth-join6-a-");
    let a = await startIpamd({ dir, config: singleNode("a") });
    await a.client.allocate({ ...underlayAttachment("ax"), ips: [x] });
    await a.client.allocate({ ...underlayAttachment("ay"), ips: [y] });
    expect(await a.stop()).toBe(0);
    a = await startIpamd({ dir, config: { ...singleNode("a"), cluster: clusterSection(etcd, prefix, fast) } });
    const joined = a.stderr();
    const claims = [...etcd.dump(`${prefix}/join/`).keys()].sort();
    // The claims are etcd's: they outlive a restart; the sandbox on y goes, its claim with it.
    expect(await a.stop()).toBe(0);
    a = await a.restart();
    await a.client.release(underlayAttachment("ay"));
    await until("the release applied", async () => (await a.client.status()).cluster!.outboxPending === 0);
    const c = await startIpamd({
      dir: makeTempDir("berth-join6-c-"),
      config: { ...singleNode("c"), cluster: clusterSection(etcd, prefix, fast) },
    });
    await until("b to be reaped", () => ![...etcdIps(etcd, prefix, "j").values()].some((v) => v.node === "b"), 30_000);
    // c takes every address it can get: never x (its key is a's sandbox's attachment), y is free again.
    const got: string[] = [];
    for (let i = 0; i < 14; i++) {
      const r = await c.client.allocate(underlayAttachment(`c${i}`)).catch((e: unknown) => e);
      if (r instanceof IpamdError) {
        expect(r.code).toBe("pool_exhausted");
        break;
      }
      got.push(firstIp(r as { ips: { address: string }[] }));
    }
    expect(got).not.toContain(x);
    expect(got).toContain(y);
    expect(etcdIps(etcd, prefix, "j").get(x)).toMatchObject({ owner: "attachment", node: "a", attachment: { containerID: "ax" } });
    expect(joined).toContain('"written":0,"present":0,"conflicts":2');
    expect(joined).toContain(`${x} is held in etcd by node b's buffer`);
    expect(claims).toEqual([`${prefix}/join/j/${x}`, `${prefix}/join/j/${y}`]);
    expect(etcd.dump(`${prefix}/join/`).size).toBe(0);
    expect(a.stderr() + c.stderr()).toContain("became their attachments");
  }, 120_000);
});
