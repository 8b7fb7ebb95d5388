// scripts/install-cni.sh (the DaemonSet's init container) and scripts/uninstall-cni.sh (the
// uninstall DaemonSet's) run as the pods run them, on a temp dir standing for the node: every
// plugin link, a `loopback` only where the node's CNI bin dir has none, and the conflist only
// with BERTH_PRIMARY=1 (secondary network by default: nothing in the runtime's conf dir).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ROOT, pluginDir } from "../helpers/plugins";

const PLUGINS = ["berth-macvlan", "berth-hostdev", "berth-sriov", "berth-ipam", "ipamctl"];
let node: string;

afterEach(() => rmSync(node, { recursive: true, force: true }));

function script(name: string, binDir: string, env: Record<string, string> = {}) {
  return spawnSync("sh", [join(ROOT, "scripts", name)], {
    encoding: "utf8",
    env: {
      PATH: process.env.PATH,
      BERTH_BIN_SRC: pluginDir(),
      CNI_BIN_DIR: binDir,
      CNI_CONF_DIR: join(node, "etc/cni/net.d"),
      CNI_CONFLIST: join(ROOT, "conf/cni/10-berth.conflist"),
      BERTH_STATE_DIR: join(node, "var/lib/berth"),
      BERTH_RUN_DIR: join(node, "run/berth"),
      ...env,
    },
  });
}

function runInstaller(binDir: string, env: Record<string, string> = {}) {
  const r = script("install-cni.sh", binDir, env);
  expect(r.status, r.stdout + r.stderr).toBe(0);
  return r.stdout + r.stderr;
}

/** A fresh node dir (prepared by `prepare`) and one installer run on it. */
function install(prepare: (binDir: string) => void = () => {}, env: Record<string, string> = {}) {
  node = mkdtempSync(join(tmpdir(), "berth-install-cni-"));
  const binDir = join(node, "opt/cni/bin");
  mkdirSync(binDir, { recursive: true });
  prepare(binDir);
  return { binDir, stdout: runInstaller(binDir, env) };
}

const confDir = () => join(node, "etc/cni/net.d");
const confFiles = () => (existsSync(confDir()) ? readdirSync(confDir()) : []);

describe("install-cni.sh", () => {
  it("by default (secondary network) installs berth, its plugin links and (none there) loopback, and no conflist", () => {
    const { binDir, stdout } = install();
    for (const name of [...PLUGINS, "loopback"]) expect(readlinkSync(join(binDir, name))).toBe("berth");
    expect(readdirSync(binDir).filter((f) => f.startsWith("."))).toEqual([]);
    expect(stdout).toContain("no loopback plugin");
    expect(stdout).toContain("secondary network: nothing written to");
    expect(confFiles()).toEqual([]);
    const lo = spawnSync(join(binDir, "loopback"), [], { env: { CNI_COMMAND: "VERSION" }, input: "{}", encoding: "utf8" });
    expect(JSON.parse(lo.stdout).cniVersion).toBe("1.1.0");
  });

  it("with BERTH_PRIMARY=1 also installs the conflist, atomically", () => {
    const { stdout } = install(() => {}, { BERTH_PRIMARY: "1" });
    expect(confFiles()).toEqual(["10-berth.conflist"]);
    expect(readFileSync(join(confDir(), "10-berth.conflist"), "utf8")).toBe(readFileSync(join(ROOT, "conf/cni/10-berth.conflist"), "utf8"));
    expect(stdout).toContain("BERTH_PRIMARY=1, Berth is the primary network of new pods");
  });

  it("refuses a BERTH_PRIMARY that is neither 0 nor 1, before installing anything", () => {
    node = mkdtempSync(join(tmpdir(), "berth-install-cni-"));
    const binDir = join(node, "opt/cni/bin");
    const r = script("install-cni.sh", binDir, { BERTH_PRIMARY: "yes" });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('BERTH_PRIMARY must be 0 (secondary network, the default) or 1 (primary), not "yes"');
    expect(existsSync(binDir)).toBe(false);
  });

  it("a secondary install over an earlier primary one warns about the conflist left behind", () => {
    const { binDir } = install(() => {}, { BERTH_PRIMARY: "1" });
    const out = runInstaller(binDir);
    expect(out).toMatch(/warning: .*10-berth\.conflist .* still makes Berth the primary network/);
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

describe("uninstall-cni.sh", () => {
  it("removes what a primary install added and nothing of the node's; keeps the database unless BERTH_PURGE=1", () => {
    const { binDir } = install(
      (dir) => {
        writeFileSync(join(dir, "bridge"), "the node's\n", { mode: 0o755 });
        mkdirSync(join(node, "etc/cni/net.d"), { recursive: true });
        writeFileSync(join(node, "etc/cni/net.d/05-calico.conflist"), "{}\n");
      },
      { BERTH_PRIMARY: "1" },
    );
    mkdirSync(join(node, "var/lib/berth"), { recursive: true });
    writeFileSync(join(node, "var/lib/berth/ipamd.db"), "db");
    const r = script("uninstall-cni.sh", binDir);
    expect(r.status, r.stderr).toBe(0);
    expect(readdirSync(binDir)).toEqual(["bridge"]);
    expect(confFiles()).toEqual(["05-calico.conflist"]);
    expect(existsSync(join(node, "var/lib/berth/ipamd.db"))).toBe(true);
    expect(r.stdout).toContain("kept");

    const purge = script("uninstall-cni.sh", binDir, { BERTH_PURGE: "1" });
    expect(purge.status, purge.stderr).toBe(0);
    expect(existsSync(join(node, "var/lib/berth"))).toBe(false);
  });

  it("keeps a loopback that is not Berth's and a same-named conflist that names no berth plugin", () => {
    const { binDir } = install((dir) => writeFileSync(join(dir, "loopback"), "reference\n", { mode: 0o755 }));
    mkdirSync(confDir(), { recursive: true });
    writeFileSync(join(confDir(), "10-berth.conflist"), '{"plugins":[{"type":"macvlan"}]}\n');
    const r = script("uninstall-cni.sh", binDir);
    expect(r.status, r.stderr).toBe(0);
    expect(readdirSync(binDir)).toEqual(["loopback"]);
    expect(confFiles()).toEqual(["10-berth.conflist"]);
  });
});
