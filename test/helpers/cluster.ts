// Cluster mode for tests: a REAL 3-member etcd (test/helpers/etcd.ts) and REAL ipamd daemons (test/helpers/ipamd.ts),
// each with its own socket, SQLite file, node name and labels, all sharing pools through that etcd.
import { DatabaseSync } from "node:sqlite";
import { type DaemonHandle, makeTempDir, startIpamd } from "./ipamd";
import type { EtcdCluster } from "./etcd";

interface NodeSpec {
  name: string;
  labels?: Record<string, string>;
}

export interface ClusterNodeHandle extends DaemonHandle {
  name: string;
}

let prefixSeq = 0;
/** A key prefix of its own per test, so tests on one etcd never see each other's keys. */
/** The attachment the cluster tests use: container `id`'s eth0 on network "underlay". */
export const underlayAttachment = (id: string) => ({ containerID: id, ifName: "eth0", network: "underlay" });

/** The first address of an ADD answer, without its prefix length. */
export const firstIp = (r: { ips: { address: string }[] }): string => r.ips[0]!.address.split("/")[0]!;

export function freshPrefix(tag = "t"): string {
  return `/berth-${tag}-${process.pid}-${prefixSeq++}`;
}

export function clusterSection(etcd: EtcdCluster, prefix: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { etcd: etcdExtra, ...rest } = extra as { etcd?: Record<string, unknown> };
  return { etcd: { endpoints: etcd.endpoints, prefix, ...(etcdExtra ?? {}) }, ...rest };
}

/** Starts one ipamd per spec on `etcd` with the same pools (the shared ConfigMap) and its own identity. */
export async function startClusterNodes(
  etcd: EtcdCluster,
  specs: NodeSpec[],
  o: {
    pools: unknown[];
    prefix: string;
    cluster?: Record<string, unknown>;
    extra?: Record<string, unknown>;
  },
): Promise<ClusterNodeHandle[]> {
  return Promise.all(specs.map((s) => startClusterNode(etcd, s, o)));
}

