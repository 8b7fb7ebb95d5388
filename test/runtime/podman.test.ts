// The SHIPPED conflists through a runtime nobody here wrote: Debian's podman 4.3 with its CNI
// backend (libcni 1.1.2, so the lists' "cniVersion": "1.0.0" is what it picks). Only the
// master/bridge names are substituted. The ipamd is the real daemon serving the pools the lists
// name. Two containers get the addresses the result says (libcni's cached result, `ip addr` in
// the container, ipamd's record), ping each other, and `podman rm` leaves nothing behind: no
// link in the host namespace, no ipamd attachment, no plugin state record, no libcni cache entry.
//
// Run here: 10-berth (berth-macvlan + berth-ipam), 10-berth-ipam-macvlan (the reference macvlan
// + berth-ipam), 20-berth-ipam-bridge-dualstack (the reference bridge + berth-ipam, v4 and v6).
// Not here: 30-berth-macvlan-vlan needs 802.1Q, which this kernel lacks (its VLAN sub-interface
// runs in the kernel lab, test/lab/); 30/31-berth-hostdev need a spare NIC (31 also a deviceID
// from a device plugin, which podman never passes); 40-berth-sriov needs SR-IOV hardware;
// 40-berth-macvlan-static fixes one MAC and one address, so two containers cannot share it.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import { cleanupIpamdTest, startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { ROOT, pluginDir } from "../helpers/plugins";
import { IMAGE, startPodman, type Podman } from "../helpers/podman";

const tag = `bp${process.pid.toString(36)}`;
const MASTER = `${tag}m`; // a veth end in the host namespace: macvlan's master
const BRIDGE = `${tag}br`; // made by the test, so the reference bridge finds it and DEL leaves it
let podman: Podman;
let ipamd: DaemonHandle;

const POOLS = [
  { name: "rack1-v4", subnet: "10.91.0.0/24", gateway: "10.91.0.1", routes: [{ dst: "0.0.0.0/0" }], networks: ["underlay"] },
  { name: "lab-v4", subnet: "10.92.0.0/24", gateway: "10.92.0.1", networks: ["lab-bridge"] },
  { name: "lab-v6", subnet: "fd00:92::/64", gateway: "fd00:92::1", networks: ["lab-bridge"] },
];

beforeAll(async () => {
  execFileSync("ip", ["link", "add", MASTER, "type", "veth", "peer", "name", `${MASTER}p`]);
  execFileSync("ip", ["link", "set", MASTER, "up"]);
  execFileSync("ip", ["link", "set", `${MASTER}p`, "up"]);
  execFileSync("ip", ["link", "add", BRIDGE, "type", "bridge"]);
  execFileSync("ip", ["link", "set", BRIDGE, "up"]);
  ipamd = await startIpamd({ config: { pools: POOLS } });
  podman = startPodman([pluginDir(), "/usr/lib/cni"]);
  // The conflists name no socket or the default one: the daemon's socket dir is /run/berth there.
  podman.bind(join(ipamd.dir, "run"), "/run/berth");
}, 120_000);

afterAll(async () => {
  podman?.destroy();
  await cleanupIpamdTest();
  for (const link of [MASTER, BRIDGE]) spawnQuiet("ip", ["link", "del", link]);
});

function spawnQuiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: "ignore" });
  } catch {
    /* already gone */
  }
}

/**
 * Links in the host namespace hanging off the test's master or bridge: a macvlan (or a killed ADD's
 * temporary one) on MASTER, a veth port of BRIDGE. Other tests on this machine add and remove
 * their own links meanwhile, so the whole host list is not compared.
 */
const hostLinks = () =>
  (JSON.parse(execFileSync("ip", ["-j", "link", "show"], { encoding: "utf8" })) as { ifname: string; link?: string; master?: string }[])
    .filter((l) => l.link === MASTER || l.master === BRIDGE)
    .map((l) => l.ifname)
    .sort();

