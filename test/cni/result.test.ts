import { describe, expect, it } from "vitest";
import { CniError } from "../../cni/skel/errors";
import { encodeResult, parseResult, type Result } from "../../cni/skel/result";
import { extendResult, ipsForInterface } from "../../cni/skel/chain";

const full: Result = {
  interfaces: [
    {
      name: "eth0",
      mac: "02:42:0a:01:00:05",
      mtu: 1500,
      sandbox: "/var/run/netns/cni-1",
      pciID: "0000:3b:02.1",
      socketPath: "/run/x.sock",
    },
  ],
  ips: [
    { address: "10.1.0.5/24", gateway: "10.1.0.1", interface: 0 },
    { address: "fd00:1::5/64", gateway: "fd00:1::1", interface: 0 },
  ],
  routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1", mtu: 9000, advmss: 8960, priority: 100, table: 0, scope: 0 }, { dst: "::/0" }],
  dns: { nameservers: ["10.0.0.53"], domain: "example.net", search: ["svc.example.net"], options: ["ndots:2"] },
};

describe("encodeResult", () => {
  it("1.1.0: everything, no ips[].version", () => {
    expect(JSON.stringify(encodeResult(full, "1.1.0"))).toBe(
      JSON.stringify({
        cniVersion: "1.1.0",
        interfaces: [
          {
            name: "eth0",
            mac: "02:42:0a:01:00:05",
            mtu: 1500,
            sandbox: "/var/run/netns/cni-1",
            socketPath: "/run/x.sock",
            pciID: "0000:3b:02.1",
          },
        ],
        ips: [
          { interface: 0, address: "10.1.0.5/24", gateway: "10.1.0.1" },
          { interface: 0, address: "fd00:1::5/64", gateway: "fd00:1::1" },
        ],
        routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1", mtu: 9000, advmss: 8960, priority: 100, table: 0, scope: 0 }, { dst: "::/0" }],
        dns: { nameservers: ["10.0.0.53"], domain: "example.net", search: ["svc.example.net"], options: ["ndots:2"] },
      }),
    );
  });

  it("1.0.0: no route mtu/advmss/priority/table/scope, no interface mtu/socketPath/pciID", () => {
    expect(JSON.stringify(encodeResult(full, "1.0.0"))).toBe(
      JSON.stringify({
        cniVersion: "1.0.0",
        interfaces: [{ name: "eth0", mac: "02:42:0a:01:00:05", sandbox: "/var/run/netns/cni-1" }],
        ips: [
          { interface: 0, address: "10.1.0.5/24", gateway: "10.1.0.1" },
          { interface: 0, address: "fd00:1::5/64", gateway: "fd00:1::1" },
        ],
        routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1" }, { dst: "::/0" }],
        dns: { nameservers: ["10.0.0.53"], domain: "example.net", search: ["svc.example.net"], options: ["ndots:2"] },
      }),
    );
  });

  it.each(["0.4.0", "0.3.1", "0.3.0"])("%s: ips carry version", (v) => {
    expect(JSON.stringify(encodeResult(full, v))).toBe(
      JSON.stringify({
        cniVersion: v,
        interfaces: [{ name: "eth0", mac: "02:42:0a:01:00:05", sandbox: "/var/run/netns/cni-1" }],
        ips: [
          { version: "4", interface: 0, address: "10.1.0.5/24", gateway: "10.1.0.1" },
          { version: "6", interface: 0, address: "fd00:1::5/64", gateway: "fd00:1::1" },
        ],
        routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1" }, { dst: "::/0" }],
        dns: { nameservers: ["10.0.0.53"], domain: "example.net", search: ["svc.example.net"], options: ["ndots:2"] },
      }),
    );
  });

  it("an IPAM result: no interfaces, no index, empty dns kept as {}", () => {
    const ipam: Result = { ips: [{ address: "10.1.0.5/24" }], routes: [] };
    expect(JSON.stringify(encodeResult(ipam, "1.1.0"))).toBe('{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.5/24"}],"dns":{}}');
    expect(JSON.stringify(encodeResult(ipam, "0.3.1"))).toBe(
      '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.5/24"}],"dns":{}}',
    );
  });

  it("interface index 0 is kept, an unset one is omitted", () => {
    const r = encodeResult(
      { interfaces: [{ name: "a" }], ips: [{ address: "10.0.0.1/8", interface: 0 }, { address: "10.0.0.2/8" }] },
      "1.0.0",
    );
    expect(r.ips).toEqual([{ interface: 0, address: "10.0.0.1/8" }, { address: "10.0.0.2/8" }]);
  });
});

