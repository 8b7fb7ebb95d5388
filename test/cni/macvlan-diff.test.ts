// Differential: berth-macvlan against the reference macvlan plugin (/usr/lib/cni/macvlan) on the
// same untagged config, with host-local and with static IPAM. Same link kind, mode and MTU, same
// addresses and routes in the pod, results of the same shape with equal values except the MAC.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addresses, cni, destroyLab, macvlan, makeLab, newPod, podLink, routes, type Lab } from "./macvlan-fixture";

const REFERENCE = "/usr/lib/cni/macvlan";
let lab: Lab;
const tmp = mkdtempSync(join(tmpdir(), "berth-macvlan-diff-"));
let seq = 0;

beforeAll(() => {
  lab = makeLab("mvd");
}, 120_000);

afterAll(() => {
  destroyLab(lab);
  rmSync(tmp, { recursive: true, force: true });
});

interface Observed {
  kind?: string;
  mode?: string;
  mtu: number;
  addresses: string[];
  routes: ReturnType<typeof routes>;
  result: any;
}

/** ADD with `executable`, read the pod, DEL; the two plugins never run side by side. */
function observe(executable: string, config: Record<string, unknown>): Observed {
  const pod = newPod(lab, "diff");
  const call = { containerId: `diff-${seq++}`, netns: pod.path, ifName: "net1" };
  const add = cni(lab, executable, { command: "ADD", config, ...call });
  expect(add.code, `${executable}: ${add.stdout}${add.stderr}`).toBe(0);
  const link = podLink(pod, "net1")!;
  const seen: Observed = {
    kind: link.linkinfo?.info_kind,
    mode: link.linkinfo?.info_data?.mode,
    mtu: link.mtu,
    addresses: addresses(pod, "net1"),
    routes: routes(pod),
    result: add.json,
  };
  expect(add.json.interfaces[0].mac).toBe(link.address);
  expect(add.json.interfaces[0].sandbox).toBe(pod.path);
  const chk = cni(lab, executable, { command: "CHECK", config: { ...config, prevResult: add.json }, ...call });
  expect(chk.code, `${executable} CHECK: ${chk.stdout}`).toBe(0);
  const del = cni(lab, executable, { command: "DEL", config, ...call });
  expect(del.code, `${executable} DEL: ${del.stdout}`).toBe(0);
  expect(podLink(pod, "net1")).toBeUndefined();
  return seen;
}

function withoutMac(result: any): any {
  return { ...result, interfaces: result.interfaces.map((i: any) => ({ ...i, mac: "<mac>", sandbox: "<pod netns>" })) };
}

function compare(base: Record<string, unknown>, ipamFor: (who: string) => Record<string, unknown>) {
  const ours = observe(macvlan(), { ...base, type: "berth-macvlan", stateDir: join(tmp, "state"), ipam: ipamFor("berth") });
  const ref = observe(REFERENCE, { ...base, type: "macvlan", ipam: ipamFor("ref") });
  expect(ours.kind).toBe(ref.kind);
  expect(ours.mode).toBe(ref.mode);
  expect(ours.mtu).toBe(ref.mtu);
  expect(ours.addresses).toEqual(ref.addresses);
  expect(ours.routes).toEqual(ref.routes);
  expect(withoutMac(ours.result)).toEqual(withoutMac(ref.result));
  return { ours, ref };
}

describe("berth-macvlan vs reference macvlan", () => {
  for (const variant of [{}, { mode: "vepa", mtu: 1400 }, { mode: "private" }]) {
    it(`host-local IPAM ${JSON.stringify(variant)}`, () => {
      const base = { cniVersion: "1.0.0", name: "diffnet", master: "m0", ...variant };
      // Each plugin gets its own empty host-local store, so both receive the first address.
      const { ours } = compare(base, (who) => ({
        type: "host-local",
        dataDir: join(tmp, `hl-${who}-${seq}`),
        ranges: [[{ subnet: "10.77.0.0/24", rangeStart: "10.77.0.20", rangeEnd: "10.77.0.30", gateway: "10.77.0.1" }]],
        routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.50.0/24", gw: "10.77.0.254" }],
      }));
      expect(ours.addresses).toEqual(["10.77.0.20/24"]);
      expect(ours.routes.map((r) => r.dst)).toEqual(["10.77.0.0/24", "192.168.50.0/24", "default"]);
    });
  }

  it("static IPAM, dual stack", () => {
    const base = { cniVersion: "1.0.0", name: "diffnet", master: "m0", dns: { nameservers: ["10.77.0.53"] } };
    const { ours } = compare(base, () => ({
      type: "static",
      addresses: [
        { address: "10.77.0.40/24", gateway: "10.77.0.1" },
        { address: "fd77::40/64", gateway: "fd77::1" },
      ],
      routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0" }],
    }));
    expect(ours.addresses).toEqual(["10.77.0.40/24", "fd77::40/64"]);
  });
});
