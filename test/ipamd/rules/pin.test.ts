// Pins: an exact address for a member (api/API.md, POST /v1/reservations/pin and allocate with ips).
import { describe, expect, it } from "vitest";
import { pool, rulesOn, webPod } from "./harness";

describe("pin", () => {
  it("pins an exact address and releases the member's previous address of that family", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("a", webPod(0));
    await r.del("a");
    const p = await r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.20" });
    expect(p).toMatchObject({
      reservation: { ip: "10.0.0.20", owner: "default/web/0", pinned: true, sticky: true },
      released: ["10.0.0.10"],
      heldByContainer: [],
    });
    expect(r.ips(await r.add("b", webPod(0)))).toEqual(["10.0.0.20"]);
  });

  it("pins the member's own address where it is", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("a", webPod(0));
    const p = await r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.10" });
    expect(p).toMatchObject({ reservation: { ip: "10.0.0.10", pinned: true, state: "attached" }, released: [], heldByContainer: [] });
  });

  it("needs force while the member runs; then the running container keeps the old address until its DEL", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("a", webPod(0));
    await expect(r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.20" })).rejects.toMatchObject({ code: "reservation_attached" });
    expect(r.reservations({ ip: "10.0.0.20" })).toEqual([]);
    const p = await r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.20", force: true });
    expect(p).toMatchObject({ released: ["10.0.0.10"], heldByContainer: ["10.0.0.10"] });
    expect(r.reservations({ ip: "10.0.0.10" })).toMatchObject([{ owner: "a/eth0", sticky: false, kind: "attachment", state: "attached" }]);
    await expect(r.add("x", { ips: ["10.0.0.10"] })).rejects.toMatchObject({ code: "ip_unavailable" });
    expect(await r.del("a")).toEqual({ released: ["10.0.0.10"], kept: [] });
  });

  it("refuses an address another owner holds, or one no pool of this node can give", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("x");
    await expect(r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.10" })).rejects.toMatchObject({ code: "ip_unavailable", field: "ip" });
    await expect(r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.200" })).rejects.toMatchObject({
      code: "ip_unavailable",
      field: "ip",
    });
  });

  it("replaces only the address on the same network(s): the member's addresses on other networks are kept", async () => {
    const r = rulesOn({
      pools: [
        pool("a", 10, { networks: ["net1"] }),
        { ...pool("b", 10), ranges: [{ start: "10.0.0.100", end: "10.0.0.109" }], networks: ["storage"] },
      ],
    });
    await r.add("c", webPod(0));
    await r.add("c", webPod(0, { network: "storage" }));
    await r.del("c");
    await r.del("c", { network: "storage" });
    const p = await r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.15" });
    expect(p.released).toEqual(["10.0.0.10"]);
    expect(
      r
        .reservations({ owner: "default/web/0" })
        .map((x) => x.ip)
        .sort(),
    ).toEqual(["10.0.0.100", "10.0.0.15"]);
  });

  it("pins on ADD: a member's ADD with ips replaces its previous address atomically", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("a", webPod(2));
    await r.del("a");
    expect(r.ips(await r.add("b", webPod(2, { ips: ["10.0.0.25"] })))).toEqual(["10.0.0.25"]);
    expect(r.reservations({ owner: "default/web/2" })).toMatchObject([{ ip: "10.0.0.25", pinned: true, state: "attached" }]);
    expect(r.reservations({ ip: "10.0.0.10" })).toEqual([]);
  });
});
