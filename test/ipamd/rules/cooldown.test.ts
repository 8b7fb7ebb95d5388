// Free address order (api/API.md, Concepts): never-used first, then released ones past the
// cooldown, least recently released first; an explicit request skips the cooldown.
import { describe, expect, it } from "vitest";
import { OLDEST_RELEASED } from "../../../ipamd/store/statements";
import { pool, rulesOn } from "./harness";

describe("cooldown and order of free addresses", () => {
  it("does not reuse a released address within the cooldown, then reuses the least recently released first", async () => {
    const r = rulesOn({ pools: [pool("p4", 3)], cooldownSeconds: 30 });
    for (const c of ["a", "b", "c"]) await r.add(c);
    await r.del("b");
    r.now += 1_000;
    await r.del("a");
    await expect(r.add("d")).rejects.toMatchObject({
      code: "pool_exhausted",
      message: expect.stringContaining("2 released less than 30s ago"),
    });
    r.now += 29_500; // b's cooldown has passed, a's has not
    expect(r.ips(await r.add("d"))).toEqual(["10.0.0.11"]);
    await expect(r.add("e")).rejects.toMatchObject({ code: "pool_exhausted" });
    r.now += 1_000;
    expect(r.ips(await r.add("e"))).toEqual(["10.0.0.10"]);
  });

  it("reuses the lowest of addresses released at the same instant, found by one index seek (no sort)", async () => {
    const r = rulesOn({ pools: [pool("p4", 40)], cooldownSeconds: 1 });
    for (let i = 0; i < 40; i++) await r.add(`c${i}`);
    for (let i = 39; i >= 0; i -= 1) await r.del(`c${i}`); // one instant: the rules' clock does not move
    r.now += 2_000;
    expect(r.ips(await r.add("again"))).toEqual(["10.0.0.10"]);
    const plan = r.db.prepare(`EXPLAIN QUERY PLAN ${OLDEST_RELEASED}`).all("p4", r.now) as { detail: string }[];
    expect(plan.map((p) => p.detail).join("; ")).toMatch(
      /^SEARCH released USING COVERING INDEX released_pool_time_ip \(pool=\? AND released_at<\?\)$/,
    );
  });

  it("prefers never-used addresses over released ones even after the cooldown", async () => {
    const r = rulesOn({ pools: [pool("p4", 5)], cooldownSeconds: 1 });
    await r.add("a");
    await r.del("a");
    r.now += 10_000;
    expect(r.ips(await r.add("b"))).toEqual(["10.0.0.11"]);
  });

  it("gives an explicitly requested address at once, cooldown or not", async () => {
    const r = rulesOn({ pools: [pool()], cooldownSeconds: 30 });
    await r.add("a");
    await r.del("a");
    expect(r.ips(await r.add("b", { ips: ["10.0.0.10"] }))).toEqual(["10.0.0.10"]);
    expect(r.node.views.poolUsage(r.now)[0]).toMatchObject({ used: 1, cooling: 0 });
  });

  it("skips an address pinned ahead of the cursor", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.11" });
    expect(r.ips(await r.add("a"))).toEqual(["10.0.0.10"]);
    expect(r.ips(await r.add("b"))).toEqual(["10.0.0.12"]);
  });
});
