// libc through koffi, for code running under Node: ipamd (its esbuild bundle ships koffi.node
// beside itself) and the test suites that drive the netlink code in-process.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type * as Koffi from "koffi";
import type { LibcBackend } from "./backend";

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
  open: lib.func("int open(const char *path, int flags, int mode)"),
  setns: lib.func("int setns(int fd, int nstype)"),
  fstatfs: lib.func("int fstatfs(int fd, void *buf)"),
  ioctl: lib.func("int ioctl(int fd, unsigned long request, ...)"),
  flock: lib.func("int flock(int fd, int operation)"),
  strerror: lib.func("const char *strerror(int errnum)"),
};

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
  open: (path, flags, mode) => c.open(path, flags, mode),
  setns: (fd, nstype) => c.setns(fd, nstype),
  fstatfs: (fd, buf) => c.fstatfs(fd, buf),
  ioctl: (fd, request) => c.ioctl(fd, request),
  flock: (fd, operation) => c.flock(fd, operation),
  strerror: (errno) => String(c.strerror(errno)),
  errno: () => koffi.errno(),
};
