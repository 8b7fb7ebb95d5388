// Sticky addresses of StatefulSet members, and their hand-over between sandboxes (api/API.md, Concepts: Owner).
import { describe, expect, it } from "vitest";
import { pool, rulesOn, webPod } from "./harness";

describe("sticky members", () => {
  it("keeps a member's address across DEL and an ADD with a new container ID", async () => {
    const r = rulesOn({ pools: [pool()] });
    const first = await r.add("a", webPod(0));
    expect(first).toMatchObject({ owner: "default/web/0", sticky: true, existing: false });
    expect(await r.add("a", webPod(0))).toMatchObject({ owner: "default/web/0", existing: true });
    expect(await r.del("a")).toEqual({ released: [], kept: ["10.0.0.10"] });
    expect(r.reservations({ owner: "default/web/0" })[0]).toMatchObject({ state: "detached", sticky: true, kind: "statefulset" });
    // Its reservation is the member's, but this ADD attached it: a failed ADD would let it go again.
    expect(await r.add("b", webPod(0))).toMatchObject({ existing: false, ips: [{ address: "10.0.0.10/24" }] });
    expect(r.reservations({ owner: "default/web/0" })).toMatchObject([{ state: "attached", containerID: "b" }]);
  });

  it("never gives a detached member's address to another pod", async () => {
    const r = rulesOn({ pools: [pool("p4", 3)] });
    await r.add("a", webPod(0));
    await r.del("a");
    r.now += 3_600_000;
    expect(r.ips(await r.add("x"))).toEqual(["10.0.0.11"]);
    expect(r.ips(await r.add("y"))).toEqual(["10.0.0.12"]);
    await expect(r.add("z")).rejects.toMatchObject({ code: "pool_exhausted" });
  });

  it("treats a pod as a member only when its StatefulSet is known", async () => {
    const r = rulesOn({ pools: [pool()] });
    expect(await r.add("d", { podNamespace: "default", podName: "cache-12345" })).toMatchObject({ owner: "d/eth0", sticky: false });
    expect(await r.add("e", { podNamespace: "other", podName: "web-0" })).toMatchObject({ sticky: false });
    await r.reserve({ statefulset: "cache", replicas: 0 }); // registers it
    expect(await r.add("f", { podNamespace: "default", podName: "cache-1" })).toMatchObject({ owner: "default/cache/1", sticky: true });
  });

  it(
    "refuses a re-created member (another pod UID) while its previous sandbox still holds the address, " + "and hands it over at that DEL",
    async () => {
      const r = rulesOn({ pools: [pool()] });
      await r.add("old", webPod(1, { podUID: "uid-1" }));
      const refused = await r.add("new", webPod(1, { podUID: "uid-2" })).catch((e: unknown) => e);
      expect(refused).toMatchObject({ code: "previous_sandbox_attached", status: 409 });
      expect((refused as Error).message).toMatch(
        new RegExp(
          /10\.0\.0\.10 of default\/web\/1 is still attached to the previous sandbox old /.source +
            /\(interface eth0, network net1, pod default\/web-1 \(uid uid-1\)/.source,
        ),
      );
      expect(r.reservations({ owner: "default/web/1" })).toMatchObject([{ state: "attached", containerID: "old" }]);
      expect(r.reservations({ state: "attached" })).toHaveLength(1); // nothing else was allocated for "new"
      expect(await r.del("old")).toEqual({ released: [], kept: ["10.0.0.10"] });
      expect(r.ips(await r.add("new", webPod(1, { podUID: "uid-2" })))).toEqual(["10.0.0.10"]);
      expect(r.reservations({ owner: "default/web/1" })).toMatchObject([{ state: "attached", containerID: "new" }]);
    },
  );

  it("hands the address over at a GC that no longer lists the previous sandbox", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("old", webPod(1));
    await expect(r.add("new", webPod(1))).rejects.toMatchObject({ code: "previous_sandbox_attached" }); // no UIDs: not the same pod
    expect(await r.gc([])).toEqual({ released: [], detached: ["10.0.0.10"] });
    expect(r.ips(await r.add("new", webPod(1)))).toEqual(["10.0.0.10"]);
  });

  it("lets a new sandbox of the same pod (same pod UID) take the address, and says so", async () => {
    const r = rulesOn({ pools: [pool()] });
    const moved: string[] = [];
    r.node.rules.onTakeover = (row, req) => moved.push(`${row.ip} ${row.container_id} -> ${req.containerID}`);
    await r.add("old", webPod(1, { podUID: "uid-1" }));
    expect(await r.add("new", webPod(1, { podUID: "uid-1" }))).toMatchObject({ existing: false, ips: [{ address: "10.0.0.10/24" }] });
    expect(moved).toEqual(["10.0.0.10 old -> new"]);
    expect(await r.del("old")).toEqual({ released: [], kept: [] }); // the old DEL no longer touches it
  });

  it("gives a member's second interface in the same pool an address owned by that interface", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("a", webPod(0));
    const second = await r.add("a", webPod(0, { ifName: "net1" }));
    expect(second).toMatchObject({ owner: "a/net1", sticky: false });
    expect(r.ips(second)).toEqual(["10.0.0.11"]);
    expect(await r.del("a", { ifName: "net1" })).toEqual({ released: ["10.0.0.11"], kept: [] });
  });
});
