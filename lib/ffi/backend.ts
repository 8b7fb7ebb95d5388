// The libc calls Berth makes, as one contract with two implementations chosen when the code is
// bundled (package.json "imports" #ffi-backend): Bun's built-in FFI in the compiled plugins (no
// native addon, nothing extracted to /tmp) and koffi under Node (ipamd, the tests).
// Pointers are Buffers (or null), filled in place by the call; every call returns a plain number.

export interface LibcBackend {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  connect(fd: number, addr: Buffer, len: number): number;
  /** `len` is a 4-byte socklen_t, read and written by the call. */
  getsockname(fd: number, addr: Buffer, len: Buffer): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, len: number): number;
  /** `len` is a 4-byte socklen_t, read and written by the call. */
  getsockopt(fd: number, level: number, name: number, value: Buffer, len: Buffer): number;
  sendto(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer | null, addrLen: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  close(fd: number): number;
  read(fd: number, buf: Buffer, len: number): number;
  write(fd: number, buf: Buffer, len: number): number;
  fsync(fd: number): number;
  /** getdents64(2) (through syscall(2): glibc before 2.30 has no wrapper); fills `buf` with struct linux_dirent64 records. */
  getdents64(fd: number, buf: Buffer, len: number): number;
  open(path: string, flags: number, mode: number): number;
  rename(from: string, to: string): number;
  unlink(path: string): number;
  mkdir(path: string, mode: number): number;
  /** The link's target into `buf` (not NUL-terminated); returns its length. */
  readlink(path: string, buf: Buffer, len: number): number;
  /** statx(2) into `buf` (256 bytes, the same layout on every architecture), through syscall(2). */
  statx(dirfd: number, path: string, flags: number, mask: number, buf: Buffer): number;
  /** statfs(2); f_type is the first 8 bytes of `buf` (120 bytes) on x86_64 and aarch64. */
  statfs(path: string, buf: Buffer): number;
  access(path: string, mode: number): number;
  /** realpath(3) into `buf` (PATH_MAX bytes, NUL-terminated); 0, or -1 with errno set. */
  realpath(path: string, buf: Buffer): number;
  setns(fd: number, nstype: number): number;
  fstatfs(fd: number, buf: Buffer): number;
  /** ioctl(2) with no argument beyond the request. */
  ioctl(fd: number, request: number): number;
  flock(fd: number, operation: number): number;
  strerror(errno: number): string;
  /** errno of the last failed call on this thread; read it straight after the call. */
  errno(): number;
}

/** Calls that take a path: each backend passes a C string its own way. */
type PathCalls = "open" | "rename" | "unlink" | "mkdir" | "readlink" | "statfs" | "access" | "realpath";

/** The calls both backends pass straight through (path calls, `getdents64`, `strerror` and `errno` differ by backend). */
type Direct = Exclude<keyof LibcBackend, PathCalls | "getdents64" | "statx" | "strerror" | "errno">;
// biome-ignore lint: each FFI library types its functions its own way; the contract above is what counts.
type RawCalls = Record<Direct, (...args: any[]) => unknown>;

/** The pass-through calls of a loaded libc, with ssize_t results (a BigInt under some FFIs) as numbers. */
export function directCalls(c: RawCalls): Pick<LibcBackend, Direct> {
  return {
    socket: (domain, type, protocol) => Number(c.socket(domain, type, protocol)),
    bind: (fd, addr, len) => Number(c.bind(fd, addr, len)),
    connect: (fd, addr, len) => Number(c.connect(fd, addr, len)),
    getsockname: (fd, addr, len) => Number(c.getsockname(fd, addr, len)),
    setsockopt: (fd, level, name, value, len) => Number(c.setsockopt(fd, level, name, value, len)),
    getsockopt: (fd, level, name, value, len) => Number(c.getsockopt(fd, level, name, value, len)),
    sendto: (fd, buf, len, flags, addr, addrLen) => Number(c.sendto(fd, buf, len, flags, addr, addrLen)),
    recv: (fd, buf, len, flags) => Number(c.recv(fd, buf, len, flags)),
    close: (fd) => Number(c.close(fd)),
    read: (fd, buf, len) => Number(c.read(fd, buf, len)),
    write: (fd, buf, len) => Number(c.write(fd, buf, len)),
    fsync: (fd) => Number(c.fsync(fd)),
    setns: (fd, nstype) => Number(c.setns(fd, nstype)),
    fstatfs: (fd, buf) => Number(c.fstatfs(fd, buf)),
    ioctl: (fd, request) => Number(c.ioctl(fd, request)),
    flock: (fd, operation) => Number(c.flock(fd, operation)),
  };
}

/**
 * syscall(2) numbers of the calls made through it (glibc before 2.28 has no statx, before 2.30 no
 * getdents64 wrapper; the plugins need only glibc 2.17): the two architectures the binary is built for.
 */
const SYSCALLS: Record<string, { getdents64: number; statx: number }> = {
  x64: { getdents64: 217, statx: 332 },
  arm64: { getdents64: 61, statx: 291 },
};
export function syscallNumber(name: "getdents64" | "statx", arch = process.arch): number {
  const n = SYSCALLS[arch]?.[name];
  if (n === undefined) throw new Error(`${name}: no syscall number for architecture ${arch}`);
  return n;
}
