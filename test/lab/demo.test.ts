// `make demo` on a kernel with 802.1Q: the pods go on VLAN 101 of the stand-in NIC, through a
// sub-interface Berth creates and removes again.
import { execFileSync, spawnSync } from "node:child_process";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");

describe("make demo in the 802.1Q kernel", () => {
  it("puts the pods on VLAN 101, keeps web-0's IP and leaves nothing behind", () => {
    const r = spawnSync("bash", [join(ROOT, "scripts/demo.sh")], { cwd: ROOT, encoding: "utf8", timeout: 240_000 });
    const output = r.stdout + r.stderr;
    expect(r.status, output).toBe(0);
    expect(output).toMatch(/this kernel has 802\.1Q, so pods go on VLAN 101: bd\d+nic\.101 is created on demand/);
    expect(output).toMatch(/web-0 came back with the same IP: 10\.99\.0\.\d+/);
    expect(output).toMatch(/2 packets transmitted, 2 received/);
    const links = JSON.parse(execFileSync("ip", ["-j", "link", "show"], { encoding: "utf8" })) as { ifname: string }[];
    expect(links.filter((l) => /^bd\d+/.test(l.ifname))).toEqual([]);
  }, 300_000);
});
