// Plugin benchmarks, run by `make bench` after `make build`:
//  1. start-up: the compiled berth-macvlan answering VERSION (target: median < 25 ms);
//  2. ADD and DEL wall time of berth-macvlan + berth-ipam (ipamd running) against the
//     reference macvlan + host-local on the same master, machine and run, alternating.
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const bin = join(root, "dist/bin");
const REFERENCE = "/usr/lib/cni";
const rounds = Number(process.env.BENCH_ROUNDS ?? 40);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function ms(n: number): string { return `${n.toFixed(1)} ms`; }

function timeRun(file: string, env: Record<string, string>, stdin: string): number {
  const start = process.hrtime.bigint();
  const r = spawnSync(file, [], { env, input: stdin, encoding: "utf8" });
  const elapsed = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`${file} ${env.CNI_COMMAND} failed (${r.status}): ${r.stdout}${r.stderr}`);
  return elapsed;
}

function startupBench(): void {
  const env = { CNI_COMMAND: "VERSION", PATH: "" };
  const conf = JSON.stringify({ cniVersion: "1.1.0" });
  for (const [label, file] of [["berth-macvlan", join(bin, "berth-macvlan")], ["reference macvlan", join(REFERENCE, "macvlan")]]) {
    if (!existsSync(file)) { console.log(`  ${label}: not found at ${file}`); continue; }
    for (let i = 0; i < 5; i++) timeRun(file, env, conf); // warm the page cache
    const samples = Array.from({ length: 60 }, () => timeRun(file, env, conf));
    console.log(`  ${label.padEnd(18)} VERSION median ${ms(median(samples))}  (p90 ${ms(percentile(samples, 0.9))}, n=${samples.length})`);
  }
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))];
}

async function waitForSocket(path: string, daemon: ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (existsSync(path)) return;
    if (daemon.exitCode !== null) throw new Error(`ipamd exited with ${daemon.exitCode}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`ipamd did not create ${path}`);
}

async function addDelBench(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), "berth-bench-"));
  const master = `bbm${process.pid % 10000}`;
  const netns = `berth-bench-${process.pid}`;
  const socket = join(tmp, "ipamd.sock");
  writeFileSync(join(tmp, "ipamd.json"), JSON.stringify({
    node: { name: "bench", labels: {} },
    cooldownSeconds: 0,
    pools: [{ name: "bench", subnet: "10.97.0.0/16", gateway: "10.97.0.1", routes: [{ dst: "0.0.0.0/0" }] }],
  }));
  const daemon = spawn("node", [join(root, "dist/ipamd/ipamd.mjs"), "--config", join(tmp, "ipamd.json"),
    "--socket", socket, "--db", join(tmp, "ipam.db"), "--log-file", join(tmp, "ipamd.log")], { stdio: "ignore" });
  try {
    execFileSync("ip", ["link", "add", master, "type", "veth", "peer", "name", `${master}p`]);
    execFileSync("ip", ["link", "set", master, "up"]);
    execFileSync("ip", ["link", "set", `${master}p`, "up"]);
    execFileSync("ip", ["netns", "add", netns]);
    await waitForSocket(socket, daemon);

    // The reference plugins Debian ships speak CNI up to 1.0.0.
    const common = { cniVersion: "1.0.0", name: "bench", master, mode: "bridge" };
    const ours = JSON.stringify({ ...common, type: "berth-macvlan", ipam: { type: "berth-ipam", socket } });
    const theirs = JSON.stringify({ ...common, type: "macvlan",
      ipam: { type: "host-local", subnet: "10.98.0.0/16", gateway: "10.98.0.1", dataDir: join(tmp, "host-local"),
        routes: [{ dst: "0.0.0.0/0" }] } });
    const env = (command: string, id: string, path: string) => ({
      CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${netns}`, CNI_IFNAME: "eth0",
      CNI_PATH: path, CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=bench-pod", PATH: process.env.PATH ?? "",
    });
    const t = { oursAdd: [] as number[], oursDel: [] as number[], refAdd: [] as number[], refDel: [] as number[] };
    for (let i = 0; i < rounds; i++) {
      const id = `bench${i}`;
      t.oursAdd.push(timeRun(join(bin, "berth-macvlan"), env("ADD", id, bin), ours));
      t.oursDel.push(timeRun(join(bin, "berth-macvlan"), env("DEL", id, bin), ours));
      t.refAdd.push(timeRun(join(REFERENCE, "macvlan"), env("ADD", id, REFERENCE), theirs));
      t.refDel.push(timeRun(join(REFERENCE, "macvlan"), env("DEL", id, REFERENCE), theirs));
    }
    const pair = (a: number[], d: number[]) => a.map((x, i) => x + d[i]);
    const rows: [string, number[], number[]][] = [
      ["ADD", t.oursAdd, t.refAdd], ["DEL", t.oursDel, t.refDel],
      ["ADD+DEL", pair(t.oursAdd, t.oursDel), pair(t.refAdd, t.refDel)],
    ];
    console.log(`  ${rounds} rounds, alternating; medians:`);
    for (const [label, o, r] of rows) {
      console.log(`  ${label.padEnd(8)} berth ${ms(median(o)).padStart(9)}   reference ${ms(median(r)).padStart(9)}   ratio ${(median(o) / median(r)).toFixed(2)}`);
    }
  } finally {
    daemon.kill("SIGTERM");
    spawnSync("ip", ["netns", "del", netns]);
    spawnSync("ip", ["link", "del", master]);
    rmSync(tmp, { recursive: true, force: true });
  }
}

console.log("berth-macvlan start-up (CNI VERSION, compiled executable, empty PATH):");
startupBench();
console.log("\nberth-macvlan + berth-ipam vs reference macvlan + host-local:");
await addDelBench();
