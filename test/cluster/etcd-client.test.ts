// The etcd client's failover behaviour against a REAL 3-member etcd (and a TLS one): what decided the client
// choice (docs/cluster.md). Each case asserts what a caller sees and what is in etcd.
import { copyFileSync, mkdtempSync, renameSync } from "node:fs";
import { request } from "node:http";
import { connect as connectHttp2, createServer as createHttp2Server, type ServerHttp2Stream } from "node:http2";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EtcdClient, EtcdCompacted, EtcdOutcomeUnknown, EtcdUnavailable, type WatchEvent } from "../../ipamd/cluster/etcd";
import { EtcdCluster } from "../helpers/etcd";

let etcd: EtcdCluster;
beforeAll(async () => {
  etcd = await EtcdCluster.start();
});
afterAll(async () => {
  await etcd?.destroy();
});

const unusedPort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });

/** A TCP server that accepts connections and never answers (a frozen member, a stuck host); `held`: its connections. */
const silentServer = async (): Promise<{ url: string; held: Socket[]; close: () => void }> => {
  const held: Socket[] = [];
  const hole = createServer((s) => held.push(s));
  await new Promise<void>((r) => hole.listen(0, "127.0.0.1", r));
  const close = (): void => {
    for (const s of held) s.destroy();
    hole.close();
  };
  return { url: `http://127.0.0.1:${(hole.address() as AddressInfo).port}`, held, close };
};

