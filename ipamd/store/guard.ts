// What protects the database beyond SQLite itself: who may touch its directory and files, one
// daemon per database (an exclusive lock), the commit sequence recorded outside the WAL (to see
// acknowledged commits that went missing), and the node's record of its attachments kept away
// from the database (to see a database that went missing while pods still hold addresses).
import {
  chmodSync,
  closeSync,
  existsSync,
  fdatasync,
  fdatasyncSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { EAGAIN, LOCK_EX, LOCK_NB, lastErrno, libc } from "../../lib/ffi/libc";
import { lstatOrUndefined } from "../../lib/files";
import { StoreError } from "./database";

const ROOT = 0;

const octal = (mode: number): string => `0${(mode & 0o7777).toString(8)}`;

/**
 * A directory only root may change: created 0700, tightened to 0700 when others may read it (a
 * hostPath kubelet made 0755), refused when it is not root's or others may write it (they could
 * lock, replace or plant files in it).
 */
export function secureDirectory(dir: string, what: string): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (st.isSymbolicLink()) {
    throw new StoreError(`the ${what} ${dir} is a symbolic link; give ipamd the real directory (a link could be swapped under it)`);
  }
  if (!st.isDirectory()) throw new StoreError(`the ${what} ${dir} is not a directory`);
  if (st.uid !== ROOT) {
    throw new StoreError(
      `the ${what} ${dir} is owned by uid ${st.uid}, not root: that user could lock or replace the database. ` +
        `Check its contents, then chown root:root ${dir} && chmod 0700 ${dir}`,
    );
  }
  if (st.mode & 0o022) {
    throw new StoreError(
      `the ${what} ${dir} is writable by ${st.mode & 0o002 ? "every user" : "its group"} (mode ${octal(st.mode)}): ` +
        `others could replace or lock the database. Check its contents, then chmod 0700 ${dir}`,
    );
  }
  if (st.mode & 0o077) chmodSync(dir, 0o700);
}

/** The database's files: regular, root's, not writable by others; tightened to 0600 when others may read them. */
export function secureFiles(paths: string[]): void {
  for (const path of paths) {
    const st = lstatOrUndefined(path);
    if (!st) continue;
    if (st.isSymbolicLink()) throw new StoreError(`${path} is a symbolic link; ipamd does not follow links in its state directory`);
    if (!st.isFile()) throw new StoreError(`${path} is not a regular file; move it aside`);
    if (st.uid !== ROOT) {
      throw new StoreError(
        `${path} is owned by uid ${st.uid}, not root: that user could lock or rewrite it. ` + `Check it, then chown root:root ${path}`,
      );
    }
    if (st.mode & 0o022) {
      throw new StoreError(
        `${path} is writable by others (mode ${octal(st.mode)}): its contents cannot be trusted. ` +
          `Check it (PRAGMA integrity_check), then chmod 0600 ${path}`,
      );
    }
    if (st.mode & 0o077) chmodSync(path, 0o600);
  }
}

/** The database's files next to it (SQLite's and ipamd's). */
export function databaseFiles(db: string): string[] {
  return [db, `${db}-wal`, `${db}-shm`, `${db}-journal`, commitRecordPath(db), `${db}.lock`];
}

/**
 * One daemon per database: an exclusive flock on `<db>.lock` (held until the process exits),
 * holding the owner's PID for the message the second one gives.
 */
export function lockDatabase(db: string): void {
  const path = `${db}.lock`;
  const fd = openSync(path, "a+", 0o600);
  if (Number(libc.flock(fd, LOCK_EX | LOCK_NB)) !== 0) {
    const errno = lastErrno();
    const pid = readFileSync(path, "utf8").trim();
    closeSync(fd);
    if (errno === EAGAIN) {
      throw new StoreError(
        `another ipamd (pid ${pid || "unknown"}) is using the database ${db}; ` +
          "one daemon per database: stop that one first (or give this one another --db and --socket)",
      );
    }
    throw new StoreError(`cannot lock ${path}: errno ${errno}; keep the database on a local filesystem`);
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`);
  // The descriptor stays open: the kernel drops the lock when this process exits, however it exits.
}

// ---------- the commit sequence, outside the WAL ----------

const RECORD_SIZE = 128;

export function commitRecordPath(db: string): string {
  return `${db}.seq`;
}

interface CommitMark {
  database: string;
  seq: number;
}

/**
 * `<db>.seq`: the database's identity and a commit sequence it has made durable, rewritten in place
 * and fdatasync-ed: the batch before each group commit's, while that commit syncs (commit.ts), and the
 * last batch's once none follows. A database found behind it lost acknowledged commits (a damaged
 * or deleted -wal). It may trail the database by the last batch until that batch's record is written.
 */
export class CommitRecord {
  private fd: number | undefined;

  constructor(readonly path: string) {}

  read(): CommitMark | undefined {
    return readMark(this.path);
  }

  write(mark: CommitMark): void {
    fdatasyncSync(this.put(mark));
  }

  /**
   * The same, with the fdatasync in libuv's thread pool: the event loop goes on (the group commit's
   * SQLite fsync overlaps this one) and the promise resolves once the mark is on disk.
   */
  writeAsync(mark: CommitMark): Promise<void> {
    const fd = this.put(mark);
    return new Promise((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));
  }

  private put(mark: CommitMark): number {
    this.fd ??= openSync(this.path, existsSync(this.path) ? "r+" : "w+", 0o600);
    const buf = Buffer.alloc(RECORD_SIZE, " ");
    buf.write(JSON.stringify(mark));
    buf[RECORD_SIZE - 1] = 0x0a;
    writeSync(this.fd, buf, 0, RECORD_SIZE, 0);
    return this.fd;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function readMark(path: string): CommitMark | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    const v = JSON.parse(text) as Partial<CommitMark>;
    return typeof v.database === "string" && typeof v.seq === "number" ? (v as CommitMark) : undefined;
  } catch {
    return undefined;
  }
}

// ---------- the node's record of its attachments, away from the database ----------

/** What the node marker says: which database served this node and how many attachments it had per network. */
interface NodeMark extends CommitMark {
  path: string;
  attached: Record<string, number>;
  at: string;
}

/**
 * `<runtime dir>/ipamd.node.json` (beside the socket, e.g. /run/berth, not in the database's
 * directory): rewritten when the database changes. It lives as long as the node's pods (tmpfs,
 * this boot), so a database that is missing, empty or another one while it says this node has
 * attachments is evidence that running pods hold addresses ipamd no longer knows.
 */
export class NodeMarker {
  constructor(readonly path: string) {}

  read(): NodeMark | undefined {
    const base = readMark(this.path) as NodeMark | undefined;
    return base && typeof (base as Partial<NodeMark>).attached === "object" ? base : undefined;
  }

  write(mark: NodeMark): void {
    const tmp = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(tmp, "w", 0o600);
    try {
      writeSync(fd, JSON.stringify(mark) + "\n");
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }
}

/** Attachment records of the Berth plugins that keep state beside the database (hostdev, sriov). */
export function pluginAttachmentRecords(stateDir: string): string[] {
  const found: string[] = [];
  for (const plugin of ["hostdev", "sriov"]) {
    try {
      for (const f of readdirSync(join(stateDir, plugin))) if (f.endsWith(".json")) found.push(join(stateDir, plugin, f));
    } catch {
      /* no such directory */
    }
  }
  return found;
}
