// Routers and DNS servers of a subnet are never allocated, whichever pool on it names them.
import { describe, expect, it } from "vitest";
import { buildConfig } from "../../../ipamd/config";
import { rulesOn } from "./harness";

const sibling = {
  pools: [
    {
      name: "a",
      subnet: "10.244.0.0/24",
      ranges: [{ start: "10.244.0.10", end: "10.244.0.100" }],
      gateway: "10.244.0.1",
      dns: { nameservers: ["10.244.0.2"] },
      networks: ["na"],
    },
    {
      name: "b",
      subnet: "10.244.0.0/24",
      ranges: [{ start: "10.244.0.1", end: "10.244.0.9" }],
      gateway: "10.244.0.254",
      routes: [{ dst: "192.168.0.0/16", gw: "10.244.0.3" }],
      networks: ["nb"],
    },
  ],
};

describe("gateways and nameservers on a shared subnet", () => {
  it("are excluded from every pool on that subnet (a sibling pool's gateway, DNS server, route gateway)", async () => {
    const r = rulesOn(sibling);
    const got = [];
    for (let i = 0; i < 6; i++) got.push(...r.ips(await r.add(`p${i}`, { network: "nb" })));
    expect(got).toEqual(["10.244.0.4", "10.244.0.5", "10.244.0.6", "10.244.0.7", "10.244.0.8", "10.244.0.9"]);
    await expect(r.add("p6", { network: "nb" })).rejects.toMatchObject({ code: "pool_exhausted" });
    expect(r.node.views.poolUsage(r.now).find((p) => p.name === "b")).toMatchObject({ total: "6" });
  });

  it("refuses a pool left with no address once they are excluded, with the reason", () => {
    expect(() =>
      buildConfig({
        node: { name: "n" },
        pools: [
          {
            name: "a",
            subnet: "10.9.0.0/24",
            gateway: "10.9.0.1",
            dns: { nameservers: ["10.9.0.2"] },
            ranges: [{ start: "10.9.0.10", end: "10.9.0.20" }],
          },
          { name: "tiny", subnet: "10.9.0.0/24", ranges: [{ start: "10.9.0.1", end: "10.9.0.2" }] },
        ],
      }),
    ).toThrow(/pools\[1\]: no usable address is left in pool "tiny" once the gateway of pool "a", nameserver of pool "a" are excluded/);
  });
});
