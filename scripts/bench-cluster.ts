// p50/p99 of one etcd transaction and of a sticky rebind (the member moves to another node) against a REAL 3-member
// etcd on this machine, through Berth's client and ownership library. Figures, not a timed test. Run:
//   node_modules/.bin/esbuild scripts/bench-cluster.ts --bundle --platform=node --format=esm --outfile=/tmp/bench-cluster.mjs \
//     --banner:js="import{createRequire as r}from'module';const require=r(import.meta.url);" && node /tmp/bench-cluster.mjs
import { buildConfig } from "../ipamd/config";
import { EtcdClient } from "../ipamd/cluster/etcd";
import { ClusterOwnership } from "../ipamd/cluster/ownership";
import { EtcdCluster } from "../test/helpers/etcd";

const N = Number(process.env.N ?? 500);
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
const fmt = (xs: number[]): string => `p50 ${pct(xs, 0.5).toFixed(2)} ms  p99 ${pct(xs, 0.99).toFixed(2)} ms  (n=${xs.length})`;

async function run(baseDir: string): Promise<void> {
  const etcd = await EtcdCluster.start({ baseDir, heartbeatMs: 100, electionMs: 1000 });
  try {
    const c = new EtcdClient({ endpoints: etcd.endpoints });
    const key = "/bench/k";
    await c.put(key, "0");
    for (let i = 0; i < 50; i++) await c.get(key); // warm sockets and JIT
    const range: number[] = [];
    for (let i = 0; i < N; i++) {
      const t = performance.now();
      await c.get(key);
      range.push(performance.now() - t);
    }
    const txn: number[] = [];
    let rev = (await c.get(key))!.modRevision;
    for (let i = 0; i < N; i++) {
      const t = performance.now();
      const r = await c.txn([{ key, target: "mod", equals: rev }], [{ put: { key, value: String(i) } }]);
      txn.push(performance.now() - t);
      rev = r.revision;
    }
    const pool = buildConfig({ node: { name: "x" }, pools: [{ name: "p", subnet: "10.90.0.0/20" }] }).pools[0]!;
    const [a, b] = ["a", "b"].map(
      (node) => new ClusterOwnership({ client: new EtcdClient({ endpoints: etcd.endpoints }), node, pools: [pool], prefix: "/bench" }),
    );
    await a!.start({ background: false });
    await b!.start({ background: false });
    const id = { pool: "p", namespace: "db", statefulset: "web", ordinal: 0, iface: "eth0" };
    await a!.bindSticky(id, { selectsNode: true });
    const rebind: number[] = [];
    for (let i = 0; i < N; i++) {
      const node = i % 2 === 0 ? b! : a!;
      const old = i % 2 === 0 ? a! : b!;
      // The old pod's DEL reached etcd first (untimed), as when Kubernetes recreates the member elsewhere.
      if (i > 0) await old.applyOutbox([{ id: i, createdAt: 0, op: "detach-sticky", identity: id, containerID: `c${i - 1}` }]);
      const t = performance.now();
      const r = await node.bindSticky(id, { selectsNode: true, attachment: { containerID: `c${i}`, ifName: "eth0", podUID: `u${i}` } });
      rebind.push(performance.now() - t);
      if (r.created) throw new Error("rebind created a new identity");
    }
    const claim: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t = performance.now();
      await a!.claim("p", 16);
      claim.push(performance.now() - t);
    }
    console.log(`etcd data on ${baseDir}:`);
    console.log(`  range (linearizable)       ${fmt(range)}`);
    console.log(`  txn, one CAS put           ${fmt(txn)}`);
    console.log(`  sticky rebind to a node    ${fmt(rebind)}   = ${(pct(rebind, 0.5) / pct(txn, 0.5)).toFixed(1)} x txn p50`);
    console.log(`  buffer claim of 16 (list+txn) ${fmt(claim)}`);
  } finally {
    await etcd.destroy();
  }
}

for (const dir of (process.env.BASE_DIRS ?? "/dev/shm,/tmp").split(",")) await run(dir);
process.exit(0);
