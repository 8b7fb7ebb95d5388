// Load benchmark of ipamd through its unix socket: durable allocations per second and p50/p99
// latency at 1, 16 and 256 concurrent clients, on an empty /16 and with 50,000 existing
// reservations. Drives a real daemon (esbuild bundle on node) with a real SQLite file.
//
//   npx bun scripts/bench-ipamd.ts [--allocations 5000] [--seed 50000] [--concurrency 1,16,256] [--json] [--cpu-prof DIR]
import { rmSync } from "node:fs";
import { resolve } from "node:path";
import { IpamdClient } from "../api/client";
import { type DaemonHandle, startIpamd } from "../test/helpers/ipamd";

interface Result {
  seeded: number;
  concurrency: number;
  allocations: number;
  perSecond: number;
  p50ms: number;
  p99ms: number;
  maxms: number;
  errors: number;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const ALLOCATIONS = Number(arg("allocations", "5000"));
const SEED = Number(arg("seed", "50000"));
const CONCURRENCY = arg("concurrency", "1,16,256").split(",").map(Number);
const JSON_OUT = process.argv.includes("--json");
/** --cpu-prof DIR: the daemon writes a V8 CPU profile there when it stops (open it in Chrome's DevTools). */
const CPU_PROF = process.argv.includes("--cpu-prof") ? resolve(arg("cpu-prof", "/tmp/berth-bench-prof")) : undefined;

function quantile(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : NaN;
}

/** Reserve-ahead in batches: 1,000 ordinals per request, each request one transaction. */
async function seed(admin: IpamdClient, count: number): Promise<number> {
  const t0 = performance.now();
  for (let done = 0, sts = 0; done < count; sts++) {
    const replicas = Math.min(1000, count - done);
    await admin.reserve({ namespace: "seed", statefulset: `seed-${sts}`, replicas });
    done += replicas;
  }
  return performance.now() - t0;
}

async function run(d: DaemonHandle, seeded: number, concurrency: number, total: number, tag: string): Promise<Result> {
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  const clients = Array.from({ length: concurrency }, () => new IpamdClient(d.socket, { keepAlive: true, timeoutMs: 30_000 }));
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      for (let i = next++; i < total; i = next++) {
        const start = performance.now();
        try {
          await client.allocate({ containerID: `bench-${tag}-${i}`, ifName: "eth0", network: "bench" });
          latencies.push(performance.now() - start);
        } catch {
          errors++;
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  for (const c of clients) c.close();
  latencies.sort((a, b) => a - b);
  return {
    seeded,
    concurrency,
    allocations: latencies.length,
    perSecond: Math.round(latencies.length / seconds),
    p50ms: +quantile(latencies, 0.5).toFixed(3),
    p99ms: +quantile(latencies, 0.99).toFixed(3),
    maxms: +(latencies.at(-1) ?? NaN).toFixed(3),
    errors,
  };
}

async function main(): Promise<void> {
  const results: Result[] = [];
  for (const seeded of [0, SEED]) {
    const d = await startIpamd({
      config: { node: { name: "bench" }, pools: [{ name: "bench16", subnet: "10.200.0.0/16", networks: ["bench"] }] },
      ...(CPU_PROF ? { nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`] } : {}),
    });
    // Set-up requests that reserve or release thousands at once: longer than the helper's 5 s.
    const admin = new IpamdClient(d.socket, { keepAlive: true, timeoutMs: 120_000 });
    try {
      if (seeded > 0) {
        const ms = await seed(admin, seeded);
        if (!JSON_OUT) console.log(`seeded ${seeded} reservations in ${(ms / 1000).toFixed(2)} s`);
      }
      // Measure a warm daemon, as on a node: JIT, and SQLite's files grown to their working size
      // (seeding does that for the second round). Then clear the warm-up allocations.
      await run(d, seeded, 16, seeded > 0 ? 500 : 20_000, "warm");
      await admin.gc("bench", []);
      for (const c of CONCURRENCY) {
        const r = await run(d, seeded, c, ALLOCATIONS, `${seeded}-${c}`);
        results.push(r);
        if (!JSON_OUT) {
          console.log(
            `existing=${String(seeded).padStart(5)} clients=${String(c).padStart(3)}  ` +
              `${String(r.perSecond).padStart(6)} alloc/s  p50 ${r.p50ms.toFixed(2)} ms  ` +
              `p99 ${r.p99ms.toFixed(2)} ms  max ${r.maxms.toFixed(2)} ms  errors ${r.errors}`,
          );
        }
        // Keep the number of existing reservations constant between runs.
        await admin.gc("bench", []);
      }
      const status = await d.client.status();
      const metrics = await d.client.metrics();
      const num = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(metrics)?.[1] ?? NaN);
      const batches = num("berth_ipamd_commit_batch_size_count");
      const batched = num("berth_ipamd_commit_batch_size_sum");
      if (!JSON_OUT) {
        console.log(
          `  (reservations after runs: ${status.reservations}; ${batched} requests committed in ${batches} ` +
            `transactions, ${(batched / batches).toFixed(1)} per commit on average)`,
        );
      }
    } finally {
      admin.close();
      await d.stop();
      rmSync(d.dir, { recursive: true, force: true });
    }
  }
  if (JSON_OUT) console.log(JSON.stringify(results, null, 2));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
