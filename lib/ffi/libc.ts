// The one libc binding of Berth: the calls the netlink client, the namespace code, file locks and
// ipamd's peer credentials make. Everything is synchronous and runs on the calling thread (setns
// affects only that thread). "#ffi-backend" is Bun's FFI in the compiled plugins, koffi under Node.
import { backend } from "#ffi-backend";
import { errnoName } from "./errno";

export { EAGAIN, EEXIST, EINPROGRESS, EINTR, EIO, ENAMETOOLONG, ENOENT, errnoName } from "./errno";

export const libc = backend;

export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_PEERCRED = 17;
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
export const MSG_NOSIGNAL = 0x4000;
export const SOL_NETLINK = 270;
export const NETLINK_EXT_ACK = 11;
export const MSG_PEEK = 2;
export const MSG_TRUNC = 0x20;
// open(2) flags with the same value on x86_64 and aarch64 (O_DIRECTORY, O_NOFOLLOW differ: not used).
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_CLOEXEC = 0o2000000;
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const STATX_BASIC_STATS = 0x7ff;
export const X_OK = 1;
export const CLONE_NEWNET = 0x40000000;
export const NSFS_MAGIC = 0x6e736673;
export const NS_GET_NSTYPE = 0xb703;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** errno of the last failed libc call on this thread. */
export function lastErrno(): number {
  return backend.errno();
}

export function strerror(errno: number): string {
  return backend.strerror(errno);
}

/** Error of a failed system call, with the errno name in `.code` like Node's own errors. */
export class SyscallError extends Error {
  readonly errno: number;
  readonly code: string;
  constructor(what: string, errno: number) {
    super(`${what}: ${errnoName(errno)} (${strerror(errno)})`);
    this.name = "SyscallError";
    this.errno = errno;
    this.code = errnoName(errno);
  }
}

/** Throws SyscallError when a libc call returned a negative value. */
export function check(result: number, what: string): number {
  if (result < 0) throw new SyscallError(what, lastErrno());
  return result;
}
