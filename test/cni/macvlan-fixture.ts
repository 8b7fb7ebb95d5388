// Shared set-up of the berth-macvlan host tests: a test-made "host" namespace whose master NIC
// (one end of a veth pair) leads to a "lan" namespace with the gateway addresses, and pod
// namespaces. The plugins run inside the host namespace through `ip netns exec`, exactly as a
// runtime runs them (CNI_* variables, config on stdin), so the real host is never touched.
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { recordCniCode } from "../helpers/cni-codes";
import { createNetns, ipIn, ipJson, removeNetns, type TestNetns } from "../helpers/netns";
import { pluginDir, pluginPath, runCni, type CniCall, type PluginRun } from "../helpers/plugins";

export interface Lab {
  host: TestNetns;
  lan: TestNetns;
  master: string;
  pods: TestNetns[];
  /** CNI_PATH: our executables, then the reference plugins. */
  path: string[];
}

/** Host + lan namespaces joined by a veth: `master` in host, `lan0` in lan with the given addresses. */
export function makeLab(label: string, lanAddresses: string[] = ["10.77.0.1/24", "fd77::1/64"]): Lab {
  const host = createNetns(`${label}h`);
  const lan = createNetns(`${label}l`);
  const master = "m0";
  ipIn(host, "link", "add", master, "type", "veth", "peer", "name", "lan0", "netns", lan.name);
  ipIn(host, "link", "set", master, "up");
  ipIn(lan, "link", "set", "lan0", "up");
  // DAD answers from the lan side would make the pod's addresses fail; keep the gateway's own DAD quick.
  for (const a of lanAddresses) ipIn(lan, "addr", "add", a, "dev", "lan0", ...(a.includes(":") ? ["nodad"] : []));
  return { host, lan, master, pods: [], path: [pluginDir(), "/usr/lib/cni"] };
}

export function newPod(lab: Lab, label = "p"): TestNetns {
  const pod = createNetns(label);
  lab.pods.push(pod);
  return pod;
}

export function destroyLab(lab: Lab | undefined): void {
  if (!lab) return;
  for (const p of lab.pods) removeNetns(p);
  removeNetns(lab.lan);
  removeNetns(lab.host);
}

export const macvlan = () => pluginPath("berth-macvlan");

/** Runs a plugin inside the lab's host namespace. */
export function cni(lab: Lab, executable: string, call: CniCall): PluginRun {
  return runCni(executable, { path: lab.path, via: ["ip", "netns", "exec", lab.host.name], ...call });
}

/** Same, without blocking: for parallel ADDs. */
export function cniAsync(lab: Lab, executable: string, call: CniCall): Promise<PluginRun> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    CNI_COMMAND: call.command,
    CNI_PATH: lab.path.join(":"),
  };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifName !== undefined) env.CNI_IFNAME = call.ifName;
  if (call.cniArgs !== undefined) env.CNI_ARGS = call.cniArgs;
  return new Promise((resolve, reject) => {
    const p = spawn("ip", ["netns", "exec", lab.host.name, executable], { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "",
      stderr = "";
    p.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
    });
    p.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    p.on("error", reject);
    // "close", not "exit": the process can exit before its stdout has been read to the end.
    p.on("close", (code) => {
      let json: any;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      if (code !== 0) recordCniCode(json?.code);
      resolve({ code, stdout, stderr, json });
    });
    p.stdin.end(typeof call.config === "string" ? call.config : JSON.stringify(call.config));
  });
}

export interface IpLink {
  ifname: string;
  address: string;
  mtu: number;
  operstate: string;
  ifalias?: string;
  link_index?: number;
  linkinfo?: { info_kind: string; info_data?: Record<string, any> };
}

export function links(ns: TestNetns): IpLink[] {
  return ipJson<IpLink[]>(ns, "-d", "link", "show");
}

export function podLink(ns: TestNetns, name = "eth0"): IpLink | undefined {
  return links(ns).find((l) => l.ifname === name);
}

/** `ip -j addr` of one interface, as "addr/len" (link-local IPv6 left out). */
export function addresses(ns: TestNetns, dev = "eth0"): string[] {
  const [l] = ipJson<any[]>(ns, "addr", "show", "dev", dev);
  return (l?.addr_info ?? [])
    .filter((a: any) => a.scope !== "link")
    .map((a: any) => `${a.local}/${a.prefixlen}`)
    .sort();
}

/** Routes of the main table, both families, reduced to what a CNI plugin sets. */
export function routes(ns: TestNetns): { dst: string; gateway?: string; dev: string; scope?: string; flags: string[] }[] {
  const out = [];
  for (const fam of ["-4", "-6"]) {
    for (const r of ipJson<any[]>(ns, fam, "route", "show", "table", "main")) {
      if (r.dst?.startsWith("fe80")) continue;
      out.push({
        dst: r.dst,
        ...(r.gateway ? { gateway: r.gateway } : {}),
        dev: r.dev,
        ...(r.scope ? { scope: r.scope } : {}),
        flags: r.flags ?? [],
      });
    }
  }
  return out.sort((a, b) => a.dst.localeCompare(b.dst));
}

/** Names of the macvlans (any name) in a namespace. */
export function macvlans(ns: TestNetns): string[] {
  return links(ns)
    .filter((l) => l.linkinfo?.info_kind === "macvlan")
    .map((l) => l.ifname);
}

export function stateFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".json")) : [];
}
