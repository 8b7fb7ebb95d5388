// `make install DESTDIR=...` lays out what a node needs (a secondary network unless PRIMARY=1) and
// never overwrites an operator's config or a loopback plugin the node already has; `make uninstall`
// takes it all away again except the operator's config and the database (PURGE=1 takes those too).
import { spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT, pluginDir } from "../helpers/plugins";

const dest = mkdtempSync(join(tmpdir(), "berth-install-"));
afterAll(() => rmSync(dest, { recursive: true, force: true }));

function make(target: string, dir: string, ...vars: string[]) {
  // The dist/ under test is installed as built: `make -o build` skips the rebuild.
  return spawnSync("make", ["-o", "build", "-o", "dist/.built", target, `DESTDIR=${dir}`, ...vars], { cwd: ROOT, encoding: "utf8" });
}
const makeInstall = () => make("install", dest);

/** Every file and link under dir, relative. */
function tree(dir: string, prefix = ""): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? tree(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`]))
    .sort();
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
    expect(readFileSync(join(dest, "lib/systemd/system/berth-ipamd.service"), "utf8")).toContain("ExecStart=");
  });

  it("by default is a secondary network: nothing in the runtime's conf dir, the examples under share/berth", () => {
    expect(existsSync(join(dest, "etc/cni/net.d"))).toBe(false);
    expect(tree(join(dest, "usr/share/berth/examples/cni"))).toEqual(readdirSync(join(ROOT, "conf/cni")).sort());
  });

  it("PRIMARY=1 installs conf/cni/10-berth.conflist into the runtime's conf dir", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-install-primary-"));
    try {
      const r = make("install", dir, "PRIMARY=1");
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain("PRIMARY=1: /etc/cni/net.d/10-berth.conflist makes Berth the network of every new pod");
      expect(readdirSync(join(dir, "etc/cni/net.d"))).toEqual(["10-berth.conflist"]);
      expect(JSON.parse(readFileSync(join(dir, "etc/cni/net.d/10-berth.conflist"), "utf8")).plugins[0].type).toBe("berth-macvlan");

      const u = make("uninstall", dir);
      expect(u.status, u.stdout + u.stderr).toBe(0);
      // Left: the daemon config (the operator's) and empty directories.
      expect(tree(dir)).toEqual(["etc/berth/ipamd.json"]);
      const purge = make("uninstall", dir, "PURGE=1");
      expect(purge.status, purge.stdout + purge.stderr).toBe(0);
      expect(tree(dir)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("make uninstall keeps the node's own loopback and a conflist the operator changed", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-uninstall-"));
    try {
      mkdirSync(join(dir, "opt/cni/bin"), { recursive: true });
      writeFileSync(join(dir, "opt/cni/bin/loopback"), "reference\n", { mode: 0o755 });
      expect(make("install", dir, "PRIMARY=1").status).toBe(0);
      writeFileSync(join(dir, "etc/cni/net.d/10-berth.conflist"), "operator's edit\n");
      const u = make("uninstall", dir);
      expect(u.status, u.stdout + u.stderr).toBe(0);
      expect(u.stdout).toContain("kept /etc/cni/net.d/10-berth.conflist: it is not the shipped one");
      expect(tree(dir)).toEqual(["etc/berth/ipamd.json", "etc/cni/net.d/10-berth.conflist", "opt/cni/bin/loopback"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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

  it("keeps an existing conflist (PRIMARY=1) and daemon config", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-install-keep-"));
    try {
      mkdirSync(join(dir, "etc/cni/net.d"), { recursive: true });
      mkdirSync(join(dir, "etc/berth"), { recursive: true });
      writeFileSync(join(dir, "etc/cni/net.d/10-berth.conflist"), "operator's own\n");
      writeFileSync(join(dir, "etc/berth/ipamd.json"), "{}\n");
      const r = make("install", dir, "PRIMARY=1");
      expect(r.status, r.stdout + r.stderr).toBe(0);
      expect(readFileSync(join(dir, "etc/cni/net.d/10-berth.conflist"), "utf8")).toBe("operator's own\n");
      expect(readFileSync(join(dir, "etc/berth/ipamd.json"), "utf8")).toBe("{}\n");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
