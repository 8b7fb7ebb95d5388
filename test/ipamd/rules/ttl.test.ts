// Time-to-live of detached reservations (api/API.md, detachedTTLSeconds).
import { describe, expect, it } from "vitest";
import { pool, rulesOn, webPod } from "./harness";

describe("detached TTL", () => {
  it("releases sticky reservations detached longer than the TTL; attached and pinned ones stay", async () => {
    const r = rulesOn({ pools: [pool()], detachedTTLSeconds: 60 });
    await r.add("a", webPod(0));
    await r.del("a"); // detached now
    await r.add("b", webPod(1)); // stays attached
    await r.reserve({ statefulset: "web", replicas: 3 }); // web-2 reserved ahead: detached from now
    await r.pin({ statefulset: "other", ordinal: 0, ip: "10.0.0.25" });
    r.now += 30_000;
    expect(await r.reap()).toEqual([]);
    r.now += 31_000;
    expect((await r.reap()).sort()).toEqual(["10.0.0.10", "10.0.0.12"]);
    expect(r.reservations().map((x) => [x.owner, x.state])).toEqual([
      ["default/other/0", "detached"],
      ["default/web/1", "attached"],
    ]);
  });

  it("keeps detached reservations forever with TTL 0 (the default)", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.reserve({ statefulset: "web", replicas: 1 });
    r.now += 365 * 86_400_000;
    expect(await r.reap()).toEqual([]);
    expect(r.reservations()).toHaveLength(1);
  });
});
