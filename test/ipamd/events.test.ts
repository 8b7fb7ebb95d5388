// Observability of a real ipamd: the reservation stream (GET /v1/reservations?watch=true) follows a
// reserve-ahead and a pod's lifecycle, resumes after a reconnect and after a daemon restart without
// missing or repeating an event, and answers 410 for a sequence older than it keeps; the audit
// trail in the log file has one line per change and one per refusal; the counters by reason.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ReservationEvent, WatchLine } from "../../api/types";
import { cleanupIpamdTest, type DaemonHandle, makeTempDir, startIpamd } from "../helpers/ipamd";

let d: DaemonHandle;
let dir: string;
const logFile = (): string => join(dir, "ipamd.log");

/** A watcher that collects events until stopped. */
function follow(h: DaemonHandle, since?: number): { events: ReservationEvent[]; bookmarks: number[]; stop(): void; ended: Promise<void> } {
  const events: ReservationEvent[] = [];
  const bookmarks: number[] = [];
  const ac = new AbortController();
  const ended = h.client.watchReservations(
    since,
    (l: WatchLine) => {
      if (l.type === "bookmark") bookmarks.push(l.seq);
      else if (l.type !== "error") events.push(l);
    },
    ac.signal,
  );
  return { events, bookmarks, stop: () => ac.abort(), ended };
}

