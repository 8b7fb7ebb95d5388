// SQLite store: schema, versioned migrations, durable settings. Every write goes through
// a transaction committed with synchronous=FULL before any reply leaves the daemon.
import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { DatabaseSync } from "node:sqlite";

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

  prepare(sql: string): Statement { return this.raw.prepare(sql) as unknown as Statement; }

  exec(sql: string): void { this.raw.exec(sql); }

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

  close(): void { this.raw.close(); }
}

/** Ordered; index + 1 is the schema version stored in PRAGMA user_version. Never edit a shipped entry. */
export const MIGRATIONS: string[] = [
  `
  CREATE TABLE reservations (
    id            INTEGER PRIMARY KEY,
    ip            TEXT NOT NULL,            -- canonical text, unique across all pools
    pool          TEXT NOT NULL,
    family        INTEGER NOT NULL,
    owner         TEXT NOT NULL,            -- ns/sts/ordinal, or containerID/ifName
    kind          TEXT NOT NULL CHECK (kind IN ('statefulset', 'attachment')),
    sticky        INTEGER NOT NULL,
    pinned        INTEGER NOT NULL DEFAULT 0,
    namespace     TEXT,
    statefulset   TEXT,
    ordinal       INTEGER,
    container_id  TEXT,                     -- NULL when detached
    ifname        TEXT,
    network       TEXT,
    pod_namespace TEXT,
    pod_name      TEXT,
    pod_uid       TEXT,
    created_at    INTEGER NOT NULL,
    attached_at   INTEGER,
    detached_at   INTEGER
  );
  CREATE UNIQUE INDEX reservations_ip ON reservations(ip);
  CREATE UNIQUE INDEX reservations_sticky_owner ON reservations(owner, pool) WHERE sticky = 1;
  CREATE UNIQUE INDEX reservations_attachment ON reservations(container_id, ifname, network, pool)
    WHERE container_id IS NOT NULL;
  CREATE INDEX reservations_sts ON reservations(namespace, statefulset, ordinal);
  CREATE INDEX reservations_network ON reservations(network, attached_at) WHERE container_id IS NOT NULL;
  CREATE INDEX reservations_pool ON reservations(pool, container_id);
  CREATE INDEX reservations_detached ON reservations(detached_at) WHERE container_id IS NULL;

  -- Released addresses wait here for the cooldown, then are reused least recently released first.
  CREATE TABLE released (
    ip          TEXT PRIMARY KEY,
    pool        TEXT NOT NULL,
    released_at INTEGER NOT NULL
  );
  CREATE INDEX released_pool_time ON released(pool, released_at);

  -- Per pool: the next never-used candidate address (decimal BigInt text; '' = walked to the end).
  CREATE TABLE pool_cursor (
    pool        TEXT PRIMARY KEY,
    next        TEXT NOT NULL,
    fingerprint TEXT NOT NULL
  );

  -- StatefulSets registered through the API (reserve/pin/register); the config may list more.
  CREATE TABLE statefulsets (
    namespace     TEXT NOT NULL,
    name          TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
  );
  `,
];

export class StoreError extends Error {}

/** node:sqlite, loaded at run time so that an older Node gets this message, not a failed import of the bundle. */
function sqlite(): typeof import("node:sqlite") {
  const major = Number(process.versions.node.split(".")[0]);
  const mod = major >= 24 ? process.getBuiltinModule("node:sqlite") : undefined;
  if (!mod) {
    throw new StoreError(`ipamd needs Node.js 24 or newer (its SQLite is node:sqlite); ${process.execPath} is ${process.version}. ` +
      "Run it with a Node.js 24 LTS binary (the project's node_modules/.bin/node, or the node:24 image).");
  }
  return mod;
}

export function openStore(path: string): DB {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o750 });
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
      throw new StoreError(`database ${path} failed PRAGMA integrity_check: ${problems.slice(0, 5).join("; ")}. ` +
        "Stop here: restore the file from a backup or move it aside (its reservations are lost).");
    }
    migrate(db, path);
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
    throw new StoreError(`database ${path} has schema version ${current}, newer than this ipamd knows (${MIGRATIONS.length}); run a newer ipamd`);
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
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
