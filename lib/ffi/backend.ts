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
  open(path: string, flags: number, mode: number): number;
  setns(fd: number, nstype: number): number;
  fstatfs(fd: number, buf: Buffer): number;
  /** ioctl(2) with no argument beyond the request. */
  ioctl(fd: number, request: number): number;
  flock(fd: number, operation: number): number;
  strerror(errno: number): string;
  /** errno of the last failed call on this thread; read it straight after the call. */
  errno(): number;
}

/** The calls both backends pass straight through (`open`, `strerror` and `errno` differ by backend). */
type Direct = Exclude<keyof LibcBackend, "open" | "strerror" | "errno">;
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
    setns: (fd, nstype) => Number(c.setns(fd, nstype)),
    fstatfs: (fd, buf) => Number(c.fstatfs(fd, buf)),
    ioctl: (fd, request) => Number(c.ioctl(fd, request)),
    flock: (fd, operation) => Number(c.flock(fd, operation)),
  };
}
