// `make demo` on a fresh Debian 12 machine: a debootstrap'd minbase root (scripts/debian-base.sh,
// cached) with nothing added but `make` (the command the README gives), the repository's files as a
// fresh clone has them (no node_modules, no dist), and this machine's apt mirror and DNS. `make demo`
// must install the Debian packages it lacks (iproute2, iputils-ping, npm...), run npm ci, build, and
// run the demo to the end. Like resolv.conf, this network's TLS trust is passed in: when
// NODE_EXTRA_CA_CERTS names a CA bundle here (a TLS-inspecting egress proxy), the chroot gets a copy
// and the same variable, as a machine on this network would be set up. It runs chrooted in a private
// mount namespace (its /proc, /sys, /dev, /run are its own mounts, gone with it), in this host's kernel and network namespace like the
// demo on a real machine; the demo removes what it creates. apt's and npm's download caches are
// kept under /var/cache/berth so a second run fetches nothing; nothing installed is kept.
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT } from "../helpers/plugins";

const CACHE = process.env.BERTH_CACHE_DIR ?? "/var/cache/berth";
// Not under /tmp: the chroot's root is a plain directory that must allow exec and device files.
const work = mkdtempSync("/var/tmp/berth-demo-setup-");
const root = join(work, "root");
afterAll(() => {
  spawnSync("umount", ["-R", "-l", root]); // only if a run died mid-way; the namespace normally took them
  rmSync(work, { recursive: true, force: true });
});

/** The files a fresh clone has: tracked and new, not ignored (so node_modules and dist are not). */
function copyCheckout(to: string): string[] {
  const files = execFileSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: ROOT, encoding: "utf8" })
    .split("\0")
    .filter((f) => f && existsSync(join(ROOT, f)));
  for (const f of files) cpSync(join(ROOT, f), join(to, f), { verbatimSymlinks: true });
  return files;
}

/** Runs `script` as root in the chroot, inside a private mount namespace. */
function inChroot(script: string, timeoutMs: number) {
  const setup = String.raw`
set -e
r=$1; shift
mount --bind "$r" "$r" # a mount point, as a machine's / is (ip netns makes / a slave mount)
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mkdir -p "$r/root/.npm" "$r/var/cache/apt/archives/partial"
mount --bind "$CACHE/npm" "$r/root/.npm"
mount --bind "$CACHE/apt-archives" "$r/var/cache/apt/archives"
cp /etc/resolv.conf "$r/etc/resolv.conf"
extra=
if [ -n "$SITE_CA" ]; then cp "$SITE_CA" "$r/etc/site-ca-bundle.crt"; extra=NODE_EXTRA_CA_CERTS=/etc/site-ca-bundle.crt; fi
exec chroot "$r" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 $extra \
  /bin/bash -euo pipefail -c "$1"
`;
  for (const d of ["npm", "apt-archives/partial"]) mkdirSync(join(CACHE, d), { recursive: true });
  return spawnSync("unshare", ["-m", "--propagation", "private", "bash", "-c", setup, "setup", root, script], {
    encoding: "utf8",
    timeout: timeoutMs,
    env: { PATH: process.env.PATH, CACHE, SITE_CA: process.env.NODE_EXTRA_CA_CERTS ?? "" },
    maxBuffer: 64 * 1024 * 1024,
  });
}

describe("make demo on a fresh Debian 12", () => {
  it("installs what it lacks, runs npm ci, builds and runs the demo", () => {
    const base = execFileSync(join(ROOT, "scripts/debian-base.sh"), { encoding: "utf8", timeout: 900_000 }).trim();
    mkdirSync(root);
    execFileSync("tar", ["-C", root, "--numeric-owner", "-xf", base]);
    const src = join(root, "src/berth");
    mkdirSync(src, { recursive: true });
    const files = copyCheckout(src);
    expect(files).toContain("Makefile");
    expect(existsSync(join(src, "node_modules")) || existsSync(join(src, "dist"))).toBe(false);
    // Keep what apt downloads for the next run (the base is cleaned after debootstrap).
    writeFileSync(join(root, "etc/apt/apt.conf.d/99berth-keep-debs"), 'Binary::apt::APT::Keep-Downloaded-Packages "true";\n');

    const fresh = inChroot('for c in ip ping npm node make; do command -v $c || echo "no $c"; done', 60_000);
    expect(fresh.stdout.trim().split("\n")).toEqual(["no ip", "no ping", "no npm", "no node", "no make"]);

    const r = inChroot(
      [
        "export DEBIAN_FRONTEND=noninteractive",
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends make >/dev/null", // what the README's command needs
        "cd /src/berth && make demo",
      ].join("\n"),
      1_500_000,
    );
    const output = `${r.stdout}\n${r.stderr}`;
    expect(r.status, output.slice(-6000)).toBe(0);
    const installing = /^installing (.*) \(scripts\/packages\.txt says what needs each\)$/m.exec(output);
    expect(installing?.[1].split(" ").sort()).toEqual(["ca-certificates", "iproute2", "iputils-ping", "kmod", "npm", "procps"]);
    expect(output).toContain("scripts/npm-ci.sh");
    expect(output).toMatch(/added \d+ packages/);
    expect(output).toMatch(/built dist\/bin\/berth \(\d+\.\d+\.\d+ /);
    expect(output).toMatch(/web-0 came back with the same IP: 10\.99\.0\.\d+/);
    expect(output).toMatch(/2 packets transmitted, 2 received/);
    expect(output).toContain("cleaning up");
    expect(readFileSync(join(src, "node_modules/.package-lock.json"), "utf8").length).toBeGreaterThan(0);
  }, 1_800_000);
});
