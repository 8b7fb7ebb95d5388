// The one host-namespace harness of the device plugin tests (berth-hostdev, berth-sriov): a
// test-made "host" namespace the built plugin runs in (`ip netns exec`, as a runtime runs it on
// the node), pod namespaces, a temp dir, and `ip -j` readers. Registers its own beforeAll/afterAll.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { createNetns, ipJson, removeNetns, type TestNetns } from "./netns";
import { cleanupPlugins, runCni, type CniCall, type PluginRun } from "./plugins";

export interface LinkJson {
  ifname: string;
  address: string;
  mtu: number;
  flags: string[];
  ifalias?: string;
  operstate: string;
}

interface HostHarness {
  /** the test's "host" namespace (set in beforeAll) */
  readonly host: TestNetns;
  /** a temp dir removed in afterAll */
  readonly tmp: string;
  /** a fresh pod namespace, removed in afterAll */
  pod(): TestNetns;
  /** runs a built plugin inside the host namespace */
  run(executable: string, call: CniCall): PluginRun;
}

export function useHostNamespace(label: string): HostHarness {
  const pods: TestNetns[] = [];
  const tmp = mkdtempSync(join(tmpdir(), `berth-${label}-test-`));
  let host: TestNetns | undefined;
  beforeAll(() => {
    host = createNetns(`${label}host`);
  });
  afterAll(() => {
    for (const p of pods) removeNetns(p);
    removeNetns(host);
    rmSync(tmp, { recursive: true, force: true });
    cleanupPlugins();
  });
  return {
    get host() {
      if (!host) throw new Error("the host namespace exists from beforeAll on");
      return host;
    },
    tmp,
    pod() {
      const p = createNetns(`${label}pod`);
      pods.push(p);
      return p;
    },
    run(executable, call) {
      return runCni(executable, { ...call, via: ["ip", "netns", "exec", this.host.name] });
    },
  };
}

export const hasLink = (ns: TestNetns, name: string) => ipJson<LinkJson[]>(ns, "link", "show").some((l) => l.ifname === name);
export const linkIn = (ns: TestNetns, name: string) => ipJson<LinkJson[]>(ns, "link", "show", "dev", name)[0]!;
/** Global addresses of `name` as "addr/len". */
export const addrsIn = (ns: TestNetns, name: string) =>
  ipJson<{ addr_info: { local: string; prefixlen: number; scope: string }[] }[]>(ns, "addr", "show", "dev", name)[0]!
    .addr_info.filter((a) => a.scope === "global")
    .map((a) => `${a.local}/${a.prefixlen}`);
export const routesIn = (ns: TestNetns, name: string) =>
  ipJson<{ dst: string; gateway?: string }[]>(ns, "route", "show", "dev", name).map(
    (r) => `${r.dst}${r.gateway ? ` via ${r.gateway}` : ""}`,
  );
