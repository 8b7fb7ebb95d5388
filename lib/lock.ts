// An exclusive flock(2) between concurrent plugin calls on one node: the kernel drops the lock when
// a plugin dies, so a crashed call never wedges the next one.
import { closeSync, openSync } from "node:fs";
import { EAGAIN, EINTR, LOCK_EX, LOCK_NB, LOCK_UN, lastErrno, libc } from "./ffi/libc";
import { sleepSync } from "./files";
import { OsError } from "./oserror";

const LOCK_TIMEOUT_MS = 30_000;

/**
 * Runs `fn` holding an exclusive flock on `path`; `what` names what the lock guards. After 30 s
 * of waiting: OsError code ETIMEDOUT (CNI code 11, the runtime retries).
 */
export function withFileLock<T>(path: string, what: string, fn: () => T): T {
  const fd = openSync(path, "a", 0o600);
  try {
    const deadline = Date.now() + LOCK_TIMEOUT_MS;
    while (Number(libc.flock(fd, LOCK_EX | LOCK_NB)) !== 0) {
      const errno = lastErrno();
      if (errno !== EAGAIN && errno !== EINTR) {
        throw new OsError(
          `cannot lock ${path}: errno ${errno}`,
          "file",
          `E${errno}`,
          "flock",
          path,
          "keep the plugin's stateDir on a local filesystem (tmpfs /run or a local disk)",
        );
      }
      if (Date.now() > deadline) {
        throw new OsError(
          `timed out after ${LOCK_TIMEOUT_MS / 1000} s waiting for the lock on ${what} (${path})`,
          "file",
          "ETIMEDOUT",
          "flock",
          path,
          `another plugin call holds it; if one is hung, find it with \`fuser ${path}\`; the runtime retries`,
        );
      }
      sleepSync(10);
    }
    try {
      return fn();
    } finally {
      libc.flock(fd, LOCK_UN);
    }
  } finally {
    closeSync(fd);
  }
}
