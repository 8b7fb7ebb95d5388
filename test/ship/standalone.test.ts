// The shipped executable needs neither Node nor node_modules: a copy outside the repo, run with
// an empty environment (no PATH), answers VERSION and really configures a pod (libc through
// Bun's built-in FFI: no native addon inside or beside the binary).
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pluginPath } from "../helpers/plugins";
import { createNetns, ipJson, removeNetns, type TestNetns } from "../helpers/netns";

let dir: string;
let pod: TestNetns;
const master = `bst${process.pid % 100000}`;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "berth-standalone-"));
  copyFileSync(pluginPath("berth"), join(dir, "berth"));
  symlinkSync("berth", join(dir, "berth-macvlan"));
  execFileSync("ip", ["link", "add", master, "type", "veth", "peer", "name", `${master}p`]);
  execFileSync("ip", ["link", "set", master, "up"]);
  pod = createNetns("standalone");
});

afterAll(() => {
  spawnSync("ip", ["link", "del", master]);
  removeNetns(pod);
  rmSync(dir, { recursive: true, force: true });
});

function run(file: string, env: Record<string, string>, stdin = "") {
  // env is the whole environment: no PATH, no NODE_PATH, cwd outside the repo.
  return spawnSync(file, [], { env, input: stdin, encoding: "utf8", cwd: dir });
}

describe("a copy of the executable outside the repo, empty PATH", () => {
  it("answers --version and CNI VERSION", () => {
    const version = spawnSync(join(dir, "berth"), ["--version"], { env: {}, encoding: "utf8", cwd: dir });
    expect(version.status).toBe(0);
    expect(version.stdout).toMatch(/^berth \d+\.\d+\.\d+ \(commit [0-9a-f]+(-dirty)?\)\n$/);

    const r = run(join(dir, "berth-macvlan"), { CNI_COMMAND: "VERSION" }, '{"cniVersion":"1.1.0"}');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      cniVersion: "1.1.0",
      supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    });
  });

  it("ADDs and DELs a macvlan through netlink with static IPAM", () => {
    const conf = JSON.stringify({
      cniVersion: "1.0.0",
      name: "standalone",
      type: "berth-macvlan",
      master,
      ipam: { type: "static", addresses: [{ address: "10.96.7.5/24" }] },
    });
    const env = (command: string) => ({
      CNI_COMMAND: command,
      CNI_CONTAINERID: "standalone1",
      CNI_NETNS: pod.path,
      CNI_IFNAME: "eth0",
      CNI_PATH: "/usr/lib/cni",
    });
    const add = run(join(dir, "berth-macvlan"), env("ADD"), conf);
    expect(add.stderr).toBe("");
    expect(add.status).toBe(0);
    expect(JSON.parse(add.stdout).ips[0].address).toBe("10.96.7.5/24");
    const addrs = ipJson<{ addr_info: { local: string; family: string }[] }[]>(pod, "addr", "show", "dev", "eth0");
    expect(addrs[0].addr_info.filter((a) => a.family === "inet").map((a) => a.local)).toEqual(["10.96.7.5"]);

    const del = run(join(dir, "berth-macvlan"), env("DEL"), conf);
    expect(del.status).toBe(0);
    expect(ipJson<unknown[]>(pod, "link", "show").map((l: any) => l.ifname)).toEqual(["lo"]);
  });
});
