// What `make demo` and `make demo-cluster` leave behind, and running one of them to a step and interrupting it (Ctrl-C).
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { ROOT } from "./plugins";

/** Namespaces and links named with the demo's tag, its temp dir, and processes (ipamd, etcd) started on it. */
export function leftovers(tag: string, workDir: string): string[] {
  const found: string[] = [];
  for (const line of execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n"))
    if (line.startsWith(`${tag}-`)) found.push(`netns ${line}`);
  const links = JSON.parse(execFileSync("ip", ["-j", "link", "show"], { encoding: "utf8" })) as { ifname: string }[];
  for (const l of links) if (l.ifname.startsWith(tag)) found.push(`link ${l.ifname}`);
  if (existsSync(workDir)) found.push(`dir ${workDir}`);
  const procs = spawnSync("pgrep", ["-f", workDir], { encoding: "utf8" }).stdout.trim();
  if (procs) found.push(`processes ${procs}`);
  return found;
}

/** Runs `script` until its output shows `step`, sends SIGINT, and returns its exit code and all it wrote. */
export async function interruptAt(script: string, step: string): Promise<{ code: number | null; output: string }> {
  const child = spawn("bash", [script], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo never reached ${step}:\n${output}`)), 60_000);
    child.stdout.on("data", () => {
      if (output.includes(step)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  child.kill("SIGINT");
  // "close", not "exit": the cleanup's last lines may still be in the pipes when the process exits
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  return { code, output };
}
