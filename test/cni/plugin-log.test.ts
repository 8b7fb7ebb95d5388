// The plugin log (logFile in the network config) through the BUILT executable: its directory is
// created when missing (a fresh node has no /var/log/berth), and a log that cannot be written
// (a directory in the way, a file where the directory should be, a read-only place) never changes
// the plugin's answer: the same result or CNI error on stdout, exit code, and nothing on stderr.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNetns, removeNetns, type TestNetns } from "../helpers/netns";
import { pluginPath, runCni } from "../helpers/plugins";

const tmp = mkdtempSync(join(tmpdir(), "berth-plugin-log-"));
const master = `blg${process.pid % 100000}`;
let pod: TestNetns;
let seq = 0;

beforeAll(() => {
  execFileSync("ip", ["link", "add", master, "type", "veth", "peer", "name", `${master}p`]);
  execFileSync("ip", ["link", "set", master, "up"]);
  pod = createNetns("plog");
});

afterAll(() => {
  execFileSync("ip", ["link", "del", master]);
  removeNetns(pod);
  rmSync(tmp, { recursive: true, force: true });
});

function run(command: "ADD" | "DEL", logFile: string, masterName = master) {
  const config = {
    cniVersion: "1.0.0",
    name: "plog",
    type: "berth-macvlan",
    master: masterName,
    logFile,
    ipam: { type: "static", addresses: [{ address: "10.97.0.5/24" }] },
  };
  return runCni(pluginPath("berth-macvlan"), { command, config, containerId: `plog${seq}`, netns: pod.path, ifName: "eth0" });
}

describe("plugin log", () => {
  it("creates the log file's missing directories and writes JSON lines", () => {
    const logFile = join(tmp, "var/log/berth/cni.log");
    const add = run("ADD", logFile);
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    expect(run("DEL", logFile).code).toBe(0);
    const lines = readFileSync(logFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.msg).filter((m) => m.endsWith(" done"))).toEqual(["ADD done", "DEL done"]);
    expect(lines.find((l) => l.msg === "ADD done")).toMatchObject({
      level: "info",
      plugin: "berth-macvlan",
      cmd: "ADD",
      network: "plog",
      containerID: `plog${seq}`,
    });
  });

  const unwritable: [string, () => string][] = [
    [
      "the log path is a directory",
      () => {
        const p = join(tmp, `isdir${seq}`);
        mkdirSync(p);
        return p;
      },
    ],
    [
      "a file is where its directory should be",
      () => {
        const f = join(tmp, `file${seq}`);
        writeFileSync(f, "");
        return join(f, "cni.log");
      },
    ],
    // root ignores mode bits: nobody can create a directory or file under /proc/sys
    ["its directory cannot be created", () => `/proc/sys/berth-log-${seq}/cni.log`],
  ];

  it.each(unwritable)("%s: ADD's result and DEL are as without a log", (_what, path) => {
    seq++;
    const logFile = path();
    const add = run("ADD", logFile);
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    expect(add.json.ips).toEqual([{ address: "10.97.0.5/24", interface: 0 }]);
    const del = run("DEL", logFile);
    expect(del.stdout + del.stderr).toBe("");
    expect(del.code).toBe(0);
  });

  it("an unwritable log keeps the CNI error answer too", () => {
    seq++;
    const r = run("ADD", `/proc/sys/berth-log-${seq}/cni.log`, "nosuchmaster0");
    expect(r.stderr).toBe("");
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ cniVersion: "1.0.0", code: expect.any(Number), msg: expect.stringContaining("nosuchmaster0") });
  });
});
