// The reservation stream in cluster mode: three REAL ipamd daemons on one REAL 3-member etcd, a watcher on node C.
// C's stream follows every sticky reservation of the cluster, whichever node changes it: a reserve-ahead on A, a
// member's ADD on B through the BUILT berth-ipam plugin (the way a runtime runs it), its DEL, a re-ADD on A, the
// release. A watcher that disconnects resumes with since= and gets every event exactly once, in order; so does one
// that follows C across a SIGTERM, a kill -9 and an etcd compaction while A keeps changing reservations. What the
// stream says is checked against etcd's keys (etcdctl) and C's GET /v1/reservations; the built ipamctl follows too.
// A node's own member ADD is in its stream once; its ordinary attachments are in its stream only. A pin, a pin to
// another address and a forced release are the events etcd's changes describe (heldBy included). Under a storm of
// member ADDs and DELs on A and B while C is killed and restarted, C's events are etcd's own history, each once.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Reservation, ReservationEvent, WatchLine } from "../../api/types";
import { addWithRetries, type ClusterNodeHandle, etcdIps, freshPrefix, restartNode, startClusterNodes, until } from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { buildIpamd, cleanupIpamdTest } from "../helpers/ipamd";
import { pluginPath, runCni } from "../helpers/plugins";

let etcd: EtcdCluster;
let nodes: ClusterNodeHandle[] = [];
const prefix = freshPrefix("stream");
const POOL = "p4";
const POOLS = [{ name: POOL, subnet: "10.83.0.0/24", ranges: [{ start: "10.83.0.10", end: "10.83.0.250" }] }];

beforeAll(async () => {
  etcd = await EtcdCluster.start();
  nodes = await startClusterNodes(
    etcd,
    ["a", "b", "c"].map((n) => ({ name: `node-${n}` })),
    {
      pools: POOLS,
      prefix,
      extra: {
        statefulSets: [
          { namespace: "db", name: "web" },
          { namespace: "db", name: "burst" },
          { namespace: "db", name: "storm" },
        ],
      },
    },
  );
}, 120_000);
afterAll(async () => {
  await cleanupIpamdTest();
  await etcd?.destroy();
  for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
});

/** A watcher of one node's stream (the HTTP client's watchReservations), collecting events until stopped. */
function follow(n: ClusterNodeHandle, since?: number): { events: ReservationEvent[]; bookmarks: number[]; stop(): Promise<void> } {
  const events: ReservationEvent[] = [];
  const bookmarks: number[] = [];
  const ac = new AbortController();
  const ended = n.client
    .watchReservations(
      since,
      (l: WatchLine) => {
        if (l.type === "bookmark") bookmarks.push(l.seq);
        else if (l.type !== "error") events.push(l);
      },
      ac.signal,
    )
    .catch(() => undefined);
  return {
    events,
    bookmarks,
    stop: async () => {
      ac.abort();
      await ended;
    },
  };
}

/** Every event after `since`, replayed from the node's database (ends at the first bookmark). */
async function replay(n: ClusterNodeHandle, since: number): Promise<ReservationEvent[]> {
  const w = follow(n, since);
  await until("the replay's bookmark", () => w.bookmarks.length > 0);
  await w.stop();
  return w.events;
}

/** The last sequence a node gave out (its bookmark). */
async function lastSeq(n: ClusterNodeHandle): Promise<number> {
  const w = follow(n);
  await until("a bookmark", () => w.bookmarks.length > 0);
  await w.stop();
  return w.bookmarks[0]!;
}

const short = (e: ReservationEvent) => [e.type, e.reservation.owner, e.node, e.reason];

/** The sticky reservations the events leave behind: owner -> what a load balancer would keep. */
function fold(events: ReservationEvent[], into = new Map<string, Reservation>()): Map<string, Reservation> {
  for (const e of events) {
    if (!e.reservation.sticky) continue;
    if (e.type === "released") into.delete(e.reservation.owner);
    else into.set(e.reservation.owner, e.reservation);
  }
  return into;
}

type Brief = { ip: string; node: string; containerID: string | null };
const brief = (m: Map<string, Reservation>): Record<string, Brief> =>
  Object.fromEntries([...m].sort().map(([o, r]) => [o, { ip: r.ip, node: r.node ?? "", containerID: r.containerID ?? null }]));

