// ipamctl against a real daemon (node running the esbuild bundle of ipamctl/main.ts, or with
// BERTH_DIST the shipped dist/bin/ipamctl): its commands, kubectl's conventions (-o table|wide|json|yaml,
// -n, --version, completion, NO_COLOR), one exit code per kind of failure, and `describe`.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildIpamd, cleanupIpamdTest, type DaemonHandle, makeTempDir, runIpamctl, startIpamd } from "../helpers/ipamd";

let d: DaemonHandle;
const ctl = (...args: string[]) => runIpamctl(["--socket", d.socket, ...args]);

beforeAll(async () => {
  d = await startIpamd({
    config: {
      node: { name: "ctl-node", labels: { rack: "r1" } },
      statefulSets: [{ namespace: "db", name: "redis" }],
      pools: [
        { name: "v4", subnet: "10.130.0.0/24", ranges: [{ start: "10.130.0.10", end: "10.130.0.19" }], gateway: "10.130.0.1", vlan: 130 },
        { name: "v6", subnet: "fd00:130::/64" },
        { name: "r2", subnet: "10.131.0.0/24", nodeSelector: { matchLabels: { rack: "r2" } } },
      ],
    },
  });
});
afterAll(async () => {
  await d?.stop();
});

describe("ipamctl", () => {
  it("status prints node and selected pools; -o json is machine readable", async () => {
    const human = await ctl("status");
    expect(human.code).toBe(0);
    expect(human.stdout).toContain("ctl-node");
    expect(human.stdout).toContain("selected here: v4, v6");
    const json = await ctl("-o", "json", "status");
    expect(JSON.parse(json.stdout)).toMatchObject({ status: "ok", node: { name: "ctl-node" }, pools: 3 });
  });

  it("reserve locks IPs for ordinals and prints them", async () => {
    const r = await ctl("reserve", "--namespace", "db", "--statefulset", "mysql", "--replicas", "3", "--pool", "v4");
    expect(r.code).toBe(0);
    for (const ip of ["10.130.0.10/24", "10.130.0.11/24", "10.130.0.12/24"]) expect(r.stdout).toContain(ip);
    expect(r.stdout).toContain("db/mysql/2");
    const j = await ctl("-o", "json", "reserve", "--namespace", "db", "--statefulset", "mysql", "--replicas", "3", "--pool", "v4");
    expect(JSON.parse(j.stdout).reservations.map((x: { ip: string }) => x.ip)).toEqual(["10.130.0.10", "10.130.0.11", "10.130.0.12"]);
  });

  it("pools shows used/reserved/free with a usage bar; pool show gives details", async () => {
    const r = await ctl("pools");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(
        /v4\s*│\s*10\.130\.0\.0\/24\s*│\s*130\s*│\s*selected\s*│\s*/.source +
          /10\s*│\s*0\s*│\s*3\s*│\s*0\s*│\s*7\s*│\s*\[######\.+\] 30\.0%/.source,
      ),
    );
    const j = JSON.parse((await ctl("pools", "-o", "json")).stdout);
    expect(j.pools.find((p: { name: string }) => p.name === "v4")).toMatchObject({ reserved: 3, free: "7" });
    const show = await ctl("pool", "show", "v4");
    expect(show.stdout).toContain("10.130.0.10-10.130.0.19");
    expect(show.stdout).toContain("selects this node");
    const missing = await ctl("pool", "show", "nope");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('pool "nope" is not defined');
  });

  it("pin, reservations filter, release", async () => {
    const pin = await ctl("pin", "--namespace", "db", "--statefulset", "mysql", "--ordinal", "1", "--ip", "10.130.0.19");
    expect(pin.code).toBe(0);
    expect(pin.stdout).toContain("pinned 10.130.0.19/24 (pool v4) to db/mysql/1; released 10.130.0.11");
    const list = await ctl("reservations", "--namespace", "db", "--statefulset", "mysql");
    expect(list.stdout).toContain("10.130.0.19/24");
    expect(list.stdout).not.toContain("10.130.0.11/24");
    const rel = await ctl("release", "--namespace", "db", "--statefulset", "mysql", "--ordinal", "0");
    expect(rel.code).toBe(0);
    expect(rel.stdout).toContain("released 1");
    const j = JSON.parse((await ctl("-o", "json", "reservations", "--statefulset", "mysql")).stdout);
    expect(j.reservations.map((x: { owner: string }) => x.owner).sort()).toEqual(["db/mysql/1", "db/mysql/2"]);
  });

  it("reports daemon errors with their code and exits non-zero", async () => {
    const r = await ctl("pin", "--namespace", "db", "--statefulset", "mysql", "--ordinal", "0", "--ip", "10.131.0.5");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not inside any pool this node may use.*\[ip_unavailable, field ip\]/);
  });

  it("gc needs --valid or --all, and releases unlisted attachments", async () => {
    await d.client.allocate({ containerID: "gc-a", ifName: "eth0", network: "n" });
    await d.client.allocate({ containerID: "gc-b", ifName: "eth0", network: "n" });
    const refused = await ctl("gc", "--network", "n");
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("pass --all");
    const r = await ctl("-o", "json", "gc", "--network", "n", "--valid", "gc-a/eth0");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).released).toHaveLength(2); // gc-b's v4 and v6
  });

  it("rejects bad arguments with usage errors", async () => {
    const r = await ctl("reserve", "--namespace", "db", "--statefulset", "x", "--replicas", "lots");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--replicas must be a non-negative integer");
  });

  it("writes all of a long output through a real pipe before exiting (> 128 KiB, every command path)", async () => {
    const r = await ctl("reserve", "--namespace", "db", "--statefulset", "pipe", "--replicas", "2000", "--pool", "v6");
    expect(r.code).toBe(0);
    const { ipamctl } = await buildIpamd();
    const exe = ipamctl.endsWith(".mjs") ? `${process.execPath} ${ipamctl}` : ipamctl;
    const sh = (cmd: string) => spawnSync("bash", ["-o", "pipefail", "-c", cmd], { encoding: "utf8", maxBuffer: 64 << 20 });
    const json = sh(`${exe} --socket ${d.socket} -o json reservations --statefulset pipe | cat`);
    expect(json.status).toBe(0);
    expect(json.stdout.length).toBeGreaterThan(128 * 1024);
    expect(JSON.parse(json.stdout).reservations).toHaveLength(2000);
    const lines = sh(`${exe} --socket ${d.socket} reservations --statefulset pipe | grep -c db/pipe/`);
    expect(lines.stdout.trim()).toBe("2000");
    const last = sh(`${exe} --socket ${d.socket} reservations | grep -c 'db/pipe/1999 '`);
    expect(lines.status).toBe(0);
    expect(last.stdout.trim()).toBe("1");
    const reserve = sh(`${exe} --socket ${d.socket} -o json reserve --namespace db --statefulset pipe --replicas 2000 --pool v6 | cat`);
    expect(JSON.parse(reserve.stdout).reservations).toHaveLength(2000);
  });

  it("names the socket path when the daemon is unreachable", async () => {
    const socket = join(makeTempDir(), "missing.sock");
    const r = await runIpamctl(["--socket", socket, "status"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain(`ipamd is not reachable on ${socket}: the socket does not exist`);
  });
});

