// SQLite store: schema, versioned migrations, durable settings. Every write goes through
// a transaction committed with synchronous=FULL before any reply leaves the daemon.
import Database from "better-sqlite3";
import { fileURLToPath } from "node:url";
import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

export type DB = Database.Database;

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

/** The daemon's esbuild bundle (dist/ipamd/) ships better-sqlite3's addon beside itself. */
function bundledAddon(): string | undefined {
  const beside = fileURLToPath(new URL("./better_sqlite3.node", import.meta.url));
  return existsSync(beside) ? beside : undefined;
}

export function openStore(path: string): DB {
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o750 });
  let db: DB;
  try {
    db = new Database(path, { nativeBinding: bundledAddon() });
    db.pragma("journal_mode = WAL");
  } catch (e) {
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

function corruptionHint(e: unknown): string {
  const code = (e as { code?: string }).code ?? "";
  return /SQLITE_(CORRUPT|NOTADB)/.test(code)
    ? " The file is corrupt or not an SQLite database: restore it from a backup, or move it aside (its reservations are lost)."
    : "";
}
