// Opens the SQLite database: durable settings, integrity check, versioned migrations. Every write
// goes through a transaction committed with synchronous=FULL before any reply leaves the daemon.
import Database from "better-sqlite3";
import { fileURLToPath } from "node:url";
import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { MIGRATIONS } from "./schema";

export type DB = Database.Database;

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