const until = async (what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe("etcd client (KV over gRPC, leases and watch over the JSON gateway)", () => {
  it("does range, put, delete, txn (both branches) and leases as etcd sees them", async () => {
    const c = new EtcdClient({ endpoints: etcd.endpoints });
    await c.put("/t/kv/a", "1");
    await c.put("/t/kv/b", "2");
    const r = await c.range("/t/kv/", { prefix: true });
    expect(r.kvs.map((k) => [k.key, k.value])).toEqual([
      ["/t/kv/a", "1"],
      ["/t/kv/b", "2"],
    ]);
    const a = r.kvs[0]!;
    const won = await c.txn(
      [{ key: "/t/kv/a", target: "mod", equals: a.modRevision }],
      [{ put: { key: "/t/kv/a", value: "3" } }],
      [{ get: { key: "/t/kv/a" } }],
    );
    expect(won.succeeded).toBe(true);
    const lost = await c.txn(
      [{ key: "/t/kv/a", target: "mod", equals: a.modRevision }],
      [{ put: { key: "/t/kv/a", value: "4" } }],
      [{ get: { key: "/t/kv/a" } }],
    );
    expect(lost.succeeded).toBe(false);
    expect(lost.responses[0]).toMatchObject({ kind: "get", kvs: [{ key: "/t/kv/a", value: "3" }] });
    const created = await c.txn([{ key: "/t/kv/new", target: "create", equals: 0 }], [{ put: { key: "/t/kv/new", value: "x" } }]);
    expect(created.succeeded).toBe(true);
    expect(etcd.dump("/t/kv/").get("/t/kv/new")).toBe("x");
    // A compare over a range: holds only when no key in it exists (how a claim checks a run of candidates).
    const none = await c.txn(
      [{ key: "/t/kv/c1", rangeEnd: "/t/kv/c9\0", target: "create", equals: 0 }],
      [{ put: { key: "/t/kv/c1", value: "1" } }, { put: { key: "/t/kv/c5", value: "5" } }],
    );
    expect(none.succeeded).toBe(true);
    const some = await c.txn(
      [{ key: "/t/kv/c2", rangeEnd: "/t/kv/c9\0", target: "create", equals: 0 }],
      [{ put: { key: "/t/kv/c2", value: "2" } }],
      [{ get: { key: "/t/kv/c2", rangeEnd: "/t/kv/c9\0", keysOnly: true } }],
    );
    expect(some.succeeded).toBe(false);
    expect(some.responses[0]).toMatchObject({ kind: "get", kvs: [{ key: "/t/kv/c5", value: "" }] });
    expect(etcd.dump("/t/kv/").has("/t/kv/c2")).toBe(false);
    const del = await c.txn([], [{ del: { key: "/t/kv/c", prefix: true } }]);
    expect(del.responses[0]).toEqual({ kind: "del", deleted: 2 });
    expect(await c.delete("/t/kv/", { prefix: true })).toBe(3);
    expect(etcd.dump("/t/kv/").size).toBe(0);

    const lease = await c.leaseGrant(30);
    await c.put("/t/lease", "live", { lease: lease.id });
    expect(await c.leaseKeepAlive(lease.id)).toBeGreaterThan(0);
    expect((await c.get("/t/lease"))!.lease).toBe(lease.id);
    await c.leaseRevoke(lease.id);
    expect(await c.get("/t/lease")).toBeNull();
    expect(await c.leaseKeepAlive(lease.id)).toBe(0);
    c.close();
  });

  /** Writes and reads in a loop on `c`; kills member `victim` mid-use, goes on until 50 more succeed, restarts it. */
  const writesAcrossKill = async (c: EtcdClient, victim: number) => {
    await c.put("/t/fo/x", "0");
    const outcomes = { ok: 0, unknown: [] as string[], other: [] as string[] };
    let stop = false;
    const loop = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          await c.put(`/t/fo/${i % 50}`, String(i));
          expect((await c.get("/t/fo/x"))!.value).toBe("0");
          outcomes.ok++;
        } catch (e) {
          if (e instanceof EtcdOutcomeUnknown) outcomes.unknown.push(e.message);
          else outcomes.other.push((e as Error).message);
        }
      }
    })();
    try {
      await until("some traffic", () => outcomes.ok > 20);
      await etcd.kill9(victim);
      const okAtKill = outcomes.ok;
      await until("traffic after the kill", () => outcomes.ok > okAtKill + 50);
    } finally {
      stop = true;
      await loop;
      await etcd.restart(victim);
      c.close();
    }
    return outcomes;
  };

  it("moves to the next endpoint when the member in use is killed mid-use", async () => {
    // Endpoint 0 is the one in use: the client starts there.
    const outcomes = await writesAcrossKill(new EtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 3000 }), 0);
    expect(outcomes.other).toEqual([]);
    expect(outcomes.unknown.length, outcomes.unknown.join("; ")).toBeLessThanOrEqual(1); // only a write in flight at the kill
  });

  it("waits for the election when the member in use was the leader: the next writes are not sent into the void", async () => {
    // The followers forward writes to a dead leader until their election timeout; sent then, a write hangs until its
    // deadline with an unknown outcome. The client asks the next member for its leader first.
    await etcd.waitHealthy();
    const leader = etcd.leader();
    expect(leader).toBeGreaterThanOrEqual(0);
    const endpoints = [etcd.endpoints[leader]!, ...etcd.endpoints.filter((_, i) => i !== leader)];
    const outcomes = await writesAcrossKill(new EtcdClient({ endpoints, requestTimeoutMs: 3000 }), leader);
    expect(outcomes.other).toEqual([]);
    expect(outcomes.unknown.length, outcomes.unknown.join("; ")).toBeLessThanOrEqual(1); // only a write in flight at the kill
    expect(outcomes.unknown.join("; ")).not.toContain("no answer within");
  });

  it("keeps working on a follower when the leader dies: through the new leader once elected", async () => {
    await etcd.waitHealthy();
    const leader = etcd.leader();
    const follower = (leader + 1) % 3;
    const endpoints = [0, 1, 2].map((i) => etcd.endpoints[(follower + i) % 3]!);
    const outcomes = await writesAcrossKill(new EtcdClient({ endpoints, requestTimeoutMs: 3000 }), leader);
    expect(outcomes.other).toEqual([]);
    // The follower forwards to the dead leader until the election: a write in flight then may end unknown.
    expect(outcomes.unknown.length, outcomes.unknown.join("; ")).toBeLessThanOrEqual(1);
  });

  it("waits for the election also when a dead endpoint comes between the lost leader and the next member", async () => {
    // A member down for good (or a stale address) in the list: the client fails over through it. It must not take the
    // place of the lost leader, or the wait ends at once and the next write hangs on a follower that forwards to the
    // dead leader.
    await etcd.waitHealthy();
    const leader = etcd.leader();
    const dead = `http://127.0.0.1:${await unusedPort()}`;
    const endpoints = [etcd.endpoints[leader]!, dead, ...etcd.endpoints.filter((_, i) => i !== leader)];
    const c = new EtcdClient({ endpoints, requestTimeoutMs: 3000 });
    await c.put("/t/dead", "0"); // on the leader: its member ID is known
    await etcd.kill9(leader);
    await new Promise((r) => setTimeout(r, 100)); // its connection seen closed: the next put is refused, not reset
    try {
      // Refused by the dead leader and the closed port, then a follower once it names the new leader.
      await c.put("/t/dead", "1");
      expect((await c.get("/t/dead"))!.value).toBe("1");
    } finally {
      await etcd.restart(leader);
      c.close();
    }
  });

  it("skips a member whose status does not answer: a write is not sent to it to hang", async () => {
    // A member that accepts connections and never answers (frozen, a stuck host) next in the list after the lost
    // leader: its status poll costs one request timeout; a write sent to it as well would cost another and end with
    // an unknown outcome.
    await etcd.waitHealthy();
    const leader = etcd.leader();
    const { url: stuck, close } = await silentServer();
    try {
      const endpoints = [etcd.endpoints[leader]!, stuck, ...etcd.endpoints.filter((_, i) => i !== leader)];
      const c = new EtcdClient({ endpoints, requestTimeoutMs: 1500 });
      await c.put("/t/stuck", "0"); // on the leader: its member ID is known
      await etcd.kill9(leader);
      await new Promise((r) => setTimeout(r, 100)); // its connection seen closed: the next put is refused, not reset
      try {
        const t0 = performance.now();
        await c.put("/t/stuck", "1"); // refused by the dead leader, the stuck one skipped, then a follower after the election
        expect(performance.now() - t0).toBeLessThan(2 * 1500);
        expect((await c.get("/t/stuck"))!.value).toBe("1");
      } finally {
        await etcd.restart(leader);
        c.close();
      }
    } finally {
      close();
    }
  });

  it("takes 'too many requests' (ResourceExhausted) as a refusal: the write goes to the next member", async () => {
    // etcd refuses a request with gRPC code 8 when its apply queue runs far behind its commits; nothing is applied.
    // No real member can be made to do that on demand: a gRPC server that answers only that stands first in the list.
    let refused = 0;
    const busy = createHttp2Server((_req, res) => {
      refused++;
      res.writeHead(200, { "content-type": "application/grpc" });
      res.addTrailers({ "grpc-status": "8", "grpc-message": "etcdserver: too many requests" });
      res.end();
    });
    await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r));
    const c = new EtcdClient({ endpoints: [`http://127.0.0.1:${(busy.address() as AddressInfo).port}`, ...etcd.endpoints] });
    try {
      await c.put("/t/busy", "1");
      expect(refused).toBe(1);
      expect(etcd.dump("/t/busy").get("/t/busy")).toBe("1");
    } finally {
      c.close();
      busy.close();
    }
  });

  it("close() ends a request in flight: it is not sent to the next member on a new connection", async () => {
    const { url: stuck, held, close } = await silentServer();
    try {
      const c = new EtcdClient({ endpoints: [stuck, ...etcd.endpoints], requestTimeoutMs: 3000 });
      const read = c.get("/t/closed").then(
        () => "answered",
        (e: Error) => e.message,
      );
      await until("request on the stuck member", () => held.length > 0);
      c.close();
      expect(await read).toMatch(/client closed/);
      const sessions = (c as unknown as { sessions: Map<string, unknown> }).sessions;
      expect([...sessions.keys()]).toEqual([]);
    } finally {
      close();
    }
  });

  it("fails fast with every endpoint and its reason when 2 of 3 members are down", async () => {
    const c = new EtcdClient({ endpoints: etcd.endpoints, requestTimeoutMs: 8000 });
    await c.put("/t/q", "before");
    await etcd.loseQuorum(0);
    try {
      let last: unknown;
      // The survivor needs an election timeout to notice it has no leader; until then a write may time out.
      await until("no-leader answer", async () => {
        try {
          await c.get("/t/q");
          return false;
        } catch (e) {
          last = e;
          return /no leader/.test((e as Error).message);
        }
      });
      const t0 = performance.now();
      const err = await c.put("/t/q", "after").catch((e: unknown) => e);
      const elapsed = performance.now() - t0;
      expect(err).toBeInstanceOf(EtcdUnavailable);
      const msg = (err as Error).message;
      for (const e of etcd.endpoints) expect(msg).toContain(e);
      expect(msg).toMatch(/^etcd unreachable: put failed on every endpoint/);
      expect(msg).toContain("etcdserver: no leader");
      expect(msg).toContain("ECONNREFUSED");
      expect(elapsed).toBeLessThan(8000); // refused at once: not one request timeout, let alone three
      expect(last).toBeInstanceOf(EtcdUnavailable);
      expect(c.connectionState).toBe("unreachable");
    } finally {
      await etcd.restoreAll();
    }
    expect((await c.get("/t/q"))!.value).toBe("before");
    expect(c.connectionState).toBe("connected");
    c.close();
  });

  it("ends a watch on a member that loses its leader (a plain gateway watch stays silent)", async () => {
    const survivor = etcd.members[1]!.clientUrl;
    const c = new EtcdClient({ endpoints: [survivor] });
    const ended: string[] = [];
    const seen: WatchEvent[] = [];
    let created = false;
    c.watch(
      "/t/w/",
      { prefix: true },
      {
        onCreated: () => {
          created = true;
        },
        onEvents: (ev) => seen.push(...ev),
        onCompacted: () => ended.push("compacted"),
        onEnd: (e) => ended.push(e.message),
      },
    );
    // Control: the same watch through the gateway without the hasleader header.
    let plainEnded = false;
    const plain = request(`${survivor}/v3/watch`, { method: "POST" }, (res) => {
      res.on("end", () => {
        plainEnded = true;
      });
      res.resume();
    });
    plain.on("error", () => {
      plainEnded = true;
    });
    plain.end(JSON.stringify({ create_request: { key: Buffer.from("/t/w/").toString("base64") } }));
    await until("watch created", () => created);
    await c.put("/t/w/1", "a");
    await until("first event", () => seen.length === 1);
    const down = [0, 2];
    await Promise.all(down.map((i) => etcd.stop(i)));
    try {
      await until("watch ended", () => ended.length > 0, 15_000);
      expect(ended[0]).toMatch(/no leader/);
      expect(ended[0]).toContain(survivor);
      expect(plainEnded).toBe(false);
    } finally {
      plain.destroy();
      await etcd.restoreAll();
    }
    c.close();
  });

  it("signals compaction distinctly when a watch starts from a compacted revision", async () => {
    const c = new EtcdClient({ endpoints: etcd.endpoints });
    const first = await c.put("/t/c/k", "1");
    await c.put("/t/c/k", "2");
    const compactedAt = etcd.compact();
    const got: { compacted?: number; end?: unknown } = {};
    await new Promise<void>((resolve) => {
      c.watch(
        "/t/c/",
        { prefix: true, startRevision: first },
        {
          onEvents: () => undefined,
          onCompacted: (rev) => {
            got.compacted = rev;
          },
          onEnd: (e) => {
            got.end = e;
            resolve();
          },
        },
      );
    });
    expect(got.compacted).toBe(compactedAt);
    expect(got.end).toBeInstanceOf(EtcdCompacted);
    // A range at a compacted revision is the same signal.
    await expect(c.range("/t/c/k", { revision: first })).rejects.toBeInstanceOf(EtcdCompacted);
    c.close();
  });

  it("applies the per-request timeout to a frozen member: reads go on, a write reports an unknown outcome", async () => {
    const writer = new EtcdClient({ endpoints: etcd.endpoints });
    await writer.put("/t/to", "v");
    writer.close();
    // Freeze a follower (freezing the leader would start an election: a different case, covered by the retry budget).
    const frozen = (etcd.leader() + 1) % 3;
    const endpoints = [0, 1, 2].map((i) => etcd.endpoints[(frozen + i) % 3]!);
    etcd.pause(frozen);
    try {
      // Fresh clients start on their first endpoint, the frozen one.
      const reader = new EtcdClient({ endpoints, requestTimeoutMs: 700 });
      const t0 = performance.now();
      expect((await reader.get("/t/to"))!.value).toBe("v");
      expect(performance.now() - t0).toBeGreaterThanOrEqual(650); // it waited for the deadline on member 0, then moved on
      reader.close();
      const fresh = new EtcdClient({ endpoints, requestTimeoutMs: 700 });
      const err = await fresh.put("/t/to", "w").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EtcdOutcomeUnknown);
      expect((err as Error).message).toMatch(/no answer within 700 ms/);
      fresh.close();
    } finally {
      etcd.resume(frozen);
    }
  });

  it("drops a connection that answers no PING after a timeout (a frozen member): requests on it end, the next go elsewhere", async () => {
    // SIGSTOP keeps the member's socket open (the kernel still ACKs): without the PING every request sent on that
    // connection meanwhile waits its own full timeout. A follower, so no election comes into it.
    const frozen = (etcd.leader() + 1) % 3;
    const endpoints = [0, 1, 2].map((i) => etcd.endpoints[(frozen + i) % 3]!);
    const timeoutMs = 2000;
    const attempts: string[] = [];
    const c = new EtcdClient({
      endpoints,
      requestTimeoutMs: timeoutMs,
      observer: { request: (_op, endpoint, _s, outcome) => attempts.push(`${endpoint === endpoints[0] ? "frozen" : "other"} ${outcome}`) },
    });
    await c.put("/t/ping/0", "0"); // on the member about to freeze: its connection is up and in use
    // A watch shares that connection: when the PING drops it, the watch ends too (its loop resumes elsewhere).
    let watchCreated = false;
    const watchEnded: string[] = [];
    const watch = c.watch(
      "/t/ping/",
      { prefix: true },
      {
        onCreated: () => {
          watchCreated = true;
        },
        onEvents: () => undefined,
        onCompacted: () => undefined,
        onEnd: (e) => watchEnded.push(e.message),
      },
    );
    await until("watch created", () => watchCreated);
    expect(watch.endpoint).toBe(endpoints[0]);
    attempts.length = 0;
    etcd.pause(frozen);
    try {
      const first = c.put("/t/ping/1", "1").catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, timeoutMs / 2));
      // Sent on the same connection while the first waits: each ends when the PING finds the connection dead.
      const started = performance.now();
      const timed = <T>(p: Promise<T>) => p.then((v) => ({ v, ms: performance.now() - started }));
      const [write, read] = await Promise.all([
        timed(c.put("/t/ping/2", "2").catch((e: Error) => e)),
        timed(c.get("/t/ping/0").then((kv) => kv?.value)),
      ]);
      const e1 = await first;
      expect(e1).toBeInstanceOf(EtcdOutcomeUnknown);
      expect((e1 as Error).message).toMatch(/no answer within 2000 ms, nor a PING within 500 ms: connection dropped/);
      expect(write.v).toBeInstanceOf(EtcdOutcomeUnknown); // sent: etcd may apply it when it wakes
      expect((write.v as Error).message).toMatch(/nor a PING within 500 ms/);
      expect(read.v).toBe("0"); // a read goes on to the next member
      expect(write.ms).toBeLessThan(timeoutMs); // before their own deadline
      expect(read.ms).toBeLessThan(timeoutMs);
      expect(watchEnded).toHaveLength(1);
      expect(watchEnded[0]).toContain(endpoints[0]);
      // The next requests go to another member at once: none to the frozen one, none waits.
      for (let i = 0; i < 10; i++) {
        await c.put(`/t/ping/n${i}`, String(i));
        expect((await c.get(`/t/ping/n${i}`))!.value).toBe(String(i));
      }
      // Two writes ended with an unknown outcome there, one read moved on.
      expect(attempts.filter((a) => a.startsWith("frozen")).sort()).toEqual(["frozen error", "frozen error", "frozen unreachable"]);
      expect(attempts.filter((a) => a.startsWith("other"))).toEqual(Array(21).fill("other ok"));
    } finally {
      etcd.resume(frozen);
      c.close();
    }
  });

  it("a watch on a member that freezes ends at the next keep-alive PING, with no other request on its connection", async () => {
    // The watch's member freezes while every other request goes elsewhere: only the keep-alive notices. It pings
    // (and is answered) before the freeze: the next PING is a new one, not the first answer remembered. 5 s is the
    // shortest etcd accepts by default (--grpc-keepalive-min-time).
    const frozen = (etcd.leader() + 1) % 3;
    const endpoints = [0, 1, 2].map((i) => etcd.endpoints[(frozen + i) % 3]!);
    const c = new EtcdClient({ endpoints, requestTimeoutMs: 2000, keepAliveMs: 5000 });
    let created = false;
    const ended: string[] = [];
    const seen: WatchEvent[] = [];
    const watch = c.watch(
      "/t/keepalive/",
      { prefix: true },
      {
        onCreated: () => {
          created = true;
        },
        onEvents: (ev) => seen.push(...ev),
        onCompacted: () => undefined,
        onEnd: (e) => ended.push(e.message),
      },
    );
    await until("watch created", () => created);
    expect(watch.endpoint).toBe(endpoints[0]);
    await new Promise((r) => setTimeout(r, 5600)); // one answered keep-alive
    expect(ended).toEqual([]);
    etcd.pause(frozen);
    try {
      const started = performance.now();
      await until("watch ended", () => ended.length > 0, 10_000);
      expect(performance.now() - started).toBeLessThan(5000 + 500 + 1000); // one interval, one PING timeout, slack
      expect(ended[0]).toContain(endpoints[0]);
      expect(ended[0]).toMatch(/no answer to a keep-alive PING within 500 ms: connection dropped/);
    } finally {
      etcd.resume(frozen);
      c.close();
    }
  });

  it("a slow but alive leader (it answers PING) costs one timeout: the next request waits for no election", async () => {
    // No real member can be made slow but alive on demand: a gRPC proxy in front of the leader forwards the first
    // request (the client learns the leader's member ID from its answer), then holds every request unanswered.
    await etcd.waitHealthy();
    const leader = etcd.leader();
    const upstream = connectHttp2(etcd.endpoints[leader]!);
    let forward = true;
    const held: ServerHttp2Stream[] = [];
    const slow = createHttp2Server();
    slow.on("stream", (stream, h) => {
      if (!forward) return void held.push(stream);
      const up = upstream.request({ ":method": "POST", ":path": h[":path"], "content-type": h["content-type"], te: "trailers" });
      let trailers = {};
      const grpc = { "content-type": "application/grpc" };
      up.on("response", (headers) => stream.respond({ ":status": headers[":status"], ...grpc }, { waitForTrailers: true }));
      up.on("trailers", (t) => {
        trailers = { "grpc-status": t["grpc-status"], "grpc-message": t["grpc-message"] ?? "" };
      });
      stream.on("wantTrailers", () => stream.sendTrailers(trailers));
      stream.pipe(up);
      up.pipe(stream);
    });
    await new Promise<void>((r) => slow.listen(0, "127.0.0.1", r));
    const timeoutMs = 1000;
    const endpoints = [`http://127.0.0.1:${(slow.address() as AddressInfo).port}`, ...etcd.endpoints.filter((_, i) => i !== leader)];
    const c = new EtcdClient({ endpoints, requestTimeoutMs: timeoutMs });
    try {
      await c.put("/t/slow", "0"); // through to the leader: the client knows that endpoint is the leader
      forward = false;
      const err = await c.put("/t/slow", "1").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EtcdOutcomeUnknown);
      expect((err as Error).message).toContain("no answer within 1000 ms (it answers PING: alive but slow)");
      // It is alive: no election is coming, the next member serves at once (not after polling for a new leader).
      const t0 = performance.now();
      await c.put("/t/slow", "2");
      expect(performance.now() - t0).toBeLessThan(timeoutMs);
      expect(etcd.dump("/t/slow").get("/t/slow")).toBe("2");
    } finally {
      c.close();
      for (const s of held) s.destroy();
      upstream.close();
      slow.close();
    }
  });
});

