// Address arithmetic, pool compilation and label selectors (pure functions of ipamd/ip.ts and config.ts).
import { describe, expect, it } from "vitest";
import { buildConfig, ConfigError } from "../../ipamd/config";
import { firstUsableAtOrAfter, selectorMatches } from "../../ipamd/pools";
import { canonicalIp, formatIp, parseCidr, parseIp } from "../../lib/ip";

describe("ip", () => {
  it.each([
    ["fd00:0:0:0:0:0:0:1", "fd00::1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["::", "::"],
    ["2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"],
    ["::ffff:10.0.0.1", "::ffff:a00:1"],
    ["10.001.0.1", null],
    ["256.0.0.1", null],
    ["1::2::3", null],
    ["fe80::1%eth0", null],
    ["10.0.0.1", "10.0.0.1"],
  ])("canonical %s -> %s", (input, out) => {
    expect(canonicalIp(input)).toBe(out);
  });

  it("parses CIDRs and keeps BigInt precision at the top of IPv6", () => {
    expect(parseCidr("10.0.0.0/33")).toBeNull();
    const top = parseIp("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")!;
    expect(top.value).toBe(2n ** 128n - 1n);
    expect(formatIp(6, top.value)).toBe("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  });
});

describe("pool compilation", () => {
  const cfg = (pools: unknown[]) => buildConfig({ node: { name: "n" }, pools });

  it("removes network, broadcast, gateway and exclusions from the usable set", () => {
    const [p] = cfg([{ name: "a", subnet: "10.0.0.0/29", gateway: "10.0.0.1", exclude: ["10.0.0.4/31"] }]).pools;
    expect(p!.size).toBe(3n); // .2 .3 .6
    expect(p!.segments.map((s) => [formatIp(4, s.first), formatIp(4, s.last)])).toEqual([
      ["10.0.0.2", "10.0.0.3"],
      ["10.0.0.6", "10.0.0.6"],
    ]);
    expect(formatIp(4, firstUsableAtOrAfter(p!, parseIp("10.0.0.4")!.value)!)).toBe("10.0.0.6");
    expect(firstUsableAtOrAfter(p!, parseIp("10.0.0.7")!.value)).toBeNull();
  });

  it("counts a /64 without enumerating it", () => {
    const [p] = cfg([{ name: "v6", subnet: "fd00::/64" }]).pools;
    expect(p!.size).toBe(2n ** 64n - 1n);
  });

  it("reports every problem with its JSON path", () => {
    expect(() =>
      cfg([{ name: "a", subnet: "10.0.0.0/24", ranges: [{ start: "10.0.0.50", end: "10.0.0.10" }], gateway: "10.1.0.1" }]),
    ).toThrow(/pools\[0\]\.ranges\[0\]: start 10\.0\.0\.50 is after end 10\.0\.0\.10/);
    expect(() => cfg([{ name: "a", subnet: "10.0.0.0/24", routes: [{ dst: "::/0" }] }])).toThrow(/pools\[0\]\.routes\[0\]\.dst/);
    expect(() => cfg([{ name: "A b", subnet: "10.0.0.0/24", extra: 1 }])).toThrow(ConfigError);
    expect(() => buildConfig({ node: { name: "n" }, pools: [] })).toThrow(/pools: define at least one pool/);
  });
});

describe("node selectors (Kubernetes semantics)", () => {
  const labels = { rack: "r1", zone: "a" };
  it.each([
    [{}, true],
    [{ matchLabels: { rack: "r1" } }, true],
    [{ matchLabels: { rack: "r2" } }, false],
    [{ matchExpressions: [{ key: "zone", operator: "In", values: ["a", "b"] }] }, true],
    [{ matchExpressions: [{ key: "zone", operator: "NotIn", values: ["a"] }] }, false],
    [{ matchExpressions: [{ key: "gpu", operator: "NotIn", values: ["x"] }] }, true], // absent label passes NotIn
    [{ matchExpressions: [{ key: "gpu", operator: "In", values: ["x"] }] }, false],
    [{ matchExpressions: [{ key: "rack", operator: "Exists" }] }, true],
    [{ matchExpressions: [{ key: "rack", operator: "DoesNotExist" }] }, false],
    [{ matchLabels: { rack: "r1" }, matchExpressions: [{ key: "gpu", operator: "Exists" }] }, false],
  ] as const)("%j -> %s", (selector, expected) => {
    expect(selectorMatches(selector as Parameters<typeof selectorMatches>[0], labels)).toBe(expected);
  });
});

describe("shipped example configs", () => {
  it.each(["conf/ipamd.json", "conf/demo/ipamd.json"])("%s is valid", async (path) => {
    const { loadConfig } = await import("../../ipamd/config");
    const { resolve } = await import("node:path");
    const c = loadConfig(resolve(import.meta.dirname, "../..", path));
    expect(c.pools.length).toBeGreaterThan(0);
    expect(c.nodeName).not.toBe("");
  });

  it("demo config: one v4 pool for network demo and the default/web StatefulSet", async () => {
    const { loadConfig } = await import("../../ipamd/config");
    const { resolve } = await import("node:path");
    const c = loadConfig(resolve(import.meta.dirname, "../../conf/demo/ipamd.json"));
    expect(c.pools.map((p) => [p.name, p.family, p.networks])).toEqual([["demo-v4", 4, ["demo"]]]);
    expect(c.statefulSets).toEqual([{ namespace: "default", name: "web" }]);
  });
});
