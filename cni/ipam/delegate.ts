// Delegation to another IPAM plugin the standard way (libcni invoke.Delegate*): find the
// executable named by ipam.type in CNI_PATH, run it with the same environment (CNI_COMMAND set
// to the verb) and the whole network config on stdin, and read its result or error.
import { isExecutable, statOrUndefined, writeAll } from "../../lib/fileio";
import { join } from "../../lib/paths";
import { CniError, CniCode } from "../skel/errors";
import type { Logger } from "../skel/log";
import type { CniContext } from "../skel/plugin";
import { isObject, parseResult, type Result } from "../skel/result";
import type { UndoStack } from "../skel/undo";
import { isSupportedVersion } from "../skel/version";
import type { Ipam, IpamAllocation } from "./client";

/** IPAM by another plugin executable: each verb runs it with the same config and environment. */
export class DelegatedIpam implements Ipam {
  constructor(
    private readonly ctx: CniContext<unknown>,
    private readonly type: string,
  ) {}

  async add(undo?: UndoStack): Promise<IpamAllocation> {
    const result = (await this.run("ADD"))!;
    undo?.push(`release addresses (${this.type})`, () => this.run("DEL"));
    const ips = result.ips ?? [];
    const addresses = ips.map((ip) => ({
      address: ip.address,
      gateway: ip.gateway,
      family: ip.address.includes(":") ? (6 as const) : (4 as const),
    }));
    // An IPAM plugin returns no interfaces: drop indexes it may have copied from elsewhere.
    return {
      result: { ...result, interfaces: undefined, ips: ips.map(({ interface: _drop, ...ip }) => ip) },
      addresses,
      source: this.type,
    };
  }

  async del(): Promise<void> {
    await this.run("DEL");
  }

  async check(): Promise<undefined> {
    await this.run("CHECK");
    return undefined;
  }

  async status(): Promise<void> {
    await this.run("STATUS");
  }

  async gc(): Promise<void> {
    await this.run("GC");
  }

  /** Starts the plugin before it returns: it runs in its own process while the caller goes on. */
  private run(command: DelegateRequest["command"]): Promise<Result | undefined> {
    const { ctx } = this;
    return delegateIpam({
      command,
      ipamType: this.type,
      stdin: ctx.stdin,
      env: ctx.processEnv,
      cniPath: ctx.env.path,
      cniVersion: ctx.conf.cniVersion,
      log: ctx.log,
    });
  }
}

export interface DelegateRequest {
  command: "ADD" | "DEL" | "CHECK" | "STATUS" | "GC";
  /** ipam.type: a plugin file name, looked up in cniPath. */
  ipamType: string;
  /** The whole network config, passed on unchanged. */
  stdin: string;
  /** The caller's environment; CNI_COMMAND is replaced. */
  env: NodeJS.ProcessEnv;
  cniPath: string[];
  /** The config's cniVersion: the result is returned in the internal shape from it. */
  cniVersion: string;
  log?: Logger;
}

/** Absolute path of plugin `type` in the CNI_PATH directories (code 100 when absent). */
function findPlugin(type: string, cniPath: string[]): string {
  if (type.includes("/") || type === "." || type === "..") {
    throw new CniError(
      CniCode.InvalidConfig,
      `invalid network config: ipam.type "${type}" is not a plugin name`,
      "ipam.type names an executable in CNI_PATH, without a directory, e.g. host-local",
    );
  }
  for (const dir of cniPath) {
    const path = join(dir, type);
    try {
      if (statOrUndefined(path)?.type === "file" && isExecutable(path)) return path;
    } catch {
      // unreadable directory: the next one
    }
  }
  throw new CniError(
    CniCode.IpamPluginNotFound,
    `failed to find IPAM plugin "${type}" in CNI_PATH [${cniPath.join(" ")}]`,
    `install the "${type}" plugin into one of the CNI_PATH directories (usually /opt/cni/bin), or fix ipam.type`,
  );
}