describe("parseResult", () => {
  it("reads a 0.3.1 prevResult into the internal shape", () => {
    const raw = {
      cniVersion: "0.3.1",
      interfaces: [{ name: "eth0", mac: "aa:bb:cc:dd:ee:ff", sandbox: "/var/run/netns/x" }],
      ips: [{ version: "4", interface: 0, address: "10.1.0.5/24", gateway: "10.1.0.1" }],
      routes: [{ dst: "0.0.0.0/0" }],
      dns: {},
    };
    expect(parseResult(raw, "0.3.1", "prevResult")).toEqual({
      interfaces: [{ name: "eth0", mac: "aa:bb:cc:dd:ee:ff", sandbox: "/var/run/netns/x" }],
      ips: [{ address: "10.1.0.5/24", gateway: "10.1.0.1", interface: 0 }],
      routes: [{ dst: "0.0.0.0/0" }],
      dns: {},
    });
  });

  it("round-trips every version", () => {
    for (const v of ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]) {
      const encoded = encodeResult(full, v);
      expect(encodeResult(parseResult(JSON.parse(JSON.stringify(encoded)), v, "prevResult"), v)).toEqual(encoded);
    }
  });

  it.each([
    [{ ips: [{ address: "10.1.0.5" }] }, "ips[0].address"],
    [{ ips: [{ version: "6", address: "10.1.0.5/24" }] }, "ips[0].version"],
    [{ interfaces: [{ name: "eth0" }], ips: [{ address: "10.1.0.5/24", interface: 1 }] }, "ips[0].interface"],
    [{ routes: [{ dst: "default" }] }, "routes[0].dst"],
    [{ dns: { nameservers: "10.0.0.53" } }, "dns.nameservers"],
    ["text", "not a JSON object"],
  ])("rejects %j naming %s", (raw, field) => {
    try {
      parseResult(raw, "0.4.0", "prevResult");
      throw new Error("accepted");
    } catch (e) {
      expect(e).toBeInstanceOf(CniError);
      expect((e as CniError).message).toContain(field);
      expect((e as CniError).message).toContain("prevResult");
    }
  });
});

describe("extendResult", () => {
  it("appends and re-indexes this plugin's interfaces", () => {
    const prev: Result = {
      interfaces: [{ name: "eth0" }],
      ips: [{ address: "10.0.0.2/24", interface: 0 }],
      dns: { nameservers: ["1.1.1.1"] },
    };
    const next: Result = {
      interfaces: [{ name: "net1", sandbox: "/ns" }],
      ips: [{ address: "10.1.0.5/24", interface: 0 }],
      routes: [{ dst: "10.1.0.0/16" }],
      dns: { nameservers: ["10.0.0.53"] },
    };
    const out = extendResult(prev, next);
    expect(out).toEqual({
      interfaces: [{ name: "eth0" }, { name: "net1", sandbox: "/ns" }],
      ips: [
        { address: "10.0.0.2/24", interface: 0 },
        { address: "10.1.0.5/24", interface: 1 },
      ],
      routes: [{ dst: "10.1.0.0/16" }],
      dns: { nameservers: ["1.1.1.1", "10.0.0.53"] },
    });
    expect(ipsForInterface(out, "net1", "/ns")).toEqual([{ address: "10.1.0.5/24", interface: 1 }]);
    expect(ipsForInterface(out, "net1", "/other")).toEqual([]);
  });
});
