// Release of reservations by an operator, and force (api/API.md, POST /v1/reservations/release).
import { describe, expect, it } from "vitest";
import { pool, rulesOn, webPod } from "./harness";

describe("release reservations", () => {
  it("releases by ip into the cooldown", async () => {
    const r = rulesOn({ pools: [pool()], cooldownSeconds: 30 });
    await r.reserve({ statefulset: "web", replicas: 1 });
    const out = await r.releaseReservations({ ip: "10.0.0.10/24" });
    expect(out).toMatchObject({ released: [{ ip: "10.0.0.10", owner: "default/web/0", state: "detached" }], heldByContainer: [] });
    expect(r.reservations()).toEqual([]);
    expect(r.node.views.poolUsage(r.now)[0]).toMatchObject({ cooling: 1, reserved: 0 });
  });

  it("releases a whole StatefulSet and unregisters it; one ordinal or one pool keeps the registration", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.reserve({ statefulset: "redis", replicas: 3 });
    const one = await r.releaseReservations({ namespace: "default", statefulset: "redis", ordinal: 1 });
    expect(one.released.map((x) => x.ip)).toEqual(["10.0.0.11"]);
    expect(r.node.statefulSets.list().statefulsets.map((s) => s.name)).toContain("redis");
    expect((await r.releaseReservations({ namespace: "default", statefulset: "redis" })).released.map((x) => x.ordinal)).toEqual([0, 2]);
    expect(r.node.statefulSets.list().statefulsets.map((s) => s.name)).not.toContain("redis");
    expect(await r.add("p", { podNamespace: "default", podName: "redis-0" })).toMatchObject({ sticky: false });
  });

  it("needs force for a reservation a running container uses, and force never frees that address", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("a", webPod(0));
    await expect(r.releaseReservations({ namespace: "default", statefulset: "web" })).rejects.toMatchObject({
      code: "reservation_attached",
      message: expect.stringContaining("10.0.0.10 (default/web/0, container a)"),
    });
    const out = await r.releaseReservations({ namespace: "default", statefulset: "web", force: true });
    expect(out.released).toMatchObject([{ ip: "10.0.0.10", owner: "default/web/0", sticky: true }]);
    expect(out.heldByContainer).toMatchObject([{ ip: "10.0.0.10", owner: "a/eth0", sticky: false, kind: "attachment", state: "attached" }]);
    await expect(r.add("x", { ips: ["10.0.0.10"] })).rejects.toMatchObject({ code: "ip_unavailable" });
    expect(await r.del("a")).toEqual({ released: ["10.0.0.10"], kept: [] });
    expect(r.reservations()).toEqual([]);
  });

  it("answers not_found for an address nobody holds", async () => {
    const r = rulesOn({ pools: [pool()] });
    await expect(r.releaseReservations({ ip: "10.0.0.10" })).rejects.toMatchObject({ code: "not_found", field: "ip" });
  });
});
