// Builds ipamd/ipamctl with esbuild and runs a REAL daemon process on a REAL unix socket with a
// REAL SQLite file in a temp dir.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "esbuild";
import { IpamdClient } from "../../api/client";
import { outputOf } from "./child";

const ROOT = resolve(import.meta.dirname, "../..");
// Inside the repo so the bundles' external imports (koffi) resolve to node_modules.
const OUT_DIR = join(ROOT, "node_modules/.cache/berth-ipamd", String(process.pid));
// The daemon runs on the project's Node LTS (node_modules/.bin/node), also when this helper runs under bun (bench).
const PROJECT_NODE = join(ROOT, "node_modules/.bin/node");
const NODE = existsSync(PROJECT_NODE) ? PROJECT_NODE : process.versions.bun ? "node" : process.execPath;

let built: Promise<{ ipamd: string; ipamctl: string }> | undefined;

/** With BERTH_DIST (make test), the shipped artifacts: dist/ipamd/ipamd.mjs and dist/bin/ipamctl. */
function distArtifacts(): { ipamd: string; ipamctl: string } | undefined {
  if (!process.env.BERTH_DIST) return undefined;
  const dist = resolve(process.env.BERTH_DIST);
  return { ipamd: join(dist, "ipamd/ipamd.mjs"), ipamctl: join(dist, "bin/ipamctl") };
}

export function buildIpamd(): Promise<{ ipamd: string; ipamctl: string }> {
  const dist = distArtifacts();
  if (dist) return Promise.resolve(dist);
  built ??= (async () => {
    mkdirSync(OUT_DIR, { recursive: true });
    const common = {
      bundle: true,
      platform: "node" as const,
      format: "esm" as const,
      target: "node24",
      external: ["koffi", "@koromix/*"],
      logLevel: "error" as const,
      banner: { js: "import { createRequire as __berthRequire } from 'node:module'; const require = __berthRequire(import.meta.url);" },
    };
    const ipamd = join(OUT_DIR, "ipamd.mjs");
    const ipamctl = join(OUT_DIR, "ipamctl.mjs");
    await build({ ...common, entryPoints: [join(ROOT, "ipamd/main.ts")], outfile: ipamd });
    await build({ ...common, entryPoints: [join(ROOT, "ipamctl/main.ts")], outfile: ipamctl });
    return { ipamd, ipamctl };
  })();
  return built;
}

function cleanupBuild(): void {
  rmSync(OUT_DIR, { recursive: true, force: true });
}

export interface DaemonHandle {
  dir: string;
  socket: string;
  db: string;
  configPath: string;
  client: IpamdClient;
  proc: ChildProcess;
  stderr(): string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill9(): Promise<void>;
  /** Start again on the same socket/db/config. */
  restart(extraArgs?: string[]): Promise<DaemonHandle>;
}

export interface StartOptions {
  config: Record<string, unknown>;
  dir?: string;
  args?: string[];
  /** Extra environment of the daemon (e.g. LD_PRELOAD of libfaketime). */
  env?: Record<string, string>;
  /** Options for node before the bundle (e.g. --max-old-space-size). */
  nodeArgs?: string[];
  /** The socket path (default <dir>/run/ipamd.sock). */
  socket?: string;
}

const tempDirs: string[] = [];

const running = new Set<ChildProcess>();

/** Stops daemons still running, removes this process's temp dirs and bundles (for afterAll). */
export async function cleanupIpamdTest(): Promise<void> {
  await Promise.all(
    [...running].map(
      (p) =>
        new Promise<void>((resolveExit) => {
          if (p.exitCode !== null || p.signalCode !== null) {
            resolveExit();
            return;
          }
          p.once("exit", () => resolveExit());
          p.kill("SIGTERM");
        }),
    ),
  );
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
  cleanupBuild();
  built = undefined;
}

/** A temp dir removed when the test process exits (daemons are stopped by then). */
export function makeTempDir(prefix = "berth-ipamd-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export async function startIpamd(opts: StartOptions): Promise<DaemonHandle> {
  const { ipamd } = await buildIpamd();
  const dir = opts.dir ?? makeTempDir();
  const configPath = join(dir, "ipamd.json");
  const socket = opts.socket ?? join(dir, "run", "ipamd.sock");
  const db = join(dir, "lib", "ipamd.db");
  writeFileSync(configPath, JSON.stringify({ node: { name: "test-node" }, ...opts.config }, null, 2));
  const args = [...(opts.nodeArgs ?? []), ipamd, "--config", configPath, "--socket", socket, "--db", db, ...(opts.args ?? [])];
  const proc = spawn(NODE, args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...opts.env } });
  let err = "";
  proc.stderr!.on("data", (c: Buffer) => {
    err += c.toString();
  });
  running.add(proc);
  // "close": stderr() is read after stop(), so the pipe must be drained first
  const exited = new Promise<number | null>((r) =>
    proc.once("close", (code) => {
      running.delete(proc);
      r(code);
    }),
  );
  // Under Bun (the benchmarks) a client without keepAlive makes synchronous exchanges, during which this process
  // does not read the daemon's stderr: a daemon logging a line per change would fill the pipe and block.
  const client = new IpamdClient(socket, { timeoutMs: 5000, keepAlive: Boolean(process.versions.bun) });
  const handle: DaemonHandle = {
    dir,
    socket,
    db,
    configPath,
    client,
    proc,
    stderr: () => err,
    async stop() {
      proc.kill("SIGTERM");
      return exited;
    },
    async kill9() {
      proc.kill("SIGKILL");
      await exited;
    },
    restart: (extraArgs) => {
      // A second daemon on the same files fails on the database lock, while the status check reaches the first one.
      if (running.has(proc)) throw new Error(`restart of the ipamd on ${socket} while it runs: stop() it first`);
      return startIpamd({ ...opts, dir, args: extraArgs ?? opts.args });
    },
    // (restart keeps env and nodeArgs)
  };
  const deadline = Date.now() + 15_000;
  let exitCode: number | null | undefined;
  void exited.then((c) => {
    exitCode = c;
  });
  for (;;) {
    if (exitCode !== undefined) throw new Error(`ipamd exited with ${exitCode} before serving:\n${err}`);
    try {
      await client.status();
      return handle;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`ipamd did not serve ${socket} within 15s:\n${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs ipamd expecting it to refuse to start; returns exit code and stderr. */
export async function runIpamdExpectingFailure(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const { ipamd } = await buildIpamd();
  const r = spawnSync(NODE, [ipamd, ...args], { encoding: "utf8", timeout: 15_000 });
  return { code: r.status, stderr: r.stderr };
}

/** Runs the ipamctl bundle; returns exit code, stdout, stderr. */
export async function runIpamctl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { ipamctl } = await buildIpamd();
  const [file, argv] = ipamctl.endsWith(".mjs") ? [NODE, [ipamctl, ...args]] : [ipamctl, args];
  return outputOf(spawn(file, argv, { stdio: ["ignore", "pipe", "pipe"] }));
}

/** The address of a CIDR ("10.0.0.5/24" -> "10.0.0.5"). */
export const ipOf = (address: string): string => address.split("/")[0]!;

/** The error `p` is rejected with; fails when it resolves. */
export const errorOf = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => {
      throw new Error("expected an error");
    },
    (e: unknown) => e,
  );