/** Every file under a dir, relative to it (empty when the dir does not exist). */
function filesUnder(dir: string, prefix = ""): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`],
  );
}

/** The shipped list with only the device names replaced; asserts nothing else differs. */
function shipped(file: string, names: Record<string, string>): { name: string; text: string; ipamPools: boolean } {
  const original = JSON.parse(readFileSync(join(ROOT, "conf/cni", file), "utf8"));
  const list = structuredClone(original);
  for (const plugin of list.plugins) {
    for (const [key, value] of Object.entries(names)) if (key in plugin) plugin[key] = value;
  }
  const strip = (l: any) => ({
    ...l,
    plugins: l.plugins.map((p: any) => Object.fromEntries(Object.entries(p).filter(([k]) => !(k in names)))),
  });
  expect(strip(list)).toEqual(strip(original));
  return { name: list.name, text: JSON.stringify(list, null, 2), ipamPools: list.plugins.some((p: any) => p.ipam?.type === "berth-ipam") };
}

interface Seen {
  id: string;
  result: any;
  /** Global addresses of eth0 in the container, "10.91.0.5/24". */
  addresses: string[];
}

/** libcni's cached result for the attachment: what podman got from the plugin chain. */
function cachedResult(network: string, id: string): any {
  const file = podman.hostPath(`/var/lib/cni/results/${network}-${id}-eth0`);
  return JSON.parse(readFileSync(file, "utf8")).result;
}

function containerAddresses(name: string): string[] {
  const out = podman.ok(["exec", name, "ip", "-o", "addr", "show", "dev", "eth0"]);
  return [...out.matchAll(/inet6? (\S+) .*scope global/g)].map((m) => m[1]!).sort();
}

function startContainer(name: string, network: string): Seen {
  const id = podman.ok(["run", "-d", "--name", name, "--network", network, "--cap-add", "NET_RAW", IMAGE, "sleep", "600"]).trim();
  return { id, result: cachedResult(network, id), addresses: containerAddresses(name) };
}

async function ipamdRecord(id: string, network: string): Promise<string[] | "none"> {
  try {
    const r = await ipamd.client.check({ containerID: id, ifName: "eth0", network });
    return r.ips.map((ip) => ip.address).sort();
  } catch (e) {
    if (e instanceof IpamdError && e.httpStatus === 404) return "none";
    throw e;
  }
}

const cases: { file: string; names: Record<string, string>; families: number[] }[] = [
  { file: "10-berth.conflist", names: { master: MASTER }, families: [4] },
  { file: "10-berth-ipam-macvlan.conflist", names: { master: MASTER }, families: [4] },
  { file: "20-berth-ipam-bridge-dualstack.conflist", names: { bridge: BRIDGE }, families: [4, 6] },
];

describe("shipped conflists under podman 4 (CNI backend, libcni 1.1)", () => {
  it("podman runs with the CNI backend and the isolated storage", () => {
    const info = podman.ok(["info", "--format", "{{.Host.NetworkBackend}} {{.Store.GraphDriverName}} {{.Store.GraphRoot}}"]).trim();
    expect(info).toBe(`cni vfs ${join(podman.dir, "root")}`);
  });

  for (const c of cases) {
    it(`${c.file}: two containers get the result's addresses, ping each other, and rm leaves nothing`, async () => {
      const conf = shipped(c.file, c.names);
      const netDir = join(podman.dir, "net.d");
      for (const f of readdirSync(netDir)) execFileSync("rm", ["-f", join(netDir, f)]);
      writeFileSync(join(netDir, c.file), conf.text);
      const linksBefore = hostLinks();
      const names = [1, 2].map(
        (n) => `${tag}-${c.file.split("-")[0]}-${c.file.includes("bridge") ? "br" : c.file.includes("ipam") ? "ref" : "mv"}-${n}`,
      );

      const seen = names.map((n) => startContainer(n, conf.name));
      if (c.names.bridge) expect(hostLinks()).toHaveLength(linksBefore.length + 2); // the two host-side veths
      for (const s of seen) {
        expect(s.result.cniVersion).toBe("1.0.0"); // what libcni 1.1 picks from the shipped list
        const ips = s.result.ips.map((ip: { address: string }) => ip.address).sort();
        expect(ips.map((a: string) => (a.includes(":") ? 6 : 4)).sort()).toEqual(c.families);
        expect(s.addresses).toEqual(ips);
        expect(await ipamdRecord(s.id, conf.name)).toEqual(ips);
      }
      const [a, b] = seen;
      expect(a!.addresses).not.toEqual(b!.addresses);
      for (const family of c.families) {
        const target = b!.addresses.find((x) => (x.includes(":") ? 6 : 4) === family)!.split("/")[0]!;
        const ping = podman.run(["exec", names[0]!, family === 6 ? "ping6" : "ping", "-c", "1", "-W", "5", target]);
        expect(ping.code, `ping ${target} from ${names[0]}: ${ping.stdout}${ping.stderr}`).toBe(0);
      }

      podman.ok(["rm", "--force", "--time", "0", ...names]);
      expect(hostLinks()).toEqual(linksBefore);
      expect(linksBefore).toEqual([`${MASTER}p`]);
      for (const s of seen) expect(await ipamdRecord(s.id, conf.name)).toBe("none");
      expect((await ipamd.client.reservations({ state: "attached" })).reservations).toEqual([]);
      // /run/berth: no plugin state left, only ipamd's socket and its node marker (api/API.md)
      expect(filesUnder(join(ipamd.dir, "run"))).toEqual(["ipamd.node.json", "ipamd.sock"]);
      expect(filesUnder(podman.hostPath("/var/lib/berth"))).toEqual([]);
      expect(filesUnder(podman.hostPath("/var/lib/cni/results"))).toEqual([]);
      expect(filesUnder(podman.hostPath("/run/netns"))).toEqual([]);
    }, 180_000);
  }
});