async function until(what: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

const pod = (containerID: string, name: string, uid: string) => ({
  containerID,
  ifName: "eth0",
  network: "n",
  podNamespace: "db",
  podName: name,
  podUID: uid,
});

beforeAll(async () => {
  dir = makeTempDir();
  d = await startIpamd({
    dir,
    config: { logFile: join(dir, "ipamd.log"), reservationEventsKept: 40, pools: [{ name: "p4", subnet: "10.160.0.0/24" }] },
  });
}, 60_000);

afterAll(cleanupIpamdTest);

describe("the reservation stream", () => {
  const seen: ReservationEvent[] = [];

  it("follows a reserve-ahead and a pod's lifecycle: ADD, DEL, release", async () => {
    const w = follow(d);
    await until(() => w.bookmarks.length > 0);
    const start = w.bookmarks[0]!;
    const reserved = await d.client.reserve({ namespace: "db", statefulset: "redis", replicas: 2 });
    const ip0 = reserved.reservations.find((r) => r.ordinal === 0)!.ip;
    await d.client.allocate(pod("c-redis-0", "redis-0", "u0"));
    await d.client.release(pod("c-redis-0", "redis-0", "u0"));
    await d.client.releaseReservations({ namespace: "db", statefulset: "redis", ordinal: 0 });
    await until(() => w.events.length >= 5);
    w.stop();
    await w.ended;
    expect(w.events.map((e) => [e.type, e.reservation.owner, e.reason])).toEqual([
      ["reserved", "db/redis/0", "reserve-ahead"],
      ["reserved", "db/redis/1", "reserve-ahead"],
      ["attached", "db/redis/0", "cni-add"],
      ["detached", "db/redis/0", "cni-del"],
      ["released", "db/redis/0", "operator"],
    ]);
    expect(w.events.slice(2).every((e) => e.reservation.ip === ip0)).toBe(true);
    expect(w.events[2]!.reservation).toMatchObject({ containerID: "c-redis-0", podName: "redis-0", state: "attached" });
    expect(w.events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5].map((i) => start + i));
    expect(w.events.every((e) => e.node === "test-node")).toBe(true);
    seen.push(...w.events);
  });

  it("resumes after a reconnect and after a daemon restart without missing or repeating an event", async () => {
    const last = seen[seen.length - 1]!.seq;
    // Changes while nobody watches, then a resume from the last sequence seen.
    await d.client.allocate({ containerID: "a1", ifName: "eth0", network: "n" });
    await d.client.allocate({ containerID: "a2", ifName: "eth0", network: "n" });
    const w1 = follow(d, last);
    await until(() => w1.events.length >= 2);
    await d.client.release({ containerID: "a1", ifName: "eth0", network: "n" });
    await until(() => w1.events.length >= 3);
    w1.stop();
    await w1.ended;
    expect(w1.events.map((e) => [e.seq, e.type, e.reservation.owner])).toEqual([
      [last + 1, "attached", "a1/eth0"],
      [last + 2, "attached", "a2/eth0"],
      [last + 3, "released", "a1/eth0"],
    ]);
    seen.push(...w1.events);

    // A watcher open across a restart sees its stream end; it resumes from its last sequence.
    const w2 = follow(d, seen[seen.length - 1]!.seq);
    await until(() => w2.bookmarks.length > 0);
    expect(await d.stop()).toBe(0);
    await w2.ended;
    d = await d.restart();
    await d.client.release({ containerID: "a2", ifName: "eth0", network: "n" });
    const w3 = follow(d, seen[seen.length - 1]!.seq);
    await until(() => w3.events.length >= 1);
    w3.stop();
    await w3.ended;
    expect(w2.events).toEqual([]);
    expect(w3.events.map((e) => [e.seq, e.type, e.reservation.owner])).toEqual([[last + 4, "released", "a2/eth0"]]);
    seen.push(...w3.events);
    const seqs = seen.map((e) => e.seq);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  });

  it("answers 410 events_expired for a sequence older than it keeps, and 400 for one it never gave out", async () => {
    for (let i = 0; i < 30; i++) {
      await d.client.allocate({ containerID: `x${i}`, ifName: "eth0", network: "n" });
      await d.client.release({ containerID: `x${i}`, ifName: "eth0", network: "n" });
    }
    const old = follow(d, 1);
    await expect(old.ended).rejects.toMatchObject({ code: "events_expired", httpStatus: 410 });
    await expect(old.ended).rejects.toThrow(/no longer kept \(this ipamd keeps the last 40.*watch again with since=\d+/);
    const ahead = follow(d, 1_000_000);
    await expect(ahead.ended).rejects.toMatchObject({ code: "invalid_request", httpStatus: 400 });
  });
});

describe("the audit trail and the counters", () => {
  let lines: Record<string, unknown>[];

  beforeAll(async () => {
    for (let i = 0; i < 12; i++) await d.client.allocate({ containerID: `k${i}`, ifName: "eth0", network: "n" });
    for (let i = 0; i < 12; i++) await d.client.release({ containerID: `k${i}`, ifName: "eth0", network: "n" });
    await d.client.reserve({ namespace: "db", statefulset: "pg", replicas: 1 });
    await d.client.allocate(pod("c-pg-0", "pg-0", "p0"));
    await d.client.allocate(pod("c-pg-0", "pg-0", "p0")); // idempotent
    await expect(d.client.allocate(pod("c-pg-0b", "pg-0", "p0-recreated"))).rejects.toMatchObject({ code: "previous_sandbox_attached" });
    await d.client.allocate(pod("c-pg-0c", "pg-0", "p0")); // a new sandbox of the same pod takes it over
    await expect(d.client.releaseReservations({ namespace: "db", statefulset: "pg", ordinal: 0 })).rejects.toMatchObject({
      code: "reservation_attached",
    });
    await new Promise((r) => setTimeout(r, 100));
    lines = readFileSync(logFile(), "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.audit !== undefined);
  });

  it("logs one line per change: who asked, what changed, address, owner, pool, node", () => {
    const k = lines.filter((l) => typeof l.owner === "string" && /^k\d+\/eth0$/.test(l.owner));
    expect(k.filter((l) => l.audit === "attached")).toHaveLength(12);
    expect(k.filter((l) => l.audit === "released")).toHaveLength(12);
    expect(k[0]).toMatchObject({
      audit: "attached",
      actor: "peer",
      peerUid: 0,
      op: "allocate",
      reason: "cni-add",
      owner: "k0/eth0",
      pool: "p4",
      node: "test-node",
      containerID: "k0",
      ifName: "eth0",
      network: "n",
    });
    expect(k[0]!.peerPid).toBe(process.pid);
    expect(k[0]!.ip).toMatch(/^10\.160\.0\.\d+$/);
    expect(typeof k[0]!.seq).toBe("number");
    const pg = lines.filter((l) => l.owner === "db/pg/0");
    expect(pg.map((l) => [l.audit, l.op])).toEqual([
      ["reserved", "reserve"],
      ["attached", "allocate"],
      ["attached", "allocate"], // the takeover by the new sandbox
    ]);
  });

  it("logs the refused changes with the error code and what was asked", () => {
    const refused = lines.filter((l) => l.audit === "refused");
    expect(refused.find((l) => l.code === "reservation_attached")).toMatchObject({
      actor: "peer",
      op: "releaseReservations",
      namespace: "db",
      statefulset: "pg",
      ordinal: 0,
      node: "test-node",
    });
    expect(refused.find((l) => l.code === "previous_sandbox_attached")).toMatchObject({ op: "allocate", containerID: "c-pg-0b" });
  });

  it("counts allocations and releases by reason, takeovers and refused takeovers; the scrape passes promtool", async () => {
    const m = await d.client.metrics();
    const value = (series: string): number => Number(new RegExp(`^${series.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m").exec(m)?.[1] ?? NaN);
    // since the restart: 30 + 12 attachment-owned ADDs; the member: its first ADD and the takeover (sticky-again), a repeat
    expect(value('berth_ipamd_allocations_total{reason="new"}')).toBe(42);
    expect(value('berth_ipamd_allocations_total{reason="sticky-again"}')).toBe(2);
    expect(value('berth_ipamd_allocations_total{reason="idempotent"}')).toBe(1);
    expect(value('berth_ipamd_releases_total{reason="cni-del"}')).toBe(43);
    expect(value('berth_ipamd_reservations_created_total{reason="reserve-ahead"}')).toBe(1);
    expect(value("berth_ipamd_takeovers_total")).toBe(1);
    expect(value('berth_ipamd_takeovers_refused_total{reason="previous_sandbox_attached"}')).toBe(1);
    expect(value("berth_ipamd_reservation_event_sequence")).toBe(96); // every event so far, across the restart
    const r = spawnSync("promtool", ["check", "metrics"], { input: m, encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });
});

describe("ipamctl reservations --watch", () => {
  it("prints the events as JSON lines and reconnects after a restart from the last sequence", async () => {
    const { buildIpamd } = await import("../helpers/ipamd");
    const { spawn } = await import("node:child_process");
    const { ipamctl } = await buildIpamd();
    const since = (await d.client.metrics()).match(/^berth_ipamd_reservation_event_sequence (\d+)$/m)![1]!;
    const p = spawn(ipamctl, ["--socket", d.socket, "-o", "json", "reservations", "--watch", "--since", since], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    p.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    const events = (): ReservationEvent[] =>
      out
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as ReservationEvent);
    try {
      await d.client.allocate({ containerID: "w1", ifName: "eth0", network: "n" });
      await until(() => events().length >= 1);
      await d.stop();
      d = await d.restart();
      await d.client.allocate({ containerID: "w2", ifName: "eth0", network: "n" });
      await until(() => events().length >= 2, 10_000);
      expect(events().map((e) => [e.seq, e.type, e.reservation.owner])).toEqual([
        [Number(since) + 1, "attached", "w1/eth0"],
        [Number(since) + 2, "attached", "w2/eth0"],
      ]);
    } finally {
      p.kill("SIGTERM");
    }
  });
});
