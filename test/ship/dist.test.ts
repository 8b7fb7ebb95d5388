// `make dist`: a versioned tarball of the built binaries, the daemon bundle, the manifests and the
// docs, with checksums that verify, and a binary in it that runs; the same commit gives the same bytes.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT, pluginDir } from "../helpers/plugins";

const work = mkdtempSync(join(tmpdir(), "berth-dist-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version as string;

function makeDist(out: string): string {
  pluginDir();
  const r = spawnSync("make", ["--no-print-directory", "-o", "build", "-o", "dist/.built", "dist"], {
    cwd: ROOT,
    encoding: "utf8",
    env: { ...process.env, BERTH_RELEASE_DIR: out },
  });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  return r.stdout.trim().split("\n").at(-1)!;
}

describe("make dist", () => {
  const out = join(work, "release");
  let tarball: string;

  it("writes release/berth-<version>-linux-<arch>.tar.gz and its .sha256", () => {
    tarball = makeDist(out);
    expect(tarball).toBe(`${out}/berth-${version}-linux-amd64.tar.gz`);
    expect(readdirSync(out).sort()).toEqual([`berth-${version}-linux-amd64.tar.gz`, `berth-${version}-linux-amd64.tar.gz.sha256`]);
    const check = spawnSync("sha256sum", ["-c", `berth-${version}-linux-amd64.tar.gz.sha256`], { cwd: out, encoding: "utf8" });
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it("holds the binaries, the daemon bundle, the manifests, the install scripts, LICENSE and SHA256SUMS that verify", () => {
    const x = join(work, "x");
    execFileSync("mkdir", ["-p", x]);
    execFileSync("tar", ["-C", x, "-xzf", tarball]);
    const top = join(x, `berth-${version}`);
    expect(readdirSync(x)).toEqual([`berth-${version}`]);
    for (const name of ["berth-macvlan", "berth-hostdev", "berth-sriov", "berth-ipam", "ipamctl"]) {
      expect(readlinkSync(join(top, "bin", name))).toBe("berth");
    }
    expect(readdirSync(join(top, "ipamd")).sort()).toEqual(["ipamd.mjs", "koffi.node", "package.json"]);
    for (const f of [
      "conf/kubernetes/daemonset.yaml",
      "conf/kubernetes/uninstall.yaml",
      "conf/kubernetes/rbac.yaml",
      "conf/kubernetes/configmap.yaml",
      "conf/kubernetes/multus/berth-macvlan.yaml",
      "conf/kubernetes/monitoring/metrics.yaml",
      "conf/cni/10-berth.conflist",
      "conf/ipamd.json",
      "conf/systemd/berth-ipamd.service",
      "scripts/install-cni.sh",
      "scripts/uninstall-cni.sh",
      "docs/API.md",
      "docs/ERRORS.md",
      "README.md",
    ]) {
      expect(readFileSync(join(top, f)).length, f).toBeGreaterThan(0);
    }
    expect(readFileSync(join(top, "LICENSE"), "utf8")).toContain("Apache License\n                           Version 2.0, January 2004");
    const sums = spawnSync("sha256sum", ["--strict", "-c", "SHA256SUMS"], { cwd: top, encoding: "utf8" });
    expect(sums.status, sums.stdout + sums.stderr).toBe(0);
    const listed = readFileSync(join(top, "SHA256SUMS"), "utf8")
      .trim()
      .split("\n")
      .map((l) => l.split(/\s+/)[1]);
    expect(listed).toContain("bin/berth");
    expect(listed).toContain("ipamd/ipamd.mjs");
    const v = spawnSync(join(top, "bin/berth"), ["--version"], { encoding: "utf8", env: {} });
    expect(v.stdout).toMatch(new RegExp(`^berth ${version.replace(/\./g, "\\.")} \\(commit [0-9a-f]+`));
  });

  it("the same build gives the same tarball", () => {
    const again = makeDist(join(work, "again"));
    expect(readFileSync(again).equals(readFileSync(tarball))).toBe(true);
  });

  it("package.json's license is the LICENSE shipped", () => {
    expect(JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).license).toBe("Apache-2.0");
    expect(readFileSync(join(ROOT, "LICENSE"), "utf8")).toBe(readFileSync("/usr/share/common-licenses/Apache-2.0", "utf8"));
  });
});
