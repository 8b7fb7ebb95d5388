// `make install DESTDIR=...` lays out what a node needs and never overwrites an operator's config.
import { spawnSync } from "node:child_process";
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
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
    for (const file of ["ipamd.mjs", "better_sqlite3.node", "koffi.node"]) {
      expect(lstatSync(join(dest, "usr/lib/berth/ipamd", file)).isFile()).toBe(true);
    }
    expect(readFileSync(join(dest, "etc/berth/ipamd.json"), "utf8")).toBe(readFileSync(join(ROOT, "conf/ipamd.json"), "utf8"));
    expect(JSON.parse(readFileSync(join(dest, "etc/cni/net.d/10-berth.conflist"), "utf8")).plugins[0].type).toBe("berth-macvlan");
    expect(readFileSync(join(dest, "lib/systemd/system/berth-ipamd.service"), "utf8")).toContain("ExecStart=");
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
