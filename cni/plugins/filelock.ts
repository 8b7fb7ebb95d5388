// Exclusive locks between concurrent plugin calls on one node. flock(2): the kernel drops the
// lock when a plugin dies, so a crashed call never wedges the next one.
import { closeSync, openSync } from "node:fs";
import { EINTR, EAGAIN, LOCK_EX, LOCK_NB, LOCK_UN, lastErrno, libc } from "../../lib/ffi/libc";
import { CniError, ErrorCode } from "../spec/errors";

const LOCK_TIMEOUT_MS = 30_000;

/** Runs `fn` holding an exclusive flock on `path` (CNI code 11 after 30 s of waiting). */
export function withFileLock<T>(path: string, what: string, fn: () => T): T {
  const fd = openSync(path, "a", 0o600);
  try {
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    const deadline = Date.now() + LOCK_TIMEOUT_MS;
    while (libc.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      const errno = lastErrno();
      if (errno !== EAGAIN && errno !== EINTR) {
        throw new CniError(ErrorCode.IOFailure, `cannot lock ${path}: errno ${errno}`,
          "keep the plugin's stateDir on a local filesystem (tmpfs /run or a local disk)");
      }
      if (Date.now() > deadline) {
        throw new CniError(ErrorCode.TryAgainLater, `timed out after ${LOCK_TIMEOUT_MS / 1000} s waiting for the lock on ${what} (${path})`,
          `another plugin call holds it; if one is hung, find it with \`fuser ${path}\`; the runtime retries`);
      }
      Atomics.wait(sleeper, 0, 0, 10);
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
