// Plugin benchmarks, run by `make bench` after `make build`:
//  1. start-up: the compiled berth-macvlan answering VERSION against the reference, and the floor:
//     an empty `bun build --compile` executable against the same reference (what no Bun program can
//     beat); the FFI load (bun:ffi against koffi) in-process;
//  2. ADD and DEL wall time of berth-macvlan + berth-ipam (ipamd running) against the reference
//     macvlan + host-local, and plugin against plugin with both on host-local, on the same master,
//     namespace, machine and run, alternating, after warm-up runs; wall time, and the CPU time the
//     kernel accounted to the process and the children it waited for (host-local), which a loaded
//     machine disturbs less;
//  3. where an ADD and a DEL spend their time: phases cut at system calls in an strace of the
//     compiled plugin (strace --seccomp-bpf stops only at the calls it marks, so it adds little).
// With --baseline DIR (a dist/ of another build: DIR/bin/berth-macvlan), that build's berth-macvlan +
// berth-ipam takes its turn in the same rounds, and this build is also given against it.
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..");
const bin = join(root, "dist/bin");
const REFERENCE = "/usr/lib/cni";
const rounds = Number(process.env.BENCH_ROUNDS ?? 40);
const baselineAt = process.argv.indexOf("--baseline");
const baseline = baselineAt >= 0 && process.argv[baselineAt + 1] ? join(resolve(process.argv[baselineAt + 1]!), "bin") : undefined;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function ms(n: number): string {
  return `${n.toFixed(1)} ms`;
}

// The part of Bun's API used here (the project has no Bun type package): spawnSync reports the
// child's rusage, node:child_process does not.
declare const Bun: {
  spawnSync(
    cmd: string[],
    o: { env: Record<string, string>; stdin: Buffer; stdout: "pipe"; stderr: "pipe" },
  ): {
    exitCode: number | null;
    stdout: Buffer;
    stderr: Buffer;
    resourceUsage: { cpuTime: { total: bigint } };
  };
};

/** CPU time (ms) of each run, keyed by the wall-time sample it belongs to. */
const cpuOf: number[] = [];

function timeRun(file: string, env: Record<string, string>, stdin: string): number {
  const start = process.hrtime.bigint();
  const r = Bun.spawnSync([file], { env, stdin: Buffer.from(stdin), stdout: "pipe", stderr: "pipe" });
  const elapsed = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.exitCode !== 0) throw new Error(`${file} ${env.CNI_COMMAND} failed (${r.exitCode}): ${r.stdout}${r.stderr}`);
  cpuOf.push(Number(r.resourceUsage.cpuTime.total) / 1000);
  return elapsed;
}

/** Runs fn, returning its wall time and the CPU time timeRun recorded for it. */
function timed(fn: () => number): { wall: number; cpu: number } {
  const wall = fn();
  return { wall, cpu: cpuOf[cpuOf.length - 1]! };
}

/**
 * VERSION of berth-macvlan and of the reference, and the floor: an empty compiled executable built
 * with the same flags as dist/bin/berth (Bun's own start and exit), the three in turn.
 */
