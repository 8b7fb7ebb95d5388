// `make install DESTDIR=...` lays out what a node needs and never overwrites an operator's config
// or a loopback plugin the node already has.
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT, pluginDir } from "../helpers/plugins";

const dest = mkdtempSync(join(tmpdir(), "berth-install-"));
afterAll(() => rmSync(dest, { recursive: true, force: true }));

function makeInstall() {
  // The dist/ under test is installed as built: `make -o build` skips the rebuild.
  return spawnSync("make", ["-o", "build", "-o", "dist/.built", "install", `DESTDIR=${dest}`],
    { cwd: ROOT, encoding: "utf8" });
}

describe("make install", () => {
  it("installs the binary, its plugin links, the daemon, configs and the systemd unit", () => {
    pluginDir();
    const r = makeInstall();
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(lstatSync(join(dest, "opt/cni/bin/berth")).mode & 0o777).toBe(0o755);
    for (const name of ["berth-macvlan", "berth-hostdev", "berth-sriov", "berth-ipam", "ipamctl"]) {
      expect(readlinkSync(join(dest, "opt/cni/bin", name))).toBe("berth");
    }
    for (const file of ["ipamd.mjs", "koffi.node"]) {
      expect(lstatSync(join(dest, "usr/lib/berth/ipamd", file)).isFile()).toBe(true);
    }
    expect(existsSync(join(dest, "usr/lib/berth/ipamd/better_sqlite3.node"))).toBe(false); // SQLite is Node 24's node:sqlite
    expect(readFileSync(join(dest, "etc/berth/ipamd.json"), "utf8")).toBe(readFileSync(join(ROOT, "conf/ipamd.json"), "utf8"));
    expect(JSON.parse(readFileSync(join(dest, "etc/cni/net.d/10-berth.conflist"), "utf8")).plugins[0].type).toBe("berth-macvlan");
    expect(readFileSync(join(dest, "lib/systemd/system/berth-ipamd.service"), "utf8")).toContain("ExecStart=");
  });

  it("answers as loopback where the node has none, and the link runs the loopback plugin", () => {
    expect(readlinkSync(join(dest, "opt/cni/bin/loopback"))).toBe("berth");
    const r = spawnSync(join(dest, "opt/cni/bin/loopback"), [], { env: { CNI_COMMAND: "VERSION" }, input: "{}", encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).supportedVersions).toContain("1.1.0");
  });

  it("keeps a loopback plugin the node already has (a file or a link, even a dangling one)", () => {
    for (const existing of ["file", "link"] as const) {
      const dir = mkdtempSync(join(tmpdir(), "berth-install-lo-"));
      try {
        const lo = join(dir, "opt/cni/bin/loopback");
        mkdirSync(join(dir, "opt/cni/bin"), { recursive: true });
        if (existing === "file") writeFileSync(lo, "#!/bin/sh\n# the reference loopback\n", { mode: 0o755 });
        else symlinkSync("/usr/lib/cni/loopback-not-here", lo);
        const r = spawnSync("make", ["-o", "build", "-o", "dist/.built", "install", `DESTDIR=${dir}`], { cwd: ROOT, encoding: "utf8" });
        expect(r.status, r.stdout + r.stderr).toBe(0);
        if (existing === "file") expect(readFileSync(lo, "utf8")).toBe("#!/bin/sh\n# the reference loopback\n");
        else expect(readlinkSync(lo)).toBe("/usr/lib/cni/loopback-not-here");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it("keeps an existing conflist and daemon config", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-install-keep-"));
    try {
      mkdirSync(join(dir, "etc/cni/net.d"), { recursive: true });
      mkdirSync(join(dir, "etc/berth"), { recursive: true });
      writeFileSync(join(dir, "etc/cni/net.d/10-berth.conflist"), "operator's own\n");
      writeFileSync(join(dir, "etc/berth/ipamd.json"), "{}\n");
      const r = spawnSync("make", ["-o", "build", "-o", "dist/.built", "install", `DESTDIR=${dir}`], { cwd: ROOT, encoding: "utf8" });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(readFileSync(join(dir, "etc/cni/net.d/10-berth.conflist"), "utf8")).toBe("operator's own\n");
      expect(readFileSync(join(dir, "etc/berth/ipamd.json"), "utf8")).toBe("{}\n");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
