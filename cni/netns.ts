// Network namespaces: Netns opens one with a netlink socket bound inside it, and enters it on the
// calling thread for the duration of a synchronous function, always coming back; sysctl under
// /proc/sys/net of the current namespace.
//
// setns(2) moves only the calling thread. The function given to Netns.enter must therefore be
// synchronous: async fs calls or worker threads would run in the original namespace.
import { readLink, readTextFile, writeTextFile } from "../lib/fileio";
import {
  CLONE_NEWNET,
  NSFS_MAGIC,
  NS_GET_NSTYPE,
  O_CLOEXEC,
  O_RDONLY,
  SyscallError,
  check,
  lastErrno,
  libc,
  strerror,
} from "../lib/ffi/libc";
import { NetlinkSocket } from "./netlink/socket";
import { OsError } from "../lib/oserror";

const SELF_NETNS = "/proc/thread-self/ns/net";

/** Raised when a namespace path is missing or is not a network namespace, or a sysctl in it fails. */
export class NetnsError extends OsError {
  constructor(message: string, code: string, operation = "setns", object?: string) {
    super(message, "netns", code, operation, object);
    this.name = "NetnsError";
  }
}

/**
 * Opens a network namespace file (/var/run/netns/X, /proc/PID/ns/net) and checks
 * that it is one; the fd can be given to setLinkNetns or addMacvlan({netnsFd}).
 * Close it with closeFd.
 */
export function openNetnsFd(nsPath: string): number {
  const fd = Number(libc.open(nsPath, O_RDONLY | O_CLOEXEC, 0));
  if (fd < 0) {
    const e = new SyscallError(`open network namespace "${nsPath}"`, lastErrno());
    throw new NetnsError(
      e.code === "ENOENT" ? `network namespace "${nsPath}" does not exist (the container may be gone): ${e.message}` : e.message,
      e.code,
    );
  }
  try {
    const st = Buffer.alloc(120); // struct statfs; f_type is the first field
    check(libc.fstatfs(fd, st), `statfs "${nsPath}"`);
    const magic = Number(st.readBigInt64LE(0));
    if (magic !== NSFS_MAGIC) {
      throw new NetnsError(
        `"${nsPath}" is not a namespace file (filesystem magic 0x${magic.toString(16)}, expected nsfs): ` +
          `pass the path of a network namespace, such as /var/run/netns/NAME or /proc/PID/ns/net`,
        "EINVAL",
      );
    }
    const type = Number(libc.ioctl(fd, NS_GET_NSTYPE));
    if (type >= 0 && type !== CLONE_NEWNET) {
      throw new NetnsError(
        `"${nsPath}" is a namespace but not a network namespace (type 0x${type.toString(16)}): ` +
          `pass a network namespace such as /proc/PID/ns/net`,
        "EINVAL",
      );
    }
    return fd;
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}

export function closeFd(fd: number): void {
  libc.close(fd);
}

function setns(fd: number, what: string): void {
  if (Number(libc.setns(fd, CLONE_NEWNET)) < 0) {
    const e = new SyscallError(what, lastErrno());
    // EINVAL: an nsfs file of another kind (mnt, pid, ...)
    throw new NetnsError(e.code === "EINVAL" ? `${e.message}: not a network namespace` : e.message, e.code);
  }
}

/**
 * Runs `fn` with the calling thread inside the namespace open as `target` (`what` names it in
 * errors) and returns its result; the thread is back in its original namespace when this returns
 * or throws.
 */
function enter<T>(target: number, what: string, fn: () => T): T {
  const original = check(libc.open(SELF_NETNS, O_RDONLY | O_CLOEXEC, 0), `open ${SELF_NETNS}`);
  try {
    setns(target, `setns into "${what}"`);
    try {
      const result = fn();
      if (result && typeof (result as { then?: unknown }).then === "function") {
        throw new TypeError("Netns.enter callbacks must be synchronous: setns applies to this thread only until the callback returns");
      }
      return result;
    } finally {
      if (Number(libc.setns(original, CLONE_NEWNET)) < 0) {
        // Staying in the wrong namespace would make every later call act on the wrong interfaces.
        const err = new SyscallError("FATAL: setns back to the original network namespace", lastErrno());
        process.stderr.write(`${err.message}\n`);
        process.exit(70);
      }
    }
  } finally {
    libc.close(original);
  }
}

/**
 * A network namespace, the one way into one: opened once for a whole command, `fd` to create or
 * move links into it, `nl` a netlink socket bound inside it and used from the host namespace for
 * all rtnetlink work there. Only /proc/sys/net needs the thread inside (`enter`): it shows the
 * namespace of whoever opens it. Close it with close(), or use Netns.use.
 */
export class Netns {
  private constructor(
    readonly path: string,
    readonly fd: number,
    readonly nl: NetlinkSocket,
  ) {}

  static open(path: string): Netns {
    const fd = openNetnsFd(path);
    try {
      return new Netns(
        path,
        fd,
        enter(fd, path, () => NetlinkSocket.open()),
      );
    } catch (e) {
      libc.close(fd);
      throw e;
    }
  }

  /** Opens the namespace at `path`, runs `fn` with it and closes it again. */
  static use<T>(path: string, fn: (ns: Netns) => T): T {
    const ns = Netns.open(path);
    try {
      return fn(ns);
    } finally {
      ns.close();
    }
  }

  /** Runs `fn` (synchronous) with the calling thread inside the namespace, e.g. for setSysctl. */
  enter<T>(fn: () => T): T {
    return enter(this.fd, this.path, fn);
  }

  close(): void {
    this.nl.close();
    libc.close(this.fd);
  }
}

/** Inode of the calling thread's network namespace (to compare namespaces). */
export function currentNetnsInode(): number {
  // "net:[4026531840]"
  const link = readLink(SELF_NETNS);
  const m = /\[(\d+)\]/.exec(link);
  if (!m) throw new Error(`unexpected namespace link ${SELF_NETNS} -> ${link}`);
  return Number(m[1]);
}

// ---- sysctl (in the calling thread's current namespace: call inside Netns.enter)

/**
 * Path under /proc/sys for a key. "net.ipv4.conf.eth0.arp_notify" uses dots;
 * for interface names containing dots (eth0.101) pass the parts as an array or
 * a slash-separated key ("net/ipv4/conf/eth0.101/arp_notify").
 */
function sysctlPath(key: string | string[]): string {
  const parts = Array.isArray(key) ? key : key.includes("/") ? key.split("/") : key.split(".");
  if (parts.length === 0 || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new TypeError(`invalid sysctl key "${Array.isArray(key) ? key.join("/") : key}"`);
  }
  return `/proc/sys/${parts.join("/")}`;
}

export function getSysctl(key: string | string[]): string {
  return readTextFile(sysctlPath(key)).trim();
}

export function setSysctl(key: string | string[], value: string | number): void {
  const path = sysctlPath(key);
  try {
    writeTextFile(path, `${value}\n`);
  } catch (e) {
    const err = e as SyscallError;
    throw new NetnsError(`set sysctl ${path} = ${value}: ${err.code} (${strerror(err.errno)})`, err.code, "write", path);
  }
}

/** sysctl key for an interface: ifaceSysctl(6, "eth0.101", "accept_dad") */
export function ifaceSysctl(family: 4 | 6, ifName: string, key: string): string[] {
  return ["net", family === 4 ? "ipv4" : "ipv6", "conf", ifName, key];
}