function startupBench(): void {
  const env = { CNI_COMMAND: "VERSION", PATH: "" };
  const conf = JSON.stringify({ cniVersion: "1.1.0" });
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-floor-"));
  try {
    writeFileSync(join(dir, "empty.ts"), "export {};\n");
    execFileSync(
      join(root, "node_modules/.bin/bun"),
      [
        "build",
        "--compile",
        "--minify",
        "--bytecode",
        "--format=esm",
        "--no-compile-autoload-dotenv",
        "--no-compile-autoload-bunfig",
        join(dir, "empty.ts"),
        "--outfile",
        join(dir, "empty"),
      ],
      { stdio: "ignore" },
    );
    const runs = [
      ["berth-macvlan", join(bin, "berth-macvlan")],
      ["empty bun binary", join(dir, "empty")],
      ["reference macvlan", join(REFERENCE, "macvlan")],
    ] as const;
    const t = runs.map(() => ({ wall: [] as number[], cpu: [] as number[] }));
    for (let i = 0; i < 65; i++) {
      runs.forEach(([, file], k) => {
        const { wall, cpu } = timed(() => timeRun(file, env, conf));
        if (i >= 5) {
          t[k]!.wall.push(wall);
          t[k]!.cpu.push(cpu);
        } // the first 5 warm the page cache
      });
    }
    const ref = t[2]!;
    runs.forEach(([label], k) => {
      const { wall, cpu } = t[k]!;
      console.log(
        `  ${label.padEnd(18)} VERSION wall ${ms(median(wall)).padStart(8)} (p90 ${ms(percentile(wall, 0.9))})  ` +
          `ratio ${(median(wall) / median(ref.wall)).toFixed(2)}   cpu ` +
          `${ms(median(cpu)).padStart(8)}  ratio ${(median(cpu) / median(ref.cpu)).toFixed(2)}`,
      );
    });
    console.log("  (the empty binary runs no code at all: its ratio is the floor of any compiled Bun program against Go's;");
    console.log("   berth-macvlan answers VERSION before loading node:fs or the CNI core, so it sits just above that floor)");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Load time of the libc binding, in a fresh Bun process each time: bun:ffi (what ships) against koffi. */
function ffiLoadBench(): void {
  const symbols = "socket bind connect getsockname setsockopt getsockopt sendto recv close open setns fstatfs ioctl flock strerror".split(
    " ",
  );
  const bunFfi = `const t=performance.now();const {dlopen}=require("bun:ffi");dlopen("libc.so.6",{${symbols
    .map((n) => `${n}:{args:[],returns:"i32"}`)
    .join(",")}});console.log(performance.now()-t)`;
  const koffi = `const t=performance.now();const k=require("koffi");const l=k.load("libc.so.6");${symbols
    .map((n) => `l.func("int ${n}(int a)");`)
    .join("")}console.log(performance.now()-t)`;
  for (const [label, code] of [
    ["bun:ffi", bunFfi],
    ["koffi (old)", koffi],
  ]) {
    const samples = Array.from({ length: 15 }, () =>
      Number(execFileSync(join(root, "node_modules/.bin/bun"), ["-e", code], { cwd: root, encoding: "utf8" }).trim()),
    );
    const what = `FFI load, ${label}`.padEnd(18);
    console.log(`  ${what} median ${median(samples).toFixed(2)} ms for ${symbols.length} libc functions (in-process)`);
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
  writeFileSync(
    join(tmp, "ipamd.json"),
    JSON.stringify({
      node: { name: "bench", labels: {} },
      cooldownSeconds: 0,
      pools: [{ name: "bench", subnet: "10.97.0.0/16", gateway: "10.97.0.1", routes: [{ dst: "0.0.0.0/0" }] }],
    }),
  );
  const daemon = spawn(
    "node",
    [
      join(root, "dist/ipamd/ipamd.mjs"),
      "--config",
      join(tmp, "ipamd.json"),
      "--socket",
      socket,
      "--db",
      join(tmp, "ipam.db"),
      "--log-file",
      join(tmp, "ipamd.log"),
    ],
    { stdio: "ignore" },
  );
  try {
    execFileSync("ip", ["link", "add", master, "type", "veth", "peer", "name", `${master}p`]);
    execFileSync("ip", ["link", "set", master, "up"]);
    execFileSync("ip", ["link", "set", `${master}p`, "up"]);
    execFileSync("ip", ["netns", "add", netns]);
    await waitForSocket(socket, daemon);

    // The reference plugins Debian ships speak CNI up to 1.0.0.
    const common = { cniVersion: "1.0.0", name: "bench", master, mode: "bridge" };
    const ours = JSON.stringify({ ...common, type: "berth-macvlan", ipam: { type: "berth-ipam", socket } });
    const hostLocal = (subnet: string, dir: string) => ({
      type: "host-local",
      subnet,
      gateway: subnet.replace(/0\/16$/, "1"),
      dataDir: join(tmp, dir),
      routes: [{ dst: "0.0.0.0/0" }],
    });
    const oursHostLocal = JSON.stringify({ ...common, type: "berth-macvlan", ipam: hostLocal("10.96.0.0/16", "host-local-berth") });
    const theirs = JSON.stringify({ ...common, type: "macvlan", ipam: hostLocal("10.98.0.0/16", "host-local") });
    const env = (command: string, id: string, path: string) => ({
      CNI_COMMAND: command,
      CNI_CONTAINERID: id,
      CNI_NETNS: `/run/netns/${netns}`,
      CNI_IFNAME: "eth0",
      CNI_PATH: path,
      CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=bench-pod",
      PATH: process.env.PATH ?? "",
    });
    const berth = join(bin, "berth-macvlan"),
      reference = join(REFERENCE, "macvlan");
    const kinds = {
      ours: { file: berth, path: bin, conf: ours },
      oursHl: { file: berth, path: `${bin}:${REFERENCE}`, conf: oursHostLocal },
      ref: { file: reference, path: REFERENCE, conf: theirs },
      ...(baseline ? { base: { file: join(baseline, "berth-macvlan"), path: baseline, conf: ours } } : {}),
    } as Record<"ours" | "oursHl" | "ref" | "base", { file: string; path: string; conf: string }>;
    type Samples = { add: number[]; del: number[]; addCpu: number[]; delCpu: number[] };
    const t = Object.fromEntries(Object.keys(kinds).map((k) => [k, { add: [], del: [], addCpu: [], delCpu: [] }])) as unknown as Record<
      keyof typeof kinds,
      Samples
    >;
    const once = (k: keyof typeof kinds, id: string, record: boolean) => {
      const { file, path, conf } = kinds[k];
      const a = timed(() => timeRun(file, env("ADD", id, path), conf));
      const d = timed(() => timeRun(file, env("DEL", id, path), conf));
      if (record) {
        t[k].add.push(a.wall);
        t[k].del.push(d.wall);
        t[k].addCpu.push(a.cpu);
        t[k].delCpu.push(d.cpu);
      }
    };
    for (let i = 0; i < 3; i++) for (const k of Object.keys(kinds) as (keyof typeof kinds)[]) once(k, `warm${k}${i}`, false);
    for (let i = 0; i < rounds; i++) for (const k of Object.keys(kinds) as (keyof typeof kinds)[]) once(k, `bench${k}${i}`, true);
    const pair = (a: number[], d: number[]) => a.map((x, i) => x + d[i]!);
    const table = (title: string, o: Samples, r: Samples, names = ["berth", "reference"]) => {
      console.log(title);
      const rows = [
        ["ADD", o.add, r.add, o.addCpu, r.addCpu],
        ["DEL", o.del, r.del, o.delCpu, r.delCpu],
        ["ADD+DEL", pair(o.add, o.del), pair(r.add, r.del), pair(o.addCpu, o.delCpu), pair(r.addCpu, r.delCpu)],
      ] as const;
      for (const [label, a, b, ac, bc] of rows) {
        console.log(
          `  ${label.padEnd(8)} ${names[0]} ${ms(median(a)).padStart(9)}   ${names[1]} ${ms(median(b)).padStart(9)}   ` +
            `ratio ${(median(a) / median(b)).toFixed(2)}    cpu ${ms(median(ac)).padStart(8)} vs ${ms(median(bc)).padStart(8)}  ` +
            `ratio ${(median(ac) / median(bc)).toFixed(2)}`,
        );
      }
    };
    console.log(`  ${rounds} rounds, the pairs in turn (after 3 warm-up rounds); medians of wall time and of CPU time:`);
    table("  berth-macvlan + berth-ipam (ipamd) vs macvlan + host-local:", t.ours, t.ref);
    table("  plugin against plugin, both on host-local (berth-macvlan + host-local vs macvlan + host-local):", t.oursHl, t.ref);
    if (baseline) {
      table(`  the baseline build (${baseline}), berth-macvlan + berth-ipam, against the reference:`, t.base, t.ref);
      table("  this build against the baseline build (ratio < 1: this build is faster), both on ipamd:", t.ours, t.base, [
        "this",
        "baseline",
      ]);
    }

    console.log("\nwhere the time goes (median of 10 ADD and 10 DEL of berth-macvlan + berth-ipam under strace --seccomp-bpf):");
    phaseBreakdown((command, id) => ({ file: berth, env: env(command, id, bin), stdin: ours }));
    builtinsFirstCalled((command, id) => ({ file: berth, env: env(command, id, bin), stdin: ours }));
  } finally {
    daemon.kill("SIGTERM");
    spawnSync("ip", ["netns", "del", netns]);
    spawnSync("ip", ["link", "del", master]);
    rmSync(tmp, { recursive: true, force: true });
  }
}

console.log("berth-macvlan start-up (CNI VERSION, compiled executable, empty PATH):");
startupBench();
ffiLoadBench();
console.log("\nADD and DEL on one veth master into one namespace:");
await addDelBench();

// ---- per-phase breakdown from an strace of the compiled plugin

interface Call {
  pid: number;
  start: number;
  end: number;
  name: string;
  text: string;
}

/** Calls of an `strace -f -ttt -T` log, unfinished/resumed halves joined; times in ms from execve. */
function parseTrace(log: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<number, Call>();
  let t0 = NaN;
  for (const line of log.split("\n")) {
    const m = /^(\d+)\s+(\d+\.\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const pid = Number(m[1]),
      at = Number(m[2]) * 1000,
      rest = m[3]!;
    if (Number.isNaN(t0)) t0 = at;
    const dur = /<(\d+\.\d+)>$/.exec(rest);
    const resumed = /^<\.\.\. (\w+) resumed>/.exec(rest);
    if (resumed) {
      const c = open.get(pid);
      if (c) {
        c.end = at - t0 + (dur ? Number(dur[1]) * 1000 : 0);
        c.text += rest;
        open.delete(pid);
      }
      continue;
    }
    const name = /^(\w+)\(/.exec(rest)?.[1];
    if (!name) continue;
    const c: Call = { pid, start: at - t0, end: at - t0, name, text: rest };
    if (rest.includes("<unfinished ...>")) open.set(pid, c);
    else if (dur) c.end = c.start + Number(dur[1]) * 1000;
    calls.push(c);
  }
  return calls;
}

function phasesOf(calls: Call[]): Record<string, number> {
  const first = (p: (c: Call) => boolean) => calls.find(p);
  const last = (p: (c: Call) => boolean) => [...calls].reverse().find(p);
  const stdin = first((c) => c.name === "read" && c.text.startsWith("read(0,"));
  const netns = first((c) => c.name === "openat" && c.text.includes("/run/netns/"));
  const setnsBack = calls.filter((c) => c.name === "setns")[1];
  const nlFds = new Set(calls.filter((c) => c.name === "socket" && c.text.includes("AF_NETLINK")).map((c) => /= (\d+)/.exec(c.text)?.[1]));
  const onNl = (c: Call) => (c.name === "sendto" || c.name === "recvfrom") && nlFds.has(/^\w+\((\d+)/.exec(c.text)?.[1]);
  const connect = first((c) => c.name === "connect" && c.text.includes("AF_UNIX"));
  const unixFd = connect && /^connect\((\d+)/.exec(connect.text)?.[1];
  const answer = unixFd ? last((c) => c.name === "recvfrom" && c.text.startsWith(`recvfrom(${unixFd},`)) : undefined;
  const dellink = first((c) => onNl(c) && c.name === "sendto" && /nlmsg_type=(RTM_DELLINK|0x11\b)/.test(c.text));
  const output = last((c) => c.name === "write" && c.text.startsWith("write(1,"));
  const exit = last((c) => c.name === "exit_group");
  const out: Record<string, number> = {};
  if (stdin) out["runtime start + dispatcher (execve to reading stdin)"] = stdin.start;
  if (stdin && netns) out["config parse, plugin modules, FFI load, master lookup"] = netns.start - stdin.end;
  if (netns && setnsBack) out["netns entry (open, setns in, netlink socket, setns back)"] = setnsBack.end - netns.start;
  out["netlink requests (time in sendto/recvfrom, all sockets)"] = calls.filter(onNl).reduce((s, c) => s + (c.end - c.start), 0);
  if (dellink) out["  of which the kernel's macvlan delete (RTM_DELLINK)"] = dellink.end - dellink.start;
  if (connect && answer) out["ipamd round trip (connect to answer)"] = answer.end - connect.start;
  if (connect && answer && dellink) {
    const overlap = Math.min(answer.end, dellink.end) - Math.max(connect.start, dellink.start);
    out["  of which overlapped with the kernel's delete"] = Math.max(0, overlap);
  }
  if (output && exit && output.start > (answer?.end ?? 0)) out["result written to exit"] = exit.start - output.start;
  if (exit) out["total under strace (execve to exit_group)"] = exit.start;
  return out;
}

/**
 * The JavaScript builtins one ADD and one DEL call for the first time: JSC logs every function it links
 * (BUN_JSC_dumpGeneratedBytecodes), builtins under their own names.
 */
function builtinsFirstCalled(run: (command: string, id: string) => { file: string; env: Record<string, string>; stdin: string }): void {
  // JavaScriptCore's builtins written in JavaScript that the plugins' ADD/DEL path keeps out (docs/architecture.md,
  // "Plugins"): a process compiles each from source the first time it calls it.
  const JS_BUILTINS = new Set(
    (
      "map filter some every find findIndex findLast findLastIndex forEach reduce reduceRight flat flatMap from of fromEntries " +
      "next arrayIteratorNextHelper performIteration padStart padEnd matchAll values entries keys"
    ).split(" "),
  );
  const found: string[] = [];
  for (const command of ["ADD", "DEL"]) {
    const { file, env, stdin } = run(command, "builtins");
    const r = spawnSync(file, [], {
      env: { ...env, BUN_JSC_dumpGeneratedBytecodes: "1" },
      input: stdin,
      encoding: "utf8",
      maxBuffer: 1 << 28,
    });
    if (r.status !== 0) throw new Error(`${command} with BUN_JSC_dumpGeneratedBytecodes failed (${r.status}): ${r.stdout}`);
    const names = [...r.stderr.matchAll(/^([^\s#]+)#[A-Za-z0-9]+:\[/gm)].map((m) => m[1]!);
    const builtins = [...new Set(names.filter((n) => JS_BUILTINS.has(n)))];
    found.push(`${command} ${builtins.length ? builtins.join(", ") : "none"} (of ${names.length} functions first called)`);
  }
  console.log(`  JavaScript builtins compiled at run time (each ~0.02-0.12 ms the first time a process calls it): ${found.join("; ")}`);
}

function phaseBreakdown(run: (command: string, id: string) => { file: string; env: Record<string, string>; stdin: string }): void {
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-trace-"));
  try {
    for (const command of ["ADD", "DEL"]) {
      const samples: Record<string, number[]> = {};
      for (let i = 0; i < 10; i++) {
        for (const c of command === "DEL" ? ["ADD", "DEL"] : ["ADD"]) {
          const { file, env, stdin } = run(c, `trace${i}`);
          const log = join(dir, `${c}${i}.trace`);
          const traced = c === command;
          const marks = "trace=execve,read,openat,socket,connect,sendto,recvfrom,setns,write,exit_group";
          const r = spawnSync(traced ? "strace" : file, traced ? ["-f", "--seccomp-bpf", "-ttt", "-T", "-o", log, "-e", marks, file] : [], {
            env,
            input: stdin,
            encoding: "utf8",
          });
          if (r.status !== 0) throw new Error(`${c} under strace failed (${r.status}): ${r.stdout}${r.stderr}`);
          if (command === "ADD") spawnSync(file, [], { env: run("DEL", `trace${i}`).env, input: stdin });
          if (!traced) continue;
          for (const [k, v] of Object.entries(phasesOf(parseTrace(readFileSync(log, "utf8"))))) (samples[k] ??= []).push(v);
        }
      }
      console.log(`  ${command}`);
      for (const [k, v] of Object.entries(samples)) console.log(`    ${k.padEnd(58)} ${ms(median(v)).padStart(9)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
