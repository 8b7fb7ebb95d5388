// Plugin log: JSON lines appended to `logFile` from the network config. Off by default and never
// written to stdout/stderr (stdout carries the CNI result). Its directory is created on the first
// line (/var/log/berth exists on no fresh node). A failing log write is ignored: the log must never
// change what the plugin answers.
import { appendTextFile, makeDirs } from "../../lib/fileio";
import { dirname } from "../../lib/paths";

export type LogLevel = "debug" | "info" | "warn" | "error";
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Returns a logger that adds `fields` to every line. */
  with(fields: Record<string, unknown>): Logger;
}

export function isLogLevel(v: unknown): v is LogLevel {
  return typeof v === "string" && v in LEVELS;
}

/** Log files whose directory this process has already made sure of. */
const directoryReady = new Set<string>();

export function createLogger(file: string | undefined, level: LogLevel = "info", base: Record<string, unknown> = {}): Logger {
  const min = LEVELS[level];
  const write = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (!file || LEVELS[lvl] < min) return;
    try {
      if (!directoryReady.has(file)) {
        directoryReady.add(file);
        makeDirs(dirname(file), 0o750);
      }
      appendTextFile(
        file,
        JSON.stringify({ time: new Date().toISOString(), level: lvl, pid: process.pid, ...base, msg, ...fields }) + "\n",
      );
    } catch {
      // ignored on purpose, see above
    }
  };
  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    with: (fields) => createLogger(file, level, { ...base, ...fields }),
  };
}

export const nullLogger: Logger = createLogger(undefined);
