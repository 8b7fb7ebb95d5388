// Runs inside the kernel lab guest (scripts/kernel-lab.sh): proves the guest
// kernel has what the macvlan-on-VLAN path needs. Two pods on VLAN 201 reach
// each other through bridge-mode macvlans; a pod on VLAN 202 with an address in
// the same subnet does not.
import { execFileSync, spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const tag = process.pid.toString(36);
const parent = `lab${tag}`;
const pods = {
  a: { netns: `lab-${tag}-a`, vlan: 201, address: "10.201.0.1" },
  b: { netns: `lab-${tag}-b`, vlan: 201, address: "10.201.0.2" },
  c: { netns: `lab-${tag}-c`, vlan: 202, address: "10.201.0.3" },
};

function ip(...args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function linkDetails(name: string, netns?: string): any {
  const args = ["-d", "-j", "link", "show", "dev", name];
  const [link] = JSON.parse(netns ? ip("-n", netns, ...args) : ip(...args));
  return link;
}

function ping(from: string, to: string, waitSeconds = 2): { ok: boolean; output: string } {
  const r = spawnSync("ip", ["netns", "exec", from, "ping", "-c", "1", "-W", String(waitSeconds), to], {
    encoding: "utf8",
  });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

describe("kernel lab: macvlan bridge mode on 802.1Q sub-interfaces", () => {
  beforeAll(() => {
    try {
      ip("link", "add", parent, "type", "dummy");
    } catch (err) {
      throw new Error(
        `cannot create a dummy link (${(err as Error).message.trim()}); ` +
          "test/lab runs only inside the kernel lab: scripts/kernel-lab.sh npx vitest run --config test/lab/vitest.config.ts",
      );
    }
    ip("link", "set", parent, "up");
    for (const vlan of [201, 202]) {
      ip("link", "add", "link", parent, "name", `${parent}.${vlan}`, "type", "vlan", "id", String(vlan));
      ip("link", "set", `${parent}.${vlan}`, "up");
    }
    for (const [name, pod] of Object.entries(pods)) {
      const mv = `mv${tag}${name}`;
      ip("netns", "add", pod.netns);
      ip("link", "add", "link", `${parent}.${pod.vlan}`, "name", mv, "type", "macvlan", "mode", "bridge");
      ip("link", "set", mv, "netns", pod.netns, "name", "eth0");
      ip("-n", pod.netns, "addr", "add", `${pod.address}/24`, "dev", "eth0");
      ip("-n", pod.netns, "link", "set", "eth0", "up");
      ip("-n", pod.netns, "link", "set", "lo", "up");
    }
  });

  afterAll(() => {
    for (const pod of Object.values(pods)) spawnSync("ip", ["netns", "del", pod.netns]);
    spawnSync("ip", ["link", "del", parent]);
  });

  it("creates 802.1Q sub-interfaces with the requested VLAN IDs", () => {
    for (const vlan of [201, 202]) {
      const info = linkDetails(`${parent}.${vlan}`).linkinfo;
      expect(info.info_kind).toBe("vlan");
      expect(info.info_data).toMatchObject({ protocol: "802.1Q", id: vlan });
    }
  });

  it("puts bridge-mode macvlans on the VLAN sub-interface inside each pod netns", () => {
    const eth0 = linkDetails("eth0", pods.a.netns);
    expect(eth0.linkinfo.info_kind).toBe("macvlan");
    expect(eth0.linkinfo.info_data.mode).toBe("bridge");
    expect(eth0.operstate).toBe("UP");
  });

  it("pods on the same VLAN reach each other", () => {
    const ab = ping(pods.a.netns, pods.b.address);
    expect(ab.ok, ab.output).toBe(true);
    const ba = ping(pods.b.netns, pods.a.address);
    expect(ba.ok, ba.output).toBe(true);
  });

  it("a pod on another VLAN is not reachable, even in the same subnet", () => {
    const ac = ping(pods.a.netns, pods.c.address, 1);
    expect(ac.ok, ac.output).toBe(false);
  });
});
