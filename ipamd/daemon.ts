// Wires config, store, the node's IPAM, API server, metrics and the TTL reaper together.
import { createServer, type Server } from "node:http";
import type { Logger } from "pino";
import type { Config } from "./config";
import { ClusterNode } from "./cluster/node";
import { ClusterOperator } from "./cluster/operator";
import { Metrics } from "./metrics";
import { assembleNode } from "./node";
import { ApiServer } from "./server";
import { openStore } from "./store/database";

interface Daemon { close(): Promise<void> }

export async function startDaemon(config: Config, log: Logger): Promise<Daemon> {
  const db = openStore(config.database);
  const metrics = new Metrics(() => node.views.poolUsage(Date.now()));
  // Cluster mode: addresses are shared through etcd (ipamd/cluster/); without a `cluster` section, single node.
  const cluster = config.cluster ? new ClusterNode(config, db, log, metrics.registry) : undefined;
  const node = assembleNode(db, config, cluster?.ownership);
  node.rules.onTakeover = (row, req) => log.warn({ owner: row.owner, ip: row.ip, from: row.container_id, to: req.containerID },
    "sticky reservation moved to a new container while the old one was still attached");
  const api = new ApiServer({
    config, db, log, metrics, node,
    ...(cluster ? { cluster: { status: () => cluster.status(), operator: new ClusterOperator(cluster, node.views) } } : {}),
  });
  await cluster?.start((reason, fn) => api.mutate({ kind: "sync", reason }, fn));
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
      } else { res.writeHead(404, { "content-type": "text/plain" }); res.end("only /metrics is served here\n"); }
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
      api.mutate({ kind: "reapExpired" }, (t) => node.rules.reapExpired(Date.now(), t))
        .then((ips) => { if (ips.length) log.info({ ips }, "released detached reservations past their TTL"); })
        .catch((e) => log.error({ err: e }, "TTL reaper failed"));
    }, every);
    reaper.unref();
  }

  log.info({
    socket: config.socket, database: config.database, labels: config.nodeLabels,
    pools: node.pools.selected.map((p) => p.name), metrics: config.metricsAddress,
  }, "ipamd serving");

  return {
    async close() {
      if (reaper) clearInterval(reaper);
      await api.close();
      await cluster?.close();
      if (metricsServer) await new Promise<void>((r) => metricsServer!.close(() => r()));
      db.pragma("wal_checkpoint(TRUNCATE)");
      db.close();
    },
  };
}
