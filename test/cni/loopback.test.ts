// `berth` answering as `loopback` (containerd runs it for every sandbox), against the reference
// loopback plugin (/usr/lib/cni/loopback) on namespaces made the same way: what each returns and
// what each leaves in the pod, for ADD, CHECK and DEL; then the verbs the reference lacks.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupPlugins, pluginPath, runCni, type CniCall } from "../helpers/plugins";

const REFERENCE = "/usr/lib/cni/loopback";
const dir = mkdtempSync(join(tmpdir(), "berth-loopback-"));
const ours = join(dir, "loopback");
const namespaces: string[] = [];
let seq = 0;

beforeAll(() => {
  symlinkSync(pluginPath("berth"), ours);
});
afterAll(() => {
  for (const ns of namespaces) if (existsSync(`/run/netns/${ns}`)) execFileSync("ip", ["netns", "del", ns]);
  rmSync(dir, { recursive: true, force: true });
  cleanupPlugins();
});

/** A namespace as a runtime makes it: lo down, no addresses yet (optionally without IPv6). */
function freshNetns(opts: { ipv6?: boolean } = {}): string {
  const name = `berth-lo-${process.pid}-${seq++}`;
  execFileSync("ip", ["netns", "add", name]);
  namespaces.push(name);
  if (opts.ipv6 === false) execFileSync("ip", ["netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
  return name;
}

interface Lo {
  up: boolean;
  addresses: string[];
}

function lo(ns: string): Lo {
  const [link] = JSON.parse(execFileSync("ip", ["-n", ns, "-j", "addr", "show", "dev", "lo"], { encoding: "utf8" }));
  return { up: link.flags.includes("UP"), addresses: link.addr_info.map((a: any) => `${a.local}/${a.prefixlen}`) };
}

const conf = (version = "1.0.0", extra: Record<string, unknown> = {}) => ({
  cniVersion: version,
  name: "cni-loopback",
  type: "loopback",
  ...extra,
});

function call(executable: string, c: Omit<CniCall, "config"> & { config?: unknown }) {
  return runCni(executable, { containerId: "sandbox-1", ifName: "lo", config: conf(), ...c });
}

/** The result with the namespace path replaced, so two namespaces compare equal. */
function normalized(result: any, ns: string): any {
  return JSON.parse(JSON.stringify(result).replaceAll(`/run/netns/${ns}`, "<netns>"));
}

/** Runs the same calls with each plugin on its own fresh namespace; returns what each saw. */
function both(setup: { ipv6?: boolean }, calls: (exe: string, ns: string) => unknown) {
  const seen = [REFERENCE, ours].map((exe) => {
    const ns = freshNetns(setup);
    const out = calls(exe, ns);
    return { out: normalized(out, ns), lo: lo(ns) };
  });
  return { ref: seen[0]!, ours: seen[1]! };
}

const withFamily = (ip: { address: string }) => ({ version: ip.address.includes(":") ? "6" : "4", ...ip });

describe("loopback vs the reference plugin", () => {
  for (const setup of [{}, { ipv6: false }]) {
    for (const version of ["0.3.1", "0.4.0", "1.0.0"]) {
      it(`ADD ${version}${setup.ipv6 === false ? " without IPv6" : ""}: same result, lo up with the same addresses`, () => {
        const { ref, ours: mine } = both(setup, (exe, ns) => {
          const r = call(exe, { command: "ADD", netns: `/run/netns/${ns}`, config: conf(version) });
          expect(r.code, `${exe}: ${r.stdout}${r.stderr}`).toBe(0);
          return r.json;
        });
        // Before 1.0.0 the spec requires "version" in each ip; the reference omits it.
        const spec = version === "1.0.0" ? ref.out : { ...ref.out, ips: ref.out.ips.map(withFamily) };
        expect(mine.out).toEqual(spec);
        expect(mine.lo).toEqual(ref.lo);
        expect(mine.lo.up).toBe(true);
        expect(mine.lo.addresses).toEqual(setup.ipv6 === false ? ["127.0.0.1/8"] : ["127.0.0.1/8", "::1/128"]);
      });
    }
  }

  it("ADD ignores CNI_IFNAME: both act on lo", () => {
    const { ref, ours: mine } = both({}, (exe, ns) => call(exe, { command: "ADD", netns: `/run/netns/${ns}`, ifName: "eth0" }).json);
    expect(mine.out).toEqual(ref.out);
    expect(mine.out.interfaces).toEqual([{ name: "lo", mac: "00:00:00:00:00:00", sandbox: "<netns>" }]);
  });

  it("ADD with a prevResult passes it on unchanged (both)", () => {
    const prevResult = {
      cniVersion: "1.0.0",
      interfaces: [{ name: "eth0", mac: "0a:58:0a:01:00:05", sandbox: "/run/netns/elsewhere" }],
      ips: [{ interface: 0, address: "10.1.0.5/24", gateway: "10.1.0.1" }],
      routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1" }],
      dns: { nameservers: ["10.1.0.53"] },
    };
    const { ref, ours: mine } = both(
      {},
      (exe, ns) => call(exe, { command: "ADD", netns: `/run/netns/${ns}`, config: conf("1.0.0", { prevResult }) }).json,
    );
    expect(mine.out).toEqual(ref.out);
    expect(mine.out).toEqual(prevResult);
    expect(mine.lo.up).toBe(true);
  });

  it("ADD twice in the same namespace (reference first, then ours) returns the same and changes nothing", () => {
    const ns = freshNetns();
    const first = call(REFERENCE, { command: "ADD", netns: `/run/netns/${ns}` });
    const after = lo(ns);
    const second = call(ours, { command: "ADD", netns: `/run/netns/${ns}` });
    expect(second.code, second.stdout).toBe(0);
    expect(second.json).toEqual(first.json);
    expect(lo(ns)).toEqual(after);
  });

  it("CHECK passes when lo is up and fails when it is down (both); ours says why with code 120", () => {
    const { ref, ours: mine } = both({}, (exe, ns) => {
      const netns = `/run/netns/${ns}`;
      const add = call(exe, { command: "ADD", netns });
      const up = call(exe, { command: "CHECK", netns, config: conf("1.0.0", { prevResult: add.json }) });
      execFileSync("ip", ["-n", ns, "link", "set", "lo", "down"]);
      const down = call(exe, { command: "CHECK", netns, config: conf("1.0.0", { prevResult: add.json }) });
      return { up: [up.code, up.stdout], down: down.code, downJson: down.json };
    });
    expect(mine.out.up).toEqual([0, ""]);
    expect(ref.out.up).toEqual([0, ""]);
    expect(ref.out.down).toBe(1);
    expect(mine.out.down).toBe(1);
    expect(mine.out.downJson).toMatchObject({ code: 120, msg: "lo is down in <netns>" });
  });

  it("DEL: both exit 0 with nothing on stdout; ours leaves lo as it is (the reference takes it down)", () => {
    const { ref, ours: mine } = both({}, (exe, ns) => {
      call(exe, { command: "ADD", netns: `/run/netns/${ns}` });
      const del = call(exe, { command: "DEL", netns: `/run/netns/${ns}` });
      const again = call(exe, { command: "DEL", netns: `/run/netns/${ns}` });
      return [del.code, del.stdout, again.code];
    });
    expect(mine.out).toEqual([0, "", 0]);
    expect(ref.out).toEqual([0, "", 0]);
    expect(ref.lo.up).toBe(false);
    expect(mine.lo).toEqual({ up: true, addresses: ["127.0.0.1/8", "::1/128"] });
  });

  it("DEL without a namespace, or with one already gone, succeeds (both)", () => {
    for (const exe of [REFERENCE, ours]) {
      expect(call(exe, { command: "DEL", netns: "" }).code).toBe(0);
      expect(call(exe, { command: "DEL", netns: "/run/netns/berth-lo-gone" }).code).toBe(0);
    }
  });

  it("ADD on a namespace that does not exist fails (both); ours with code 3 naming it", () => {
    const ref = call(REFERENCE, { command: "ADD", netns: "/run/netns/berth-lo-gone" });
    const mine = call(ours, { command: "ADD", netns: "/run/netns/berth-lo-gone" });
    expect(ref.code).toBe(1);
    expect(mine.code).toBe(1);
    expect(mine.json.code).toBe(3);
    expect(mine.json.msg).toContain("/run/netns/berth-lo-gone");
  });
});

describe("loopback verbs beyond the reference", () => {
  it("ADD and CHECK speak 1.1.0", () => {
    const ns = freshNetns();
    const add = call(ours, { command: "ADD", netns: `/run/netns/${ns}`, config: conf("1.1.0") });
    expect(add.json.cniVersion).toBe("1.1.0");
    expect(call(ours, { command: "CHECK", netns: `/run/netns/${ns}`, config: conf("1.1.0", { prevResult: add.json }) }).code).toBe(0);
  });

  it("STATUS is ready and GC is a no-op (exit 0, no output)", () => {
    const status = runCni(ours, { command: "STATUS", config: conf("1.1.0") });
    expect([status.code, status.stdout]).toEqual([0, ""]);
    const gc = runCni(ours, { command: "GC", config: conf("1.1.0", { "cni.dev/valid-attachments": [] }) });
    expect([gc.code, gc.stdout]).toEqual([0, ""]);
  });

  it("VERSION answers like every Berth plugin", () => {
    expect(runCni(ours, { command: "VERSION", config: conf() }).json).toEqual({
      cniVersion: "1.1.0",
      supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    });
  });

  it("is also reachable as `berth loopback`", () => {
    const ns = freshNetns();
    const sub = execFileSync(pluginPath("berth"), ["loopback"], {
      input: JSON.stringify(conf()),
      encoding: "utf8",
      env: { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c", CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: "lo", CNI_PATH: "/nonexistent" },
    });
    expect(JSON.parse(sub).interfaces[0].name).toBe("lo");
    expect(lo(ns).up).toBe(true);
  });
});