describe("ipamctl conventions", () => {
  it("-o json and -o yaml carry the same data; -o wide adds columns", async () => {
    await d.client.allocate({ containerID: "fmt-a", ifName: "eth0", network: "n", podNamespace: "web", podName: "api-7f9c-x2" });
    const json = JSON.parse((await ctl("-o", "json", "reservations", "--owner", "fmt-a/eth0")).stdout);
    const yaml = parseYaml((await ctl("-o", "yaml", "reservations", "--owner", "fmt-a/eth0")).stdout);
    expect(yaml).toEqual(json);
    expect(json.reservations).toHaveLength(2);
    const head = (text: string) =>
      text
        .split("\n")[1]!
        .split("│")
        .map((c) => c.trim())
        .filter(Boolean);
    expect(head((await ctl("reservations", "--owner", "fmt-a/eth0")).stdout)).toEqual([
      "IP",
      "POOL",
      "OWNER",
      "STATE",
      "STICKY",
      "PINNED",
      "POD",
      "AGE",
    ]);
    expect(head((await ctl("-o", "wide", "reservations", "--owner", "fmt-a/eth0")).stdout)).toEqual([
      "IP",
      "POOL",
      "OWNER",
      "STATE",
      "STICKY",
      "PINNED",
      "POD",
      "AGE",
      "CONTAINER",
      "NETWORK",
      "SINCE",
      "CREATED",
    ]);
    expect(head((await ctl("pools", "-o", "wide")).stdout).slice(-2)).toEqual(["GATEWAY", "NETWORKS"]);
    const status = await ctl("-o", "yaml", "status");
    expect(parseYaml(status.stdout)).toMatchObject({ status: "ok", node: { name: "ctl-node" } });
  });

  it("the POD column shows name alone for a pod without a namespace, never undefined/<name>", async () => {
    await d.client.allocate({ containerID: "nons", ifName: "eth0", network: "n", podName: "bare-pod" });
    const r = await ctl("reservations", "--owner", "nons/eth0");
    expect(r.stdout).not.toContain("undefined");
    const rows = r.stdout.split("\n").filter((l) => l.includes("nons/eth0"));
    expect(rows).toHaveLength(2);
    for (const row of rows) expect(row.split("│").map((c) => c.trim())[7]).toBe("bare-pod");
  });

  it("--version prints the version and commit", async () => {
    const r = await runIpamctl(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ipamctl \d+\.\d+\.\d+(-dev)? \(commit \S+\)\n$/);
  });

  it("usage errors all exit 2; ipamd's refusals 1; an unreachable ipamd 3", async () => {
    const usage = [
      ["--bogus"],
      ["reservations", "--state", "gone"],
      ["-o", "xml", "status"],
      ["describe"],
      ["nosuchcommand"],
      ["reserve", "-n", "db", "--statefulset", "x", "--replicas", "lots"],
      ["release"],
      ["completion", "tcsh"],
      ["describe", "a/b/c"],
      ["describe", "-n", "db", "web/redis-1"],
    ];
    for (const args of usage) {
      const r = await ctl(...args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr.length, args.join(" ")).toBeGreaterThan(0);
      expect(r.stdout).toBe("");
    }
    expect((await ctl("pool", "show", "nope")).code).toBe(1);
    expect((await runIpamctl(["--socket", join(makeTempDir(), "none.sock"), "pools"])).code).toBe(3);
    expect((await ctl("--help")).code).toBe(0);
  });

  it("colours the STATE column only when asked and never with NO_COLOR", async () => {
    const { ipamctl } = await buildIpamd();
    const run = (env: Record<string, string>) => {
      const [file, args] = ipamctl.endsWith(".mjs")
        ? [join(import.meta.dirname, "../../node_modules/.bin/node"), [ipamctl]]
        : [ipamctl, []];
      return spawnSync(file, [...args, "--socket", d.socket, "reservations", "--owner", "fmt-a/eth0"], {
        encoding: "utf8",
        env: { PATH: process.env.PATH, ...env },
      }).stdout;
    };
    expect(run({})).not.toContain("\x1b["); // not a terminal
    expect(run({ FORCE_COLOR: "1" })).toContain("\x1b[32mattached\x1b[0m");
    expect(run({ FORCE_COLOR: "1", NO_COLOR: "1" })).not.toContain("\x1b[");
  });

  it("completion bash completes commands, a command's options and -o values, in a real bash", async () => {
    const script = await ctl("completion", "bash");
    expect(script.code).toBe(0);
    const file = join(makeTempDir(), "ipamctl.bash");
    writeFileSync(file, script.stdout);
    const complete = (line: string) => {
      const words = line.split(" ");
      const r = spawnSync(
        "bash",
        [
          "-c",
          `source ${file}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); ` +
            `COMP_CWORD=${words.length - 1}; _ipamctl; printf '%s\\n' "\${COMPREPLY[@]}"`,
        ],
        { encoding: "utf8" },
      );
      expect(r.stderr).toBe("");
      return r.stdout.trim().split("\n").filter(Boolean).sort();
    };
    expect(complete("ipamctl res")).toEqual(["reservations", "reserve"]);
    expect(complete("ipamctl -o json desc")).toEqual(["describe"]);
    expect(complete("ipamctl reservations --p")).toEqual(["--pod", "--pool"]);
    expect(complete("ipamctl -o y")).toEqual(["yaml"]);
    expect(complete("ipamctl completion f")).toEqual(["fish"]);
    for (const shell of ["zsh", "fish"]) {
      const r = await ctl("completion", shell);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("describe");
    }
  });
});

