// Test namespaces: created with `ip netns add` (so they appear under /run/netns
// like the ones a container runtime makes) with names unique to this test run.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import type { NetlinkSocket } from "../../cni/netlink/socket";
import { Netns, closeFd, getSysctl, setSysctl } from "../../cni/netns";

export interface TestNetns {
  name: string;
  /** /run/netns/NAME */
  path: string;
}

let counter = 0;
const created = new Set<string>();

/** A fresh network namespace with loopback up; remove it with removeNetns (afterAll). */
export function createNetns(label = "t"): TestNetns {
  const name = `berth-${label}-${process.pid}-${Date.now().toString(36)}-${counter++}`;
  execFileSync("ip", ["netns", "add", name], { stdio: "pipe" });
  created.add(name);
  execFileSync("ip", ["-n", name, "link", "set", "lo", "up"], { stdio: "pipe" });
  return { name, path: `/run/netns/${name}` };
}

export function removeNetns(ns: TestNetns | undefined): void {
  if (!ns) return;
  if (existsSync(ns.path)) execFileSync("ip", ["netns", "del", ns.name], { stdio: "pipe" });
  created.delete(ns.name);
}

/** Run an `ip` command inside the namespace and return stdout (to cross-check our results). */
export function ipIn(ns: TestNetns, ...args: string[]): string {
  return execFileSync("ip", ["-n", ns.name, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** JSON output of `ip -j ...` inside the namespace. */
export function ipJson<T = unknown>(ns: TestNetns, ...args: string[]): T {
  return JSON.parse(ipIn(ns, "-j", ...args) || "[]") as T;
}

// Safety net when a test file dies between create and afterAll.
process.on("exit", () => {
  for (const name of created) {
    try {
      execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
    } catch {
      /* already gone */
    }
  }
});

// ---- the product's one way in (Netns), in the shapes the netlink tests use

/** Runs `fn` with the calling thread inside the namespace at `path` (Netns.enter). */
export function inNetns<T>(path: string, fn: () => T): T {
  return Netns.use(path, (n) => n.enter(fn));
}

/** Runs `fn` inside the namespace with the namespace's netlink socket. */
export function withNetns<T>(path: string, fn: (nl: NetlinkSocket) => T): T {
  return Netns.use(path, (n) => n.enter(() => fn(n.nl)));
}

/** A netlink socket acting on the namespace at `path` from here (close it when done). */
export function openNetlinkIn(path: string): NetlinkSocket {
  const n = Netns.open(path);
  closeFd(n.fd);
  return n.nl;
}

export const getSysctlIn = (path: string, key: string | string[]) => inNetns(path, () => getSysctl(key));
export const setSysctlIn = (path: string, key: string | string[], value: string | number) => inNetns(path, () => setSysctl(key, value));