/** etcd's sticky identities of pool p4 (etcdctl): owner -> ip, bound node, attached container. */
function etcdSticky(statefulset: string): Record<string, Brief> {
  const out: [string, Brief][] = [];
  for (const [k, v] of etcd.dump(`${prefix}/sticky/${POOL}/db/${statefulset}/`)) {
    const [ns, sts, ordinal] = k.slice(`${prefix}/sticky/${POOL}/`.length).split("/");
    const r = JSON.parse(v) as { ip: string; node: string; attachment?: { containerID: string } };
    out.push([`${ns}/${sts}/${ordinal}`, { ip: r.ip, node: r.node, containerID: r.attachment?.containerID ?? null }]);
  }
  return Object.fromEntries(out.sort());
}

/** What node C lists (GET /v1/reservations, cluster mode) of one StatefulSet. */
async function listed(n: ClusterNodeHandle, statefulset: string): Promise<Record<string, Brief>> {
  const r = await n.client.reservations({ namespace: "db", statefulset });
  expect(r.cluster?.source).toBe("etcd");
  return brief(new Map(r.reservations.map((x) => [x.owner, x])));
}

const ipam = (n: ClusterNodeHandle) => ({
  cniVersion: "1.0.0",
  name: "n",
  type: "macvlan",
  ipam: { type: "berth-ipam", socket: n.socket },
});
const member = (pod: string, uid: string) => `IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=${pod};K8S_POD_UID=${uid}`;
function plugin(command: "ADD" | "DEL", n: ClusterNodeHandle, containerId: string, pod: string, uid: string) {
  return runCni(pluginPath("berth-ipam"), {
    command,
    config: ipam(n),
    containerId,
    netns: "/proc/self/ns/net",
    ifName: "eth0",
    cniArgs: member(pod, uid),
  });
}
const podReq = (containerID: string, pod: string, uid: string) => ({
  containerID,
  ifName: "eth0",
  network: "n",
  podNamespace: "db",
  podName: pod,
  podUID: uid,
});
/** A DEL's detach reaches etcd through the outbox: wait until it is applied. */
const outboxApplied = (n: ClusterNodeHandle) =>
  until(`${n.name}'s outbox applied`, async () => (await n.client.status()).cluster?.outboxPending === 0);

