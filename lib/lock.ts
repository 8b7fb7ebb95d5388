// An exclusive flock(2) between concurrent plugin calls on one node: the kernel drops the lock when
// a plugin dies, so a crashed call never wedges the next one.
import { EAGAIN, EINTR, LOCK_EX, LOCK_NB, LOCK_UN, O_APPEND, O_CREAT, O_WRONLY, SyscallError, lastErrno, libc } from "./ffi/libc";
import { closeFile, openFile } from "./fileio";
import { OsError } from "./oserror";
import { sleepSync } from "./sleep";

const LOCK_TIMEOUT_MS = 30_000;
const LOCAL_FS = "keep the plugin's stateDir on a local filesystem (tmpfs /run or a local disk)";

/**
 * Runs `fn` holding an exclusive flock on `path`; `what` names what the lock guards. After 30 s
 * of waiting: OsError code ETIMEDOUT (CNI code 11, the runtime retries).
 */
export function withFileLock<T>(path: string, what: string, fn: () => T): T {
  let fd: number;
  try {
    fd = openFile(path, O_WRONLY | O_CREAT | O_APPEND, 0o600);
  } catch (e) {
    const err = e as SyscallError;
    throw new OsError(`cannot open the lock file of ${what}: ${err.message}`, "file", err.code, "open", path, LOCAL_FS);
  }
  try {
    const deadline = Date.now() + LOCK_TIMEOUT_MS;
    while (Number(libc.flock(fd, LOCK_EX | LOCK_NB)) !== 0) {
      const errno = lastErrno();
      if (errno !== EAGAIN && errno !== EINTR) {
        const err = new SyscallError(`flock ${JSON.stringify(path)}`, errno);
        throw new OsError(`cannot lock ${path}: ${err.message}`, "file", err.code, "flock", path, LOCAL_FS);
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
    closeFile(fd);
  }
}
