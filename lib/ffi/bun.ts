// libc through Bun's built-in FFI (bun:ffi): dlopen of the system's libc.so.6, no addon.
import { CString, dlopen, read } from "bun:ffi";
import { directCalls, syscallNumber, type LibcBackend } from "./backend";

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
  read: { args: ["i32", "ptr", "usize"], returns: "i64_fast" },
  write: { args: ["i32", "ptr", "usize"], returns: "i64_fast" },
  fsync: { args: ["i32"], returns: "i32" },
  // Variadic in C; with only integer and pointer arguments the x86_64 and aarch64 conventions match.
  // One signature for both calls made through it: (number, int, pointer, long, long, pointer).
  syscall: { args: ["i64", "i64", "ptr", "i64", "i64", "ptr"], returns: "i64_fast" },
  open: { args: ["ptr", "i32", "i32"], returns: "i32" },
  rename: { args: ["ptr", "ptr"], returns: "i32" },
  unlink: { args: ["ptr"], returns: "i32" },
  mkdir: { args: ["ptr", "u32"], returns: "i32" },
  readlink: { args: ["ptr", "ptr", "usize"], returns: "i64_fast" },
  statfs: { args: ["ptr", "ptr"], returns: "i32" },
  access: { args: ["ptr", "i32"], returns: "i32" },
  realpath: { args: ["ptr", "ptr"], returns: "ptr" },
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

/** A path as a NUL-terminated C string. */
const cstr = (path: string): Buffer => Buffer.from(`${path}\0`);

export const backend: LibcBackend = {
  ...directCalls(c),
  getdents64: (fd, buf, len) => Number(c.syscall(syscallNumber("getdents64"), fd, buf, len, 0, null)),
  statx: (dirfd, path, flags, mask, buf) => Number(c.syscall(syscallNumber("statx"), dirfd, cstr(path), flags, mask, buf)),
  open: (path, flags, mode) => c.open(cstr(path), flags, mode),
  rename: (from, to) => c.rename(cstr(from), cstr(to)),
  unlink: (path) => c.unlink(cstr(path)),
  mkdir: (path, mode) => c.mkdir(cstr(path), mode),
  readlink: (path, buf, len) => Number(c.readlink(cstr(path), buf, len)),
  statfs: (path, buf) => c.statfs(cstr(path), buf),
  access: (path, mode) => c.access(cstr(path), mode),
  realpath: (path, buf) => (c.realpath(cstr(path), buf) === null ? -1 : 0),
  strerror: (errno) => new CString(c.strerror(errno)!).toString(),
  errno: () => read.i32(errnoAddress, 0),
};
