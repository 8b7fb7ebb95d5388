// File helpers shared by the plugins: durable atomic writes, JSON state files, removal, and the
// blocking sleep synchronous code waits with. All through libc (lib/fileio.ts): a plugin loads no
// node:fs. The flock between plugin calls is lib/lock.ts.
import type { Stats } from "node:fs";
import { O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY, type SyscallError } from "./ffi/libc";
import { closeFile, openFile, readTextFile, renameFile, syncFile, unlinkFile, writeAll } from "./fileio";
import { OsError } from "./oserror";
import { dirname } from "./paths";

export { sleepSync } from "./sleep";

/** Writes `text` durably: temp file (mode 0600), fsync, rename over `path`, fsync of the directory. */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openFile(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o600);
  try {
    writeAll(fd, text, JSON.stringify(tmp));
    syncFile(fd, JSON.stringify(tmp));
  } finally {
    closeFile(fd);
  }
  renameFile(tmp, path);
  const dir = dirname(path);
  const dirFd = openFile(dir, O_RDONLY);
  try {
    syncFile(dirFd, `directory ${JSON.stringify(dir)}`);
  } finally {
    closeFile(dirFd);
  }
}

/** The JSON in `path`; undefined when there is no such file; OsError (kind file) when it cannot be read. */
export function readJsonFile<T>(path: string, fix: string): T | undefined {
  let text: string;
  try {
    text = readTextFile(path);
  } catch (e) {
    const code = (e as SyscallError).code;
    if (code === "ENOENT") return undefined;
    throw new OsError(`cannot read state file ${path}: ${(e as Error).message}`, "file", code ?? "EIO", "read", path, fix);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new OsError(`cannot read state file ${path}: ${(e as Error).message}`, "file", "EINVAL", "read", path, fix);
  }
}

/** lstat of `path`, undefined when it does not exist (ipamd: node:fs, loaded only when called). */
export function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return process.getBuiltinModule("node:fs").lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** Unlinks `path`; fine when it is already gone. */
export function removeFile(path: string): void {
  try {
    unlinkFile(path);
  } catch (e) {
    if ((e as SyscallError).code !== "ENOENT") throw e;
  }
}
