import { describe, expect, it } from "vitest";
import { configVersion, decodeConfig, parseConfig, requireVerbSupported } from "../../cni/skel/config";
import { parseCniArgs } from "../../cni/skel/env";
import { cniErrorOf } from "../helpers/cni-error";

const base = { cniVersion: "1.1.0", name: "underlay", type: "berth-macvlan", ipam: { type: "berth-ipam" } };

describe("decoding", () => {
  it("code 6 for empty stdin, bad JSON, non-objects", () => {
    expect(cniErrorOf(() => decodeConfig("")).code).toBe(6);
    expect(cniErrorOf(() => decodeConfig('{"cniVersion":')).code).toBe(6);
    expect(cniErrorOf(() => decodeConfig("[1]")).code).toBe(6);
  });
});

describe("cniVersion", () => {
  it("code 1 for unsupported and missing versions, listing the supported ones", () => {
    const e = cniErrorOf(() => configVersion({ cniVersion: "0.2.0" }));
    expect(e.code).toBe(1);
    expect(e.message).toBe("incompatible CNI versions");
    expect(e.details).toContain('config is "0.2.0", plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]');
    expect(cniErrorOf(() => configVersion({})).code).toBe(1);
    expect(cniErrorOf(() => configVersion({ cniVersion: "2.0.0" })).code).toBe(1);
  });
  it("CHECK needs 0.4.0, STATUS and GC need 1.1.0 (code 1, libcni's words)", () => {
    expect(cniErrorOf(() => requireVerbSupported("CHECK", "0.3.1")).message).toBe("config version does not allow CHECK");
    expect(cniErrorOf(() => requireVerbSupported("STATUS", "1.0.0")).message).toBe("config version does not allow STATUS");
    expect(cniErrorOf(() => requireVerbSupported("GC", "0.4.0")).code).toBe(1);
    requireVerbSupported("CHECK", "0.4.0");
    requireVerbSupported("GC", "1.1.0");
    requireVerbSupported("ADD", "0.3.0");
  });
});

describe("parseConfig", () => {
  it("reads the shared fields", () => {
    const conf = parseConfig(
      {
        ...base,
        runtimeConfig: { ips: ["10.1.0.9/24"], mac: "AA:BB:CC:DD:EE:01", deviceID: "0000:3b:02.1", portMappings: [] },
        args: { cni: { ips: ["10.1.0.10"], mac: "aa:bb:cc:dd:ee:02" } },
        logFile: "/var/log/berth.log",
        logLevel: "debug",
      },
      "ADD",
    );
    expect(conf).toMatchObject({
      cniVersion: "1.1.0",
      name: "underlay",
      type: "berth-macvlan",
      ipam: { type: "berth-ipam" },
      runtimeConfig: { ips: ["10.1.0.9/24"], mac: "aa:bb:cc:dd:ee:01", deviceID: "0000:3b:02.1" },
      argsCni: { ips: ["10.1.0.10"], mac: "aa:bb:cc:dd:ee:02" },
      logFile: "/var/log/berth.log",
      logLevel: "debug",
    });
  });

  it("reads a MAC with '-' or ':' the same wherever it is given, in lower-case colon form", () => {
    const conf = parseConfig({ ...base, runtimeConfig: { mac: "0A-58-0A-01-00-05" }, args: { cni: { mac: "0a:58:0A:01:00:06" } } }, "ADD");
    expect(conf.runtimeConfig.mac).toBe("0a:58:0a:01:00:05");
    expect(conf.argsCni.mac).toBe("0a:58:0a:01:00:06");
    expect(parseCniArgs("MAC=0A-58-0A-01-00-05").MAC).toBe(conf.runtimeConfig.mac);
    expect(cniErrorOf(() => parseConfig({ ...base, runtimeConfig: { mac: "0a-58-0a-01-00" } }, "ADD")).code).toBe(7);
  });

  it.each([
    [{ name: "" }, 7, "missing network name"],
    [{ name: "under lay" }, 7, 'invalid characters found in network name "under lay"'],
    [{ name: "-x" }, 7, "invalid characters"],
    [{ type: undefined }, 7, "type is missing"],
    [{ ipam: { type: 3 } }, 7, "ipam.type"],
    [{ runtimeConfig: { ips: ["10.1.0.300/24"] } }, 7, "runtimeConfig.ips[0]"],
    [{ runtimeConfig: { mac: "aa:bb" } }, 7, "runtimeConfig.mac"],
    [{ args: { cni: { ips: "10.1.0.5" } } }, 7, "args.cni.ips is not a list"],
    [{ logFile: "relative.log" }, 7, "logFile"],
    [{ logLevel: "verbose" }, 7, "logLevel"],
    [{ prevResult: { ips: [{ address: "nope" }] } }, 7, "prevResult: ips[0].address"],
  ])("rejects %j", (patch, code, text) => {
    const e = cniErrorOf(() => parseConfig({ ...base, ...patch }, "ADD"));
    expect(e.code).toBe(code);
    expect(e.message).toContain(text);
    expect(e.details).not.toBe("");
  });

  it("reads prevResult in the config's version", () => {
    const conf = parseConfig(
      {
        ...base,
        cniVersion: "0.4.0",
        prevResult: { cniVersion: "0.4.0", ips: [{ version: "4", address: "10.1.0.5/24" }], dns: {} },
      },
      "CHECK",
    );
    expect(conf.prevResult).toEqual({ ips: [{ address: "10.1.0.5/24" }], dns: {} });
  });

  it("GC needs cni.dev/valid-attachments", () => {
    expect(cniErrorOf(() => parseConfig(base, "GC")).message).toContain("cni.dev/valid-attachments");
    const conf = parseConfig({ ...base, "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "eth0" }] }, "GC");
    expect(conf.validAttachments).toEqual([{ containerID: "c1", ifname: "eth0" }]);
    // the key as the released 1.1.0 SPEC text spells it
    const specKey = parseConfig({ ...base, "cni.dev/attachments": [{ containerID: "c2", ifname: "net1" }] }, "GC");
    expect(specKey.validAttachments).toEqual([{ containerID: "c2", ifname: "net1" }]);
    expect(cniErrorOf(() => parseConfig({ ...base, "cni.dev/valid-attachments": "c1" }, "GC")).message).toContain("is not a list");
  });
});
