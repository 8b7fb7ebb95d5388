// libc through Bun's built-in FFI (bun:ffi): dlopen of the system's libc.so.6, no addon.
import { CString, dlopen, read } from "bun:ffi";
import { directCalls, type LibcBackend } from "./backend";

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
  ...directCalls(c),
  open: (path, flags, mode) => c.open(Buffer.from(`${path}\0`), flags, mode),
  strerror: (errno) => new CString(c.strerror(errno)!).toString(),
  errno: () => read.i32(errnoAddress, 0),
};
