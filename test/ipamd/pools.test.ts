// Pool selection by node labels and network, dual-stack, exhaustion, cooldown ordering.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describePlacement, type Placement, placementMatches, selectsPlacement } from "../../ipamd/pools";
import { cleanupIpamdTest, type DaemonHandle, startIpamd, errorOf, ipOf } from "../helpers/ipamd";

const at = (containerID: string, network = "net1", extra: Record<string, unknown> = {}) => ({
  containerID,
  ifName: "eth0",
  network,
  ...extra,
});

describe("node labels and networks select pools", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await startIpamd({
      config: {
        node: { name: "n1", labels: { rack: "r1", "machine-type": "bare-metal" } },
        pools: [
          { name: "rack2", subnet: "10.2.0.0/24", nodeSelector: { matchLabels: { rack: "r2" } } },
          { name: "rack1", subnet: "10.1.0.0/24", nodeSelector: { matchLabels: { rack: "r1" } } },
          {
            name: "vm-only",
            subnet: "10.3.0.0/24",
            nodeSelector: { matchExpressions: [{ key: "machine-type", operator: "In", values: ["vm"] }] },
          },
          {
            name: "rack1-v6",
            subnet: "fd00:1::/64",
            nodeSelector: {
              matchExpressions: [
                { key: "rack", operator: "Exists" },
                { key: "tainted", operator: "DoesNotExist" },
              ],
            },
          },
          {
            name: "storage",
            subnet: "10.4.0.0/24",
            networks: ["storage"],
            nodeSelector: { matchExpressions: [{ key: "rack", operator: "NotIn", values: ["r9"] }] },
          },
        ],
      },
      // Flags override the config's labels: this is how the DaemonSet passes the node's labels.
      args: ["--node-label", "rack=r1", "--node-label", "machine-type=bare-metal"],
    });
  });
  afterAll(async () => {
    await d?.stop();
  });

  it("uses only pools whose selector matches the node labels, one address per family", async () => {
    const r = await d.client.allocate(at("sel-1"));
    expect(r.ips.map((i) => [i.pool, i.family])).toEqual([
      ["rack1", 4],
      ["rack1-v6", 6],
    ]);
    expect(ipOf(r.ips[0]!.address)).toBe("10.1.0.1");
    expect(r.ips[1]!.address).toBe("fd00:1::1/64");
    const status = await d.client.status();
    expect(status.node).toEqual({ name: "n1", labels: { rack: "r1", "machine-type": "bare-metal" } });
    expect(status.poolsSelected).toEqual(["rack1", "rack1-v6", "storage"]);
  });

  it("a network restricted pool serves only its network", async () => {
    const r = await d.client.allocate(at("st-1", "storage"));
    expect(r.ips.map((i) => i.pool)).toEqual(["storage", "rack1-v6"]);
    const p = await d.client.allocate(at("st-2", "storage", { pools: ["storage"] }));
    expect(p.ips.map((i) => i.pool)).toEqual(["storage"]);
  });

  it("refuses a requested pool that does not select this node, with no_pool naming it", async () => {
    const e = await errorOf(d.client.allocate(at("sel-2", "net1", { pools: ["rack2"] })));
    expect(e).toMatchObject({ code: "no_pool", httpStatus: 422, field: "pools[0]" });
    expect((e as Error).message).toContain("rack2");
    const unknown = await errorOf(d.client.allocate(at("sel-3", "net1", { pools: ["nope"] })));
    expect(unknown).toMatchObject({ code: "no_pool" });
    expect((unknown as Error).message).toContain("not defined");
  });

  it("pools endpoint reports usage and whether each pool selects this node", async () => {
    const { pools } = await d.client.pools();
    const rack1 = pools.find((p) => p.name === "rack1")!;
    expect(rack1).toMatchObject({ selected: true, total: "254", family: 4 });
    expect(rack1.used).toBeGreaterThan(0);
    expect(pools.find((p) => p.name === "rack2")!.selected).toBe(false);
    expect(pools.find((p) => p.name === "rack1-v6")!.total).toBe((2n ** 64n - 1n).toString());
    const one = await d.client.pool("rack1-v6");
    expect(one.pool.subnet).toBe("fd00:1::/64");
  });
});

