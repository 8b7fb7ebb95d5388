// A REAL 3-member etcd cluster (Debian etcd-server, /usr/bin/etcd) on free loopback ports in a
// temp dir: start, health, kill -9 / stop / restart single members, lose quorum, compact, tear down.
// A guardian shell process kills the members and removes the dir if this test process dies.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { join } from "node:path";

const ETCD = process.env.BERTH_ETCD ?? "/usr/bin/etcd";
const ETCDCTL = process.env.BERTH_ETCDCTL ?? "/usr/bin/etcdctl";

interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  proc: ChildProcess | null;
  log: string[];
}

interface EtcdClusterOptions {
  size?: number;
  /** ms; etcd's default is 100/1000. Tests use 50/500 so a lost leader is noticed within a second. */
  heartbeatMs?: number;
  electionMs?: number;
  /** Parent of the temp dir; /dev/shm by default (tmpfs: fsync is cheap on a machine shared by many tests). */
  baseDir?: string;
  /** Serve clients over TLS with client-certificate auth (a CA, server and client certs made with openssl). */
  tls?: boolean;
}

interface EtcdTlsFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
  serverCert: string;
  serverKey: string;
  otherCaFile: string;
}

/** A CA, a server cert for 127.0.0.1 and a client cert signed by it, and an unrelated CA (for the wrong-CA case). */
function makeCerts(dir: string): EtcdTlsFiles {
  const ssl = (args: string[]): void => {
    execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  };
  for (const ca of ["ca", "other-ca"]) {
    ssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "2",
      "-subj",
      `/CN=berth-test-${ca}`,
      "-keyout",
      `${ca}.key`,
      "-out",
      `${ca}.crt`,
    ]);
  }
  writeFileSync(join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n");
  writeFileSync(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
  for (const who of ["server", "client"]) {
    ssl([
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-subj",
      `/CN=berth-${who}`,
      "-keyout",
      `${who}.key`,
      "-out",
      `${who}.csr`,
    ]);
    ssl([
      "x509",
      "-req",
      "-in",
      `${who}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      `${who}.ext`,
      "-out",
      `${who}.crt`,
    ]);
  }
  return {
    caFile: join(dir, "ca.crt"),
    certFile: join(dir, "client.crt"),
    keyFile: join(dir, "client.key"),
    serverCert: join(dir, "server.crt"),
    serverKey: join(dir, "server.key"),
    otherCaFile: join(dir, "other-ca.crt"),
  };
}

/** Ports the kernel just handed out, held until every port of the cluster is picked (no duplicates within a process). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import("node:net").Server>((resolve, reject) => {
          const s = createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

const clusters = new Set<EtcdCluster>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const c of clusters) c.killAllSync();
  });
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      for (const c of clusters) c.killAllSync();
      process.exit(130);
    });
  }
}

export class EtcdCluster {
  readonly members: EtcdMember[];
  private guardian: ChildProcess | null = null;
  /** Set when started with tls: true. */
  tlsFiles: EtcdTlsFiles | null = null;
  private closed = false;

  private constructor(
    readonly dir: string,
    members: EtcdMember[],
    private readonly opts: Required<EtcdClusterOptions>,
    private readonly token: string,
  ) {
    this.members = members;
  }

  static async start(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    const opts: Required<EtcdClusterOptions> = {
      size: options.size ?? 3,
      heartbeatMs: options.heartbeatMs ?? 50,
      electionMs: options.electionMs ?? 500,
      baseDir: options.baseDir ?? "/dev/shm",
      tls: options.tls ?? false,
    };
    for (let attempt = 0; ; attempt++) {
      const dir = mkdtempSync(join(opts.baseDir, `berth-etcd-${process.pid}-`));
      const ports = await freePorts(opts.size * 2);
      const members = Array.from(
        { length: opts.size },
        (_, i): EtcdMember => ({
          name: `m${i}`,
          clientUrl: `${opts.tls ? "https" : "http"}://127.0.0.1:${ports[2 * i]}`,
          peerUrl: `http://127.0.0.1:${ports[2 * i + 1]}`,
          dataDir: join(dir, `m${i}`),
          proc: null,
          log: [],
        }),
      );
      const cluster = new EtcdCluster(dir, members, opts, `berth-${process.pid}-${Date.now().toString(36)}`);
      clusters.add(cluster);
      installExitHook();
      cluster.startGuardian();
      if (opts.tls) cluster.tlsFiles = makeCerts(dir);
      try {
        for (let i = 0; i < members.length; i++) cluster.spawnMember(i);
        await cluster.waitHealthy(20_000);
        return cluster;
      } catch (e) {
        // A port taken by another process between picking and binding: try fresh ports once more.
        const bindClash = members.some((m) => m.log.join("").includes("address already in use"));
        await cluster.destroy();
        if (!bindClash || attempt >= 2) throw e;
      }
    }
  }

  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  private startGuardian(): void {
    mkdirSync(join(this.dir, "pids"), { recursive: true });
    // Polls this process; when it is gone (even after kill -9), kills the members and removes the dir.
    const script =
      `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
      `for f in "${this.dir}"/pids/*; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done; rm -rf "${this.dir}"`;
    this.guardian = spawn("sh", ["-c", script], { stdio: "ignore", detached: true });
    this.guardian.unref();
  }

  private spawnMember(i: number): void {
    const m = this.members[i]!;
    const initialCluster = this.members.map((x) => `${x.name}=${x.peerUrl}`).join(",");
    const args = [
      "--name",
      m.name,
      "--data-dir",
      m.dataDir,
      "--listen-client-urls",
      m.clientUrl,
      "--advertise-client-urls",
      m.clientUrl,
      "--listen-peer-urls",
      m.peerUrl,
      "--initial-advertise-peer-urls",
      m.peerUrl,
      "--initial-cluster",
      initialCluster,
      "--initial-cluster-token",
      this.token,
      "--initial-cluster-state",
      "new",
      "--heartbeat-interval",
      String(this.opts.heartbeatMs),
      "--election-timeout",
      String(this.opts.electionMs),
      ...(this.tlsFiles
        ? [
            "--cert-file",
            this.tlsFiles.serverCert,
            "--key-file",
            this.tlsFiles.serverKey,
            "--client-cert-auth",
            "--trusted-ca-file",
            this.tlsFiles.caFile,
          ]
        : []),
      "--logger",
      "zap",
      "--log-level",
      "warn",
      "--log-outputs",
      "stderr",
    ];
    m.log = [];
    const proc = spawn(ETCD, args, { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (b: Buffer): void => {
      m.log.push(b.toString());
      if (m.log.length > 200) m.log.splice(0, 100);
    };
    proc.stdout!.on("data", keep);
    proc.stderr!.on("data", keep);
    m.proc = proc;
    writeFileSync(join(this.dir, "pids", m.name), String(proc.pid));
    proc.once("exit", () => {
      if (m.proc === proc) m.proc = null;
      rmSync(join(this.dir, "pids", m.name), { force: true });
    });
  }

  /**
   * A new PKI (CA, server and client certificates) in a new directory: members started from now on serve with it and
   * trust only its CA (stop and restart them to rotate). Returns the new files.
   */
  rotateTls(): EtcdTlsFiles {
    if (!this.tlsFiles) throw new Error("rotateTls: the cluster was started without tls: true");
    const dir = join(this.dir, `pki-${Date.now()}`);
    mkdirSync(dir);
    this.tlsFiles = makeCerts(dir);
    return this.tlsFiles;
  }

  /** Waits until every running member answers /health with a leader (or `members` only). */
  async waitHealthy(timeoutMs = 15_000, members: number[] = this.members.map((_, i) => i)): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    for (;;) {
      const results = await Promise.all(
        members.map(async (i) => {
          try {
            const body = await this.health(i);
            return body.health === "true" ? "" : `${this.members[i]!.name}: ${JSON.stringify(body)}`;
          } catch (e) {
            return `${this.members[i]!.name}: ${(e as Error).message}`;
          }
        }),
      );
      last = results.filter(Boolean).join("; ");
      if (!last) return;
      if (Date.now() > deadline) {
        throw new Error(
          `etcd cluster in ${this.dir} not healthy after ${timeoutMs} ms: ${last}\n` +
            this.members.map((m) => `--- ${m.name}\n${m.log.join("").slice(-2000)}`).join("\n"),
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private health(i: number): Promise<{ health?: string }> {
    const url = `${this.members[i]!.clientUrl}/health`;
    const t = this.tlsFiles;
    return new Promise((resolve, reject) => {
      const get = t ? httpsGet : httpGet;
      const req = get(
        url,
        { timeout: 1000, ...(t ? { ca: readFileSync(t.caFile), cert: readFileSync(t.certFile), key: readFileSync(t.keyFile) } : {}) },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => {
            text += c.toString();
          });
          res.on("end", () => {
            try {
              resolve(JSON.parse(text));
            } catch (e) {
              reject(e);
            }
          });
        },
      );
      req.on("timeout", () => req.destroy(new Error("no answer within 1000 ms")));
      req.on("error", reject);
    });
  }

  /** SIGSTOP: the member keeps its sockets (connects succeed) but answers nothing. */
  pause(i: number): void {
    this.members[i]!.proc?.kill("SIGSTOP");
  }
  resume(i: number): void {
    this.members[i]!.proc?.kill("SIGCONT");
  }

  private async signal(i: number, sig: NodeJS.Signals): Promise<void> {
    const m = this.members[i]!;
    const proc = m.proc;
    if (!proc) return;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      proc.kill(sig);
    });
  }

  kill9(i: number): Promise<void> {
    return this.signal(i, "SIGKILL");
  }
  stop(i: number): Promise<void> {
    return this.signal(i, "SIGTERM");
  }

  /** Starts a stopped member again on its data dir (the initial-cluster flags are then ignored). */
  async restart(i: number, waitHealthy = true): Promise<void> {
    if (this.members[i]!.proc) throw new Error(`etcd member ${this.members[i]!.name} is still running`);
    this.spawnMember(i);
    if (waitHealthy) await this.waitHealthy(20_000, [i]);
  }

  /** Stops all members but `keep`: that one stays up without a quorum. */
  async loseQuorum(keep = 0): Promise<void> {
    await Promise.all(this.members.map((_, i) => (i === keep ? Promise.resolve() : this.stop(i))));
  }

  /** Starts every stopped member and waits for the whole cluster. */
  async restoreAll(): Promise<void> {
    this.members.forEach((m, i) => {
      if (!m.proc) this.spawnMember(i);
    });
    await this.waitHealthy(20_000);
  }

  /** etcdctl against the running members (v3 API). */
  etcdctl(args: string[]): string {
    const endpoints = this.members
      .filter((m) => m.proc)
      .map((m) => m.clientUrl)
      .join(",");
    const t = this.tlsFiles;
    const tls = t ? ["--cacert", t.caFile, "--cert", t.certFile, "--key", t.keyFile] : [];
    return execFileSync(ETCDCTL, ["--endpoints", endpoints, "--command-timeout=5s", ...tls, ...args], {
      env: { ...process.env, ETCDCTL_API: "3" },
      encoding: "utf8",
    });
  }

  /** `etcdctl snapshot save` from one running member: the whole keyspace as of its revision now. */
  snapshotSave(file = join(this.dir, `snapshot-${Date.now()}.db`)): string {
    const m = this.members.find((x) => x.proc);
    if (!m) throw new Error("etcd snapshot save: no member is running");
    const t = this.tlsFiles;
    const tls = t ? ["--cacert", t.caFile, "--cert", t.certFile, "--key", t.keyFile] : [];
    execFileSync(ETCDCTL, ["--endpoints", m.clientUrl, "--command-timeout=10s", ...tls, "snapshot", "save", file], {
      env: { ...process.env, ETCDCTL_API: "3" },
      stdio: "pipe",
    });
    return file;
  }

  /** The revision a snapshot file was taken at (`etcdctl snapshot status`). */
  snapshotRevision(file: string): number {
    const out = execFileSync(ETCDCTL, ["snapshot", "status", file, "-w", "json"], {
      env: { ...process.env, ETCDCTL_API: "3" },
      encoding: "utf8",
    });
    return (JSON.parse(out) as { revision: number }).revision;
  }

  /**
   * Disaster recovery as an operator does it: every member stopped, `etcdctl snapshot restore` of `file` into a new
   * data dir per member (same names, peer URLs and token), the members started on them. Every key written after the
   * snapshot is gone, and the revision is the snapshot's again.
   */
  async restoreSnapshot(file: string): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.stop(i)));
    const initialCluster = this.members.map((x) => `${x.name}=${x.peerUrl}`).join(",");
    const round = ++this.restores;
    for (const m of this.members) {
      const dataDir = join(this.dir, `${m.name}-restored-${round}`);
      execFileSync(
        ETCDCTL,
        [
          "snapshot",
          "restore",
          file,
          "--name",
          m.name,
          "--initial-cluster",
          initialCluster,
          "--initial-cluster-token",
          this.token,
          "--initial-advertise-peer-urls",
          m.peerUrl,
          "--data-dir",
          dataDir,
        ],
        { env: { ...process.env, ETCDCTL_API: "3" }, stdio: "pipe" },
      );
      m.dataDir = dataDir;
    }
    await this.restoreAll();
  }
  private restores = 0;

  /** Current revision of the cluster. */
  revision(): number {
    const out = JSON.parse(this.etcdctl(["endpoint", "status", "-w", "json"])) as { Status: { header: { revision: number } } }[];
    return Math.max(...out.map((s) => s.Status.header.revision));
  }

  /**
   * Requests served so far by gRPC method (Range, Txn, Put, LeaseKeepAlive, Watch...), summed over the members: etcd's
   * own grpc_server_handled_total from each member's /metrics (a plain-http cluster).
   */
  async requests(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const m of this.members) {
      const text = await (await fetch(`${m.clientUrl}/metrics`)).text();
      for (const line of text.split("\n")) {
        const x = /^grpc_server_handled_total\{.*grpc_method="(\w+)".*\} (\S+)$/.exec(line);
        if (x) out.set(x[1]!, (out.get(x[1]!) ?? 0) + Number(x[2]));
      }
    }
    return out;
  }

  /** Compacts the history up to `revision` (default: the current one), physically. */
  compact(revision = this.revision()): number {
    this.etcdctl(["compact", String(revision), "--physical"]);
    return revision;
  }

  /** Every key under `prefix` with its value (utf8), read with etcdctl: an independent view of the data. */
  dump(prefix: string): Map<string, string> {
    const out = JSON.parse(this.etcdctl(["get", "--prefix", prefix, "-w", "json"])) as { kvs?: { key: string; value: string }[] };
    const map = new Map<string, string>();
    for (const kv of out.kvs ?? []) {
      map.set(Buffer.from(kv.key, "base64").toString(), Buffer.from(kv.value ?? "", "base64").toString());
    }
    return map;
  }

  /** Index of the member that is leader now (-1 if none answers). */
  leader(): number {
    const out = JSON.parse(this.etcdctl(["endpoint", "status", "-w", "json"])) as {
      Endpoint: string;
      Status: { header: { member_id: number }; leader: number };
    }[];
    const lead = out.find((s) => s.Status.header.member_id === s.Status.leader);
    return lead ? this.members.findIndex((m) => m.clientUrl === lead.Endpoint) : -1;
  }

  killAllSync(): void {
    for (const m of this.members) {
      try {
        m.proc?.kill("SIGKILL");
      } catch {
        /* gone */
      }
    }
    try {
      rmSync(this.dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }

  async destroy(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.members.forEach((_, i) => {
      this.resume(i);
    });
    await Promise.all(this.members.map((_, i) => this.kill9(i)));
    this.guardian?.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
    clusters.delete(this);
  }
}

/**
 * A TCP proxy in front of one member that delays what the member sends on watch streams (connections whose request
 * is `POST /v3/watch`, etcd's JSON gateway) by `delayMs`, in order; KV calls (gRPC) and leases pass at once. What a
 * watch on a lagging follower, or behind a slow link, looks like: events arrive after the transaction's answer.
 * It runs in the test's own process: a test that blocks its event loop (a synchronous spawn of a plugin) stalls it.
 */
export async function laggingWatchProxy(endpoint: string, delayMs: number): Promise<{ endpoint: string; close(): void }> {
  const target = new URL(endpoint);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let watch = false;
    let last = 0; // when the previous delayed chunk leaves: chunks never overtake each other
    client.on("data", (chunk: Buffer) => {
      if (chunk.subarray(0, 14).toString("latin1") === "POST /v3/watch") watch = true;
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      if (!watch) return void client.write(chunk);
      const at = Math.max(last, Date.now() + delayMs);
      last = at;
      setTimeout(() => client.writable && client.write(chunk), at - Date.now());
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