async function startClusterNode(
  etcd: EtcdCluster,
  s: NodeSpec,
  o: {
    pools: unknown[];
    prefix: string;
    cluster?: Record<string, unknown>;
    extra?: Record<string, unknown>;
  },
): Promise<ClusterNodeHandle> {
  const d = await startIpamd({
    dir: makeTempDir(`berth-cl-${s.name}-`),
    config: {
      node: { name: s.name, labels: s.labels ?? {} },
      pools: o.pools,
      cooldownSeconds: 0,
      ...o.extra,
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
  } finally {
    db.close();
  }
}

/** The node's persisted buffer (cluster_buffer), read from its file. */
export function sqliteBuffer(n: DaemonHandle): { pool: string; ip: string }[] {
  const db = new DatabaseSync(n.db, { readOnly: true });
  try {
    return db.prepare("SELECT pool, ip FROM cluster_buffer").all() as never;
  } finally {
    db.close();
  }
}

/** etcd's ip keys of a pool: ip -> owner value. */
export function etcdIps(
  etcd: EtcdCluster,
  prefix: string,
  pool: string,
): Map<string, Record<string, unknown> & { owner: string; node: string }> {
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

import { IpamdError } from "../../api/client";
import type { AllocateRequest, AllocateResponse } from "../../api/types";

/** What the test was told: each acknowledged ADD (not DELeted since) with its node and address. */
export type Acks = Map<string, { node: string; ip: string; owner: string }>;

/**
 * ADD the way kubelet drives CNI: a retryable answer (CNI code 11: etcd unreachable, the old pod still attached
 * elsewhere) is retried, up to `tries`. Returns the answer and how many retries it took.
 */
export async function addWithRetries(
  n: ClusterNodeHandle,
  req: AllocateRequest,
  tries = 20,
): Promise<{ r: AllocateResponse; retries: number }> {
  for (let i = 0; ; i++) {
    try {
      return { r: await n.client.allocate(req), retries: i };
    } catch (e) {
      const retryable = e instanceof IpamdError && ["cluster_unavailable", "attached_elsewhere", "shutting_down"].includes(e.code);
      if (!retryable || i >= tries) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/**
 * The no-duplicate and no-lost-acknowledgement check, once every node's outbox is applied and its rows follow etcd:
 * no address in two nodes' SQLite; every row agrees with etcd's key (its node; a sticky one's identity, an exact
 * claim's container); every attachment key in etcd has its row; a persisted buffer holds only this node's buffer
 * keys that no row uses; every acknowledged, not deleted ADD is still held with its address on its node.
 */
export async function expectConsistent(
  etcd: EtcdCluster,
  prefix: string,
  pools: string[],
  nodes: ClusterNodeHandle[],
  acks: Acks,
  timeoutMs = 20_000,
): Promise<void> {
  let problems: string[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    problems = [];
    const statuses = await Promise.all(nodes.map((n) => n.client.status()));
    statuses.forEach((s, i) => {
      if (s.cluster!.outboxPending > 0) problems.push(`${nodes[i]!.name}: outbox ${s.cluster!.outboxPending}`);
    });
    const keys = new Map<string, Record<string, unknown> & { owner: string; node: string }>();
    for (const pool of pools) for (const [ip, v] of etcdIps(etcd, prefix, pool)) keys.set(ip, v);
    const sticky = new Map<string, { ip: string; node: string; attachment?: { containerID: string } }>();
    for (const [k, v] of etcd.dump(`${prefix}/sticky/`)) sticky.set(k.slice(`${prefix}/sticky/`.length), JSON.parse(v));
    const stickyIps = [...sticky.values()].map((s) => s.ip);
    if (new Set(stickyIps).size !== stickyIps.length) problems.push("two sticky identities name one address in etcd");
    const holders = new Map<string, string[]>();
    for (const n of nodes) {
      for (const row of sqliteRows(n)) {
        holders.set(row.ip, [...(holders.get(row.ip) ?? []), n.name]);
        const k = keys.get(row.ip);
        if (!k) {
          problems.push(`${n.name} holds ${row.ip} (${row.owner}) but etcd has no key for it`);
          continue;
        }
        if (row.sticky) {
          const s = sticky.get(`${row.pool}/${row.owner}/-`);
          if (!s || s.ip !== row.ip || s.node !== n.name)
            problems.push(`${n.name}: sticky row ${row.owner} ${row.ip} vs etcd ${JSON.stringify(s)}`);
          else if ((s.attachment?.containerID ?? null) !== row.container_id) {
            problems.push(`${n.name}: ${row.owner} attached to ${row.container_id} here, ${s.attachment?.containerID} in etcd`);
          }
        } else if (
          k.node !== n.name ||
          !(
            k.owner === "buffer" ||
            (k.owner === "attachment" && (k.attachment as { containerID: string }).containerID === row.container_id)
          )
        ) {
          // A plain attachment's key says "owned by this node" (its buffer); one claimed exactly names its sandbox.
          problems.push(`${n.name}: ${row.ip} attached to ${row.container_id} here, etcd says ${JSON.stringify(k)}`);
        }
      }
      // The persisted buffer mirrors this node's "buffer" keys: a plain attachment keeps its row, as it keeps its key.
      const held = new Map(sqliteRows(n).map((r) => [r.ip, r]));
      for (const b of sqliteBuffer(n)) {
        const row = held.get(b.ip);
        if (row?.sticky) problems.push(`${n.name}: ${b.ip} is in its buffer and held by the sticky row of ${row.owner}`);
        const k = keys.get(b.ip);
        if (k?.owner !== "buffer" || k.node !== n.name) problems.push(`${n.name} buffers ${b.ip}, etcd says ${JSON.stringify(k)}`);
      }
    }
    for (const [name, s] of sticky) {
      const a = s.attachment as { containerID: string; node: string } | undefined;
      if (!a) continue;
      const n = nodes.find((x) => x.name === a.node);
      if (n && !sqliteRows(n).some((r) => r.ip === s.ip && r.container_id === a.containerID)) {
        problems.push(`etcd attaches ${name} (${s.ip}) to ${a.containerID} on ${a.node}, no such row there`);
      }
    }
    for (const [ip, on] of holders) if (on.length > 1) problems.push(`${ip} is held on ${on.join(" and ")}`);
    for (const [ip, k] of keys) {
      if (k.owner === "attachment" && !holders.get(ip)?.includes(k.node)) problems.push(`etcd attaches ${ip} on ${k.node}, no row there`);
      if (k.owner === "buffer" && holders.get(ip)?.some((h) => h !== k.node)) {
        problems.push(`${ip} is buffered by ${k.node} in etcd but held on ${holders.get(ip)}`);
      }
    }
    for (const [containerID, a] of acks) {
      const n = nodes.find((x) => x.name === a.node)!;
      const row = sqliteRows(n).find((r) => r.container_id === containerID);
      if (!row || row.ip !== a.ip) {
        problems.push(`acknowledged ADD ${containerID} (${a.ip} on ${a.node}) is ${row ? `now ${row.ip}` : "lost"}`);
      }
    }
    if (problems.length === 0) return;
    if (Date.now() > deadline) throw new Error(`cluster is not consistent:\n  ${problems.slice(0, 30).join("\n  ")}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
