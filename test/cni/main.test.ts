// The multi-call `berth` executable picks the plugin from the name it was started under.
import { spawnSync } from "node:child_process";
import { copyFileSync, linkSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupPlugins, pluginPath, runCni } from "../helpers/plugins";

const dir = mkdtempSync(join(tmpdir(), "berth-main-"));
let berth: string;
const VERSION_OUT = '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n';

beforeAll(() => {
  berth = pluginPath("berth");
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  cleanupPlugins();
});

describe("berth multi-call entry", () => {
  it("runs berth-ipam through a symlink", () => {
    symlinkSync(berth, join(dir, "berth-ipam"));
    expect(runCni(join(dir, "berth-ipam"), { command: "VERSION", config: "{}" }).stdout).toBe(VERSION_OUT);
  });

  it("runs berth-ipam through a hardlink (or a copy), even when argv[0] is something else", () => {
    const hard = join(dir, "hard", "berth-ipam");
    spawnSync("mkdir", ["-p", join(dir, "hard")]);
    try {
      linkSync(berth, hard);
    } catch {
      copyFileSync(berth, hard); // different filesystem: a copy has the same name semantics
    }
    expect(runCni(hard, { command: "VERSION", config: "{}" }).stdout).toBe(VERSION_OUT);
    const r = spawnSync("bash", ["-c", `exec -a weird-name ${hard}`], { env: { CNI_COMMAND: "VERSION" }, input: "{}", encoding: "utf8" });
    expect(r.stdout).toBe(VERSION_OUT);
  });

  it("VERSION reads the runtime's whole stdin before answering: a runtime writing a large config gets no EPIPE", () => {
    const input = JSON.stringify({ cniVersion: "1.0.0", name: "n", type: "berth-macvlan", pad: "x".repeat(1 << 20) });
    for (let i = 0; i < 5; i++) {
      const r = spawnSync(pluginPath("berth-macvlan"), [], { input, env: { CNI_COMMAND: "VERSION" }, encoding: "utf8" });
      expect(r.error).toBeUndefined();
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).supportedVersions).toContain("1.0.0");
    }
  });

  it("`berth berth-ipam` works too", () => {
    const r = spawnSync(berth, ["berth-ipam"], { env: { CNI_COMMAND: "VERSION" }, input: "{}", encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(VERSION_OUT);
  });

  it("`berth --version` prints version and commit", () => {
    const r = spawnSync(berth, ["--version"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^berth \S+ \(commit \S+\)\n$/);
  });

  it("an unknown command is a usage error on stderr, nothing on stdout", () => {
    const r = spawnSync(berth, ["frobnicate"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain('unknown command "frobnicate"');
    expect(r.stderr).toContain("berth-ipam");
  });

  it("ipamctl is reachable as `berth ipamctl`", () => {
    const r = spawnSync(berth, ["ipamctl", "--help"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("ipamctl");
  });
});
