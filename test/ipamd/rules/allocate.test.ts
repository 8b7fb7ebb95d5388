// Rules of POST /v1/allocate for pods that are not StatefulSet members (api/API.md, CNI calls).
import { describe, expect, it } from "vitest";
import { NET, pool, rulesOn } from "./harness";

const dualStack = {
  pools: [
    { ...pool("v4", 4), gateway: "10.0.0.1", vlan: 101, routes: [{ dst: "0.0.0.0/0" }], dns: { nameservers: ["10.0.0.2"] } },
    { name: "v6", subnet: "fd00::/120", ranges: [{ start: "fd00::10", end: "fd00::13" }], dns: { nameservers: ["fd00::2"] } },
  ],
};

describe("allocate", () => {
  it("gives one address per family of the usable pools, with gateway, VLAN, routes and DNS", async () => {
    const r = rulesOn(dualStack);
    const a = await r.add("c1");
    expect(a.ips).toEqual([
      { pool: "v4", family: 4, address: "10.0.0.10/24", gateway: "10.0.0.1", vlan: 101 },
      { pool: "v6", family: 6, address: "fd00::10/120" },
    ]);
    expect(a.routes).toEqual([{ dst: "0.0.0.0/0", gw: "10.0.0.1" }]);
    expect(a.dns).toEqual({ nameservers: ["10.0.0.2", "fd00::2"] });
  });

  it("is idempotent: the same attachment gets the same addresses again and takes no more", async () => {
    const r = rulesOn(dualStack);
    const first = await r.add("c1");
    expect(first.existing).toBe(false);
    expect(await r.add("c1")).toEqual({ ...first, existing: true });
    expect(r.reservations()).toHaveLength(2);
    expect(r.ips(await r.add("c2"))).toEqual(["10.0.0.11", "fd00::11"]);
  });

  it("says existing only when this attachment (containerID, ifName, network) held the addresses before the request", async () => {
    const r = rulesOn(dualStack);
    expect((await r.add("c1")).existing).toBe(false);
    expect((await r.add("c1")).existing).toBe(true);
    // The same container's other interface, and the same interface on another network, are new attachments.
    expect((await r.add("c1", { ifName: "net1" })).existing).toBe(false);
    expect((await r.add("c1", { network: "net2" })).existing).toBe(false);
    expect((await r.add("c1", { ifName: "net1" })).existing).toBe(true);
    // Requested addresses are answered from what the attachment holds; a request differing from it allocates nothing.
    expect(await r.add("c1", { ips: ["10.0.0.13"] })).toMatchObject({ existing: true, ips: [{ address: "10.0.0.10/24" }, {}] });
    // After DEL, an ADD of the same attachment allocates anew.
    await r.del("c1");
    expect((await r.add("c1")).existing).toBe(false);
  });

  it("makes the attachment (containerID/ifName) the owner of an ordinary pod's address, not sticky", async () => {
    const r = rulesOn({ pools: [pool()] });
    const a = await r.add("c1", { podNamespace: "default", podName: "api-5d8f7c9b6-x2x7q" });
    expect(a).toMatchObject({ owner: "c1/eth0", sticky: false });
    expect(r.reservations()[0]).toMatchObject({ kind: "attachment", state: "attached", podName: "api-5d8f7c9b6-x2x7q" });
  });

  it("gives an exact requested address (ips), at most one per family", async () => {
    const r = rulesOn(dualStack);
    expect(r.ips(await r.add("c1", { ips: ["10.0.0.12/24"] }))).toEqual(["10.0.0.12", "fd00::10"]);
    expect(r.reservations({ ip: "10.0.0.12" })[0]).toMatchObject({ owner: "c1/eth0", pinned: true, sticky: false });
    await expect(r.add("c2", { ips: ["10.0.0.10", "10.0.0.11"] })).rejects.toMatchObject({ code: "invalid_request", field: "ips[1]" });
  });

  it("refuses a requested address another owner holds, or one the pools cannot give", async () => {
    const r = rulesOn({ pools: [{ ...pool(), gateway: "10.0.0.1" }] });
    await r.add("c1", { ips: ["10.0.0.12"] });
    await expect(r.add("c2", { ips: ["10.0.0.12"] })).rejects.toMatchObject({
      code: "ip_unavailable",
      message: expect.stringContaining("10.0.0.12 is already held by c1/eth0"),
    });
    await expect(r.add("c3", { ips: ["10.0.0.1"] })).rejects.toMatchObject({
      code: "ip_unavailable",
      message: expect.stringContaining("not allocatable"),
    });
    await expect(r.add("c4", { ips: ["192.168.1.1"] })).rejects.toMatchObject({ code: "ip_unavailable" });
  });

  it("prefers, per family, pools that name the network over pools open to every network", async () => {
    const named = { ...pool("named", 5), ranges: [{ start: "10.0.0.100", end: "10.0.0.104" }], networks: [NET] };
    const r = rulesOn({ pools: [pool("open", 5), named] });
    expect(r.ips(await r.add("c1"))).toEqual(["10.0.0.100"]);
    expect(r.ips(await r.add("c2", { network: "other" }))).toEqual(["10.0.0.10"]);
  });

  it("refuses pools that do not select this node or are not open to the network (no_pool)", async () => {
    const r = rulesOn({
      node: { name: "n1", labels: { rack: "r1" } },
      pools: [
        pool("here", 5, { networks: ["a"] }),
        { ...pool("elsewhere", 5), ranges: [{ start: "10.0.0.100", end: "10.0.0.104" }], nodeSelector: { matchLabels: { rack: "r2" } } },
      ],
    });
    await expect(r.add("c1", { pools: ["elsewhere"] })).rejects.toMatchObject({ code: "no_pool", field: "pools[0]" });
    await expect(r.add("c2", { pools: ["here"], network: "b" })).rejects.toMatchObject({ code: "no_pool", field: "pools[0]" });
    await expect(r.add("c3", { network: "b" })).rejects.toMatchObject({ code: "no_pool", field: "network" });
  });

  it("answers pool_exhausted when a family has no free address, and holds nothing of the failed ADD", async () => {
    const r = rulesOn(dualStack);
    for (const c of ["c1", "c2", "c3", "c4"]) await r.add(c);
    await r.del("c4");
    r.now += 60_000;
    await r.add("c5"); // takes c4's released addresses once their cooldown has passed
    await expect(r.add("c6")).rejects.toMatchObject({
      code: "pool_exhausted",
      message: expect.stringContaining("no free IPv4 address in v4"),
    });
    expect(r.reservations().filter((x) => x.containerID === "c6")).toEqual([]);
  });

  it("answers CHECK with the attachment's addresses, or not_found", async () => {
    const r = rulesOn({ pools: [pool()] });
    const a = await r.add("c1");
    expect(r.node.rules.check({ containerID: "c1", ifName: "eth0", network: NET })).toEqual({ ...a, existing: true });
    expect(() => r.node.rules.check({ containerID: "c9", ifName: "eth0", network: NET })).toThrow(
      expect.objectContaining({ code: "not_found" }),
    );
  });
});
