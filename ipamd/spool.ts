// ipamd's side of the release spool (api/spool.ts): the DELs the plugins recorded while ipamd was
// unreachable, applied at start (before serving) and whenever a record appears (fs.watch, and a
// periodic scan in case an event is missed), each removed once its release is committed.
import { type FSWatcher, lstatSync, readFileSync, readdirSync, renameSync, unlinkSync, watch } from "node:fs";
import { join } from "node:path";
import { parseReleaseRecord, type ReleaseRecord } from "../api/spool";
import { secureDirectory } from "./store/guard";
import type { ThrottledLog } from "./throttle";

const SCAN_EVERY_MS = 30_000;

export class ReleaseSpool {
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private scanning?: Promise<void>;
  private again = false;

  constructor(
    readonly dir: string,
    private readonly apply: (record: ReleaseRecord) => Promise<unknown>,
    private readonly log: ThrottledLog,
  ) {}

  /** Applies what is there, then watches for more. */
  async start(): Promise<void> {
    secureDirectory(this.dir, "release spool directory");
    await this.scan();
    this.watcher = watch(this.dir, { persistent: false }, () => {
      void this.scan();
    });
    this.watcher.on("error", (e) => this.log.warn({ err: e }, "cannot watch the release spool; scanning it every 30 s"));
    this.timer = setInterval(() => {
      void this.scan();
    }, SCAN_EVERY_MS);
    this.timer.unref();
  }

  close(): void {
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
  }

  /** One pass over the directory (a pass requested during another runs after it). */
  scan(): Promise<void> {
    if (this.scanning) {
      this.again = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        await this.pass();
      } while (this.again);
    })().finally(() => {
      this.scanning = undefined;
    });
    return this.scanning;
  }

  private async pass(): Promise<void> {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.endsWith(".json"));
    } catch (e) {
      this.log.error({ err: e, dir: this.dir }, "cannot read the release spool");
      return;
    }
    for (const name of names) {
      const path = join(this.dir, name);
      let record: ReleaseRecord | string;
      try {
        const st = lstatSync(path);
        // Only root's regular files: anyone else's could release other pods' addresses.
        record = !st.isFile()
          ? "not a regular file"
          : st.uid !== 0
            ? `owned by uid ${st.uid}, not root`
            : parseReleaseRecord(readFileSync(path, "utf8"));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") continue; // applied by a concurrent pass
        record = (e as Error).message;
      }
      if (typeof record === "string") {
        this.log.warn({ file: path, problem: record }, "ignoring a file in the release spool (renamed to .refused)");
        try {
          renameSync(path, `${path}.refused`);
        } catch {
          /* gone */
        }
        continue;
      }
      try {
        const out = await this.apply(record);
        unlinkSync(path);
        this.log.log.info(
          { containerID: record.containerID, ifName: record.ifName, network: record.network, result: out },
          "applied a release recorded while ipamd was unreachable",
        );
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
        this.log.error({ err: e, file: path }, "cannot apply a spooled release; it stays for the next scan");
      }
    }
  }
}