interface PluginRun {
  error?: Error;
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

// The compiled plugins run under Bun, whose own spawn costs ~3 ms less CPU per call than loading
// node:child_process (measured in `make bench`, plugin against plugin on host-local).
declare const Bun: {
  spawn(
    cmd: string[],
    o: { env: Record<string, string | undefined>; stdin: Buffer; stdout: "pipe"; stderr: "pipe" },
  ): {
    exited: Promise<number>;
    exitCode: number | null;
    signalCode: string | null;
    stdout: ReadableStream<Uint8Array>;
    stderr: ReadableStream<Uint8Array>;
  };
};

/**
 * Runs the plugin. Under Bun the process starts (and gets its stdin, a config is far below a pipe's
 * buffer) before this returns, so it works while the caller's thread is busy: DEL's link delete in
 * the kernel, ADD's checks of the host and the pod.
 */
function runPlugin(path: string, env: Record<string, string | undefined>, stdin: string): Promise<PluginRun> {
  if (process.versions.bun) {
    let child: ReturnType<typeof Bun.spawn>;
    try {
      child = Bun.spawn([path], { env, stdin: Buffer.from(stdin), stdout: "pipe", stderr: "pipe" });
    } catch (e) {
      return Promise.resolve({ error: e as Error, status: null, signal: null, stdout: "", stderr: "" });
    }
    const text = (s: ReadableStream<Uint8Array>) => new Response(s).text();
    return Promise.all([text(child.stdout), text(child.stderr), child.exited]).then(([stdout, stderr]) => ({
      status: child.signalCode ? null : child.exitCode,
      signal: child.signalCode,
      stdout,
      stderr,
    }));
  }
  // Loaded only for a delegated type: berth-ipam never needs child_process.
  const { spawnSync } = process.getBuiltinModule("node:child_process");
  const r = spawnSync(path, [], { input: stdin, env, encoding: "utf8", maxBuffer: 16 << 20 });
  return Promise.resolve({ error: r.error, status: r.status, signal: r.signal, stdout: r.stdout ?? "", stderr: r.stderr ?? "" });
}

/**
 * Runs the IPAM plugin. ADD returns its result in the internal shape; the other verbs return
 * undefined. A CNI error from the plugin is rethrown with its own code.
 */
export function delegateIpam(req: DelegateRequest): Promise<Result | undefined> {
  try {
    const path = findPlugin(req.ipamType, req.cniPath);
    const env = { ...req.env, CNI_COMMAND: req.command, CNI_PATH: req.cniPath.join(":") };
    req.log?.debug("delegating to IPAM plugin", { plugin: path, verb: req.command });
    return runPlugin(path, env, req.stdin).then((run) => delegateOutcome(req, path, run));
  } catch (e) {
    return Promise.reject(e);
  }
}

/** The result of an ADD (internal shape) or undefined; the plugin's failure as a CniError. */
function delegateOutcome(req: DelegateRequest, path: string, run: PluginRun): Result | undefined {
  const name = req.ipamType;
  if (run.error) {
    throw new CniError(
      CniCode.IpamPluginFailed,
      `cannot run IPAM plugin ${path}: ${run.error.message}`,
      `check that ${path} is an executable CNI plugin for this machine`,
    );
  }
  const stdout = run.stdout ?? "";
  const stderr = (run.stderr ?? "").trim();
  // The delegated plugin's stderr is ours (CNI spec, section 4: the runtime logs it).
  if (run.stderr) passStderr(run.stderr);
  if (run.status !== 0) {
    const e = parseCniError(stdout);
    req.log?.warn("IPAM plugin failed", { plugin: path, status: run.status, signal: run.signal, stdout, stderr });
    if (e) {
      throw new CniError(e.code, `IPAM plugin ${name} ${req.command} failed: ${e.msg}`, e.details);
    }
    const why = run.signal ? `killed by ${run.signal}` : `exit status ${run.status}`;
    throw new CniError(
      CniCode.IpamPluginFailed,
      `IPAM plugin ${name} ${req.command} failed (${why})`,
      (stderr || stdout.trim() || "no output").slice(0, 2000),
    );
  }
  if (req.command !== "ADD") return undefined;

  let raw: unknown;
  try {
    raw = JSON.parse(stdout);
  } catch {
    throw new CniError(
      CniCode.IpamBadResult,
      `IPAM plugin ${name} returned a result that is not JSON`,
      `output was: ${stdout.slice(0, 500) || "(empty)"}`,
    );
  }
  // libcni reads the result in the version it declares, then converts to the config's version.
  const declared = isObject(raw) && typeof raw.cniVersion === "string" ? raw.cniVersion : req.cniVersion;
  if (!isSupportedVersion(declared)) {
    throw new CniError(
      CniCode.IpamBadResult,
      `IPAM plugin ${name} returned a CNI ${declared} result`,
      `configure cniVersion so that ${name} answers in a version Berth reads (0.3.0 or later)`,
    );
  }
  try {
    return parseResult(raw, declared, `IPAM plugin ${name} result`);
  } catch (e) {
    const err = e as CniError;
    throw new CniError(CniCode.IpamBadResult, err.message, err.details);
  }
}

function parseCniError(stdout: string): { code: number; msg: string; details: string } | undefined {
  try {
    const o = JSON.parse(stdout) as Record<string, unknown>;
    if (isObject(o) && typeof o.code === "number") {
      return { code: o.code, msg: typeof o.msg === "string" ? o.msg : "", details: typeof o.details === "string" ? o.details : "" };
    }
  } catch {
    // not a CNI error document
  }
  return undefined;
}

function passStderr(text: string): void {
  try {
    writeAll(2, text.endsWith("\n") ? text : `${text}\n`, "stderr");
  } catch {
    // no stderr to write to
  }
}
