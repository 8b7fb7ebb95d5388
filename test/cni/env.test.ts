import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseCniArgs, readCommand, readEnv } from "../../cni/skel/env";
import { cniErrorOf } from "../helpers/cni-error";

const dir = mkdtempSync(join(tmpdir(), "berth-env-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = { CNI_CONTAINERID: "abc123", CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "eth0", CNI_PATH: "/opt/cni/bin:/usr/lib/cni" };

describe("CNI_COMMAND", () => {
  it("is required", () => {
    const e = cniErrorOf(() => readCommand({}));
    expect(e.code).toBe(4);
    expect(e.message).toBe("required env variables [CNI_COMMAND] missing");
  });
  it("must be a CNI verb", () => {
    const e = cniErrorOf(() => readCommand({ CNI_COMMAND: "add" }));
    expect(e.code).toBe(4);
    expect(e.message).toBe("unknown CNI_COMMAND: add");
  });
  it("accepts every 1.1.0 verb", () => {
    for (const v of ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"]) expect(readCommand({ CNI_COMMAND: v })).toBe(v);
  });
});

describe("required variables per verb", () => {
  it("lists every missing variable for ADD", () => {
    const e = cniErrorOf(() => readEnv({ CNI_COMMAND: "ADD", CNI_IFNAME: "eth0" }, "ADD"));
    expect(e.code).toBe(4);
    expect(e.message).toBe("required env variables [CNI_CONTAINERID CNI_NETNS CNI_PATH] missing");
  });
  it("DEL works without CNI_NETNS (empty or missing) and with a netns that is gone", () => {
    const { CNI_NETNS: _n, ...noNetns } = base;
    expect(readEnv(noNetns, "DEL").netns).toBe("");
    expect(readEnv({ ...base, CNI_NETNS: "" }, "DEL").netns).toBe("");
    expect(readEnv({ ...base, CNI_NETNS: "/var/run/netns/gone-long-ago" }, "DEL").netns).toBe("/var/run/netns/gone-long-ago");
  });
  it("STATUS and GC need only CNI_PATH", () => {
    expect(readEnv({ CNI_PATH: "/opt/cni/bin" }, "STATUS")).toMatchObject({ containerId: "", ifName: "", path: ["/opt/cni/bin"] });
    const e = cniErrorOf(() => readEnv({}, "GC"));
    expect(e.message).toBe("required env variables [CNI_PATH] missing");
  });
  it("splits CNI_PATH", () => {
    expect(readEnv(base, "ADD").path).toEqual(["/opt/cni/bin", "/usr/lib/cni"]);
  });
});

describe("CNI_CONTAINERID", () => {
  it.each(["-abc", ".abc", "a b", "a/b", "a;b", "ä"])("rejects %j with code 4", (id) => {
    const e = cniErrorOf(() => readEnv({ ...base, CNI_CONTAINERID: id }, "ADD"));
    expect(e.code).toBe(4);
    expect(e.message).toContain("CNI_CONTAINERID");
  });
  it.each(["a", "0f3e_x.y-z", "f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "c".repeat(256)])("accepts %j", (id) => {
    expect(readEnv({ ...base, CNI_CONTAINERID: id }, "ADD").containerId).toBe(id);
  });
  it("refuses more than 256 characters (ipamd's limit too, lib/names.ts) on every verb", () => {
    for (const command of ["ADD", "DEL", "CHECK"] as const) {
      const e = cniErrorOf(() => readEnv({ ...base, CNI_CONTAINERID: "c".repeat(257) }, command));
      expect(e.code).toBe(4);
      expect(e.message).toBe("CNI_CONTAINERID is too long (257 characters, at most 256)");
    }
  });
});

describe("CNI_IFNAME", () => {
  it.each([
    ["", "missing"],
    ["abcdefghijklmnop", "too long"],
    [".", "not a valid interface name"],
    ["..", "not a valid interface name"],
    ["eth/0", "contains"],
    ["eth:0", "contains"],
    ["eth 0", "contains"],
    ["eth\t0", "contains"],
    ["eth\u00000", "NUL"],
  ])("rejects %j", (name, text) => {
    const e = cniErrorOf(() => readEnv({ ...base, CNI_IFNAME: name }, "ADD"));
    expect(e.code).toBe(4);
    expect(e.message).toContain(text);
  });
  it("accepts 15 characters", () => {
    expect(readEnv({ ...base, CNI_IFNAME: "abcdefghijklmno" }, "ADD").ifName).toBe("abcdefghijklmno");
  });
});

describe("CNI_NETNS", () => {
  it("must exist for ADD and CHECK (code 3, container unknown)", () => {
    for (const verb of ["ADD", "CHECK"] as const) {
      const e = cniErrorOf(() => readEnv({ ...base, CNI_NETNS: join(dir, "nope") }, verb));
      expect(e.code).toBe(3);
      expect(e.message).toContain(`CNI_NETNS=${join(dir, "nope")}`);
    }
  });
  it("must be a network namespace", () => {
    const file = join(dir, "plain-file");
    writeFileSync(file, "x");
    const e = cniErrorOf(() => readEnv({ ...base, CNI_NETNS: file }, "ADD"));
    expect(e.code).toBe(4);
    expect(e.message).toBe(`CNI_NETNS=${file} is not a network namespace`);
  });
  it("must be absolute", () => {
    const e = cniErrorOf(() => readEnv({ ...base, CNI_NETNS: "netns/x" }, "ADD"));
    expect(e.code).toBe(4);
  });
});

describe("CNI_ARGS", () => {
  it("reads the kubelet's keys", () => {
    const args = parseCniArgs(
      "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5678",
    );
    expect(args).toEqual({
      IgnoreUnknown: true,
      K8S_POD_NAMESPACE: "default",
      K8S_POD_NAME: "web-0",
      K8S_POD_INFRA_CONTAINER_ID: "abc",
      K8S_POD_UID: "1234-5678",
      other: {},
    });
  });
  it("is empty when unset", () => {
    expect(parseCniArgs("")).toEqual({ IgnoreUnknown: false, other: {} });
  });
  it("rejects an unknown key without IgnoreUnknown (code 2, naming the pair)", () => {
    const e = cniErrorOf(() => parseCniArgs("K8S_POD_NAME=web-0;FOO=bar;BAZ=1"));
    expect(e.code).toBe(2);
    expect(e.message).toBe('CNI_ARGS: unknown args ["FOO=bar" "BAZ=1"]');
    expect(e.details).toContain("IgnoreUnknown=1");
  });
  it.each(["1", "true", "True", "TRUE"])("IgnoreUnknown=%s keeps unknown keys aside", (v) => {
    const args = parseCniArgs(`FOO=bar;IgnoreUnknown=${v}`);
    expect(args.IgnoreUnknown).toBe(true);
    expect(args.other).toEqual({ FOO: "bar" });
  });
  it("IgnoreUnknown=0/false does not ignore", () => {
    expect(cniErrorOf(() => parseCniArgs("IgnoreUnknown=false;FOO=bar")).code).toBe(2);
    expect(cniErrorOf(() => parseCniArgs("IgnoreUnknown=0;FOO=bar")).code).toBe(2);
  });
  it("IgnoreUnknown must be a bool", () => {
    const e = cniErrorOf(() => parseCniArgs("IgnoreUnknown=yes;FOO=1"));
    expect(e.code).toBe(4);
    expect(e.message).toContain('error parsing value of pair "IgnoreUnknown=yes"');
  });
  it.each(["FOO", "A=b=c", "K8S_POD_NAME=web-0;", ";"])("rejects the malformed %j like libcni", (raw) => {
    const e = cniErrorOf(() => parseCniArgs(raw));
    expect(e.code).toBe(4);
    expect(e.message).toMatch(/^CNI_ARGS: invalid pair /);
  });
  it("reads IP (one or several, with or without prefix) and MAC", () => {
    expect(parseCniArgs("IP=10.1.0.5;MAC=AA:bb:cc:dd:ee:01")).toMatchObject({ IP: ["10.1.0.5"], MAC: "aa:bb:cc:dd:ee:01" });
    expect(parseCniArgs("IP=10.1.0.5/24,fd00::5").IP).toEqual(["10.1.0.5/24", "fd00::5"]);
    expect(cniErrorOf(() => parseCniArgs("IP=10.1.0.300")).message).toContain("invalid IP address 10.1.0.300");
    expect(cniErrorOf(() => parseCniArgs("MAC=zz")).message).toContain("invalid MAC address zz");
  });
  it("accepts plugin-declared keys", () => {
    expect(parseCniArgs("VLAN=101", ["VLAN"]).other).toEqual({ VLAN: "101" });
  });
});
