// Cluster mode for tests: a REAL 3-member etcd (test/helpers/etcd.ts) and REAL ipamd daemons (test/helpers/ipamd.ts),
// each with its own socket, SQLite file, node name and labels, all sharing pools through that etcd.
import { DatabaseSync } from "node:sqlite";
import { type DaemonHandle, makeTempDir, startIpamd } from "./ipamd";
import type { EtcdCluster } from "./etcd";

export interface NodeSpec { name: string; labels?: Record<string, string> }

export interface ClusterNodeHandle extends DaemonHandle { name: string }

let prefixSeq = 0;
/** A key prefix of its own per test, so tests on one etcd never see each other's keys. */
export function freshPrefix(tag = "t"): string { return `/berth-${tag}-${process.pid}-${prefixSeq++}`; }

export function clusterSection(etcd: EtcdCluster, prefix: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { etcd: etcdExtra, ...rest } = extra as { etcd?: Record<string, unknown> };
  return { etcd: { endpoints: etcd.endpoints, prefix, ...(etcdExtra ?? {}) }, ...rest };
}

/** Starts one ipamd per spec on `etcd` with the same pools (the shared ConfigMap) and its own identity. */
export async function startClusterNodes(etcd: EtcdCluster, specs: NodeSpec[], o: {
  pools: unknown[]; prefix: string; cluster?: Record<string, unknown>; extra?: Record<string, unknown>;
}): Promise<ClusterNodeHandle[]> {
  return Promise.all(specs.map((s) => startClusterNode(etcd, s, o)));
}

export async function startClusterNode(etcd: EtcdCluster, s: NodeSpec, o: {
  pools: unknown[]; prefix: string; cluster?: Record<string, unknown>; extra?: Record<string, unknown>;
}): Promise<ClusterNodeHandle> {
  const d = await startIpamd({
    dir: makeTempDir(`berth-cl-${s.name}-`),
    config: {
      node: { name: s.name, labels: s.labels ?? {} }, pools: o.pools, cooldownSeconds: 0, ...o.extra,
      cluster: clusterSection(etcd, o.prefix, o.cluster),
    },
  });
  return Object.assign(d, { name: s.name });
}

/** Restarts a node on its socket/db/config; keeps the name. */
export async function restartNode(n: ClusterNodeHandle): Promise<ClusterNodeHandle> {
  const d = await n.restart();
  return Object.assign(d, { name: n.name });
}

/** The node's SQLite rows, read from its file (read-only, while the daemon runs: WAL allows it). */
export function sqliteRows(n: DaemonHandle): { ip: string; owner: string; container_id: string | null; sticky: number; pool: string }[] {
  const db = new DatabaseSync(n.db, { readOnly: true });
  try {
    return db.prepare("SELECT ip, owner, container_id, sticky, pool FROM reservations").all() as never;
  } finally { db.close(); }
}

export function sqliteCount(n: DaemonHandle, table: string): number {
  const db = new DatabaseSync(n.db, { readOnly: true });
  try { return (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n; } finally { db.close(); }
}

/** etcd's ip keys of a pool: ip -> owner value. */
export function etcdIps(etcd: EtcdCluster, prefix: string, pool: string): Map<string, Record<string, unknown> & { owner: string; node: string }> {
  const out = new Map<string, Record<string, unknown> & { owner: string; node: string }>();
  for (const [k, v] of etcd.dump(`${prefix}/ip/${pool}/`)) out.set(k.slice(k.lastIndexOf("/") + 1), JSON.parse(v));
  return out;
}

export async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