describe("a watcher on node C follows every sticky reservation of the cluster", () => {
  it("reserve-ahead on A, ADD and DEL on B (built plugin), re-ADD on A, release: each once, in order, across a reconnect", async () => {
    const [a, b, c] = nodes as [ClusterNodeHandle, ClusterNodeHandle, ClusterNodeHandle];
    const start = await lastSeq(c);
    const ctl = await spawnIpamctl(c, start);
    const table = await spawnIpamctl(c, start, []);
    const first = follow(c, start);

    const reserved = await a.client.reserve({ namespace: "db", statefulset: "web", replicas: 2 });
    const ip0 = reserved.reservations.find((r) => r.ordinal === 0)!.ip;
    const ip1 = reserved.reservations.find((r) => r.ordinal === 1)!.ip;
    const addB = plugin("ADD", b, "ctr-on-b", "web-0", "uid-b");
    expect(addB.code, addB.stdout + addB.stderr).toBe(0);
    expect(addB.json.ips[0].address).toBe(`${ip0}/24`);
    await until("C's stream shows the ADD on B", () => first.events.length >= 3);
    // C's view now: from its stream, from etcd and from its own listing alike.
    expect(brief(fold(first.events))).toEqual(etcdSticky("web"));
    expect(await listed(c, "web")).toEqual(etcdSticky("web"));
    expect(etcdSticky("web")["db/web/0"]).toEqual({ ip: ip0, node: "node-b", containerID: "ctr-on-b" });
    await first.stop();
    const resumeAt = first.events[first.events.length - 1]!.seq;

    // While nobody watches: the DEL on B.
    const delB = plugin("DEL", b, "ctr-on-b", "web-0", "uid-b");
    expect(delB.code, delB.stdout + delB.stderr).toBe(0);
    await outboxApplied(b);
    const second = follow(c, resumeAt);
    await a.client.allocate(podReq("ctr-on-a", "web-0", "uid-a"));
    await until("C's stream shows the re-ADD on A", () => second.events.length >= 2);
    expect(brief(fold(second.events, fold(first.events)))).toEqual(etcdSticky("web"));
    expect(etcdSticky("web")["db/web/0"]).toEqual({ ip: ip0, node: "node-a", containerID: "ctr-on-a" });
    await a.client.release(podReq("ctr-on-a", "web-0", "uid-a"));
    await outboxApplied(a);
    await b.client.releaseReservations({ namespace: "db", statefulset: "web" });
    await until("C's stream shows the release", () => second.events.length >= 5);
    await new Promise((r) => setTimeout(r, 500)); // nothing more may come
    await second.stop();

    const seen = [...first.events, ...second.events];
    // Reserved in parallel: the two identities in either order; the rest in the order it happened.
    expect(
      seen
        .slice(0, 2)
        .map(short)
        .sort((x, y) => String(x[1]).localeCompare(String(y[1]))),
    ).toEqual([
      ["reserved", "db/web/0", "node-a", "cluster-reserve"],
      ["reserved", "db/web/1", "node-a", "cluster-reserve"],
    ]);
    expect(seen.slice(2).map(short)).toEqual([
      ["attached", "db/web/0", "node-b", "cluster-attach"],
      ["detached", "db/web/0", "node-b", "cluster-detach"],
      ["attached", "db/web/0", "node-a", "cluster-attach"],
      ["detached", "db/web/0", "node-a", "cluster-detach"],
      ["released", "db/web/0", "node-a", "cluster-release"],
      ["released", "db/web/1", "node-a", "cluster-release"],
    ]);
    for (const e of seen) expect(e.reservation.ip).toBe(e.reservation.ordinal === 0 ? ip0 : ip1);
    expect(seen[2]!.reservation).toMatchObject({ state: "attached", containerID: "ctr-on-b", node: "node-b", sticky: true });
    expect(seen[3]!.reservation).toMatchObject({ state: "detached", node: "node-b" });
    // Exactly once, in order: the sequence numbers follow each other, and C's database replays the same events.
    expect(seen.map((e) => e.seq)).toEqual(seen.map((_, i) => start + 1 + i));
    // One change of one identity an event; a reserve ahead creates its identities in one transaction (one revision).
    expect(new Set(seen.map((e) => `${e.etcdRevision} ${e.reservation.owner}`)).size).toBe(seen.length);
    expect(seen[0]!.etcdRevision).toBe(seen[1]!.etcdRevision);
    expect(seen.map((e) => e.etcdRevision)).toEqual(seen.map((e) => e.etcdRevision!).sort((x, y) => x - y));
    expect(await replay(c, start)).toEqual(seen);
    expect(etcdSticky("web")).toEqual({});
    expect(await listed(c, "web")).toEqual({});
    // The built ipamctl, following C from the same sequence, printed the same lines.
    await until("ipamctl printed every event", () => ctl.events().length >= seen.length);
    ctl.proc.kill("SIGTERM");
    expect(ctl.events()).toEqual(seen);
    // Its table names the node that made each change.
    await until("ipamctl's table", () => table.text().split("\n").length > seen.length + 1);
    table.proc.kill("SIGTERM");
    const rows = table
      .text()
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split("\t"));
    expect(rows[0]).toEqual(["SEQ", "EVENT", "IP", "POOL", "OWNER", "POD", "NODE", "REASON", "AT"]);
    expect(rows.slice(1).map((r) => r.slice(0, 8))).toEqual(
      seen.map((e) => [String(e.seq), e.type, e.reservation.ip, POOL, e.reservation.owner, "-", e.node, e.reason]),
    );
    // A's and B's streams carry the same sticky events under their own sequence numbers.
    for (const other of [a, b]) {
      const web = async () => (await replay(other, 0)).filter((e) => e.reservation.statefulset === "web");
      await until(`${other.name}'s stream`, async () => (await web()).length >= seen.length);
      const theirs = await web();
      expect(theirs.map((e) => [...short(e), e.etcdRevision])).toEqual(seen.map((e) => [...short(e), e.etcdRevision]));
    }
  }, 90_000);

  it("a node's own member ADD is one event (from etcd), its ordinary attachments stay its own, other nodes' are not in it", async () => {
    const [a, , c] = nodes as [ClusterNodeHandle, ClusterNodeHandle, ClusterNodeHandle];
    const [fromA, fromC] = [await lastSeq(a), await lastSeq(c)];
    const plainA = await a.client.allocate({ containerID: "plain-a", ifName: "eth0", network: "n" });
    const plainC = await c.client.allocate({ containerID: "plain-c", ifName: "eth0", network: "n" });
    await c.client.allocate(podReq("ctr-own-c", "web-3", "u-own"));
    await until("C's own member ADD in its stream", async () => (await replay(c, fromC)).length >= 2);
    await new Promise((r) => setTimeout(r, 500)); // nothing more may come
    const onC = await replay(c, fromC);
    expect(onC.map(short)).toEqual([
      ["attached", "plain-c/eth0", "node-c", "cni-add"],
      ["attached", "db/web/3", "node-c", "cluster-attach"],
    ]);
    expect(onC[0]!.reservation).toMatchObject({ ip: plainC.ips[0]!.address.split("/")[0], sticky: false });
    expect(onC[1]!.reservation).toMatchObject({ containerID: "ctr-own-c", node: "node-c", state: "attached" });
    expect(onC[1]!.etcdRevision).toBeGreaterThan(0);
    // A's stream: its own plain ADD, and C's member ADD (read off etcd), nothing of C's plain one.
    await until("A saw C's member ADD", async () => (await replay(a, fromA)).length >= 2);
    const onA = await replay(a, fromA);
    expect(onA.map(short)).toEqual([
      ["attached", "plain-a/eth0", "node-a", "cni-add"],
      ["attached", "db/web/3", "node-c", "cluster-attach"],
    ]);
    expect(onA[0]!.reservation.ip).toBe(plainA.ips[0]!.address.split("/")[0]);
    expect(onA[1]).toEqual({ ...onC[1], seq: onA[1]!.seq });
    await c.client.release(podReq("ctr-own-c", "web-3", "u-own"));
    await a.client.release({ containerID: "plain-a", ifName: "eth0", network: "n" });
    await c.client.release({ containerID: "plain-c", ifName: "eth0", network: "n" });
    await outboxApplied(c);
    await c.client.releaseReservations({ namespace: "db", statefulset: "web", ordinal: 3 });
    await until("C's stream has the clean-up", async () => (await replay(c, fromC)).length >= 5);
    expect((await replay(c, fromC)).slice(2).map(short).sort()).toEqual(
      [
        ["detached", "db/web/3", "node-c", "cluster-detach"],
        ["released", "db/web/3", "node-c", "cluster-release"],
        ["released", "plain-c/eth0", "node-c", "cni-del"],
      ].sort(),
    );
  }, 60_000);

  it("a pin, a pin to another address, and a forced release of an attached member: the events name what etcd did", async () => {
    const [a, b, c] = nodes as [ClusterNodeHandle, ClusterNodeHandle, ClusterNodeHandle];
    const start = await lastSeq(c);
    // Two addresses no node holds (a pin refuses an address in another node's buffer).
    const held = etcdIps(etcd, prefix, POOL);
    const [ipA, ipB] = Array.from({ length: 100 }, (_, i) => `10.83.0.${250 - i}`).filter((ip) => !held.has(ip)) as [string, string];
    await a.client.pin({ namespace: "db", statefulset: "web", ordinal: 7, ip: ipA });
    const add = plugin("ADD", b, "ctr-pinned", "web-7", "uid-p");
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.json.ips[0].address).toBe(`${ipA}/24`);
    await a.client.pin({ namespace: "db", statefulset: "web", ordinal: 7, ip: ipB, force: true });
    await a.client.releaseReservations({ namespace: "db", statefulset: "web", ordinal: 7, force: true });
    await until("C's stream shows the forced release", async () => (await replay(c, start)).length >= 5);
    await new Promise((r) => setTimeout(r, 500));
    const got = await replay(c, start);
    expect(got.map((e) => [...short(e), e.reservation.ip, e.reservation.pinned, e.heldBy ?? null])).toEqual([
      ["reserved", "db/web/7", "node-a", "cluster-pin", ipA, true, null],
      ["attached", "db/web/7", "node-b", "cluster-attach", ipA, true, null],
      // Pinned elsewhere while its sandbox runs: the old address ends (the sandbox keeps it until its DEL).
      ["released", "db/web/7", "node-a", "cluster-pin", ipA, true, "ctr-pinned/eth0"],
      ["reserved", "db/web/7", "node-a", "cluster-pin", ipB, true, null],
      ["released", "db/web/7", "node-a", "cluster-release", ipB, true, null],
    ]);
    expect(etcdSticky("web")).toEqual({});
    const del = plugin("DEL", b, "ctr-pinned", "web-7", "uid-p");
    expect(del.code, del.stdout + del.stderr).toBe(0);
  }, 60_000);

  it("across a SIGTERM, a kill -9 and an etcd compaction of C while A changes reservations: nothing missed or repeated", async () => {
    const [a, , c0] = nodes as [ClusterNodeHandle, ClusterNodeHandle, ClusterNodeHandle];
    let c = c0;
    const start = await lastSeq(c);
    const expected: (string | number)[][] = [];
    const cycle = async (i: number): Promise<void> => {
      await a.client.allocate(podReq(`ctr-burst-${i}`, `burst-${i}`, `u-${i}`));
      await a.client.release(podReq(`ctr-burst-${i}`, `burst-${i}`, `u-${i}`));
      await outboxApplied(a);
      expected.push(["attached", `db/burst/${i}`, "node-a", "cluster-attach"], ["detached", `db/burst/${i}`, "node-a", "cluster-detach"]);
    };
    await cycle(0);
    await until("C saw cycle 0", async () => (await replay(c, start)).length >= 2);
    await c.stop(); // SIGTERM while A goes on
    await cycle(1);
    await cycle(2);
    c = await restartNode(c);
    nodes[2] = c;
    const w = follow(c, start);
    await cycle(3);
    // kill -9 right after a change on A, whether or not C has recorded it yet.
    await a.client.allocate(podReq("ctr-burst-4", "burst-4", "u-4"));
    await c.kill9();
    await a.client.release(podReq("ctr-burst-4", "burst-4", "u-4"));
    await outboxApplied(a);
    expected.push(["attached", "db/burst/4", "node-a", "cluster-attach"], ["detached", "db/burst/4", "node-a", "cluster-detach"]);
    await w.stop();
    c = await restartNode(c);
    nodes[2] = c;
    await until("C caught up after kill -9", async () => (await replay(c, start)).length >= expected.length);
    await new Promise((r) => setTimeout(r, 500));
    const got = await replay(c, start);
    expect(got.map(short)).toEqual(expected);
    expect(got.map((e) => e.seq)).toEqual(got.map((_, i) => start + 1 + i));
    // The watcher that was cut by the kill resumes from the last sequence it read: the rest, once.
    const cut = w.events.length ? w.events[w.events.length - 1]!.seq : start;
    expect([...w.events, ...(await replay(c, cut))]).toEqual(got);

    // C down, A changes, etcd compacts the history C would resume from: C re-lists and emits the net differences.
    const beforeCompaction = await lastSeq(c);
    await c.stop();
    await a.client.reserve({ namespace: "db", statefulset: "burst", replicas: 6 }); // creates burst-5
    await a.client.releaseReservations({ namespace: "db", statefulset: "burst", ordinal: 0 });
    await a.client.allocate(podReq("ctr-burst-1b", "burst-1", "u-1b"));
    etcd.compact();
    c = await restartNode(c);
    nodes[2] = c;
    await until("C re-listed", async () => (await c.client.status()).cluster?.watch.compactions === 1);
    await until("C emitted the differences", async () => (await replay(c, beforeCompaction)).length >= 3);
    await new Promise((r) => setTimeout(r, 500));
    const relisted = await replay(c, beforeCompaction);
    expect(relisted.map(short).sort()).toEqual(
      [
        ["attached", "db/burst/1", "node-a", "cluster-relist"],
        ["released", "db/burst/0", "node-a", "cluster-relist"],
        ["reserved", "db/burst/5", "node-a", "cluster-relist"],
      ].sort(),
    );
    expect(brief(fold(relisted, fold(got)))).toEqual(etcdSticky("burst"));
    expect(await listed(c, "burst")).toEqual(etcdSticky("burst"));
    // And it follows on from there.
    await a.client.release(podReq("ctr-burst-1b", "burst-1", "u-1b"));
    await until("C follows after the re-list", async () => (await replay(c, beforeCompaction)).length >= 4);
    expect((await replay(c, beforeCompaction)).map(short)[3]).toEqual(["detached", "db/burst/1", "node-a", "cluster-detach"]);
  }, 120_000);

  it("a storm of ADDs and DELs on A and B while C is killed and restarted: C's events are etcd's history, each once", async () => {
    const [a, b] = nodes as [ClusterNodeHandle, ClusterNodeHandle, ClusterNodeHandle];
    let c = nodes[2]!;
    const start = await lastSeq(c);
    const fromA = await lastSeq(a);
    const fromRevision = etcd.revision() + 1;
    const free = [0, 1, 2, 3, 4, 5];
    let op = 0;
    const worker = async (): Promise<void> => {
      while (op < 36) {
        const ordinal = free.shift();
        if (ordinal === undefined) {
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        const i = op++;
        const on = i % 3 === 0 ? b : a;
        const req = podReq(`ctr-storm-${i}`, `storm-${ordinal}`, `u-storm-${i}`);
        await addWithRetries(on, req);
        await on.client.release(req);
        await outboxApplied(on); // the next ADD elsewhere must find it detached
        free.push(ordinal);
      }
    };
    // C meanwhile: kill -9, restarted, SIGTERM, restarted.
    const chaos = async (): Promise<void> => {
      await until("op 10", () => op >= 10);
      await c.kill9();
      await until("op 20", () => op >= 20);
      c = nodes[2] = await restartNode(c);
      await until("op 28", () => op >= 28);
      await c.stop();
      c = nodes[2] = await restartNode(c);
    };
    await Promise.all([worker(), worker(), worker(), chaos()]);
    const history = etcdHistory(`${prefix}/sticky/${POOL}/db/storm/`, fromRevision);
    expect(history.length).toBeGreaterThanOrEqual(72);
    await until("C caught up", async () => (await replay(c, start)).length >= history.length, 20_000);
    await new Promise((r) => setTimeout(r, 500));
    const onC = await replay(c, start);
    // Each change etcd made, once, in etcd's order, on C as on A.
    const ordinalOf = (key: string): string => key.split("/").slice(-2, -1)[0]!;
    expect(onC.map((e) => `${e.etcdRevision} ${e.type === "released" ? "gone" : "set"} ${e.reservation.ordinal}`)).toEqual(
      history.map((h) => `${h.revision} ${h.deleted ? "gone" : "set"} ${ordinalOf(h.key)}`),
    );
    expect(onC.map((e) => e.seq)).toEqual(onC.map((_, i) => start + 1 + i));
    const storm = async () => (await replay(a, fromA)).filter((e) => e.reservation.statefulset === "storm");
    await until("A's stream", async () => (await storm()).length >= onC.length);
    const onA = await storm();
    expect(onA.map((e) => ({ ...e, seq: 0 }))).toEqual(onC.map((e) => ({ ...e, seq: 0 })));
    expect(brief(fold(onC))).toEqual(etcdSticky("storm"));
    expect(await listed(c, "storm")).toEqual(etcdSticky("storm"));
  }, 180_000);
});