describe("ipamctl describe: what IP does db/redis-1 have, why, and since when", () => {
  it("names the address, pool, VLAN, node, owner rule and the recorded history", async () => {
    await ctl("reserve", "-n", "db", "--statefulset", "redis", "--replicas", "2", "--pool", "v4");
    const add = await d.client.allocate({ containerID: "redis-1-a", ifName: "eth0", network: "n", podNamespace: "db", podName: "redis-1" });
    await d.client.release({ containerID: "redis-1-a", ifName: "eth0", network: "n" });
    const v4 = add.ips.find((i) => i.family === 4)!.address;
    const detached = await ctl("describe", "db/redis-1");
    expect(detached.stdout).toContain(`${v4}  detached`);
    expect(detached.stdout).toMatch(/\S+Z {2}last detached \(the pod's CNI DEL; the sticky reservation was kept\)/);
    await d.client.allocate({ containerID: "redis-1-b", ifName: "eth0", network: "n", podNamespace: "db", podName: "redis-1" });

    const r = await ctl("describe", "db/redis-1");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("pod:     db/redis-1");
    expect(r.stdout).toContain("node:    ctl-node");
    expect(r.stdout).toContain("member:  ordinal 1 of StatefulSet db/redis (known from the config)");
    expect(r.stdout).toContain(`${v4}  attached`);
    expect(r.stdout).toContain("pool:    v4 (10.130.0.0/24, VLAN 130, gateway 10.130.0.1)");
    expect(r.stdout).toContain("owner:   db/redis/1");
    expect(r.stdout).toMatch(/why: +sticky: member 1 of StatefulSet db\/redis keeps this IP when its pod is deleted/);
    expect(r.stdout).toContain("in use:  container redis-1-b/eth0 on network n");
    expect(r.stdout).toMatch(/\d{4}-\d\d-\d\dT\S+Z {2}reserved for the member/);
    expect(r.stdout).toMatch(/last attached: container redis-1-b\/eth0 on network n/);

    const same = await ctl("describe", "-n", "db", "redis-1");
    expect(same.stdout).toBe(r.stdout);
    const j = JSON.parse((await ctl("-o", "json", "explain", "db/redis-1")).stdout);
    expect(j.statefulSetMember).toEqual({ namespace: "db", statefulset: "redis", ordinal: 1, source: "config" });
    const a = j.addresses.find((x: any) => x.address === v4);
    expect(a).toMatchObject({
      owner: "db/redis/1",
      state: "attached",
      pool: { name: "v4", vlan: 130, subnet: "10.130.0.0/24", gateway: "10.130.0.1" },
    });
    expect(a.history.map((h: any) => h.event.split(":")[0])).toEqual(["reserved for the member", "last attached"]);

    const rows = (await ctl("-o", "json", "reservations", "-n", "db", "--pod", "redis-1")).stdout;
    expect(
      JSON.parse(rows)
        .reservations.map((x: any) => `${x.owner} ${x.family}`)
        .sort(),
    ).toEqual(["db/redis/1 4", "db/redis/1 6"]);
  });

  it("explains a non-member pod's attachment and says so when a pod has nothing", async () => {
    await d.client.allocate({
      containerID: "dep-1",
      ifName: "eth0",
      network: "n",
      podNamespace: "web",
      podName: "api-5d8f-q7",
      pools: ["v6"],
    });
    const r = await ctl("describe", "-n", "web", "api-5d8f-q7");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/why: +attachment: not a StatefulSet member known to ipamd, so the IP belongs to container dep-1\/eth0/);
    const none = await ctl("describe", "web/ghost");
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("ipamd on ctl-node holds no address for pod web/ghost");
  });
});

afterAll(cleanupIpamdTest);
