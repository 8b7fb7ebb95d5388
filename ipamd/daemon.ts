// Wires config, store, the node's IPAM, API server, metrics, the release spool and the TTL reaper
// together, after the start-up checks that keep a damaged, missing or shared database from
// handing out addresses that running pods hold (store/guard.ts).
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { dirname, join } from "node:path";
import type { Logger } from "pino";
import { WallClock } from "./clock";
import type { Config } from "./config";
import { startKubernetes } from "./kube/kubernetes";
import { ClusterStore } from "./cluster/local-store";
import { ClusterNode } from "./cluster/node";
import { ClusterOperator } from "./cluster/operator";
import { Metrics } from "./metrics";
import { assembleNode } from "./node";
import { type AllocationHold, ApiServer, secureSocketDirectory, VERSION } from "./server";
import { ReleaseSpool } from "./spool";
import { type DB, openStore, StoreError } from "./store/database";
import {
  CommitRecord,
  commitRecordPath,
  databaseFiles,
  lockDatabase,
  NodeMarker,
  pluginAttachmentRecords,
  secureDirectory,
  secureFiles,
} from "./store/guard";
import type { Statements } from "./store/statements";
import { ThrottledLog } from "./throttle";

interface Daemon {
  close(): Promise<void>;
}

interface StartFlags {
  /** The operator accepts the database as it is: lost commits, or a node whose pods may hold unknown addresses. */
  acceptDataLoss?: boolean;
}

const HOLD_KEY = "allocation_hold";

