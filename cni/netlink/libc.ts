// libc bindings used by the netlink client and namespace helpers. Everything is
// synchronous and runs on the calling thread (setns affects only that thread).
import { koffi } from "./koffi";

const lib = koffi.load("libc.so.6");

export const libc = {
  socket: lib.func("int socket(int domain, int type, int protocol)"),
  bind: lib.func("int bind(int fd, const void *addr, uint32_t len)"),
  getsockname: lib.func("int getsockname(int fd, _Out_ void *addr, _Inout_ uint32_t *len)"),
  setsockopt: lib.func("int setsockopt(int fd, int level, int name, const void *val, uint32_t len)"),
  sendto: lib.func("long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t alen)"),
  recv: lib.func("long recv(int fd, _Out_ void *buf, size_t len, int flags)"),
  close: lib.func("int close(int fd)"),
  open: lib.func("int open(const char *path, int flags, int mode)"),
  setns: lib.func("int setns(int fd, int nstype)"),
  fstatfs: lib.func("int fstatfs(int fd, _Out_ void *buf)"),
  ioctl: lib.func("int ioctl(int fd, unsigned long request, ...)"),
  strerror: lib.func("const char *strerror(int errnum)"),
} as const;

export const AF_NETLINK = 16;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_ROUTE = 0;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_RCVTIMEO = 20;
export const SOL_NETLINK = 270;
export const NETLINK_EXT_ACK = 11;
export const MSG_PEEK = 2;
export const MSG_TRUNC = 0x20;
export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const NSFS_MAGIC = 0x6e736673;
export const NS_GET_NSTYPE = 0xb703;

export const EINTR = 4;

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(koffi.os.errno)) {
  // Several names share a number (EWOULDBLOCK/EAGAIN, EDEADLOCK/EDEADLK); keep the first, canonical one.
  if (!errnoNames.has(num)) errnoNames.set(num, name);
}
errnoNames.set(95, "EOPNOTSUPP"); // the name the kernel's netlink code uses, not ENOTSUP

/** errno of the last failed libc call on this thread. */
export function lastErrno(): number {
  return koffi.errno();
}

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

export function strerror(errno: number): string {
  return String(libc.strerror(errno));
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
export function check(result: number | bigint, what: string): number {
  const n = Number(result);
  if (n < 0) throw new SyscallError(what, lastErrno());
  return n;
}