describe("exhaustion, no pool, cooldown and reuse order", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await startIpamd({
      config: {
        cooldownSeconds: 1,
        pools: [
          {
            name: "tiny",
            subnet: "10.50.0.0/24",
            ranges: [{ start: "10.50.0.1", end: "10.50.0.5" }],
            exclude: ["10.50.0.2"],
            gateway: "10.50.0.1",
            networks: ["tiny"],
          },
          { name: "other", subnet: "10.60.0.0/24", networks: ["other"] },
        ],
      },
    });
  });
  afterAll(async () => {
    await d?.stop();
  });

  it("hands out never-used addresses in order, skipping gateway and exclusions, then reports pool_exhausted", async () => {
    const got: string[] = [];
    for (const id of ["t1", "t2", "t3"]) got.push(ipOf((await d.client.allocate(at(id, "tiny"))).ips[0]!.address));
    expect(got).toEqual(["10.50.0.3", "10.50.0.4", "10.50.0.5"]);
    const e = await errorOf(d.client.allocate(at("t4", "tiny")));
    expect(e).toMatchObject({ code: "pool_exhausted", httpStatus: 409 });
    expect((e as Error).message).toContain("tiny");
  });

  it("does not reuse a released address before the cooldown, then reuses least recently released first", async () => {
    await d.client.release(at("t2", "tiny")); // 10.50.0.4 released first
    await new Promise((r) => setTimeout(r, 50));
    await d.client.release(at("t1", "tiny")); // 10.50.0.3 released later
    const e = await errorOf(d.client.allocate(at("t5", "tiny")));
    expect(e).toMatchObject({ code: "pool_exhausted" });
    expect((e as Error).message).toMatch(/2 released less than 1s ago/);
    const { pool } = await d.client.pool("tiny");
    expect(pool).toMatchObject({ used: 1, cooling: 2, free: "0" });
    await new Promise((r) => setTimeout(r, 1100));
    expect(ipOf((await d.client.allocate(at("t5", "tiny"))).ips[0]!.address)).toBe("10.50.0.4");
    expect(ipOf((await d.client.allocate(at("t6", "tiny"))).ips[0]!.address)).toBe("10.50.0.3");
  });

  it("prefers never-used addresses over released ones even after the cooldown", async () => {
    const a = await d.client.allocate(at("o1", "other"));
    await d.client.release(at("o1", "other"));
    await new Promise((r) => setTimeout(r, 1100));
    const b = await d.client.allocate(at("o2", "other"));
    expect(ipOf(b.ips[0]!.address)).toBe("10.60.0.2");
    expect(ipOf(a.ips[0]!.address)).toBe("10.60.0.1");
  });

  it("answers no_pool when no pool serves the network", async () => {
    const e = await errorOf(d.client.allocate(at("x1", "unknown-net")));
    expect(e).toMatchObject({ code: "no_pool", httpStatus: 422, field: "network" });
    expect((e as Error).message).toContain("unknown-net");
  });
});

describe("IPv6-only /64 pool (no pre-population)", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    d = await startIpamd({
      config: { pools: [{ name: "v6", subnet: "fd00:99::/64", gateway: "fd00:99::1", exclude: ["fd00:99::2-fd00:99::ff"] }] },
    });
  });
  afterAll(async () => {
    await d?.stop();
  });

  it("allocates right after the exclusion and accepts an explicit address far into the /64", async () => {
    const a = await d.client.allocate(at("v6-1"));
    expect(a.ips).toEqual([{ pool: "v6", family: 6, address: "fd00:99::100/64", gateway: "fd00:99::1" }]);
    const pinned = await d.client.allocate(at("v6-2", "net1", { ips: ["fd00:99::dead:beef/64"] }));
    expect(pinned.ips[0]!.address).toBe("fd00:99::dead:beef/64");
    const b = await d.client.allocate(at("v6-3"));
    expect(b.ips[0]!.address).toBe("fd00:99::101/64");
  });
});

afterAll(cleanupIpamdTest);

