// Load benchmark of ipamd through its unix socket: durable allocations per second and p50/p99
// latency at 1, 16 and 256 concurrent clients, on an empty /16 and with 50,000 existing
// reservations. Drives a real daemon (esbuild bundle on node) with a real SQLite file.
//
// With --baseline DIR (a dist/ of another build: DIR/ipamd/ipamd.mjs) every figure is measured for that build ("before")
// and this one (BERTH_DIST or dist/, "after") in --rounds rounds (default 5), one daemon per build taking turns; the
// median round of each build is what counts (other work on the machine moves single rounds).
// Each figure also says the daemon's CPU time per allocation (user + system, /proc/<pid>/stat).
// The clients are lean (scripts/lib/lean-client.ts), and a first line measures them against a node:http server that
// answers at once without work: the floor of this load generator and Node's HTTP on this machine. "16n" is 16 clients
// that open a new connection for every request, as the plugins do (each CNI call is a new process).
//
//   npx bun scripts/bench-ipamd.ts [--allocations 5000] [--seed 50000] [--concurrency 1,16,256,16n] [--json] [--cpu-prof DIR]
//     [--baseline DIR] [--rounds 5]
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { IpamdClient } from "../api/client";
import { LeanConnection } from "./lib/lean-client";
import { type DaemonHandle, startIpamd } from "../test/helpers/ipamd";

interface Result {
  build: string;
  seeded: number;
  concurrency: number;
  /** A new connection per request (the plugins' way), not one kept open per client. */
  fresh: boolean;
  allocations: number;
  perSecond: number;
  p50ms: number;
  p99ms: number;
  maxms: number;
  errors: number;
  /** The daemon's CPU milliseconds per allocation during the run, and of them in the kernel. */
  cpuMsPer: number;
  sysMsPer: number;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

const ALLOCATIONS = Number(arg("allocations", "5000"));
const SEED = Number(arg("seed", "50000"));
/** Concurrent clients per run; "16n": 16 clients that open a new connection for every request, as the plugins do. */
const MODES = arg("concurrency", "1,16,256,16n")
  .split(",")
  .map((m) => ({ clients: Number.parseInt(m, 10), fresh: m.endsWith("n") }));
const JSON_OUT = process.argv.includes("--json");
/** --cpu-prof DIR: the daemon writes a V8 CPU profile there when it stops (open it in Chrome's DevTools). */
const CPU_PROF = process.argv.includes("--cpu-prof") ? resolve(arg("cpu-prof", "/tmp/berth-bench-prof")) : undefined;
const THIS_BUILD = process.env.BERTH_DIST ? resolve(process.env.BERTH_DIST) : undefined;
/** The builds measured: this one (BERTH_DIST, else built from source), and with --baseline the other one first. */
const BUILDS: { label: string; dist: string | undefined }[] = process.argv.includes("--baseline")
  ? [
      { label: "before", dist: resolve(arg("baseline", "")) },
      { label: "after", dist: THIS_BUILD ?? resolve("dist") },
    ]
  : [{ label: "this build", dist: THIS_BUILD }];
// Several rounds even for one build: the p99 of one round of 5,000 moved from 3.5 to 6.5 ms between two identical
// builds on this 2-core machine, so a single round cannot say whether a goal is met; the median round can, with its range.
const ROUNDS = Number(arg("rounds", process.argv.includes("--baseline") ? "5" : "3"));

/** CPU milliseconds a process used so far: user + system, and system. */
function cpuMs(pid: number | undefined): { all: number; sys: number } {
  if (!pid) return { all: 0, sys: 0 };
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return { all: (Number(f[11]) + Number(f[12])) * 10, sys: Number(f[12]) * 10 }; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return { all: 0, sys: 0 };
  }
}

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

async function run(d: DaemonHandle, build: string, seeded: number, mode: Mode, total: number, tag: string): Promise<Result> {
  return runOn(d.socket, d.proc.pid, build, seeded, mode, total, tag);
}