describe("etcd client over TLS with client certificates", () => {
  let tlsEtcd: EtcdCluster;
  beforeAll(async () => {
    tlsEtcd = await EtcdCluster.start({ tls: true, size: 1 });
  });
  afterAll(async () => {
    await tlsEtcd?.destroy();
  });

  it("works with caFile/certFile/keyFile and names the TLS failure otherwise", async () => {
    const t = tlsEtcd.tlsFiles!;
    const good = new EtcdClient({ endpoints: tlsEtcd.endpoints, caFile: t.caFile, certFile: t.certFile, keyFile: t.keyFile });
    await good.put("/t/tls", "secure");
    expect(tlsEtcd.dump("/t/tls").get("/t/tls")).toBe("secure");
    good.close();

    const wrongCa = new EtcdClient({ endpoints: tlsEtcd.endpoints, caFile: t.otherCaFile, certFile: t.certFile, keyFile: t.keyFile });
    const e1 = await wrongCa.get("/t/tls").catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(EtcdUnavailable);
    expect((e1 as Error).message).toMatch(/certificate/i);
    expect((e1 as Error).message).toContain(tlsEtcd.endpoints[0]);
    wrongCa.close();

    const noCert = new EtcdClient({ endpoints: tlsEtcd.endpoints, caFile: t.caFile });
    const e2 = await noCert.get("/t/tls").catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(Error);
    expect((e2 as Error).message).toContain(tlsEtcd.endpoints[0]);
    noCert.close();

    expect(() => new EtcdClient({ endpoints: tlsEtcd.endpoints, caFile: "/nonexistent/ca.crt" })).toThrow(/caFile \/nonexistent\/ca.crt/);
    expect(() => new EtcdClient({ endpoints: tlsEtcd.endpoints, certFile: t.certFile })).toThrow(/certFile and keyFile go together/);
  });

  it("uses rotated TLS files from the next connection on, and keeps the last good ones while a rotation is half done", async () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-etcd-tls-"));
    const files = { caFile: join(dir, "ca.crt"), certFile: join(dir, "client.crt"), keyFile: join(dir, "client.key") };
    // As a secret volume or cert-manager updates a file: a new file renamed over the old one.
    const install = (from: string, to: string): void => {
      copyFileSync(from, `${to}.new`);
      renameSync(`${to}.new`, to);
    };
    const old = tlsEtcd.tlsFiles!;
    for (const k of ["caFile", "certFile", "keyFile"] as const) install(old[k], files[k]);
    const reloads: { ok: boolean; detail: string }[] = [];
    const client = new EtcdClient({
      endpoints: tlsEtcd.endpoints,
      ...files,
      retryBudgetMs: 300,
      observer: { tlsReload: (ok, detail) => reloads.push({ ok, detail }) },
    });
    const past = (ms: number) => new Promise((r) => setTimeout(r, ms)); // the files are looked at once a second at most
    try {
      await client.put("/t/rotated", "kept");

      // The member restarts with a new CA, server and client certificate: the old client certificate is refused.
      const next = tlsEtcd.rotateTls();
      await tlsEtcd.stop(0);
      await tlsEtcd.restart(0);
      expect(await client.get("/t/rotated").catch((e: unknown) => e)).toBeInstanceOf(EtcdUnavailable);

      // Half a rotation (the new certificate beside the old key): unusable, so the old pair stays, and it is reported.
      install(next.certFile, files.certFile);
      await past(1100);
      expect(await client.get("/t/rotated").catch((e: unknown) => e)).toBeInstanceOf(EtcdUnavailable);
      expect(reloads).toEqual([{ ok: false, detail: expect.stringMatching(/changed but cannot be used .*client\.key/) }]);

      // The rest of it: the next connection uses the new files.
      install(next.keyFile, files.keyFile);
      install(next.caFile, files.caFile);
      await past(1100);
      expect((await client.get("/t/rotated"))?.value).toBe("kept");
      expect(reloads.at(-1)).toEqual({ ok: true, detail: expect.stringContaining("new connections use them") });
    } finally {
      client.close();
    }
  });
});
