// Benchmark (not a test): wall time of the built berth-ipam executable for VERSION (startup
// cost alone) and, with a live ipamd socket given as argv[2], for an ADD+DEL round trip.
// Run: npx bun test/bench/cni-startup.ts [/run/berth/ipamd.sock]  (RUNS=100 for more samples)
import { spawnSync } from "node:child_process";
import { pluginPath } from "../helpers/plugins";

const runs = Number(process.env.RUNS ?? 50);
const ipam = pluginPath("berth-ipam");

function time(label: string, fn: (i: number) => void): void {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    fn(i);
    samples.push(performance.now() - t);
  }
  samples.sort((a, b) => a - b);
  const p = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))]!.toFixed(1);
  console.log(`${label}: p50 ${p(0.5)} ms, p90 ${p(0.9)} ms, max ${p(1)} ms (${runs} runs)`);
}

time("berth-ipam VERSION", () => {
  spawnSync(ipam, [], { env: { CNI_COMMAND: "VERSION" }, input: '{"cniVersion":"1.1.0"}' });
});

const socket = process.argv[2];
if (socket) {
  const conf = JSON.stringify({ cniVersion: "1.1.0", name: "bench", type: "macvlan", ipam: { type: "berth-ipam", socket } });
  time("berth-ipam ADD+DEL", (i) => {
    for (const cmd of ["ADD", "DEL"]) {
      const r = spawnSync(ipam, [], {
        env: { CNI_COMMAND: cmd, CNI_CONTAINERID: `bench-${i}`, CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "net1", CNI_PATH: "/opt/cni/bin" },
        input: conf, encoding: "utf8",
      });
      if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stdout}`);
    }
  });
}