async function runOn(
  socket: string,
  pid: number | undefined,
  build: string,
  seeded: number,
  { clients: concurrency, fresh }: Mode,
  total: number,
  tag: string,
): Promise<Result> {
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  const clients = Array.from({ length: fresh ? 0 : concurrency }, () => new LeanConnection(socket));
  await Promise.all(clients.map((c) => c.ready));
  // One untimed request per connection first (a read: it takes no address). A connect completes in the kernel's
  // backlog, and under load ipamd's event loop accepts about one waiting connection per turn, so the last of 256 new
  // connections waited up to ~1 s for their first answer. The figures are the steady state of open connections.
  await Promise.all(clients.map((c) => c.get("/v1/statefulsets")));
  const cpu0 = cpuMs(pid);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, k) => {
      for (let i = next++; i < total; i = next++) {
        const start = performance.now();
        const client = fresh ? new LeanConnection(socket) : clients[k]!;
        try {
          if (fresh) await client.ready;
          await client.allocate({ containerID: `bench-${tag}-${i}`, ifName: "eth0", network: "bench" });
          latencies.push(performance.now() - start);
        } catch {
          errors++;
        } finally {
          if (fresh) client.close();
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = cpuMs(pid);
  for (const c of clients) c.close();
  latencies.sort((a, b) => a - b);
  return {
    build,
    seeded,
    concurrency,
    fresh,
    allocations: latencies.length,
    perSecond: Math.round(latencies.length / seconds),
    p50ms: +quantile(latencies, 0.5).toFixed(3),
    p99ms: +quantile(latencies, 0.99).toFixed(3),
    maxms: +(latencies.at(-1) ?? NaN).toFixed(3),
    errors,
    cpuMsPer: +((cpu1.all - cpu0.all) / Math.max(1, latencies.length)).toFixed(3),
    sysMsPer: +((cpu1.sys - cpu0.sys) / Math.max(1, latencies.length)).toFixed(3),
  };
}

const FRESH_NOTE = "a new connection per request, as the plugins make";

function line(r: Result, note = ""): string {
  return (
    `${BUILDS.length > 1 ? r.build.padEnd(7) : ""}existing=${String(r.seeded).padStart(5)} clients=${String(r.concurrency).padStart(3)}` +
    `${r.fresh ? "n" : " "} ` +
    `${String(r.perSecond).padStart(6)} alloc/s  p50 ${r.p50ms.toFixed(2)} ms  p99 ${r.p99ms.toFixed(2)} ms  ` +
    `max ${r.maxms.toFixed(2)} ms  cpu ${r.cpuMsPer.toFixed(3)} ms/alloc (sys ${r.sysMsPer.toFixed(3)})  errors ${r.errors}` +
    (r.fresh || note ? `   <- ${[r.fresh ? FRESH_NOTE : "", note].filter(Boolean).join("; ")}` : "")
  );
}

interface Mode {
  clients: number;
  fresh: boolean;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The same clients against a node:http server that answers every request at once with a fixed body. */
async function floor(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-floor-"));
  const socket = join(dir, "empty.sock");
  const server = spawn(
    resolve(import.meta.dirname, "../node_modules/.bin/node"), // the Node ipamd runs on
    [
      "-e",
      `const body = '{"owner":"x","sticky":false,"ips":[],"routes":[],"dns":{}}';
       require("node:http").createServer((q, a) => { q.resume(); q.on("end", () => {
         a.writeHead(200, { "content-type": "application/json", "content-length": body.length }); a.end(body); }); })
       .listen(process.argv[1]);`,
      socket,
    ],
    { stdio: "ignore" },
  );
  try {
    for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
    await runOn(socket, server.pid, "floor", 0, { clients: 16, fresh: false }, 20_000, "warm");
    for (const m of MODES) {
      const r = await runOn(socket, server.pid, "floor", 0, m, ALLOCATIONS, `floor-${m.clients}${m.fresh ? "n" : ""}`);
      if (!JSON_OUT) console.log(line(r, "floor: a node:http server doing no work, same clients"));
    }
  } finally {
    server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const results: Result[] = [];
  await floor();
  for (const seeded of [...new Set([0, SEED])]) results.push(...(await measure(seeded)));
  if (ROUNDS > 1 && !JSON_OUT) {
    console.log(`-- median of ${ROUNDS} rounds (p99 range over the rounds after each line)`);
    for (const seeded of [...new Set(results.map((r) => r.seeded))]) {
      for (const mode of MODES) {
        for (const b of BUILDS) {
          const rs = results.filter(
            (r) => r.build === b.label && r.seeded === seeded && r.concurrency === mode.clients && r.fresh === mode.fresh,
          );
          const m = (k: "perSecond" | "p50ms" | "p99ms" | "maxms" | "errors" | "cpuMsPer" | "sysMsPer"): number =>
            median(rs.map((r) => r[k]));
          const keys = ["perSecond", "p50ms", "p99ms", "maxms", "errors", "cpuMsPer", "sysMsPer"] as const;
          const p99s = rs.map((r) => r.p99ms);
          const p99 = m("p99ms");
          const goal = mode.clients === 16 && !mode.fresh ? `; goal p99 < 4 ms: ${p99 < 4 ? "meets" : "MISSES"} the goal` : "";
          const range = `p99 ${Math.min(...p99s).toFixed(2)}-${Math.max(...p99s).toFixed(2)} ms over the rounds${goal}`;
          console.log(line({ ...rs[0]!, ...Object.fromEntries(keys.map((k) => [k, m(k)])) }, range));
        }
      }
    }
  }
  if (JSON_OUT) console.log(JSON.stringify(results, null, 2));
}

/** One daemon per build, each seeded and warmed; then the rounds, the builds taking turns within each. */
async function measure(seeded: number): Promise<Result[]> {
  const daemons: { label: string; d: DaemonHandle; admin: IpamdClient }[] = [];
  const results: Result[] = [];
  try {
    for (const build of BUILDS) {
      if (build.dist) process.env.BERTH_DIST = build.dist; // startIpamd runs dist/ipamd/ipamd.mjs of BERTH_DIST
      const d = await startIpamd({
        // A /15: the seeded 50,000 plus every run's addresses, which cool down after each run's GC, fit without reuse.
        config: { node: { name: "bench" }, pools: [{ name: "bench15", subnet: "10.200.0.0/15", networks: ["bench"] }] },
        ...(CPU_PROF ? { nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`] } : {}),
      });
      // Set-up requests that reserve or release thousands at once: longer than the helper's 5 s.
      const admin = new IpamdClient(d.socket, { keepAlive: true, timeoutMs: 120_000 });
      daemons.push({ label: build.label, d, admin });
      if (seeded > 0) {
        const ms = await seed(admin, seeded);
        if (!JSON_OUT) console.log(`${build.label}: seeded ${seeded} reservations in ${(ms / 1000).toFixed(2)} s`);
      }
      // Measure a warm daemon, as on a node: JIT, and SQLite's files grown to their working size
      // (seeding does that for the second round). Then clear the warm-up allocations.
      await run(d, build.label, seeded, { clients: 16, fresh: false }, seeded > 0 ? 500 : 20_000, "warm");
      await admin.gc("bench", []);
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of MODES) {
        // ABBA: neither build always runs first after the other one's run.
        for (const { label, d, admin } of round % 2 ? [...daemons].reverse() : daemons) {
          const tag = `${seeded}-${mode.clients}${mode.fresh ? "n" : ""}-${round}`;
          const r = await run(d, label, seeded, mode, ALLOCATIONS, tag);
          results.push(r);
          if (!JSON_OUT) console.log(line(r));
          // Keep the number of existing reservations constant between runs.
          await admin.gc("bench", []);
        }
      }
    }
    for (const { label, d } of daemons) {
      const status = await d.client.status();
      const metrics = await d.client.metrics();
      const num = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(metrics)?.[1] ?? NaN);
      const batches = num("berth_ipamd_commit_batch_size_count");
      const batched = num("berth_ipamd_commit_batch_size_sum");
      if (!JSON_OUT) {
        console.log(
          `  (${BUILDS.length > 1 ? `${label}: ` : ""}reservations after runs: ${status.reservations}; ${batched} requests ` +
            `committed in ${batches} transactions, ${(batched / batches).toFixed(1)} per commit on average)`,
        );
      }
    }
  } finally {
    for (const { d, admin } of daemons) {
      admin.close();
      await d.stop();
      rmSync(d.dir, { recursive: true, force: true });
    }
  }
  return results;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
