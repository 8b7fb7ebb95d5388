// Opens the SQLite database: durable settings, integrity check, versioned migrations. Every write
// goes through a transaction committed with synchronous=FULL before any reply leaves the daemon.
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import type { DatabaseSync } from "node:sqlite";
import { MIGRATIONS, UNIQUE_INDEXES } from "./schema";

/** A prepared statement, typed as loosely as better-sqlite3's: callers cast the rows they read. */
export interface Statement {
  run(...params: unknown[]): { changes: number; lastInsertRowid: number | bigint };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}

/** node:sqlite with the two better-sqlite3 conveniences the daemon relies on: pragma() and transaction(). */
export class DB {
  private readonly raw: DatabaseSync;

  constructor(path: string) {
    this.raw = new (sqlite().DatabaseSync)(path);
  }

  prepare(sql: string): Statement {
    return this.raw.prepare(sql) as unknown as Statement;
  }

  exec(sql: string): void {
    this.raw.exec(sql);
  }

  /** The pragma's rows, or with `simple` the first column of the first row. */
  pragma(source: string, options: { simple?: boolean } = {}): unknown {
    const rows = this.raw.prepare(`PRAGMA ${source}`).all();
    return options.simple ? Object.values(rows[0] ?? {})[0] : rows;
  }

  /**
   * As better-sqlite3's: BEGIN ... COMMIT at the outermost level, a savepoint when nested (the group
   * commit gives each request one, so a failing request leaves the others of its batch intact).
   * A throw rolls back that level and rethrows.
   */
  transaction<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    return (...args: A): R => {
      const nested = this.raw.isTransaction;
      this.raw.exec(nested ? "SAVEPOINT request" : "BEGIN");
      try {
        const result = fn(...args);
        this.raw.exec(nested ? "RELEASE request" : "COMMIT");
        return result;
      } catch (e) {
        if (this.raw.isTransaction) this.raw.exec(nested ? "ROLLBACK TO request; RELEASE request" : "ROLLBACK");
        throw e;
      }
    };
  }

  get inTransaction(): boolean {
    return this.raw.isTransaction;
  }

  close(): void {
    this.raw.close();
  }
}

export class StoreError extends Error {}

/** node:sqlite, loaded at run time so that an older Node gets this message, not a failed import of the bundle. */
function sqlite(): typeof import("node:sqlite") {
  const major = Number(process.versions.node.split(".")[0]);
  const mod = major >= 24 ? process.getBuiltinModule("node:sqlite") : undefined;
  if (!mod) {
    throw new StoreError(
      `ipamd needs Node.js 24 or newer (its SQLite is node:sqlite); ${process.execPath} is ${process.version}. ` +
        "Run it with a Node.js 24 LTS binary (the project's node_modules/.bin/node, or the node:24 image).",
    );
  }
  return mod;
}

interface OpenOptions {
  /** A unique index was missing and has been re-created (the message says which). */
  onRepair?: (message: string) => void;
}

export function openStore(path: string, options: OpenOptions = {}): DB {
  const dir = dirname(path);
  if (path !== ":memory:" && !existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (path !== ":memory:" && existsSync(path) && statSync(path).size === 0) {
    // SQLite would take an empty file for a new database: ipamd would start with no reservations.
    throw new StoreError(
      `database ${path} is an empty file (0 bytes), not a database: its reservations are gone (truncated, ` +
        "or a failed copy/restore). Restore it from a backup; only if this node has no running pods on Berth networks, " +
        "remove the file and start again with --accept-data-loss.",
    );
  }
  let db: DB;
  try {
    db = new DB(path);
    db.pragma("journal_mode = WAL");
  } catch (e) {
    if (e instanceof StoreError) throw e;
    throw new StoreError(`cannot open database ${path}: ${(e as Error).message}.${corruptionHint(e)}`);
  }
  try {
    db.pragma("synchronous = FULL");
    db.pragma("busy_timeout = 5000");
    db.pragma("foreign_keys = ON");
    const check = db.pragma("integrity_check", { simple: false }) as { integrity_check: string }[];
    const problems = check.map((r) => r.integrity_check).filter((s) => s !== "ok");
    if (problems.length > 0) {
      throw new StoreError(
        `database ${path} failed PRAGMA integrity_check: ${problems.slice(0, 5).join("; ")}. ` +
          "Stop here: restore the file from a backup or move it aside (its reservations are lost).",
      );
    }
    migrate(db, path);
    checkUniqueIndexes(db, path, options.onRepair);
  } catch (e) {
    db.close();
    if (e instanceof StoreError) throw e;
    throw new StoreError(`cannot use database ${path}: ${(e as Error).message}.${corruptionHint(e)}`);
  }
  return db;
}

function migrate(db: DB, path: string): void {
  const current = db.pragma("user_version", { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new StoreError(
      `database ${path} has schema version ${current}, newer than this ipamd knows (${MIGRATIONS.length}); run a newer ipamd`,
    );
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

/**
 * The unique indexes are what stops one address being held twice: a missing one is re-created
 * (which fails, naming the duplicates, when the table already holds an address twice).
 */
function checkUniqueIndexes(db: DB, path: string, onRepair?: (message: string) => void): void {
  const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index'").all() as { name: string }[];
  const present = new Set(indexes.map((r) => r.name));
  for (const [name, sql] of Object.entries(UNIQUE_INDEXES)) {
    if (present.has(name)) continue;
    try {
      db.exec(sql);
    } catch (e) {
      const dups = (
        db.prepare("SELECT ip, count(*) AS n FROM reservations GROUP BY ip HAVING n > 1 LIMIT 5").all() as { ip: string }[]
      ).map((r) => r.ip);
      throw new StoreError(
        `database ${path} lacks its unique index ${name} and it cannot be re-created (${(e as Error).message})` +
          (dups.length ? `: addresses held twice: ${dups.join(", ")}` : "") +
          ". Stop here: release the duplicates with sqlite3 (keep the row of the pod that runs), or restore a backup.",
      );
    }
    onRepair?.(`database ${path} lacked its unique index ${name}; re-created it (no duplicates found)`);
  }
}

const SQLITE_CORRUPT = 11;
const SQLITE_NOTADB = 26;

function corruptionHint(e: unknown): string {
  const primary = ((e as { errcode?: number }).errcode ?? 0) & 0xff; // node:sqlite's extended result code
  return primary === SQLITE_CORRUPT || primary === SQLITE_NOTADB
    ? " The file is corrupt or not an SQLite database: restore it from a backup, or move it aside (its reservations are lost)."
    : "";
}
