// runPlugin: the one place that talks CNI to the runtime. Reads stdin, validates the
// environment and the config, calls the plugin, prints exactly one JSON document (the result,
// the version info or the error) on stdout, and returns the exit code. It never throws.
import type { SyscallError } from "../../lib/ffi/libc";
import { readAll, writeAll } from "../../lib/fileio";
import { decodeConfig, parseConfig, type NetConf } from "./config";
import { parseCniArgs, readCommand, readEnv, type Command } from "./env";
import { CniError, CniCode, toCniError } from "./errors";
import { createLogger, nullLogger, type Logger } from "./log";
import type { CniContext, CniPlugin } from "./plugin";
import { encodeResult } from "./result";
import { CURRENT_VERSION, isSupportedVersion, versionInfo } from "./version";

export interface PluginIo {
  env: NodeJS.ProcessEnv;
  /** Reads all of stdin. */
  readStdin: () => string;
  /** Writes the one output document. */
  write: (text: string) => void;
}

function processIo(): PluginIo {
  return {
    env: process.env,
    readStdin: readAllStdin,
    write: (text) => writeAll(1, text, "stdout"),
  };
}

/**
 * The plugin, or a function that loads it: an executable passes a loader so that VERSION (and
 * a request refused before the plugin runs) never loads the plugin's modules (netlink, koffi).
 */
type PluginSource<P> = CniPlugin<P> | (() => Promise<CniPlugin<P>>);

export async function runPlugin<P>(source: PluginSource<P>, io: PluginIo = processIo()): Promise<number> {
  let stdin = "";
  let version: string = CURRENT_VERSION;
  let log: Logger = nullLogger;
  let command: Command | undefined;
  try {
    command = readCommand(io.env);
    try {
      stdin = io.readStdin();
    } catch (e) {
      throw new CniError(
        CniCode.IOFailure,
        `cannot read the network config from stdin: ${(e as Error).message}`,
        "the runtime must pass the network configuration on stdin",
      );
    }
    version = peekVersion(stdin) ?? CURRENT_VERSION;
    if (command === "VERSION") {
      io.write(JSON.stringify(versionInfo()) + "\n");
      return 0;
    }
    const env = readEnv(io.env, command);
    const conf = parseConfig(decodeConfig(stdin), command);
    const plugin = typeof source === "function" ? await source() : source;
    log = createLogger(conf.logFile, conf.logLevel, {
      plugin: plugin.name,
      cmd: command,
      network: conf.name,
      ...(env.containerId ? { containerID: env.containerId, ifName: env.ifName } : {}),
    });
    const perAttachment = command === "ADD" || command === "DEL" || command === "CHECK";
    const args = perAttachment ? parseCniArgs(env.argsRaw, plugin.cniArgs) : parseCniArgs("");
    const pluginConfig = plugin.parse ? plugin.parse(conf, command) : (undefined as P);
    const ctx = buildContext(command, env, args, conf, pluginConfig, stdin, io.env, log);
    log.debug("invoked", { netns: ctx.netns, cniArgs: env.argsRaw });
    if (conf.prevResultProblem) log.warn("DEL goes on without the unreadable prevResult", { error: conf.prevResultProblem });

    switch (command) {
      case "ADD": {
        const result = await plugin.add(ctx);
        const out = encodeResult(result, conf.cniVersion);
        log.info("ADD done", { result: out });
        io.write(JSON.stringify(out) + "\n");
        return 0;
      }
      case "DEL":
        await plugin.del(ctx);
        break;
      case "CHECK":
        await plugin.check(ctx);
        break;
      case "STATUS":
        await plugin.status?.(ctx);
        break;
      case "GC":
        await plugin.gc?.(ctx);
        break;
    }
    log.info(`${command} done`);
    return 0;
  } catch (e) {
    const err = toCniError(e);
    log.error(`${command ?? "command"} failed`, {
      code: err.code,
      error: err.message,
      details: err.details,
      ...(err.code === CniCode.Internal && e instanceof Error ? { stack: e.stack } : {}),
    });
    try {
      io.write(JSON.stringify(err.toJSON(version)) + "\n");
    } catch {
      // stdout is gone; the exit code still says it failed
    }
    return 1;
  }
}

export function buildContext<P>(
  command: Command,
  env: ReturnType<typeof readEnv>,
  args: ReturnType<typeof parseCniArgs>,
  conf: NetConf,
  pluginConfig: P,
  stdin: string,
  processEnv: NodeJS.ProcessEnv,
  log: Logger,
): CniContext<P> {
  // Requested IPs come from one source, by the same precedence as the MAC: runtimeConfig.ips
  // (the "ips" capability), else args.cni.ips, else CNI_ARGS IP. The others are logged, not merged.
  const sources: [string, string[] | undefined][] = [
    ["runtimeConfig.ips", conf.runtimeConfig.ips],
    ["args.cni.ips", conf.argsCni.ips],
    ["CNI_ARGS IP", args.IP],
  ];
  const given: typeof sources = []; // a loop, not filter(): see docs/architecture.md, "Plugins"
  for (const source of sources) if (source[1]?.length) given.push(source);
  const requested = [...new Set(given[0]?.[1] ?? [])];
  if (given.length > 1) {
    log.warn(
      `requested IPs taken from ${given[0]![0]}; ${given
        .slice(1)
        .map(([s]) => s)
        .join(" and ")} ignored`,
      {
        used: given[0]![1],
        ignored: Object.fromEntries(given.slice(1)),
      },
    );
  }
  return {
    command,
    env,
    args,
    conf,
    pluginConfig,
    stdin,
    processEnv,
    log,
    containerId: env.containerId,
    ifName: env.ifName,
    netns: env.netns,
    pod: { namespace: args.K8S_POD_NAMESPACE, name: args.K8S_POD_NAME, uid: args.K8S_POD_UID },
    requestedIps: requested,
    requestedMac: conf.runtimeConfig.mac ?? conf.argsCni.mac ?? args.MAC,
    deviceId: conf.runtimeConfig.deviceID,
  };
}

/** The config's cniVersion when it is readable and supported, for the error document. */
function peekVersion(stdin: string): string | undefined {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === "string" && isSupportedVersion(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** All of stdin through libc (no node:fs; a non-blocking stdin is polled); "" when there is none. */
function readAllStdin(): string {
  try {
    return readAll(0, "stdin").toString("utf8");
  } catch (e) {
    const code = (e as SyscallError).code;
    if (code === "EBADF" || code === "ENXIO") return ""; // no stdin at all
    throw e;
  }
}

/**
 * Entry for an executable: runs the plugin on the real process and exits with its code. An
 * exception escaping anywhere (even from a stray callback) still produces one CNI error.
 */
export async function pluginMain<P>(plugin: PluginSource<P>): Promise<never> {
  let answered = false;
  const io = processIo();
  const write = io.write;
  io.write = (text) => {
    answered = true;
    write(text);
  };
  const crash = (e: unknown) => {
    if (!answered) {
      answered = true;
      try {
        write(JSON.stringify(toCniError(e).toJSON(CURRENT_VERSION)) + "\n");
      } catch {
        // nothing left to report through
      }
    }
    process.exit(1);
  };
  process.on("uncaughtException", crash);
  process.on("unhandledRejection", crash);
  const code = await runPlugin(plugin, io);
  process.exit(code);
}
