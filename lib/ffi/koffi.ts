// libc through koffi, for code running under Node: ipamd (its esbuild bundle ships koffi.node
// beside itself) and the test suites that drive the netlink code in-process.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type * as Koffi from "koffi";
import { directCalls, syscallNumber, type LibcBackend } from "./backend";

function loadKoffi(): typeof Koffi {
  const require = createRequire(import.meta.url);
  const beside = fileURLToPath(new URL("./koffi.node", import.meta.url));
  return existsSync(beside) ? require(beside) : require("koffi");
}

const koffi = loadKoffi();
const lib = koffi.load("libc.so.6");

const c = {
  socket: lib.func("int socket(int domain, int type, int protocol)"),
  bind: lib.func("int bind(int fd, const void *addr, uint32_t len)"),
  connect: lib.func("int connect(int fd, const void *addr, uint32_t len)"),
  getsockname: lib.func("int getsockname(int fd, void *addr, void *len)"),
  setsockopt: lib.func("int setsockopt(int fd, int level, int name, const void *val, uint32_t len)"),
  getsockopt: lib.func("int getsockopt(int fd, int level, int name, void *val, void *len)"),
  sendto: lib.func("long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t alen)"),
  recv: lib.func("long recv(int fd, void *buf, size_t len, int flags)"),
  close: lib.func("int close(int fd)"),
  read: lib.func("long read(int fd, void *buf, size_t len)"),
  write: lib.func("long write(int fd, const void *buf, size_t len)"),
  fsync: lib.func("int fsync(int fd)"),
  syscall: lib.func("long syscall(long number, ...)"),
  open: lib.func("int open(const char *path, int flags, int mode)"),
  rename: lib.func("int rename(const char *from, const char *to)"),
  unlink: lib.func("int unlink(const char *path)"),
  mkdir: lib.func("int mkdir(const char *path, uint32_t mode)"),
  readlink: lib.func("long readlink(const char *path, void *buf, size_t len)"),
  statfs: lib.func("int statfs(const char *path, void *buf)"),
  access: lib.func("int access(const char *path, int mode)"),
  realpath: lib.func("void *realpath(const char *path, void *resolved)"),
  setns: lib.func("int setns(int fd, int nstype)"),
  fstatfs: lib.func("int fstatfs(int fd, void *buf)"),
  ioctl: lib.func("int ioctl(int fd, unsigned long request, ...)"),
  flock: lib.func("int flock(int fd, int operation)"),
  strerror: lib.func("const char *strerror(int errnum)"),
};

export const backend: LibcBackend = {
  ...directCalls(c),
  getdents64: (fd, buf, len) => Number(c.syscall(syscallNumber("getdents64"), "int", fd, "void *", buf, "size_t", len)),
  statx: (dirfd, path, flags, mask, buf) =>
    Number(c.syscall(syscallNumber("statx"), "int", dirfd, "const char *", path, "int", flags, "unsigned int", mask, "void *", buf)),
  open: (path, flags, mode) => c.open(path, flags, mode),
  rename: (from, to) => c.rename(from, to),
  unlink: (path) => c.unlink(path),
  mkdir: (path, mode) => c.mkdir(path, mode),
  readlink: (path, buf, len) => Number(c.readlink(path, buf, len)),
  statfs: (path, buf) => c.statfs(path, buf),
  access: (path, mode) => c.access(path, mode),
  realpath: (path, buf) => (c.realpath(path, buf) === null ? -1 : 0),
  strerror: (errno) => String(c.strerror(errno)),
  errno: () => koffi.errno(),
};