export async function startDaemon(config: Config, log: Logger, flags: StartFlags = {}): Promise<Daemon> {
  const tlog = new ThrottledLog(log);
  const stateDir = dirname(config.database);
  secureDirectory(stateDir, "state directory");
  lockDatabase(config.database);
  secureFiles(databaseFiles(config.database));
  secureSocketDirectory(dirname(config.socket), config.socket);
  const existed = existsSync(config.database);
  const db = openStore(config.database, { onRepair: (message) => log.warn(message) });
  const clock = new WallClock();
  const metrics = new Metrics(() => node.views.poolUsage(clock.now()));
  // Cluster mode: addresses are shared through etcd (ipamd/cluster/); without a `cluster` section, single node.
  const cluster = config.cluster ? new ClusterNode(config, db, log, metrics.registry) : undefined;
  if (!cluster && new ClusterStore(db).state("liveness_confirmed_at") !== undefined) {
    log.warn(
      "this database ran in cluster mode before: in single-node mode it does not follow etcd, and what it reserves now " +
        "is not written to etcd if it goes back to cluster mode (drain the node and give it a new database to switch back)",
    );
  }
  const node = assembleNode(db, config, cluster?.ownership);
  const operator = cluster ? new ClusterOperator(cluster, node.views) : undefined;
  const { store } = node;
  const id = store.databaseId();
  const record = new CommitRecord(commitRecordPath(config.database));
  const marker = new NodeMarker(join(dirname(config.socket), "ipamd.node.json"));

  refuseLostCommits(config, existed, store, id, record, marker, flags, log);
  const hold = new Hold(store, db, evidenceOfLostDatabase(config, existed, id, record, marker, stateDir), flags, log);
  startupHousekeeping(node, db, log);
  record.write({ database: id, seq: store.committedSeq });

  node.rules.onTakeover = (row, req) =>
    log.info(
      { owner: row.owner, ip: row.ip, from: row.container_id, to: req.containerID },
      "a new sandbox of the same pod took over its sticky address",
    );
  const api = new ApiServer({
    config,
    db,
    log: tlog,
    metrics,
    node,
    clock,
    hold,
    ...(cluster && operator ? { cluster: { status: () => cluster.status(), operator } } : {}),
  });
  api.recordCommit = (seq) => record.writeAsync({ database: id, seq });

  // The node marker: what this node has, kept beside the socket (this boot's tmpfs), not the database.
  let markedSeq = -1;
  const mark = (): void => {
    if (hold.active || markedSeq === store.committedSeq) return;
    markedSeq = store.committedSeq;
    const attached = Object.fromEntries(store.attachedByNetwork().map((r) => [r.network, r.n]));
    try {
      marker.write({ database: id, seq: store.committedSeq, path: config.database, attached, at: new Date().toISOString() });
    } catch (e) {
      tlog.warn({ err: e, file: marker.path }, "cannot write the node marker");
    }
  };
  mark();
  const marking = setInterval(mark, 1000);
  marking.unref();

  clock.onStep = (deltaMs, now) => {
    tlog.warn(
      { stepSeconds: Math.round(deltaMs / 1000) },
      deltaMs < 0
        ? "the wall clock stepped back: timestamps ahead of it are clamped to now (cooldowns count from now)"
        : "the wall clock stepped forward: the TTL of detached reservations is held for one TTL",
    );
    if (deltaMs < 0) {
      api.housekeeping(() => store.clampFuture(now)).catch((e: unknown) => tlog.error({ err: e }, "cannot clamp timestamps"));
    }
  };
  const ticking = setInterval(() => clock.now(), 1000);
  ticking.unref();

  const spool = new ReleaseSpool(
    config.spoolDir,
    (r) => {
      const req = { containerID: r.containerID, ifName: r.ifName, network: r.network };
      return api.mutate({ kind: "release", req }, (t) => node.rules.release(req, clock.now(), t, r.at), "spool");
    },
    tlog,
  );
  await spool.start();
  await cluster?.start(
    (reason, fn) => api.mutate({ kind: "sync", reason }, fn),
    (drafts) => api.events.queue(drafts),
  );

  // Before the socket opens, so that the first ADD already sees the Node's labels and the pods.
  // Cluster mode: the release-leader Lease picks the one node acting on cluster-wide releases, done on etcd.
  const kube = await startKubernetes({
    config,
    node,
    log,
    metrics,
    version: VERSION,
    mutate: (op, rule) => api.mutate(op, rule, "kubernetes"),
    ...(cluster && operator ? { cluster: { operator, node: cluster } } : {}),
  });
  api.kube = kube?.hooks;
  await api.listen(config.socket);

  let metricsServer: Server | undefined;
  if (config.metricsAddress) {
    const i = config.metricsAddress.lastIndexOf(":");
    const host = config.metricsAddress.slice(0, i).replace(/^\[|\]$/g, "");
    const port = Number(config.metricsAddress.slice(i + 1));
    metricsServer = createServer((req, res) => {
      if (req.method === "GET" && req.url === "/metrics") {
        metrics.serve(res).catch((e: unknown) => {
          log.error({ err: e }, "cannot render metrics");
          if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
          res.end(`cannot render metrics: ${(e as Error).message}\n`);
        });
      } else {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("only /metrics is served here\n");
      }
    });
    await new Promise<void>((resolve, reject) => {
      metricsServer!.once("error", (e) => reject(new Error(`cannot listen for metrics on ${config.metricsAddress}: ${e.message}`)));
      metricsServer!.listen(port, host, () => resolve());
    });
  }

  let reaper: NodeJS.Timeout | undefined;
  if (config.detachedTtlMs > 0) {
    const every = Math.max(1000, Math.min(60_000, Math.floor(config.detachedTtlMs / 4)));
    reaper = setInterval(() => {
      // Right after a step forward every detached reservation looks old: wait one TTL of real time.
      if (clock.sinceStep() < config.detachedTtlMs) return;
      api
        .mutate({ kind: "reapExpired" }, (t) => node.rules.reapExpired(clock.now(), t))
        .then((ips) => {
          if (ips.length) log.info({ ips }, "released detached reservations past their TTL");
        })
        .catch((e: unknown) => tlog.error({ err: e }, "TTL reaper failed"));
    }, every);
    reaper.unref();
  }

  log.info(
    {
      socket: config.socket,
      database: config.database,
      spool: config.spoolDir,
      labels: node.pools.labels,
      kubernetes: kube?.connection.mode ?? "off",
      pools: node.pools.selected.map((p) => p.name),
      metrics: config.metricsAddress,
      commitSeq: store.committedSeq,
      ...(hold.active ? { hold: hold.reasons } : {}),
    },
    "ipamd serving",
  );

  return {
    async close() {
      if (reaper) clearInterval(reaper);
      clearInterval(marking);
      clearInterval(ticking);
      spool.close();
      await kube?.stop();
      await api.close();
      await cluster?.close();
      if (metricsServer) await new Promise<void>((r) => metricsServer!.close(() => r()));
      mark();
      // A full disk can fail the checkpoint: the data stays in the WAL, which the next start reads.
      try {
        db.pragma("wal_checkpoint(TRUNCATE)");
      } catch (e) {
        log.warn({ err: e }, "cannot checkpoint the WAL into the database (it keeps the data; the next start applies it)");
      }
      try {
        db.close();
      } catch (e) {
        log.warn({ err: e }, "closing the database reported an error");
      }
      record.close();
      api.unlinkSocket();
    },
  };
}

/** A database behind the last acknowledged commit lost data a client was told is durable: refuse (or, accepted, say so). */
function refuseLostCommits(
  config: Config,
  existed: boolean,
  store: Statements,
  id: string,
  record: CommitRecord,
  marker: NodeMarker,
  flags: StartFlags,
  log: Logger,
): void {
  const have = store.committedSeq;
  const behind: string[] = [];
  const mark = record.read();
  // The file is there but is not the database the record beside it counts: its content was lost
  // (everything was still in a -wal that is gone) or another copy was put in its place.
  if (existed && mark && mark.database !== id && mark.seq > 0) {
    behind.push(
      `commit ${mark.seq} of database ${mark.database} was acknowledged (recorded in ${record.path}) but ${config.database} ` +
        `is another database (${id}) at commit ${have}`,
    );
  }
  for (const [mark, where] of [
    [record.read(), record.path],
    [marker.read(), marker.path],
  ] as const) {
    if (mark && mark.database === id && mark.seq > have) {
      behind.push(`commit ${mark.seq} was acknowledged (recorded in ${where}) but the database is at commit ${have}`);
    }
  }
  if (behind.length === 0) return;
  const msg =
    `database ${config.database} lost acknowledged commits: ${behind[0]} (${behind.length > 1 ? "both records agree; " : ""}` +
    "its -wal was damaged or deleted, or an older copy was restored)";
  if (!flags.acceptDataLoss) {
    throw new StoreError(
      `${msg}. Stop here: pods may hold addresses the database no longer has. Restore the database together with ` +
        `its -wal from a backup, or, accepting that, start once with --accept-data-loss and run a CNI GC (ipamctl gc) per network`,
    );
  }
  log.error(`${msg}; starting anyway (--accept-data-loss)`);
}

