// `make demo-cluster` (scripts/demo-cluster.sh on the built dist/) runs to the end, shows web-0 keeping its IP when
// it moves from node-a to node-b, lists it bound to node-b from node-c, and leaves nothing behind: no namespaces,
// no links, no ipamd or etcd process, no temp dir; also on Ctrl-C.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { interruptAt, leftovers } from "../helpers/demo";
import { ROOT, pluginDir } from "../helpers/plugins";

const DEMO = join(ROOT, "scripts/demo-cluster.sh");

function tagAndWorkDir(output: string): { tag: string; workDir: string } {
  const nic = /\b(bc\d+)nic \(veth\)/.exec(output);
  const work = /state in (\/tmp\/berth-demo-cluster\.\w+)/.exec(output);
  expect(work, output).not.toBeNull();
  return { tag: nic?.[1] ?? "bc-none", workDir: work![1]! };
}

describe("make demo-cluster", () => {
  it("moves web-0 from node-a to node-b with the same IP, lists it from node-c, and cleans up", () => {
    pluginDir();
    const r = spawnSync("bash", [DEMO], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
    const output = r.stdout + r.stderr;
    expect(r.status, output).toBe(0);
    for (const h of [
      "starting a 3-member etcd",
      "1. web-0 on node-a",
      "2. delete web-0",
      "3. web-0 created on node-b",
      "4. ipamctl reservations from node-c",
      "cleaning up",
    ])
      expect(output).toContain(h);
    const first = /web-0 on node-a \(netns \S+, container \w+\): eth0 (\d+\.\d+\.\d+\.\d+)/.exec(output);
    expect(first, output).not.toBeNull();
    expect(output).toContain(`web-0 came back on node-b with the same IP: ${first![1]}`);
    const row = output.split("\n").find((l) => l.includes("default/web/0"));
    // IP POOL OWNER STATE STICKY PINNED POD NODE AGE
    expect(
      row
        ?.split("│")
        .map((c) => c.trim())
        .filter(Boolean)
        .slice(0, 8),
    ).toEqual([`${first![1]}/24`, "demo-v4", "default/web/0", "attached", "yes", "no", "-", "node-b"]);
    const { tag, workDir } = tagAndWorkDir(output);
    expect(leftovers(tag, workDir)).toEqual([]);
  }, 150_000);

  it("cleans up when interrupted with Ctrl-C", async () => {
    const { code, output } = await interruptAt(DEMO, "2. delete web-0");
    expect(code, output).toBe(130);
    expect(output).toContain("interrupted");
    const { tag, workDir } = tagAndWorkDir(output);
    expect(leftovers(tag, workDir)).toEqual([]);
  }, 90_000);
});
