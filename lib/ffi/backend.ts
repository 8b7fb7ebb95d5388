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
