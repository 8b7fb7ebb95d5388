// A pool renamed or removed from the config while its addresses are held: they are reported as
// orphaned (status, pools, ipamctl), counted against the pool that now contains them, and an
// idempotent ADD of an old attachment gets that pool's shape, or a clear error.
import { afterAll, describe, expect, it } from "vitest";
import { openStore } from "../../ipamd/store/database";
import { HELD_OUTSIDE, Statements } from "../../ipamd/store/statements";
import { cleanupIpamdTest, runIpamctl, startIpamd } from "../helpers/ipamd";

const at = (containerID: string) => ({ containerID, ifName: "eth0", network: "n" });
const pool = (name: string) => ({
  name,
  subnet: "10.200.0.0/24",
  gateway: "10.200.0.1",
  routes: [{ dst: "0.0.0.0/0" }],
  ranges: [{ start: "10.200.0.10", end: "10.200.0.15" }],
});

describe("orphaned pools", () => {
  it("reports addresses of a renamed pool, counts them in the new one, and ADD keeps the old attachment's shape", async () => {
    const d = await startIpamd({ config: { pools: [pool("old")] } });
    const first = await d.client.allocate(at("a"));
    await d.client.allocate(at("b"));
    await d.client.allocate(at("c"));
    await d.stop();
    const e = await startIpamd({ dir: d.dir, config: { pools: [pool("new")] } });
    const { pools, orphaned } = await e.client.pools();
    expect(pools[0]).toMatchObject({ name: "new", used: 0, orphaned: 3, free: "3" });
    expect(orphaned).toEqual([{ name: "old", held: 3, attached: 3, insidePools: ["new"] }]);
    expect((await e.client.status()).orphanedPools).toEqual(orphaned);
    const ctl = await runIpamctl(["--socket", e.socket, "status"]);
    expect(ctl.stdout).toContain("old: 3 address(es) held (3 attached) under a pool no longer in the config; they lie in new now");
    expect((await runIpamctl(["--socket", e.socket, "pools"])).stdout).toContain("orphaned pools");

    expect(await e.client.allocate(at("a"))).toEqual({ ...first, existing: true, ips: [{ ...first.ips[0]!, pool: "old" }] });
    for (const c of ["x", "y", "z"]) await e.client.allocate(at(c));
    await expect(e.client.allocate(at("w"))).rejects.toMatchObject({ code: "pool_exhausted" });
    expect((await e.client.pools()).pools[0]).toMatchObject({ free: "0" });
    await e.stop();

    const f = await startIpamd({ dir: d.dir, config: { pools: [{ name: "elsewhere", subnet: "10.201.0.0/24" }] } });
    const err = await f.client.allocate(at("a")).catch((x: unknown) => x);
    expect(err).toMatchObject({ code: "no_pool" });
    expect((err as Error).message).toContain('holds 10.200.0.10 from pool "old", which is no longer in the ipamd config');
    expect((await f.client.status()).orphanedPools).toEqual([
      { name: "new", held: 3, attached: 3, insidePools: [] },
      { name: "old", held: 3, attached: 3, insidePools: [] },
    ]);
    await f.stop();
  });
});

describe("the orphaned-pool query (every status and pools answer)", () => {
  it("reads one index entry per pool, not every row, also once SQLite has statistics (ANALYZE)", () => {
    const db = openStore(":memory:");
    const insert = db.prepare(
      "INSERT INTO reservations (ip, pool, family, owner, kind, sticky, container_id, ifname, network, created_at) " +
        "VALUES (?, ?, 4, ?, 'attachment', 0, ?, 'eth0', 'n', 0)",
    );
    db.exec("BEGIN");
    for (let i = 0; i < 100_000; i++) insert.run(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, i % 2 ? "a" : "b", `c${i}/eth0`, `c${i}`);
    db.exec("COMMIT");
    db.exec("ANALYZE");
    const store = new Statements(db);
    expect(store.heldOutside(["a", "b"], 10_000)).toEqual([]);
    // Not "SCAN r": the rows are reached through the pool index, one pool at a time (a scan of the 100,000 rows
    // took ~160 ms here on every status call).
    const plan = (db.prepare(`EXPLAIN QUERY PLAN ${HELD_OUTSIDE}`).all("[]", 1) as { detail: string }[]).map((p) => p.detail);
    expect(plan.filter((d) => /^(SCAN|SEARCH) r\b/.test(d))).toEqual([expect.stringMatching(/^SEARCH r USING INDEX \S+ \(pool=\?\)$/)]);
  });
});

afterAll(cleanupIpamdTest);
