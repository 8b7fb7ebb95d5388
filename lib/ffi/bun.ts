// libc through Bun's built-in FFI (bun:ffi): dlopen of the system's libc.so.6, no addon.
import { CString, dlopen, read } from "bun:ffi";
import type { LibcBackend } from "./backend";

const { symbols: c } = dlopen("libc.so.6", {
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
  connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
  getsockname: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  setsockopt: { args: ["i32", "i32", "i32", "ptr", "u32"], returns: "i32" },
  getsockopt: { args: ["i32", "i32", "i32", "ptr", "ptr"], returns: "i32" },
  sendto: { args: ["i32", "ptr", "usize", "i32", "ptr", "u32"], returns: "i64_fast" },
  recv: { args: ["i32", "ptr", "usize", "i32"], returns: "i64_fast" },
  close: { args: ["i32"], returns: "i32" },
  open: { args: ["ptr", "i32", "i32"], returns: "i32" },
  setns: { args: ["i32", "i32"], returns: "i32" },
  fstatfs: { args: ["i32", "ptr"], returns: "i32" },
  // Variadic in C; with only integer arguments the x86_64 and aarch64 calling conventions match.
  ioctl: { args: ["i32", "u64"], returns: "i32" },
  flock: { args: ["i32", "i32"], returns: "i32" },
  strerror: { args: ["i32"], returns: "ptr" },
  __errno_location: { args: [], returns: "ptr" },
});

// errno is thread-local; its address is fixed for the thread, and all of Berth's calls run on one.
const errnoAddress = c.__errno_location()!;

export const backend: LibcBackend = {
  socket: (domain, type, protocol) => c.socket(domain, type, protocol),
  bind: (fd, addr, len) => c.bind(fd, addr, len),
  connect: (fd, addr, len) => c.connect(fd, addr, len),
  getsockname: (fd, addr, len) => c.getsockname(fd, addr, len),
  setsockopt: (fd, level, name, value, len) => c.setsockopt(fd, level, name, value, len),
  getsockopt: (fd, level, name, value, len) => c.getsockopt(fd, level, name, value, len),
  sendto: (fd, buf, len, flags, addr, addrLen) => Number(c.sendto(fd, buf, len, flags, addr, addrLen)),
  recv: (fd, buf, len, flags) => Number(c.recv(fd, buf, len, flags)),
  close: (fd) => c.close(fd),
  open: (path, flags, mode) => c.open(Buffer.from(`${path}\0`), flags, mode),
  setns: (fd, nstype) => c.setns(fd, nstype),
  fstatfs: (fd, buf) => c.fstatfs(fd, buf),
  ioctl: (fd, request) => c.ioctl(fd, request),
  flock: (fd, operation) => c.flock(fd, operation),
  strerror: (errno) => new CString(c.strerror(errno)!).toString(),
  errno: () => read.i32(errnoAddress, 0),
};
