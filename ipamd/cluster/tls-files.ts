// The etcd client's TLS files (caFile, certFile, keyFile), read again when one of them changes: a rotated client
// certificate or CA (cert-manager, kubeadm, a secret volume's atomic swap) is used from the next connection on, as
// etcd's own Go client does with its per-handshake callbacks. Open connections keep the material they were made with.
import { readFileSync, statSync } from "node:fs";
import { createSecureContext } from "node:tls";
import type { EtcdTls } from "./etcd";

export interface TlsMaterial {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** How often the files are looked at (stat only), at most: on a new connection, never per request. */
const CHECK_MS = 1000;

type Which = keyof EtcdTls;
const MATERIAL: Record<Which, keyof TlsMaterial> = { caFile: "ca", certFile: "cert", keyFile: "key" };

export class TlsFiles {
  private material: TlsMaterial;
  /** What the files were when last read (inode, size, change time): a secret volume swaps a symlink, so the inode moves. */
  private stamps: string;
  private checkedAt = 0;
  /** Counts the reloads: the client replaces a keep-alive agent made before the last one. */
  generation = 0;

  /** Reads the files once; a missing or unreadable one is a config error (thrown, naming the setting). */
  constructor(
    private readonly files: EtcdTls,
    private readonly onReload?: (ok: boolean, detail: string) => void,
  ) {
    this.stamps = this.stampAll();
    this.material = this.readAll((which, path, e) => {
      throw new Error(`etcd ${which} ${path}: ${e.message}; fix cluster.etcd.${which}`);
    });
    if (!!this.material.cert !== !!this.material.key) throw new Error("etcd: certFile and keyFile go together; set both or neither");
    this.checkedAt = Date.now();
  }

  get configured(): boolean {
    return Object.values(this.files).some(Boolean);
  }

  /**
   * The material for a new connection: read again when a file changed since the last read. A changed set that cannot
   * be used (a half-written rotation: the new certificate beside the old key) keeps the last good one until the
   * files change again, and is reported through onReload.
   */
  current(): TlsMaterial {
    if (!this.configured || Date.now() - this.checkedAt < CHECK_MS) return this.material;
    this.checkedAt = Date.now();
    const stamps = this.stampAll();
    if (stamps === this.stamps) return this.material;
    this.stamps = stamps;
    let problem = "";
    const next = this.readAll((which, path, e) => {
      problem ||= `${which} ${path}: ${e.message}`;
    });
    if (!problem) {
      try {
        createSecureContext(next); // parses them: a key that does not match the certificate fails here
      } catch (e) {
        problem = `${(e as Error).message} (certFile ${this.files.certFile ?? "-"}, keyFile ${this.files.keyFile ?? "-"})`;
      }
    }
    if (problem) {
      this.onReload?.(false, `the etcd TLS files changed but cannot be used (${problem}); new connections keep the previous ones`);
      return this.material;
    }
    this.material = next;
    this.generation++;
    this.onReload?.(true, "the etcd TLS files changed; new connections use them");
    return this.material;
  }

  private readAll(failed: (which: Which, path: string, e: Error) => void): TlsMaterial {
    const out: TlsMaterial = {};
    for (const which of Object.keys(MATERIAL) as Which[]) {
      const path = this.files[which];
      if (!path) continue;
      try {
        out[MATERIAL[which]] = readFileSync(path);
      } catch (e) {
        failed(which, path, e as Error);
      }
    }
    return out;
  }

  private stampAll(): string {
    return (Object.keys(MATERIAL) as Which[])
      .map((which) => {
        const path = this.files[which];
        if (!path) return "";
        try {
          const st = statSync(path);
          return `${st.ino}:${st.size}:${st.ctimeMs}:${st.mtimeMs}`;
        } catch {
          return "absent";
        }
      })
      .join("|");
  }
}
