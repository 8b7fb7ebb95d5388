// `make demo` (scripts/demo.sh on the built dist/) runs to the end, shows web-0 keeping its IP,
// and leaves nothing behind: no namespaces, no links, no daemon, no temp dir; also on Ctrl-C.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { interruptAt, leftovers } from "../helpers/demo";
import { ROOT, pluginDir } from "../helpers/plugins";

const DEMO = join(ROOT, "scripts/demo.sh");

function tagAndWorkDir(output: string): { tag: string; workDir: string } {
  const nic = /\b(bd\d+)nic \(veth\)/.exec(output);
  const work = /state in (\/tmp\/berth-demo\.\w+)/.exec(output);
  expect(nic, output).not.toBeNull();
  expect(work, output).not.toBeNull();
  return { tag: nic![1], workDir: work![1] };
}

describe("make demo", () => {
  it("runs every step, web-0 keeps its IP, and nothing is left behind", () => {
    pluginDir(); // the demo runs dist/: fail here with a clear message when it is not built
    const r = spawnSync("bash", [DEMO], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
    const output = r.stdout + r.stderr;
    expect(r.status, output).toBe(0);
    for (const heading of ["1. ADD two pods", "2. ping from", "3. delete web-0", "4. what ipamd holds", "cleaning up"]) {
      expect(output).toContain(heading);
    }
    const first = /web-0 \(netns \S+, container \w+\): eth0 (\d+\.\d+\.\d+\.\d+)\/24/.exec(output);
    expect(first, output).not.toBeNull();
    expect(output).toContain(`web-0 came back with the same IP: ${first![1]}`);
    expect(output).toMatch(/2 packets transmitted, 2 received/);
    const webRow = output.split("\n").find((line) => line.includes("default/web/0"));
    expect(
      webRow
        ?.split("│")
        .map((cell) => cell.trim())
        .slice(1, 6),
    ).toEqual([`${first![1]}/24`, "demo-v4", "default/web/0", "attached", "yes"]);
    const { tag, workDir } = tagAndWorkDir(output);
    expect(leftovers(tag, workDir)).toEqual([]);
  }, 150_000);

  it("cleans up when interrupted with Ctrl-C", async () => {
    const { code, output } = await interruptAt(DEMO, "2. ping from");
    expect(code, output).toBe(130);
    expect(output).toContain("interrupted");
    const { tag, workDir } = tagAndWorkDir(output);
    expect(leftovers(tag, workDir)).toEqual([]);
  }, 90_000);
});
