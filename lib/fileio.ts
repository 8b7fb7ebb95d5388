// Synchronous file calls over libc (lib/ffi) for the plugins: stdin and stdout, state files,
// sysctls, locks, /proc and /sys. Loading Bun's node:fs costs every compiled plugin start
// ~1.2-1.5 ms, more than the file work itself; ipamd and ipamctl keep node:fs.
// A failed call throws SyscallError: the errno name in `.code` (as Node's errors have it), the
// call and the path in the message. EINTR is retried; EAGAIN (a non-blocking descriptor the
// runtime handed over) is waited out.
import {
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  EAGAIN,
  EEXIST,
  EINTR,
  EIO,
  ENAMETOOLONG,
  ENOENT,
  O_APPEND,
  O_CLOEXEC,
  O_CREAT,
  O_RDONLY,
  O_TRUNC,
  O_WRONLY,
  STATX_BASIC_STATS,
  SyscallError,
  X_OK,
  lastErrno,
  libc,
} from "./ffi/libc";
import { dirname } from "./paths";
import { sleepSync } from "./sleep";

const PATH_MAX = 4096;
const CHUNK = 65536;

/** Throws the SyscallError of the call that just failed. */
function fail(what: string, errno = lastErrno()): never {
  throw new SyscallError(what, errno);
}

const q = (path: string): string => JSON.stringify(path);

/** Opens `path` (O_CLOEXEC always added); mode for a created file. */
export function openFile(path: string, flags: number, mode = 0o666): number {
  for (;;) {
    const fd = libc.open(path, flags | O_CLOEXEC, mode);
    if (fd >= 0) return fd;
    if (lastErrno() !== EINTR) fail(`open ${q(path)}`);
  }
}

/** Closes `fd`; its errors are not reported (a write that mattered was fsync-ed first). */
export function closeFile(fd: number): void {
  libc.close(fd);
}

