// ipamd entry point: node-local IPAM daemon for Berth.
import { Command, InvalidArgumentError, Option } from "commander";
import { mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import pino from "pino";
import { ConfigError, LOG_LEVELS, type LogLevel, loadConfig } from "./config";
import { LogSink } from "./log-sink";
import { startDaemon } from "./daemon";
import { VERSION } from "./server";
import { StoreError } from "./store/database";

function collectLabel(value: string, previous: Record<string, string>): Record<string, string> {
  const i = value.indexOf("=");
  if (i <= 0) throw new InvalidArgumentError(`expected key=value, got "${value}"`);
  return { ...previous, [value.slice(0, i)]: value.slice(i + 1) };
}

async function main(): Promise<void> {
  const program = new Command("ipamd")
    .description("Berth node-local IPAM daemon")
    .version(VERSION)
    .option("--config <path>", "config file", "/etc/berth/ipamd.json")
    .option("--socket <path>", "unix socket to serve (default from config, else /run/berth/ipamd.sock)")
    .option("--db <path>", "SQLite database file (default from config, else /var/lib/berth/ipamd.db)")
    .option("--node-name <name>", "this node's name (default from config or $NODE_NAME)")
    .option("--node-label <key=value>", "a node label (repeatable; overrides the config's labels)", collectLabel, {})
    .option("--metrics-address <host:port>", "also serve GET /metrics on this TCP address")
    .option("--kubeconfig <path>", "talk to the Kubernetes API with this kubeconfig (default: in-cluster config, else $KUBECONFIG)")
    .option("--spool-dir <path>", "release records of DELs made while ipamd was unreachable (default <db dir>/spool)")
    .option("--log-file <path>", "write JSON logs to this file instead of stderr")
    .addOption(
      new Option("--log-level <level>", "log level (default from config logLevel, else info; the audit trail is at info)").choices(
        LOG_LEVELS,
      ),
    )
    .option(
      "--accept-data-loss",
      "start although the database lost acknowledged commits, or is missing or new while this node " +
        "has attachments (pods may hold addresses it does not know: run a CNI GC per network afterwards)",
    )
    .parse();
  const opts = program.opts<{
    config: string;
    socket?: string;
    db?: string;
    nodeName?: string;
    nodeLabel: Record<string, string>;
    metricsAddress?: string;
    logFile?: string;
    logLevel?: LogLevel;
    kubeconfig?: string;
    spoolDir?: string;
    acceptDataLoss?: boolean;
  }>();
  // Everything ipamd creates is root's alone (database, WAL, logs, spool, marker); the socket's mode is set at bind.
  process.umask(0o077);

  let config;
  try {
    config = loadConfig(opts.config, {
      socket: opts.socket,
      database: opts.db,
      spoolDir: opts.spoolDir,
      nodeName: opts.nodeName,
      nodeLabels: Object.keys(opts.nodeLabel).length ? opts.nodeLabel : undefined,
      metricsAddress: opts.metricsAddress,
      logFile: opts.logFile,
      logLevel: opts.logLevel,
      kubeconfig: opts.kubeconfig,
    });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`ipamd: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  // Asynchronous writes: a line per change (the audit trail) must not stall the daemon on a slow reader
  // of stderr (journald, a full pipe). Every change is also an event in the database (events.ts); what is
  // still buffered is written out before any exit but a kill -9.
  const dest = new LogSink(openLog(config.logFile));
  const log = pino({ base: { service: "ipamd", node: config.nodeName }, level: config.logLevel }, dest);
  const exit = (code: number): never => {
    try {
      dest.flushSync();
    } catch {
      // nothing more can be said: the log itself is what failed
    }
    process.exit(code);
  };

  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  try {
    daemon = await startDaemon(config, log, { acceptDataLoss: opts.acceptDataLoss });
  } catch (e) {
    const msg = e instanceof StoreError ? e.message : `cannot start: ${(e as Error).message}`;
    log.fatal(msg);
    process.stderr.write(`ipamd: ${msg}\n`);
    exit(1);
  }

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    const force = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      exit(1);
    }, 15_000);
    force.unref();
    daemon.close().then(
      () => {
        log.info("stopped");
        exit(0);
      },
      (e) => {
        log.error({ err: e }, "shutdown failed");
        exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("uncaughtException", (e) => {
    log.fatal({ err: e }, "uncaught exception");
    exit(70);
  });
}

/** The log file opened here, synchronously, so that even a failure at start-up reaches it; stderr without one. */
function openLog(path: string | undefined): number {
  if (!path) return 2;
  try {
    mkdirSync(dirname(path), { recursive: true });
    return openSync(path, "a");
  } catch (e) {
    process.stderr.write(`ipamd: cannot open the log file ${path}: ${(e as Error).message}; fix its directory or set another logFile\n`);
    process.exit(2);
  }
}

void main();
