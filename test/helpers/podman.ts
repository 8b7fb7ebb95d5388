// Debian's podman 4 with its CNI backend (libcni 1.1.2), as a real runtime for the plugins, kept
// away from the host's podman state: its own containers.conf and storage (vfs) under a temp dir,
// and every podman command run inside a private mount namespace (held open by one `sleep`) where
// /run, /var/lib and /var/log are bind mounts of temp dirs: netns files, libcni's result cache,
// crun's state and the plugins' state dirs (/run/berth/...) all land there, and /dev/shm (libpod
// locks) is a fresh tmpfs. There /sys/fs/cgroup/unified is unmounted as well: crun refuses this
// host's hybrid cgroup layout, and containers run with cgroups disabled so no cgroup is made.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const IMAGE = "localhost/berth-busybox";

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface Podman {
  dir: string;
  /** What podman 4 needs here, in its own words (for the report). */
  settings: string;
  /** Runs podman with the sandbox's config, root and runroot, inside its mount namespace. */
  run(args: string[]): Run;
  /** Like run, but throws with podman's stderr unless it exits 0; returns stdout. */
  ok(args: string[]): string;
  /** Bind-mounts a host dir onto `target` inside the sandbox (e.g. ipamd's socket dir on /run/berth). */
  bind(hostDir: string, target: string): void;
  /** Paths as the host sees them of what the sandbox has at /run, /var/lib and /var/log. */
  hostPath(sandboxPath: string): string;
  /** Removes every container, ends every process left in the namespace, deletes the temp dir. */
  destroy(): void;
}

const BIND = { "/run": "run", "/var/lib": "varlib", "/var/log": "varlog" } as const;

/** Lowest of the process's hard limit and `want` (crun cannot raise a limit podman's chain has lowered). */
function hardLimit(name: string, want: number): number {
  const line = readFileSync("/proc/self/limits", "utf8")
    .split("\n")
    .find((l) => l.startsWith(name));
  const hard = line?.trim().split(/\s{2,}/)[2];
  return hard === undefined || hard === "unlimited" ? want : Math.min(Number(hard), want);
}

export function startPodman(pluginDirs: string[]): Podman {
  const dir = mkdtempSync(join(tmpdir(), "berth-podman-"));
  for (const d of [...Object.values(BIND), "root", "runroot", "tmp", "img/bin"]) mkdirSync(join(dir, d), { recursive: true });
  const nofile = hardLimit("Max open files", 1024);
  const nproc = hardLimit("Max processes", 4096);
  const settings = [
    "[containers]",
    "# crun cannot create cgroups on this hybrid v1/v2 host; nothing here needs one",
    'cgroups = "disabled"',
    `# podman's default rlimits are above this machine's hard limits (crun: setrlimit EPERM)`,
    `default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]`,
    "[network]",
    'network_backend = "cni"',
    `cni_plugin_dirs = [${pluginDirs.map((d) => JSON.stringify(d)).join(", ")}]`,
    `network_config_dir = "${join(dir, "net.d")}"`,
    "[engine]",
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    `events_logfile_path = "${join(dir, "events.log")}"`,
    `tmp_dir = "${join(dir, "tmp")}"`,
    "",
  ].join("\n");
  writeFileSync(join(dir, "containers.conf"), settings);
  writeFileSync(
    join(dir, "storage.conf"),
    `[storage]\ndriver = "vfs"\ngraphroot = "${join(dir, "root")}"\nrunroot = "${join(dir, "runroot")}"\n`,
  );
  mkdirSync(join(dir, "net.d"));

  const holder = spawn("unshare", ["--mount", "--propagation", "private", "sleep", "infinity"], { stdio: "ignore" });
  const pid = holder.pid!;
  const ownMnt = readlinkSync("/proc/self/ns/mnt");
  const deadline = Date.now() + 10_000;
  while (readlinkSync(`/proc/${pid}/ns/mnt`) === ownMnt) {
    if (Date.now() > deadline) throw new Error("unshare --mount did not start a mount namespace");
    spawnSync("sleep", ["0.05"]);
  }
  const inNs = (cmd: string[]) => execFileSync("nsenter", ["-t", String(pid), "-m", ...cmd], { stdio: "pipe" });
  for (const [target, sub] of Object.entries(BIND)) inNs(["mount", "--bind", join(dir, sub), target]);
  inNs(["mount", "-t", "tmpfs", "tmpfs", "/dev/shm"]);
  inNs(["sh", "-c", "if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi"]);
  const mnt = readlinkSync(`/proc/${pid}/ns/mnt`);
  // A test process dying without afterAll still takes the namespace (and its mounts) with it.
  const inNamespace = () =>
    readdirSync("/proc").filter((n) => {
      try {
        return /^\d+$/.test(n) && readlinkSync(`/proc/${n}/ns/mnt`) === mnt;
      } catch {
        return false;
      } // exited (a zombie has no ns)
    });
  const killNamespace = () => {
    for (const p of inNamespace()) process.kill(Number(p), "SIGKILL");
  };
  process.once("exit", killNamespace);

  const env = { ...process.env, CONTAINERS_CONF: join(dir, "containers.conf"), CONTAINERS_STORAGE_CONF: join(dir, "storage.conf") };
  const run = (args: string[]): Run => {
    const r = spawnSync(
      "nsenter",
      ["-t", String(pid), "-m", "podman", "--root", join(dir, "root"), "--runroot", join(dir, "runroot"), ...args],
      { env, encoding: "utf8", timeout: 120_000 },
    );
    if (r.error) throw r.error;
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const podman: Podman = {
    dir,
    settings,
    run,
    ok(args) {
      const r = run(args);
      if (r.code !== 0) throw new Error(`podman ${args.join(" ")} exited ${r.code}:\n${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    bind(hostDir, target) {
      inNs(["mkdir", "-p", target]);
      inNs(["mount", "--bind", hostDir, target]);
    },
    hostPath(sandboxPath) {
      const [target, sub] =
        Object.entries(BIND).find(([t]) => sandboxPath === t || sandboxPath.startsWith(`${t}/`)) ??
        (() => {
          throw new Error(`${sandboxPath} is not under ${Object.keys(BIND).join(", ")}`);
        })();
      return join(dir, sub, sandboxPath.slice(target.length));
    },
    destroy() {
      try {
        run(["rm", "--all", "--force", "--time", "0"]);
      } catch {
        /* the namespace may be gone already */
      }
      // conmon and container processes left by a failed test, and the holder: all started in this namespace.
      killNamespace();
      process.off("exit", killNamespace);
      const deadline = Date.now() + 10_000;
      while (inNamespace().length > 0 && Date.now() < deadline) spawnSync("sleep", ["0.05"]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    importBusybox(podman);
  } catch (e) {
    podman.destroy();
    throw e;
  }
  return podman;
}

/** An image from Debian's busybox-static (every applet linked), made with `podman import`: no registry. */
function importBusybox(podman: Podman): void {
  const root = join(podman.dir, "img");
  copyFileSync("/bin/busybox", join(root, "bin/busybox"));
  for (const applet of execFileSync("/bin/busybox", ["--list"], { encoding: "utf8" }).split("\n")) {
    if (applet && applet !== "busybox") symlinkSync("busybox", join(root, "bin", applet));
  }
  execFileSync("tar", ["-C", root, "-cf", join(podman.dir, "img.tar"), "."]);
  podman.ok(["import", "--quiet", join(podman.dir, "img.tar"), IMAGE]);
}