/** Everything `fd` still has to give, to its end. `what` names it in errors. */
export function readAll(fd: number, what: string): Buffer {
  const chunks: Buffer[] = [];
  for (;;) {
    const buf = Buffer.allocUnsafe(CHUNK);
    const n = libc.read(fd, buf, buf.length);
    if (n > 0) {
      chunks.push(buf.subarray(0, n));
      continue;
    }
    if (n === 0) break;
    const errno = lastErrno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) {
      sleepSync(5);
      continue;
    }
    fail(`read ${what}`, errno);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** Writes all of `data` to `fd`, looping over partial writes. `what` names it in errors. */
export function writeAll(fd: number, data: string | Uint8Array, what: string): void {
  const buf = typeof data === "string" ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let off = 0;
  while (off < buf.length) {
    const n = libc.write(fd, off === 0 ? buf : buf.subarray(off), buf.length - off);
    if (n > 0) {
      off += n;
      continue;
    }
    if (n === 0) fail(`write ${what}: no progress`, EIO);
    const errno = lastErrno();
    if (errno === EINTR) continue;
    if (errno === EAGAIN) {
      sleepSync(1);
      continue;
    }
    fail(`write ${what}`, errno);
  }
}

/** fsync(2) of `fd`: its data and metadata are on disk when this returns. */
export function syncFile(fd: number, what: string): void {
  while (libc.fsync(fd) < 0) {
    const errno = lastErrno();
    if (errno !== EINTR) fail(`fsync ${what}`, errno);
  }
}

/** The file's content as UTF-8. */
export function readTextFile(path: string): string {
  const fd = openFile(path, O_RDONLY);
  try {
    return readAll(fd, q(path)).toString("utf8");
  } finally {
    closeFile(fd);
  }
}

/** Replaces the file's content (created with `mode` when missing; no fsync: see lib/files writeFileAtomic). */
export function writeTextFile(path: string, text: string, mode = 0o666): void {
  writeText(path, text, O_TRUNC, mode);
}

/** Appends `text` to the file (created with `mode` when missing). */
export function appendTextFile(path: string, text: string, mode = 0o666): void {
  writeText(path, text, O_APPEND, mode);
}

function writeText(path: string, text: string, how: typeof O_TRUNC | typeof O_APPEND, mode: number): void {
  const fd = openFile(path, O_WRONLY | O_CREAT | how, mode);
  try {
    writeAll(fd, text, q(path));
  } finally {
    closeFile(fd);
  }
}

export function renameFile(from: string, to: string): void {
  if (libc.rename(from, to) < 0) fail(`rename ${q(from)} to ${q(to)}`);
}

export function unlinkFile(path: string): void {
  if (libc.unlink(path) < 0) fail(`unlink ${q(path)}`);
}

/** Creates `path` and its missing parents with `mode` (as mkdir -p); an existing directory is fine. */
export function makeDirs(path: string, mode: number): void {
  if (libc.mkdir(path, mode) === 0) return;
  let errno = lastErrno();
  if (errno === ENOENT) {
    const parent = dirname(path);
    if (parent !== path) {
      makeDirs(parent, mode);
      if (libc.mkdir(path, mode) === 0) return;
      errno = lastErrno();
    }
  }
  if (errno === EEXIST && statOrUndefined(path)?.type === "directory") return;
  fail(`mkdir ${q(path)}`, errno);
}

export type FileType = "file" | "directory" | "symlink" | "other";

export interface FileStat {
  type: FileType;
  /** permission bits (and setuid/setgid/sticky) */
  mode: number;
  ino: number;
  /** "major:minor" of the device the file is on */
  dev: string;
  size: number;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

function fileType(mode: number): FileType {
  const t = mode & S_IFMT;
  return t === S_IFREG ? "file" : t === S_IFDIR ? "directory" : t === S_IFLNK ? "symlink" : "other";
}

/** statx(2) of `path`; `follow: false` describes a symlink itself (lstat). */
export function statPath(path: string, follow = true): FileStat {
  const buf = Buffer.alloc(256);
  if (libc.statx(AT_FDCWD, path, follow ? 0 : AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, buf) < 0) {
    fail(`${follow ? "stat" : "lstat"} ${q(path)}`);
  }
  // struct statx: stx_mode u16 at 28, stx_ino u64 at 32, stx_size u64 at 40, stx_dev_major/minor u32 at 136/140.
  const mode = buf.readUInt16LE(28);
  return {
    type: fileType(mode),
    mode: mode & ~S_IFMT,
    ino: Number(buf.readBigUInt64LE(32)),
    size: Number(buf.readBigUInt64LE(40)),
    dev: `${buf.readUInt32LE(136)}:${buf.readUInt32LE(140)}`,
  };
}

/** statPath, undefined when nothing is there (ENOENT, ENOTDIR). */
export function statOrUndefined(path: string, follow = true): FileStat | undefined {
  try {
    return statPath(path, follow);
  } catch (e) {
    const code = (e as SyscallError).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw e;
  }
}

/** True when `path` names something (symlinks followed), as node:fs existsSync: any error is false. */
export function exists(path: string): boolean {
  try {
    statPath(path);
    return true;
  } catch {
    return false;
  }
}

/** f_type of the filesystem `path` is on (statfs(2)), e.g. 0x6e736673 for nsfs. */
export function filesystemType(path: string): number {
  const buf = Buffer.alloc(120);
  if (libc.statfs(path, buf) < 0) fail(`statfs ${q(path)}`);
  return Number(buf.readBigInt64LE(0));
}

/** The calling process may execute `path` (access(2) X_OK). */
export function isExecutable(path: string): boolean {
  return libc.access(path, X_OK) === 0;
}

/** The target of symlink `path`, as stored. */
export function readLink(path: string): string {
  const buf = Buffer.allocUnsafe(PATH_MAX);
  const n = libc.readlink(path, buf, buf.length);
  if (n < 0) fail(`readlink ${q(path)}`);
  if (n === buf.length) fail(`readlink ${q(path)}`, ENAMETOOLONG); // readlink(2) cuts a longer target silently
  return buf.toString("utf8", 0, n);
}

/** The absolute path with every symlink resolved (realpath(3)). */
export function realPath(path: string): string {
  const buf = Buffer.alloc(PATH_MAX);
  if (libc.realpath(path, buf) < 0) fail(`realpath ${q(path)}`);
  return buf.toString("utf8", 0, buf.indexOf(0));
}

/** Names in directory `path`, without "." and "..", in the directory's order (as node:fs readdirSync). */
export function readDir(path: string): string[] {
  const fd = openFile(path, O_RDONLY);
  const names: string[] = [];
  try {
    const buf = Buffer.allocUnsafe(32768);
    for (;;) {
      const n = libc.getdents64(fd, buf, buf.length);
      if (n === 0) break;
      if (n < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        fail(`readdir ${q(path)}`, errno);
      }
      // struct linux_dirent64: d_ino u64, d_off s64, d_reclen u16 at 16, d_type u8 at 18, d_name at 19 (NUL-terminated).
      for (let off = 0; off < n; ) {
        const reclen = buf.readUInt16LE(off + 16);
        const end = buf.indexOf(0, off + 19);
        const name = buf.toString("utf8", off + 19, end < 0 || end > off + reclen ? off + reclen : end);
        if (name !== "." && name !== "..") names.push(name);
        off += reclen;
      }
    }
  } finally {
    closeFile(fd);
  }
  return names;
}