/**
 * etcd's own history of one prefix from `rev` on (etcdctl watch --rev, cut after a few seconds), as the changes a
 * watcher must be told of: per key, a create, a delete, or a new address, node, pinning or sandbox.
 */
function etcdHistory(prefix: string, rev: number): { key: string; revision: number; deleted: boolean }[] {
  const endpoints = etcd.members.map((m) => m.clientUrl).join(",");
  const r = spawnSync("/usr/bin/etcdctl", ["--endpoints", endpoints, "watch", "--prefix", prefix, "--rev", String(rev), "-w", "json"], {
    env: { ...process.env, ETCDCTL_API: "3" },
    encoding: "utf8",
    timeout: 3000,
  });
  type Wire = { Events?: { type?: number; kv: { key: string; value?: string; mod_revision: number } }[] };
  const last = new Map<string, string>();
  const out: { key: string; revision: number; deleted: boolean }[] = [];
  for (const line of r.stdout.split("\n").filter((l) => l.startsWith("{"))) {
    for (const e of (JSON.parse(line) as Wire).Events ?? []) {
      const key = Buffer.from(e.kv.key, "base64").toString();
      if (e.type === 1) {
        out.push({ key, revision: e.kv.mod_revision, deleted: true });
        last.delete(key);
        continue;
      }
      const v = JSON.parse(Buffer.from(e.kv.value ?? "", "base64").toString()) as {
        ip: string;
        node: string;
        pinned?: boolean;
        attachment?: { containerID: string };
      };
      const seen = JSON.stringify([v.ip, v.node, v.pinned === true, v.attachment?.containerID ?? null]);
      if (last.get(key) !== seen) out.push({ key, revision: e.kv.mod_revision, deleted: false });
      last.set(key, seen);
    }
  }
  return out;
}

/** The built ipamctl following a node's stream as JSON lines. */
async function spawnIpamctl(
  n: ClusterNodeHandle,
  since: number,
  output: string[] = ["-o", "json"],
): Promise<{ proc: ChildProcess; events(): ReservationEvent[]; text(): string }> {
  const { ipamctl } = await buildIpamd();
  const [file, argv] = ipamctl.endsWith(".mjs") ? [process.execPath, [ipamctl]] : [ipamctl, []];
  const proc = spawn(file, [...argv, "--socket", n.socket, ...output, "reservations", "--watch", "--since", String(since)], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let out = "";
  proc.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  return {
    proc,
    text: () => out,
    events: () =>
      out
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as ReservationEvent),
  };
}