/** Reasons to think running pods hold addresses this database does not know, and the networks named. */
interface Evidence {
  reasons: string[];
  networks: string[];
  gcClears: boolean;
}

function evidenceOfLostDatabase(
  config: Config,
  existed: boolean,
  id: string,
  record: CommitRecord,
  marker: NodeMarker,
  stateDir: string,
): Evidence {
  const reasons: string[] = [];
  const networks = new Set<string>();
  let gcClears = true;
  const what = existed ? "is another database" : "was missing (created empty now)";
  const nodeMark = marker.read();
  if (nodeMark && nodeMark.database !== id) {
    const total = Object.values(nodeMark.attached).reduce((a, b) => a + b, 0);
    if (total > 0) {
      reasons.push(
        `this node had ${total} attachment(s) at ${nodeMark.at} (${marker.path}, database ${nodeMark.path}), ` +
          `but ${config.database} ${what}`,
      );
      for (const n of Object.keys(nodeMark.attached)) networks.add(n);
    }
  }
  const mark = record.read();
  if (!existed && mark && mark.database !== id && mark.seq > 0 && reasons.length === 0) {
    // Without the node marker's account (a reboot since) nothing says which networks had pods.
    reasons.push(`${record.path} records commit ${mark.seq} of another database, and ${config.database} ${what}`);
    gcClears = false;
  }
  if (!existed) {
    const files = pluginAttachmentRecords(stateDir);
    if (files.length) {
      reasons.push(`${files.length} plugin attachment record(s) exist (${files.slice(0, 3).join(", ")}), and ${config.database} ${what}`);
      gcClears = false;
    }
  }
  return { reasons, networks: [...networks], gcClears };
}

/** Allocation held until an operator accepts the database, or GCs show the named networks have no live attachment. */
class Hold implements AllocationHold {
  private state?: Evidence;

  constructor(
    private readonly store: Statements,
    db: DB,
    found: Evidence,
    flags: StartFlags,
    log: Logger,
  ) {
    const saved = store.meta(HOLD_KEY);
    if (typeof saved === "string") this.state = JSON.parse(saved) as Evidence;
    if (found.reasons.length) {
      this.state = this.state
        ? {
            reasons: [...new Set([...this.state.reasons, ...found.reasons])],
            networks: [...new Set([...this.state.networks, ...found.networks])],
            gcClears: this.state.gcClears && found.gcClears,
          }
        : found;
    }
    if (flags.acceptDataLoss && this.state) {
      log.warn({ reasons: this.state.reasons }, "allocation hold accepted at start (--accept-data-loss)");
      this.state = undefined;
    }
    db.transaction(() => this.persist())();
    if (this.state) {
      log.error({ reasons: this.state.reasons }, "allocation is held: running pods may hold addresses this database does not know");
    }
  }

  get active(): boolean {
    return this.state !== undefined;
  }
  get reasons(): string[] {
    return this.state?.reasons ?? [];
  }
  get networks(): string[] {
    return this.state?.networks ?? [];
  }

  gcSeen(network: string, live: number): void {
    const s = this.state;
    if (!s || live > 0 || !s.networks.includes(network)) return;
    s.networks = s.networks.filter((n) => n !== network);
    if (s.networks.length === 0 && s.gcClears) this.state = undefined;
    this.persist();
  }

  accept(): void {
    this.state = undefined;
    this.persist();
  }

  private persist(): void {
    if (this.state) this.store.setMeta(HOLD_KEY, JSON.stringify(this.state));
    else this.store.deleteMeta(HOLD_KEY);
  }
}

/** Before serving: timestamps ahead of the clock (it stepped back while ipamd was down), cooling addresses of removed pools. */
function startupHousekeeping(node: ReturnType<typeof assembleNode>, db: DB, log: Logger): void {
  const { store, pools } = node;
  db.transaction(() => {
    const clamped = store.clampFuture(Date.now());
    if (clamped) log.warn({ rows: clamped }, "timestamps ahead of the clock were clamped to now (the clock stepped back?)");
    let moved = 0;
    for (const r of store.releasedOutside(pools.all.map((p) => p.name))) {
      store.rehomeReleased(r.ip, pools.shapeOf(r.pool, r.ip)?.name ?? null);
      moved++;
    }
    if (moved) log.info({ addresses: moved }, "cooling addresses of pools no longer in the config moved to the pools that contain them");
  })();
}
