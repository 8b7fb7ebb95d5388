// Delegation to other IPAM plugins through our core, against the REAL reference host-local and
// static executables (they speak CNI up to 1.0.0).
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../cni/skel/config";
import { delegateIpam, type DelegateRequest } from "../../cni/ipam/delegate";
import { buildContext } from "../../cni/skel/dispatch";
import { parseCniArgs, readEnv } from "../../cni/skel/env";
import { CniError } from "../../cni/skel/errors";
import { ipamOf } from "../../cni/ipam/client";
import { nullLogger } from "../../cni/skel/log";
import { withUndo } from "../../cni/skel/undo";
import { cniRejectionOf } from "../helpers/cni-error";

const dataDir = mkdtempSync(join(tmpdir(), "berth-hostlocal-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

const CNI_PATH = ["/nonexistent-dir", "/usr/lib/cni"];
const env = { CNI_CONTAINERID: "ctr-hl-1", CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "net1", CNI_PATH: CNI_PATH.join(":") };

function hostLocal(version = "1.0.0", network = "hl-net") {
  return {
    cniVersion: version,
    name: network,
    type: "berth-macvlan",
    ipam: {
      type: "host-local",
      dataDir,
      ranges: [[{ subnet: "10.98.0.0/24", rangeStart: "10.98.0.10", rangeEnd: "10.98.0.20", gateway: "10.98.0.1" }]],
      routes: [{ dst: "0.0.0.0/0" }],
    },
  };
}

function req(command: DelegateRequest["command"], config: Record<string, any>, extraEnv: Record<string, string> = {}): DelegateRequest {
  return {
    command,
    ipamType: config.ipam.type,
    stdin: JSON.stringify(config),
    env: { ...env, ...extraEnv },
    cniPath: CNI_PATH,
    cniVersion: config.cniVersion,
  };
}

describe("delegateIpam with host-local", () => {
  it("ADD returns host-local's result; DEL releases it; DEL again succeeds", async () => {
    const result = await delegateIpam(req("ADD", hostLocal()));
    expect(result).toEqual({ ips: [{ address: "10.98.0.10/24", gateway: "10.98.0.1" }], routes: [{ dst: "0.0.0.0/0" }], dns: {} });
    expect(existsSync(join(dataDir, "hl-net", "10.98.0.10"))).toBe(true);
    expect(await delegateIpam(req("DEL", hostLocal()))).toBeUndefined();
    expect(existsSync(join(dataDir, "hl-net", "10.98.0.10"))).toBe(false);
    await delegateIpam(req("DEL", hostLocal()));
  });

  it("reads a 0.3.1 result (ips with version) into the internal shape", async () => {
    const result = await delegateIpam(req("ADD", hostLocal("0.3.1", "hl-old"), { CNI_CONTAINERID: "ctr-old" }));
    expect(result?.ips).toEqual([{ address: "10.98.0.10/24", gateway: "10.98.0.1" }]);
    await delegateIpam(req("DEL", hostLocal("0.3.1", "hl-old"), { CNI_CONTAINERID: "ctr-old" }));
  });

  it("passes host-local's own CNI error through with its code", async () => {
    const e = await cniRejectionOf(delegateIpam(req("ADD", hostLocal(), { CNI_ARGS: "IP=10.99.99.99" })));
    expect(e.message).toMatch(/^IPAM plugin host-local ADD failed: /);
    expect(e.message).toContain("10.99.99.99");
    expect(e.code).toBe(999); // what host-local itself answered
    // host-local only speaks up to 1.0.0: its code 1 comes back unchanged.
    expect((await cniRejectionOf(delegateIpam(req("ADD", hostLocal("1.1.0"))))).code).toBe(1);
  });

  it("code 100 when the plugin is not in CNI_PATH, 7 for a path in ipam.type", async () => {
    const missing = await cniRejectionOf(delegateIpam({ ...req("ADD", hostLocal()), ipamType: "whereabouts" }));
    expect(missing.code).toBe(100);
    expect(missing.message).toBe('failed to find IPAM plugin "whereabouts" in CNI_PATH [/nonexistent-dir /usr/lib/cni]');
    expect((await cniRejectionOf(delegateIpam({ ...req("ADD", hostLocal()), ipamType: "../bin/sh" }))).code).toBe(7);
  });
});

describe("delegateIpam with static", () => {
  it("returns the configured addresses", async () => {
    const config = {
      cniVersion: "1.0.0",
      name: "st",
      type: "berth-hostdev",
      ipam: {
        type: "static",
        addresses: [{ address: "10.97.0.5/24", gateway: "10.97.0.1" }, { address: "fd00:97::5/64" }],
        routes: [{ dst: "10.0.0.0/8" }],
        dns: { nameservers: ["10.97.0.53"] },
      },
    };
    expect(await delegateIpam(req("ADD", config))).toEqual({
      ips: [{ address: "10.97.0.5/24", gateway: "10.97.0.1" }, { address: "fd00:97::5/64" }],
      routes: [{ dst: "10.0.0.0/8" }],
      dns: { nameservers: ["10.97.0.53"] },
    });
  });
});

describe("ipamAdd / ipamDel through a plugin context", () => {
  function ctxFor(command: "ADD" | "DEL", raw: Record<string, unknown>, containerId: string) {
    const e = { ...env, CNI_COMMAND: command, CNI_CONTAINERID: containerId };
    const stdin = JSON.stringify(raw);
    return buildContext(command, readEnv(e, command), parseCniArgs(""), parseConfig(raw, command), undefined, stdin, e, nullLogger);
  }
  const leases = () => readdirSync(join(dataDir, "ctx-net")).filter((f) => /^10\./.test(f));

  it("delegates, and a failure later in ADD releases the address through the undo stack", async () => {
    const raw = hostLocal("1.0.0", "ctx-net");
    const ok = await ipamOf(ctxFor("ADD", raw, "ctr-ctx-1"))!.add();
    expect(ok.source).toBe("host-local");
    expect(ok.addresses).toEqual([{ address: "10.98.0.10/24", gateway: "10.98.0.1", family: 4 }]);
    expect(ok.vlan).toBeUndefined();
    expect(leases()).toEqual(["10.98.0.10"]);

    await expect(
      withUndo(nullLogger, async (undo) => {
        const got = await ipamOf(ctxFor("ADD", raw, "ctr-ctx-2"))!.add(undo);
        expect(got.addresses[0]!.address).toBe("10.98.0.11/24");
        expect(leases()).toEqual(["10.98.0.10", "10.98.0.11"]);
        throw new CniError(140, "creating the macvlan failed");
      }),
    ).rejects.toThrow("creating the macvlan failed");
    expect(leases()).toEqual(["10.98.0.10"]);

    await ipamOf(ctxFor("DEL", raw, "ctr-ctx-1"))!.del();
    expect(leases()).toEqual([]);
  });
});
