// The release spool: a CNI DEL that cannot reach ipamd (down, restarting, backlog full) is written
// as a small file in a directory on the node, atomically (temp file, fsync, rename), and the DEL
// succeeds. ipamd applies every record at start and whenever one appears, idempotently (a release
// of an attachment it does not hold is a no-op), then removes it. Shared by the plugins and ipamd.
import { makeDirs } from "../lib/fileio";
import { writeFileAtomic } from "../lib/files";
import { join } from "../lib/paths";

export const DEFAULT_SPOOL_DIR = "/var/lib/berth/spool";

/** One DEL that ipamd has not seen. `at`: when the plugin ran (ms since the epoch). */
export interface ReleaseRecord {
  version: 1;
  containerID: string;
  ifName: string;
  network: string;
  at: number;
}

/** The record's file name: one per attachment (a repeated DEL overwrites it). */
function releaseFileName(r: Pick<ReleaseRecord, "containerID" | "ifName" | "network">): string {
  return `${encodeURIComponent(r.containerID)}_${encodeURIComponent(r.ifName)}_${encodeURIComponent(r.network)}.json`.slice(0, 250);
}

/** Writes the record durably into `dir` (created 0700 when missing); returns its path. */
export function spoolRelease(dir: string, record: ReleaseRecord): string {
  makeDirs(dir, 0o700);
  const path = join(dir, releaseFileName(record));
  writeFileAtomic(path, JSON.stringify(record) + "\n");
  return path;
}

/** The record in `text`, or a reason it is not one. */
export function parseReleaseRecord(text: string): ReleaseRecord | string {
  let v: Partial<ReleaseRecord>;
  try {
    v = JSON.parse(text) as Partial<ReleaseRecord>;
  } catch {
    return "not JSON";
  }
  const str = (x: unknown): boolean => typeof x === "string" && x.length > 0 && x.length <= 256;
  if (v?.version !== 1 || !str(v.containerID) || !str(v.ifName) || !str(v.network) || typeof v.at !== "number") {
    return "not a version 1 release record (containerID, ifName, network, at)";
  }
  return v as ReleaseRecord;
}