// Reserve at creation: which pools select every node a pod template's nodeSelector and required node affinity allow.
describe("a pod template's placement against pool selectors", () => {
  const rackIn = (...values: string[]) => [{ key: "rack", operator: "In", values }];
  const rack = (r: string) => ({ matchLabels: { rack: r } });
  const nameIn = (...values: string[]) => [{ key: "metadata.name", operator: "In", values }];
  const NODES = new Map([
    ["n1", { rack: "r1" }],
    ["n2", { rack: "r2" }],
  ]);
  const cases: [string, Placement, object, boolean][] = [
    ["nodeSelector rack=r1, pool rack=r1", { nodeSelector: { rack: "r1" } }, rack("r1"), true],
    ["nodeSelector rack=r1, pool rack=r2", { nodeSelector: { rack: "r1" } }, rack("r2"), false],
    ["affinity rack In (r1), pool rack=r1", { affinityTerms: [rackIn("r1")] }, rack("r1"), true],
    ["affinity rack In (r1, r2), pool rack=r1: pods may land in r2", { affinityTerms: [rackIn("r1", "r2")] }, rack("r1"), false],
    [
      "affinity rack In (r1, r2), pool rack In (r1, r2, r3)",
      { affinityTerms: [rackIn("r1", "r2")] },
      { matchExpressions: [{ key: "rack", operator: "In", values: ["r1", "r2", "r3"] }] },
      true,
    ],
    ["two terms r1 or r2, pool rack=r1", { affinityTerms: [rackIn("r1"), rackIn("r2")] }, rack("r1"), false],
    [
      "affinity rack In (r1, r2) NotIn (r2), pool rack=r1",
      { affinityTerms: [[...rackIn("r1", "r2"), { key: "rack", operator: "NotIn", values: ["r2"] }]] },
      rack("r1"),
      true,
    ],
    ["nodeSelector and affinity narrow together", { nodeSelector: { rack: "r1" }, affinityTerms: [rackIn("r1", "r2")] }, rack("r1"), true],
    ["no constraint on rack, pool rack=r1", { nodeSelector: { zone: "a" } }, rack("r1"), false],
    [
      "pool rack NotIn (r9), pods on rack In (r1)",
      { affinityTerms: [rackIn("r1")] },
      { matchExpressions: [{ key: "rack", operator: "NotIn", values: ["r9"] }] },
      true,
    ],
    [
      "pool rack NotIn (r9), pods anywhere in zone a",
      { nodeSelector: { zone: "a" } },
      { matchExpressions: [{ key: "rack", operator: "NotIn", values: ["r9"] }] },
      false,
    ],
    [
      "pool gpu Exists, pods on gpu Exists",
      { affinityTerms: [[{ key: "gpu", operator: "Exists" }]] },
      { matchExpressions: [{ key: "gpu", operator: "Exists" }] },
      true,
    ],
    ["pool without a selector, any placement", { affinityTerms: [rackIn("r1", "r2")] }, {}, true],
    [
      "pods that can run nowhere (rack=r1 and rack In (r2)): no pool",
      { nodeSelector: { rack: "r1" }, affinityTerms: [rackIn("r2")] },
      {},
      false,
    ],
    [
      "a term no node matches is left out",
      { affinityTerms: [rackIn("r1"), [...rackIn("r2"), { key: "rack", operator: "DoesNotExist" }]] },
      rack("r1"),
      true,
    ],
    // matchFields metadata.name In: judged by the labels of the nodes named (`nodes`: their Node objects).
    ["pinned to n1 (rack r1), pool rack=r1", { affinityFields: [nameIn("n1")], nodes: NODES }, rack("r1"), true],
    ["pinned to n1 or n2 (racks r1, r2), pool rack=r1", { affinityFields: [nameIn("n1", "n2")], nodes: NODES }, rack("r1"), false],
    [
      "n1 or n2 with rack In (r1): n2 is not admitted, pool rack=r1",
      { affinityTerms: [rackIn("r1")], affinityFields: [nameIn("n1", "n2")], nodes: NODES },
      rack("r1"),
      true,
    ],
    [
      "n1 or n3 (no Node object): pods run on n1 only, pool rack=r1",
      { affinityFields: [nameIn("n1", "n3")], nodes: NODES },
      rack("r1"),
      true,
    ],
    ["pinned to n3 (no Node object): the pods run nowhere", { affinityFields: [nameIn("n3")], nodes: NODES }, {}, false],
    [
      "a named term or a label term: both must be covered",
      { affinityTerms: [[], rackIn("r2")], affinityFields: [nameIn("n1")], nodes: NODES },
      rack("r1"),
      false,
    ],
    [
      "metadata.name NotIn only narrows: rack In (r1) decides",
      { affinityTerms: [rackIn("r1")], affinityFields: [[{ key: "metadata.name", operator: "NotIn", values: ["n1"] }]] },
      rack("r1"),
      true,
    ],
  ];
  for (const [what, placement, selector, selects] of cases) {
    it(`${what}: ${selects ? "selects" : "does not select"} every node`, () => {
      expect(selectsPlacement(selector, placement)).toBe(selects);
    });
  }

  it("a node may host the pods when its labels match the nodeSelector and any one affinity term", () => {
    const p: Placement = { nodeSelector: { zone: "a" }, affinityTerms: [rackIn("r1"), rackIn("r2")] };
    expect(placementMatches(p, { zone: "a", rack: "r2" }, "n")).toBe(true);
    expect(placementMatches(p, { zone: "a", rack: "r3" }, "n")).toBe(false);
    expect(placementMatches(p, { zone: "b", rack: "r1" }, "n")).toBe(false);
    expect(placementMatches({}, {}, "n")).toBe(true);
    expect(describePlacement(p)).toBe('the nodes of nodeSelector {"zone":"a"} and node affinity rack In (r1) or rack In (r2)');
  });

  it("a term's matchFields admit the nodes it names (In) and not those it excludes (NotIn)", () => {
    const p: Placement = {
      affinityTerms: [rackIn("r1"), []],
      affinityFields: [[], [{ key: "metadata.name", operator: "In", values: ["n7", "n8"] }]],
    };
    expect(placementMatches(p, { rack: "r1" }, "n1")).toBe(true); // the first term
    expect(placementMatches(p, {}, "n7")).toBe(true); // the second
    expect(placementMatches(p, {}, "n9")).toBe(false);
    const notHere: Placement = { affinityFields: [[{ key: "metadata.name", operator: "NotIn", values: ["n1"] }]] };
    expect(placementMatches(notHere, {}, "n1")).toBe(false);
    expect(placementMatches(notHere, {}, "n2")).toBe(true);
    expect(describePlacement(p)).toBe("the nodes of node affinity rack In (r1) or metadata.name In (n7, n8)");
  });
});
