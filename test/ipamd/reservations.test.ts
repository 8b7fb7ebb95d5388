// Reserve ahead, pins, operator release, TTL of detached reservations, CNI GC.
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, type DaemonHandle, startIpamd, errorOf, ipOf } from "../helpers/ipamd";

const at = (containerID: string, extra: Record<string, unknown> = {}) => ({ containerID, ifName: "eth0", network: "net1", ...extra });

describe("reserve ahead, pin, release", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await startIpamd({
      config: {
        pools: [
          { name: "a4", subnet: "10.70.0.0/24", gateway: "10.70.0.1" },
          { name: "a6", subnet: "fd00:70::/64" },
          { name: "elsewhere", subnet: "10.71.0.0/24", nodeSelector: { matchLabels: { rack: "other" } } },
        ],
      },
    });
  });
  afterAll(async () => {
    await d?.stop();
  });

  it("reserves IPs for ordinals before any pod exists, and each pod then gets its reserved IPs", async () => {
    const r = await d.client.reserve({ namespace: "db", statefulset: "redis", replicas: 3 });
    expect(r.reservations).toHaveLength(6); // dual-stack: one per family per ordinal
    expect(r.reservations.every((x) => x.state === "detached" && x.sticky)).toBe(true);
    const forOrdinal = (n: number) => r.reservations.filter((x) => x.ordinal === n).map((x) => x.address);

    // reserving again is idempotent
    const again = await d.client.reserve({ namespace: "db", statefulset: "redis", replicas: 3 });
    expect(again.reservations.map((x) => x.address)).toEqual(r.reservations.map((x) => x.address));

    // An unrelated pod must not get a reserved address.
    const other = await d.client.allocate(at("unrelated-1"));
    expect(r.reservations.map((x) => x.address)).not.toContain(other.ips[0]!.address);

    // redis was not in the config: reserving registered it, so redis-1 is recognized.
    const pod = await d.client.allocate(at("redis-1-c", { podNamespace: "db", podName: "redis-1" }));
    expect(pod.owner).toBe("db/redis/1");
    expect(pod.ips.map((i) => i.address)).toEqual(forOrdinal(1));
    const sts = await d.client.statefulSets();
    expect(sts.statefulsets).toContainEqual(expect.objectContaining({ namespace: "db", name: "redis", source: "api" }));
  });

  it("pins an exact IP, releasing the member's old address of that family in the same transaction", async () => {
    const before = await d.client.reservations({ owner: "db/redis/2" });
    const old4 = before.reservations.find((x) => x.family === 4)!.ip;
    const pinned = await d.client.pin({ namespace: "db", statefulset: "redis", ordinal: 2, ip: "10.70.0.200" });
    expect(pinned.reservation).toMatchObject({ ip: "10.70.0.200", pinned: true, owner: "db/redis/2", pool: "a4" });
    expect(pinned.released).toEqual([old4]);
    const after = await d.client.reservations({ owner: "db/redis/2" });
    expect(after.reservations.map((x) => x.ip).sort()).toEqual(["10.70.0.200", before.reservations.find((x) => x.family === 6)!.ip].sort());
    const pod = await d.client.allocate(at("redis-2-c", { podNamespace: "db", podName: "redis-2" }));
    expect(pod.ips.find((i) => i.family === 4)!.address).toBe("10.70.0.200/24");
  });

  it("refuses pins outside usable pools or on someone else's IP", async () => {
    const outside = await errorOf(d.client.pin({ namespace: "db", statefulset: "redis", ordinal: 0, ip: "10.71.0.5" }));
    expect(outside).toMatchObject({ code: "ip_unavailable", httpStatus: 409, field: "ip" });
    const gw = await errorOf(d.client.pin({ namespace: "db", statefulset: "redis", ordinal: 0, ip: "10.70.0.1" }));
    expect(gw).toMatchObject({ code: "ip_unavailable" });
    expect((gw as Error).message).toContain("gateway");
    const taken = await errorOf(d.client.pin({ namespace: "db", statefulset: "redis", ordinal: 0, ip: "10.70.0.200" }));
    expect(taken).toMatchObject({ code: "ip_unavailable" });
    expect((taken as Error).message).toContain("db/redis/2");
    const bad = await errorOf(d.client.pin({ namespace: "db", statefulset: "redis", ordinal: 0, ip: "10.70.0.300" }));
    expect(bad).toMatchObject({ code: "invalid_request", httpStatus: 400, field: "ip" });
  });

  it("honours requested ips on allocate, and refuses a taken one", async () => {
    const r = await d.client.allocate(at("want-1", { ips: ["10.70.0.150/24"] }));
    expect(r.ips.map((i) => i.address)).toContain("10.70.0.150/24");
    expect(r.ips.find((i) => i.family === 6)).toBeDefined();
    const e = await errorOf(d.client.allocate(at("want-2", { ips: ["10.70.0.150"] })));
    expect(e).toMatchObject({ code: "ip_unavailable", httpStatus: 409 });
  });

  it("releases reservations by IP or StatefulSet, refusing attached ones without force", async () => {
    const attached = await errorOf(d.client.releaseReservations({ namespace: "db", statefulset: "redis", ordinal: 1 }));
    expect(attached).toMatchObject({ code: "reservation_attached", httpStatus: 409 });
    const r0 = await d.client.releaseReservations({ namespace: "db", statefulset: "redis", ordinal: 0 });
    expect(r0.released.map((x) => x.owner)).toEqual(["db/redis/0", "db/redis/0"]);
    expect((await d.client.reservations({ owner: "db/redis/0" })).reservations).toEqual([]);
    const byIp = await d.client.releaseReservations({ ip: "10.70.0.200", force: true });
    expect(byIp.released[0]).toMatchObject({ owner: "db/redis/2", ip: "10.70.0.200" });
    const missing = await errorOf(d.client.releaseReservations({ ip: "10.70.0.201" }));
    expect(missing).toMatchObject({ code: "not_found" });
  });
});

