// Reserve ahead: addresses locked before the pods exist (api/API.md, POST /v1/reservations/reserve).
import { describe, expect, it } from "vitest";
import { pool, rulesOn, webPod } from "./harness";

describe("reserve", () => {
  it("locks an address for ordinals 0..replicas-1, registers the StatefulSet, and the member's ADD gets it", async () => {
    const r = rulesOn({ pools: [pool()] });
    const res = await r.reserve({ statefulset: "redis", replicas: 3 });
    expect(res.statefulset).toEqual({ namespace: "default", name: "redis" });
    expect(res.reservations.map((x) => [x.owner, x.ip, x.state])).toEqual([
      ["default/redis/0", "10.0.0.10", "detached"],
      ["default/redis/1", "10.0.0.11", "detached"],
      ["default/redis/2", "10.0.0.12", "detached"],
    ]);
    expect(r.node.statefulSets.list().statefulsets).toContainEqual(
      expect.objectContaining({ namespace: "default", name: "redis", source: "api" }),
    );
    expect(r.ips(await r.add("p", { podNamespace: "default", podName: "redis-1" }))).toEqual(["10.0.0.11"]);
  });

  it("is idempotent: reserving again keeps the existing reservations and adds only new ordinals", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.reserve({ statefulset: "web", replicas: 2 });
    await r.add("a", webPod(0));
    const again = await r.reserve({ statefulset: "web", replicas: 3 });
    expect(again.reservations.map((x) => [x.ip, x.state])).toEqual([
      ["10.0.0.10", "attached"],
      ["10.0.0.11", "detached"],
      ["10.0.0.12", "detached"],
    ]);
  });

  it("is all or nothing: more ordinals than free addresses reserve none", async () => {
    const r = rulesOn({ pools: [pool("p4", 3)] });
    await expect(r.reserve({ statefulset: "big", replicas: 4 })).rejects.toMatchObject({ code: "pool_exhausted" });
    expect(r.reservations()).toEqual([]);
    expect(r.node.statefulSets.list().statefulsets.map((s) => s.name)).toEqual(["web"]);
  });

  it("narrows to the given pools", async () => {
    const r = rulesOn({ pools: [pool("a", 5), { ...pool("b", 5), ranges: [{ start: "10.0.0.100", end: "10.0.0.104" }] }] });
    const res = await r.reserve({ statefulset: "web", replicas: 1, pools: ["b"] });
    expect(res.reservations.map((x) => [x.pool, x.ip])).toEqual([["b", "10.0.0.100"]]);
  });
});
