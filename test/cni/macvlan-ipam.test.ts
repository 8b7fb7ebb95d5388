// berth-macvlan with berth-ipam against a REAL ipamd: parallel ADDs, sticky StatefulSet IPs, the
// pool's VLAN, and no leaked address on failure.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ownership } from "../../cni/plugins/macvlan";
import { startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { ipIn } from "../helpers/netns";
import {
  addresses,
  cni,
  cniAsync,
  destroyLab,
  links,
  macvlan,
  macvlans,
  makeLab,
  newPod,
  podLink,
  routes,
  stateFiles,
  type Lab,
} from "./macvlan-fixture";

let lab: Lab;
let daemon: DaemonHandle;
const stateDir = mkdtempSync(join(tmpdir(), "berth-macvlan-ipam-state-"));
let seq = 0;

const POOLS = [
  {
    name: "lan-v4",
    subnet: "10.78.0.0/24",
    gateway: "10.78.0.1",
    ranges: [{ start: "10.78.0.10", end: "10.78.0.99" }],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: { nameservers: ["10.78.0.53"] },
    networks: ["underlay"],
  },
  { name: "tagged-v4", subnet: "10.79.0.0/24", gateway: "10.79.0.1", vlan: 301, networks: ["tagged"] },
];

function conf(extra: Record<string, unknown> = {}, name = "underlay") {
  return {
    cniVersion: "1.1.0",
    name,
    type: "berth-macvlan",
    master: "m0",
    stateDir,
    ipam: { type: "berth-ipam", socket: daemon.socket },
    ...extra,
  };
}

const stsArgs = (pod: string) => `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod};K8S_POD_UID=uid-${pod}`;

async function held(): Promise<string[]> {
  const r = await daemon.client.reservations({});
  return r.reservations
    .filter((x) => x.state === "attached")
    .map((x) => x.ip)
    .sort();
}

/** ipamd's count of allocations made (its metrics): what a refused ADD must not change. */
async function allocationsMade(): Promise<number> {
  const text = await daemon.client.metrics();
  return text
    .split("\n")
    .filter((l) => l.startsWith("berth_ipamd_allocations_total"))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

beforeAll(async () => {
  lab = makeLab("mvi", ["10.78.0.1/24"]);
  daemon = await startIpamd({ config: { pools: POOLS, statefulSets: [{ namespace: "default", name: "web" }], cooldownSeconds: 0 } });
}, 120_000);

afterAll(async () => {
  destroyLab(lab);
  await daemon?.stop();
  if (daemon) rmSync(daemon.dir, { recursive: true, force: true });
  rmSync(stateDir, { recursive: true, force: true });
});

describe("berth-macvlan + berth-ipam (real ipamd)", () => {
  it("ADD / CHECK / DEL; the pool's gateway, routes and DNS reach the pod and the result", async () => {
    const pod = newPod(lab);
    const call = {
      containerId: `c-${seq++}`,
      netns: pod.path,
      ifName: "eth0",
      cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=api-1",
    };
    const add = cni(lab, macvlan(), { command: "ADD", config: conf(), ...call });
    expect(add.code, add.stdout).toBe(0);
    const ip = add.json.ips[0].address;
    expect(ip).toMatch(/^10\.78\.0\.\d+\/24$/);
    expect(add.json).toMatchObject({
      interfaces: [{ name: "eth0", sandbox: pod.path }],
      ips: [{ interface: 0, gateway: "10.78.0.1" }],
      routes: [{ dst: "0.0.0.0/0", gw: "10.78.0.1" }],
      dns: { nameservers: ["10.78.0.53"] },
    });
    expect(addresses(pod)).toEqual([ip]);
    expect(routes(pod)).toContainEqual({ dst: "default", gateway: "10.78.0.1", dev: "eth0", flags: [] });
    expect(ipIn(pod, "netns", "exec", pod.name, "ping", "-c1", "-W2", "10.78.0.1")).toContain("1 received");
    expect(cni(lab, macvlan(), { command: "CHECK", config: { ...conf(), prevResult: add.json }, ...call }).code).toBe(0);
    expect(await held()).toContain(ip.split("/")[0]);
    expect(cni(lab, macvlan(), { command: "STATUS", config: conf() }).code).toBe(0);
    expect(cni(lab, macvlan(), { command: "DEL", config: conf(), ...call }).code).toBe(0);
    expect(await held()).not.toContain(ip.split("/")[0]);
    expect(podLink(pod)).toBeUndefined();
  });

  it("20 parallel ADDs on one master get 20 different IPs; parallel DELs free them", async () => {
    const pods = Array.from({ length: 20 }, () => newPod(lab, "par"));
    const calls = pods.map((p) => ({ containerId: `par-${seq++}`, netns: p.path, ifName: "eth0" }));
    const adds = await Promise.all(calls.map((c) => cniAsync(lab, macvlan(), { command: "ADD", config: conf(), ...c })));
    for (const a of adds) expect(a.code, a.stdout).toBe(0);
    const ips = adds.map((a) => a.json.ips[0].address);
    expect(new Set(ips).size).toBe(20);
    pods.forEach((p, i) => {
      expect(addresses(p)).toEqual([ips[i]]);
    });
    const macs = pods.map((p) => podLink(p)!.address);
    expect(new Set(macs).size).toBe(20);
    const dels = await Promise.all(calls.map((c) => cniAsync(lab, macvlan(), { command: "DEL", config: conf(), ...c })));
    for (const d of dels) expect(d.code, d.stdout).toBe(0);
    expect(await held()).toEqual([]);
  }, 120_000);

  it("sticky: web-0 of StatefulSet web gets the same IP (and with macFromIP the same MAC) after DEL and a new container", () => {
    const config = conf({ macFromIP: true });
    const first = newPod(lab);
    const a1 = cni(lab, macvlan(), {
      command: "ADD",
      config,
      containerId: "web0-a",
      netns: first.path,
      ifName: "eth0",
      cniArgs: stsArgs("web-0"),
    });
    expect(a1.code, a1.stdout).toBe(0);
    const ip = a1.json.ips[0].address;
    const mac = podLink(first)!.address;
    expect(mac).toBe(
      `0a:58:${ip
        .split("/")[0]
        .split(".")
        .map((o: string) => Number(o).toString(16).padStart(2, "0"))
        .join(":")}`,
    );
    expect(
      cni(lab, macvlan(), { command: "DEL", config, containerId: "web0-a", netns: first.path, ifName: "eth0", cniArgs: stsArgs("web-0") })
        .code,
    ).toBe(0);
    // others allocate meanwhile
    const other = newPod(lab);
    const o = cni(lab, macvlan(), { command: "ADD", config, containerId: "other-1", netns: other.path, ifName: "eth0" });
    expect(o.json.ips[0].address).not.toBe(ip);
    const second = newPod(lab);
    const a2 = cni(lab, macvlan(), {
      command: "ADD",
      config,
      containerId: "web0-b",
      netns: second.path,
      ifName: "eth0",
      cniArgs: stsArgs("web-0"),
    });
    expect(a2.code, a2.stdout).toBe(0);
    expect(a2.json.ips[0].address).toBe(ip);
    expect(podLink(second)!.address).toBe(mac);
    for (const [id, p, args] of [
      ["other-1", other, undefined],
      ["web0-b", second, stsArgs("web-0")],
    ] as const) {
      expect(
        cni(lab, macvlan(), { command: "DEL", config, containerId: id, netns: p.path, ifName: "eth0", ...(args ? { cniArgs: args } : {}) })
          .code,
      ).toBe(0);
    }
  });

  it("a repeated ADD of a live attachment is refused and keeps the pod's address; refusals ask ipamd for nothing", async () => {
    const pod = newPod(lab);
    const call = { containerId: "live-1", netns: pod.path, ifName: "eth0" };
    const first = cni(lab, macvlan(), { command: "ADD", config: conf(), ...call });
    expect(first.code, first.stdout).toBe(0);
    const ip = first.json.ips[0].address.split("/")[0];
    const allocations = await allocationsMade();
    expect(allocations).toBeGreaterThan(0);
    expect(cni(lab, macvlan(), { command: "ADD", config: conf(), ...call }).json).toMatchObject({ code: 142 });
    expect(cni(lab, macvlan(), { command: "ADD", config: conf({ master: "nosuchm0" }), ...call }).json).toMatchObject({ code: 7 });
    expect(await held()).toContain(ip);
    // Nothing was allocated for them, so nothing cools down in the pool either.
    expect(await allocationsMade()).toBe(allocations);
    expect(cni(lab, macvlan(), { command: "DEL", config: conf(), ...call }).code).toBe(0);
  });

  it("a repeated ADD of a live attachment that fails after IPAM leaves the pod its address: nobody else gets it", async () => {
    const pod = newPod(lab);
    const call = { containerId: "live-2", netns: pod.path, ifName: "eth0" };
    const first = cni(lab, macvlan(), { command: "ADD", config: conf(), ...call });
    expect(first.code, first.stdout).toBe(0);
    const ip = first.json.ips[0].address.split("/")[0];
    // The same attachment ADDed again, into a namespace where a link that is not this attachment's
    // already has its temporary name: the checks before IPAM pass, ipamd answers with the live
    // pod's address, and the kernel refuses the macvlan (EEXIST) after that.
    const other = newPod(lab);
    const { tmpName } = ownership({ conf: { name: "underlay" }, containerId: call.containerId, ifName: "eth0" } as never);
    ipIn(other, "link", "add", tmpName, "type", "veth", "peer", "name", "x0");
    const again = cni(lab, macvlan(), { command: "ADD", config: conf(), ...call, netns: other.path });
    expect(again.code, again.stdout).not.toBe(0);
    expect(addresses(pod)).toEqual([first.json.ips[0].address]);
    const mine = (await daemon.client.reservations({ ip })).reservations;
    expect(mine).toMatchObject([{ ip, state: "attached", containerID: "live-2", ifName: "eth0", network: "underlay" }]);
    // Another pod asking for exactly that address is refused: it is still in use.
    const thief = newPod(lab);
    const steal = cni(lab, macvlan(), {
      command: "ADD",
      config: conf(),
      containerId: "thief-2",
      netns: thief.path,
      ifName: "eth0",
      cniArgs: `IgnoreUnknown=1;IP=${ip}`,
    });
    expect(steal.json, steal.stdout).toMatchObject({ code: 104 });
    expect(steal.json.msg).toContain("in use by container live-2");
    expect(podLink(thief)).toBeUndefined();
    expect(cni(lab, macvlan(), { command: "DEL", config: conf(), ...call }).code).toBe(0);
    expect(await held()).not.toContain(ip);
  });

  it("ADD when CNI_IFNAME exists leaves nothing behind: no IP held, no temporary link", async () => {
    const pod = newPod(lab);
    ipIn(pod, "link", "add", "eth0", "type", "veth", "peer", "name", "x0");
    const before = await held();
    const add = cni(lab, macvlan(), { command: "ADD", config: conf(), containerId: "exists-1", netns: pod.path, ifName: "eth0" });
    expect(add.json).toMatchObject({ code: 142 });
    expect(await held()).toEqual(before);
    // A StatefulSet member: its reservation is not left attached to the failed sandbox either.
    const member = cni(lab, macvlan(), {
      command: "ADD",
      config: conf(),
      containerId: "exists-2",
      netns: pod.path,
      ifName: "eth0",
      cniArgs: stsArgs("web-7"),
    });
    expect(member.json).toMatchObject({ code: 142 });
    expect(await held()).toEqual(before);
    // The master is gone: refused with code 7 naming it, the address given back.
    const noMaster = cni(lab, macvlan(), {
      command: "ADD",
      config: conf({ master: "nosuchm0" }),
      containerId: "exists-3",
      netns: pod.path,
      ifName: "eth1",
    });
    expect(noMaster.json).toMatchObject({ code: 7 });
    expect(noMaster.json.msg).toContain('"nosuchm0" does not exist');
    expect(await held()).toEqual(before);
    expect(macvlans(pod)).toEqual([]);
    expect(
      links(pod)
        .map((l) => l.ifname)
        .sort(),
    ).toEqual(["eth0", "lo", "x0"]);
  });

  it(
    "the pool's VLAN is used when the config has none: " + "on this kernel (no 8021q) the ADD fails cleanly and gives the IP back",
    async () => {
      const pod = newPod(lab);
      const before = await held();
      const add = cni(lab, macvlan(), {
        command: "ADD",
        config: conf({}, "tagged"),
        containerId: "tagged-1",
        netns: pod.path,
        ifName: "eth0",
      });
      expect(add.json).toMatchObject({ code: 140 });
      expect(add.json.msg).toContain("m0.301");
      expect(add.json.msg).toContain("8021q");
      expect(await held()).toEqual(before);
      expect(links(pod).map((l) => l.ifname)).toEqual(["lo"]);
      expect(
        links(lab.host)
          .map((l) => l.ifname)
          .sort(),
      ).toEqual(["lo", "m0"]);
      expect(stateFiles(stateDir)).toEqual([]);
    },
  );

  it("GC releases addresses of attachments the runtime no longer has", async () => {
    const pod = newPod(lab);
    const add = cni(lab, macvlan(), { command: "ADD", config: conf(), containerId: "gc-1", netns: pod.path, ifName: "eth0" });
    expect(add.code, add.stdout).toBe(0);
    const ip = add.json.ips[0].address.split("/")[0];
    const gc = cni(lab, macvlan(), { command: "GC", config: { ...conf(), "cni.dev/valid-attachments": [] } });
    expect(gc.code, gc.stdout).toBe(0);
    expect(await held()).not.toContain(ip);
    expect(cni(lab, macvlan(), { command: "DEL", config: conf(), containerId: "gc-1", netns: pod.path, ifName: "eth0" }).code).toBe(0);
  });
});

describe("berth-macvlan + an ipamd that predates `existing`", () => {
  it("a failed ADD releases unless the answer says existing: true (an old daemon's answer has no such field)", async () => {
    const socket = join(stateDir, "old-ipamd.sock");
    const calls: string[] = [];
    let existing: boolean | undefined;
    // Scripted: an ipamd of an older version is not in this tree to run.
    const server = createServer((req, res) => {
      calls.push(req.url ?? "");
      req.resume();
      req.on("end", () => {
        const body =
          req.url === "/v1/allocate"
            ? {
                owner: "old-1/eth0",
                sticky: false,
                ...(existing === undefined ? {} : { existing }),
                ips: [{ pool: "lan-v4", family: 4, address: "10.78.0.98/24", gateway: "10.78.0.1" }],
                routes: [],
                dns: {},
              }
            : { released: ["10.78.0.98"], kept: [] };
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify(body));
      });
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const other = newPod(lab);
      const { tmpName } = ownership({ conf: { name: "underlay" }, containerId: "old-1", ifName: "eth0" } as never);
      ipIn(other, "link", "add", tmpName, "type", "veth", "peer", "name", "x0"); // the macvlan cannot be made: EEXIST
      const config = { ...conf(), ipam: { type: "berth-ipam", socket } };
      for (const [answer, released] of [
        [undefined, true],
        [false, true],
        [true, false],
      ] as const) {
        existing = answer;
        calls.length = 0;
        const add = await cniAsync(lab, macvlan(), { command: "ADD", config, containerId: "old-1", netns: other.path, ifName: "eth0" });
        expect(add.code, add.stdout).not.toBe(0);
        expect(calls, `existing: ${answer}`).toEqual(released ? ["/v1/allocate", "/v1/release"] : ["/v1/allocate"]);
      }
    } finally {
      server.close();
    }
  });
});
