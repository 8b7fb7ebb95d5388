// File helpers shared by the plugins: durable atomic writes, JSON state files, and the blocking
// sleep synchronous code waits with. The flock between plugin calls is lib/lock.ts: it loads the
// FFI, which a plugin answering VERSION must not.
import { closeSync, fsyncSync, lstatSync, openSync, readFileSync, renameSync, type Stats, unlinkSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { OsError } from "./oserror";

/** Blocks the calling thread for `ms` (synchronous code that must stay on this thread: setns, flock). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Writes `text` durably: temp file (mode 0600), fsync, rename over `path`, fsync of the directory. */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dirFd = openSync(dirname(path), "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

/** The JSON in `path`; undefined when there is no such file; OsError (kind file) when it cannot be read. */
export function readJsonFile<T>(path: string, fix: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new OsError(`cannot read state file ${path}: ${(e as Error).message}`, "file", code ?? "EINVAL", "read", path, fix);
  }
}

/** lstat of `path`, undefined when it does not exist. */
export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** Unlinks `path`; fine when it is already gone. */
export function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}
