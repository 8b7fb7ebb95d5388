// ipamctl against a real daemon (node running the esbuild bundle of ipamctl/main.ts).
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildIpamd, cleanupIpamdTest, type DaemonHandle, makeTempDir, runIpamctl, startIpamd } from "../helpers/ipamd";

let d: DaemonHandle;
const ctl = (...args: string[]) => runIpamctl(["--socket", d.socket, ...args]);

beforeAll(async () => {
  d = await startIpamd({
    config: {
      node: { name: "ctl-node", labels: { rack: "r1" } },
      pools: [
        { name: "v4", subnet: "10.130.0.0/24", ranges: [{ start: "10.130.0.10", end: "10.130.0.19" }], gateway: "10.130.0.1", vlan: 130 },
        { name: "v6", subnet: "fd00:130::/64" },
        { name: "r2", subnet: "10.131.0.0/24", nodeSelector: { matchLabels: { rack: "r2" } } },
      ],
    },
  });
});
afterAll(async () => { await d?.stop(); });

describe("ipamctl", () => {
  it("status prints node and selected pools; -o json is machine readable", async () => {
    const human = await ctl("status");
    expect(human.code).toBe(0);
    expect(human.stdout).toContain("ctl-node");
    expect(human.stdout).toContain("selected here: v4, v6");
    const json = await ctl("-o", "json", "status");
    expect(JSON.parse(json.stdout)).toMatchObject({ status: "ok", node: { name: "ctl-node" }, pools: 3 });
  });

  it("reserve locks IPs for ordinals and prints them", async () => {
    const r = await ctl("reserve", "--namespace", "db", "--statefulset", "mysql", "--replicas", "3", "--pool", "v4");
    expect(r.code).toBe(0);
    for (const ip of ["10.130.0.10/24", "10.130.0.11/24", "10.130.0.12/24"]) expect(r.stdout).toContain(ip);
    expect(r.stdout).toContain("db/mysql/2");
    const j = await ctl("-o", "json", "reserve", "--namespace", "db", "--statefulset", "mysql", "--replicas", "3", "--pool", "v4");
    expect(JSON.parse(j.stdout).reservations.map((x: { ip: string }) => x.ip)).toEqual(["10.130.0.10", "10.130.0.11", "10.130.0.12"]);
  });

  it("pools shows used/reserved/free with a usage bar; pool show gives details", async () => {
    const r = await ctl("pools");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/v4\s*│\s*10\.130\.0\.0\/24\s*│\s*130\s*│\s*selected\s*│\s*10\s*│\s*0\s*│\s*3\s*│\s*0\s*│\s*7\s*│\s*\[######\.+\] 30\.0%/);
    const j = JSON.parse((await ctl("pools", "-o", "json")).stdout);
    expect(j.pools.find((p: { name: string }) => p.name === "v4")).toMatchObject({ reserved: 3, free: "7" });
    const show = await ctl("pool", "show", "v4");
    expect(show.stdout).toContain("10.130.0.10-10.130.0.19");
    expect(show.stdout).toContain("selects this node");
    const missing = await ctl("pool", "show", "nope");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('pool "nope" is not defined');
  });

  it("pin, reservations filter, release", async () => {
    const pin = await ctl("pin", "--namespace", "db", "--statefulset", "mysql", "--ordinal", "1", "--ip", "10.130.0.19");
    expect(pin.code).toBe(0);
    expect(pin.stdout).toContain("pinned 10.130.0.19/24 (pool v4) to db/mysql/1; released 10.130.0.11");
    const list = await ctl("reservations", "--namespace", "db", "--statefulset", "mysql");
    expect(list.stdout).toContain("10.130.0.19/24");
    expect(list.stdout).not.toContain("10.130.0.11/24");
    const rel = await ctl("release", "--namespace", "db", "--statefulset", "mysql", "--ordinal", "0");
    expect(rel.code).toBe(0);
    expect(rel.stdout).toContain("released 1");
    const j = JSON.parse((await ctl("-o", "json", "reservations", "--statefulset", "mysql")).stdout);
    expect(j.reservations.map((x: { owner: string }) => x.owner).sort()).toEqual(["db/mysql/1", "db/mysql/2"]);
  });

  it("reports daemon errors with their code and exits non-zero", async () => {
    const r = await ctl("pin", "--namespace", "db", "--statefulset", "mysql", "--ordinal", "0", "--ip", "10.131.0.5");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not inside any pool this node may use.*\[ip_unavailable, field ip\]/);
  });

  it("gc needs --valid or --all, and releases unlisted attachments", async () => {
    await d.client.allocate({ containerID: "gc-a", ifName: "eth0", network: "n" });
    await d.client.allocate({ containerID: "gc-b", ifName: "eth0", network: "n" });
    const refused = await ctl("gc", "--network", "n");
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("pass --all");
    const r = await ctl("-o", "json", "gc", "--network", "n", "--valid", "gc-a/eth0");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).released).toHaveLength(2); // gc-b's v4 and v6
  });

  it("rejects bad arguments with usage errors", async () => {
    const r = await ctl("reserve", "--namespace", "db", "--statefulset", "x", "--replicas", "lots");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--replicas must be a non-negative integer");
  });

  it("writes all of a long output through a real pipe before exiting (> 128 KiB, every command path)", async () => {
    const r = await ctl("reserve", "--namespace", "db", "--statefulset", "pipe", "--replicas", "2000", "--pool", "v6");
    expect(r.code).toBe(0);
    const { ipamctl } = await buildIpamd();
    const exe = ipamctl.endsWith(".mjs") ? `${process.execPath} ${ipamctl}` : ipamctl;
    const sh = (cmd: string) => spawnSync("bash", ["-o", "pipefail", "-c", cmd], { encoding: "utf8", maxBuffer: 64 << 20 });
    const json = sh(`${exe} --socket ${d.socket} -o json reservations --statefulset pipe | cat`);
    expect(json.status).toBe(0);
    expect(json.stdout.length).toBeGreaterThan(128 * 1024);
    expect(JSON.parse(json.stdout).reservations).toHaveLength(2000);
    const lines = sh(`${exe} --socket ${d.socket} reservations --statefulset pipe | grep -c db/pipe/`);
    expect(lines.stdout.trim()).toBe("2000");
    const last = sh(`${exe} --socket ${d.socket} reservations | grep -c 'db/pipe/1999 '`);
    expect(lines.status).toBe(0);
    expect(last.stdout.trim()).toBe("1");
    const reserve = sh(`${exe} --socket ${d.socket} -o json reserve --namespace db --statefulset pipe --replicas 2000 --pool v6 | cat`);
    expect(JSON.parse(reserve.stdout).reservations).toHaveLength(2000);
  });

  it("names the socket path when the daemon is unreachable", async () => {
    const socket = join(makeTempDir(), "missing.sock");
    const r = await runIpamctl(["--socket", socket, "status"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`ipamd is not reachable on ${socket}: the socket does not exist`);
  });
});

afterAll(cleanupIpamdTest);
