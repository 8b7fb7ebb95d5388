// scripts/install-cni.sh (the DaemonSet's init container) run as the pod runs it: every plugin
// link, the conflist, and a `loopback` only where the node's CNI bin dir has none.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ROOT, pluginDir } from "../helpers/plugins";

const PLUGINS = ["berth-macvlan", "berth-hostdev", "berth-sriov", "berth-ipam", "ipamctl"];
let node: string;

afterEach(() => rmSync(node, { recursive: true, force: true }));

function runInstaller(binDir: string) {
  const r = spawnSync("sh", [join(ROOT, "scripts/install-cni.sh")], {
    encoding: "utf8",
    env: {
      PATH: process.env.PATH, BERTH_BIN_SRC: pluginDir(), CNI_BIN_DIR: binDir,
      CNI_CONF_DIR: join(node, "etc/cni/net.d"), CNI_CONFLIST: join(ROOT, "conf/cni/10-berth.conflist"),
    },
  });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  return r.stdout;
}

/** A fresh node dir (prepared by `prepare`) and one installer run on it. */
function install(prepare: (binDir: string) => void = () => {}) {
  node = mkdtempSync(join(tmpdir(), "berth-install-cni-"));
  const binDir = join(node, "opt/cni/bin");
  mkdirSync(binDir, { recursive: true });
  prepare(binDir);
  return { binDir, stdout: runInstaller(binDir) };
}

describe("install-cni.sh", () => {
  it("installs berth, its plugin links, the conflist and (none there) loopback; no temp files remain", () => {
    const { binDir, stdout } = install();
    for (const name of [...PLUGINS, "loopback"]) expect(readlinkSync(join(binDir, name))).toBe("berth");
    expect(readdirSync(binDir).filter((f) => f.startsWith("."))).toEqual([]);
    expect(stdout).toContain("no loopback plugin");
    expect(readFileSync(join(node, "etc/cni/net.d/10-berth.conflist"), "utf8"))
      .toBe(readFileSync(join(ROOT, "conf/cni/10-berth.conflist"), "utf8"));
    const lo = spawnSync(join(binDir, "loopback"), [], { env: { CNI_COMMAND: "VERSION" }, input: "{}", encoding: "utf8" });
    expect(JSON.parse(lo.stdout).cniVersion).toBe("1.1.0");
  });

  it("leaves the node's own loopback alone", () => {
    const { binDir, stdout } = install((dir) => writeFileSync(join(dir, "loopback"), "reference\n", { mode: 0o755 }));
    expect(readFileSync(join(binDir, "loopback"), "utf8")).toBe("reference\n");
    expect(stdout).not.toContain("loopback");
  });

  it("a second run (DaemonSet upgrade) keeps the loopback link of the first", () => {
    const { binDir } = install();
    expect(runInstaller(binDir)).not.toContain("loopback");
    expect(readlinkSync(join(binDir, "loopback"))).toBe("berth");
  });
});