describe("TTL of detached sticky reservations", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await startIpamd({
      config: {
        detachedTTLSeconds: 1,
        statefulSets: [{ namespace: "default", name: "kafka" }],
        pools: [{ name: "p", subnet: "10.80.0.0/24" }],
      },
    });
  });
  afterAll(async () => {
    await d?.stop();
  });

  it("releases a detached reservation once the TTL has passed, but keeps attached and pinned ones", async () => {
    await d.client.allocate(at("k0", { podNamespace: "default", podName: "kafka-0" }));
    await d.client.allocate(at("k1", { podNamespace: "default", podName: "kafka-1" }));
    await d.client.pin({ namespace: "default", statefulset: "kafka", ordinal: 2, ip: "10.80.0.100" });
    await d.client.release(at("k0"));
    const deadline = Date.now() + 8000;
    let owners: string[] = [];
    while (Date.now() < deadline) {
      owners = (await d.client.reservations({ statefulset: "kafka" })).reservations.map((r) => r.owner);
      if (!owners.includes("default/kafka/0")) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(owners.sort()).toEqual(["default/kafka/1", "default/kafka/2"]);
  });
});

describe("CNI GC", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await startIpamd({
      config: { statefulSets: [{ namespace: "default", name: "web" }], pools: [{ name: "p", subnet: "10.90.0.0/24" }] },
    });
  });
  afterAll(async () => {
    await d?.stop();
  });

  it("releases unlisted non-sticky attachments, detaches unlisted sticky ones, keeps listed ones", async () => {
    const keep = await d.client.allocate(at("gc-keep"));
    const drop1 = await d.client.allocate(at("gc-drop-1"));
    const drop2 = await d.client.allocate(at("gc-drop-2"));
    const web = await d.client.allocate(at("gc-web", { podNamespace: "default", podName: "web-0" }));
    const otherNet = await d.client.allocate({ ...at("gc-other"), network: "net2" });
    const r = await d.client.gc("net1", [{ containerID: "gc-keep", ifName: "eth0" }]);
    expect(r.released.sort()).toEqual([drop1, drop2].map((x) => ipOf(x.ips[0]!.address)).sort());
    expect(r.detached).toEqual([ipOf(web.ips[0]!.address)]);
    expect(await d.client.check(at("gc-keep"))).toEqual({ ...keep, existing: true });
    expect(await d.client.check({ ...at("gc-other"), network: "net2" })).toEqual({ ...otherNet, existing: true });
    const w = await d.client.reservations({ owner: "default/web/0" });
    expect(w.reservations[0]).toMatchObject({ state: "detached", ip: ipOf(web.ips[0]!.address) });
  });

  it("never touches an attachment created after the GC request began", async () => {
    const keepIp = ipOf((await d.client.check(at("gc-keep"))).ips[0]!.address);
    // Send the GC headers now and hold back the body; allocate meanwhile; then finish the GC.
    const body = JSON.stringify({ network: "net1", validAttachments: [] });
    const gcReply = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        {
          socketPath: d.socket,
          method: "POST",
          path: "/v1/gc",
          headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => {
            text += c.toString();
          });
          res.on("end", () => resolve({ status: res.statusCode!, body: text }));
        },
      );
      req.on("error", reject);
      req.flushHeaders();
      setTimeout(async () => {
        try {
          const late = await d.client.allocate(at("gc-late"));
          lateIp = ipOf(late.ips[0]!.address);
          req.end(body);
        } catch (e) {
          reject(e);
        }
      }, 200);
    });
    let lateIp = "";
    const res = await gcReply;
    expect(res.status).toBe(200);
    const released = (JSON.parse(res.body) as { released: string[] }).released;
    expect(lateIp).not.toBe("");
    expect(released).not.toContain(lateIp);
    expect(released).toEqual([keepIp]); // attached before the GC began, not listed: released
    expect((await d.client.check(at("gc-late"))).ips[0]!.address.startsWith(lateIp)).toBe(true);
  });
});

afterAll(cleanupIpamdTest);
