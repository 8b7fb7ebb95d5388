// runPlugin in-process: what the runtime reads on stdout and the exit code, for a small plugin.
import { describe, expect, it } from "vitest";
import { runPlugin, type PluginIo } from "../../cni/skel/dispatch";
import { CniError, CniCode } from "../../cni/skel/errors";
import { definePlugin, type CniContext } from "../../cni/skel/plugin";
import { UndoStack, withUndo } from "../../cni/skel/undo";

function io(env: Record<string, string>, stdin: unknown): PluginIo & { out: string[] } {
  const out: string[] = [];
  return { env, readStdin: () => (typeof stdin === "string" ? stdin : JSON.stringify(stdin)), write: (t) => out.push(t), out };
}

const env = { CNI_CONTAINERID: "c1", CNI_NETNS: "/proc/self/ns/net", CNI_IFNAME: "net1", CNI_PATH: "/usr/lib/cni" };
const conf = { cniVersion: "1.1.0", name: "underlay", type: "test-plugin" };

let seen: CniContext<{ mode: string }> | undefined;
const plugin = definePlugin<{ mode: string }>({
  name: "test-plugin",
  parse(c) {
    const mode = c.raw.mode ?? "ok";
    if (typeof mode !== "string")
      throw new CniError(CniCode.InvalidConfig, "invalid network config: mode is not a string", 'use "mode": "ok"');
    return { mode };
  },
  async add(ctx) {
    seen = ctx;
    if (ctx.pluginConfig.mode === "crash") throw new TypeError("cannot read properties of undefined (reading 'x')");
    if (ctx.pluginConfig.mode === "busy") throw new CniError(CniCode.TryAgainLater, "busy", "retry");
    return {
      interfaces: [{ name: ctx.ifName, sandbox: ctx.netns, mac: "02:00:00:00:00:01" }],
      ips: [{ address: "10.1.0.5/24", gateway: "10.1.0.1", interface: 0 }],
      routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1", table: 100 }],
    };
  },
  async del() {},
  async check() {},
});

describe("runPlugin", () => {
  it("ADD prints exactly one result in the config's version and exits 0", async () => {
    const x = io({ ...env, CNI_COMMAND: "ADD" }, { ...conf, cniVersion: "0.4.0" });
    expect(await runPlugin(plugin, x)).toBe(0);
    expect(x.out).toEqual([
      JSON.stringify({
        cniVersion: "0.4.0",
        interfaces: [{ name: "net1", mac: "02:00:00:00:00:01", sandbox: "/proc/self/ns/net" }],
        ips: [{ version: "4", interface: 0, address: "10.1.0.5/24", gateway: "10.1.0.1" }],
        routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1" }],
        dns: {},
      }) + "\n",
    ]);
  });

  it("DEL, CHECK, STATUS print nothing on success", async () => {
    for (const command of ["DEL", "CHECK", "STATUS"]) {
      const x = io({ ...env, CNI_COMMAND: command }, conf);
      expect(await runPlugin(plugin, x)).toBe(0);
      expect(x.out).toEqual([]);
    }
  });

  it("VERSION ignores the config, whatever it is", async () => {
    for (const stdin of ["", "garbage", { cniVersion: "0.1.0" }]) {
      const x = io({ CNI_COMMAND: "VERSION" }, stdin);
      expect(await runPlugin(plugin, x)).toBe(0);
      expect(x.out).toEqual(['{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n']);
    }
  });

  it("an unexpected exception becomes one error document with code 999", async () => {
    const x = io({ ...env, CNI_COMMAND: "ADD" }, { ...conf, mode: "crash" });
    expect(await runPlugin(plugin, x)).toBe(1);
    expect(x.out).toHaveLength(1);
    const err = JSON.parse(x.out[0]!);
    expect(Object.keys(err)).toEqual(["cniVersion", "code", "msg", "details"]);
    expect(err).toMatchObject({ cniVersion: "1.1.0", code: 999, msg: "internal error: cannot read properties of undefined (reading 'x')" });
  });

  it("a CniError keeps its code; the error carries the config's cniVersion", async () => {
    const x = io({ ...env, CNI_COMMAND: "ADD" }, { ...conf, cniVersion: "1.0.0", mode: "busy" });
    expect(await runPlugin(plugin, x)).toBe(1);
    expect(x.out).toEqual([JSON.stringify({ cniVersion: "1.0.0", code: 11, msg: "busy", details: "retry" }) + "\n"]);
  });

  it("validates the environment before the config, and the plugin's own config (code 7)", async () => {
    const noEnv = io({ CNI_COMMAND: "ADD" }, "not json");
    expect(await runPlugin(plugin, noEnv)).toBe(1);
    expect(JSON.parse(noEnv.out[0]!).code).toBe(4);
    const noCmd = io({}, conf);
    await runPlugin(plugin, noCmd);
    expect(JSON.parse(noCmd.out[0]!)).toMatchObject({ code: 4, msg: "required env variables [CNI_COMMAND] missing" });
    const mode = io({ ...env, CNI_COMMAND: "ADD" }, { ...conf, mode: 3 });
    await runPlugin(plugin, mode);
    expect(JSON.parse(mode.out[0]!)).toMatchObject({ code: 7, msg: "invalid network config: mode is not a string" });
  });

  it("CHECK on a 0.3.x config and STATUS/GC before 1.1.0 are code 1", async () => {
    for (const [command, version] of [
      ["CHECK", "0.3.1"],
      ["STATUS", "1.0.0"],
      ["GC", "0.4.0"],
    ]) {
      const x = io({ ...env, CNI_COMMAND: command! }, { ...conf, cniVersion: version, "cni.dev/valid-attachments": [] });
      expect(await runPlugin(plugin, x)).toBe(1);
      expect(JSON.parse(x.out[0]!)).toMatchObject({ cniVersion: version, code: 1, msg: `config version does not allow ${command}` });
    }
  });

  it("collects requested IPs, MAC and the pod from runtimeConfig, args.cni and CNI_ARGS", async () => {
    const x = io(
      {
        ...env,
        CNI_COMMAND: "ADD",
        CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=redis-2;K8S_POD_UID=u1;IP=10.1.0.9,10.1.0.7/24;MAC=02:00:00:00:00:09",
      },
      {
        ...conf,
        runtimeConfig: { ips: ["10.1.0.7/24"], mac: "02:00:00:00:00:07", deviceID: "0000:3b:02.1" },
        args: { cni: { ips: ["10.1.0.8/24"], mac: "02:00:00:00:00:08" } },
      },
    );
    expect(await runPlugin(plugin, x)).toBe(0);
    // One source, by the MAC's precedence: runtimeConfig, else args.cni, else CNI_ARGS.
    expect(seen!.requestedIps).toEqual(["10.1.0.7/24"]);
    expect(seen!.requestedMac).toBe("02:00:00:00:00:07");
    expect(seen!.deviceId).toBe("0000:3b:02.1");
    expect(seen!.pod).toEqual({ namespace: "db", name: "redis-2", uid: "u1" });

    const fromArgs = io(
      { ...env, CNI_COMMAND: "ADD", CNI_ARGS: "IP=10.1.0.9,10.1.0.7/24,10.1.0.9" },
      { ...conf, args: { cni: { ips: ["10.1.0.8/24"] } } },
    );
    expect(await runPlugin(plugin, fromArgs)).toBe(0);
    expect(seen!.requestedIps).toEqual(["10.1.0.8/24"]);
    const fromCniArgs = io({ ...env, CNI_COMMAND: "ADD", CNI_ARGS: "IP=10.1.0.9,10.1.0.7/24,10.1.0.9" }, conf);
    expect(await runPlugin(plugin, fromCniArgs)).toBe(0);
    expect(seen!.requestedIps).toEqual(["10.1.0.9", "10.1.0.7/24"]);
  });
});

describe("UndoStack", () => {
  it("reverts in reverse order and keeps going past a failing step", async () => {
    const done: string[] = [];
    const undo = new UndoStack();
    undo.push("address", () => {
      done.push("address");
    });
    undo.push("link", () => {
      throw new Error("link busy");
    });
    undo.push("route", async () => {
      done.push("route");
    });
    expect(await undo.unwind()).toEqual([{ what: "link", error: "link busy" }]);
    expect(done).toEqual(["route", "address"]);
    expect(undo.size).toBe(0);
  });

  it("withUndo unwinds on failure and rethrows, commits on success", async () => {
    const done: string[] = [];
    await expect(
      withUndo(undefined, async (u) => {
        u.push("a", () => done.push("a"));
        throw new CniError(140, "netlink failed");
      }),
    ).rejects.toThrow("netlink failed");
    expect(done).toEqual(["a"]);
    expect(
      await withUndo(undefined, async (u) => {
        u.push("b", () => done.push("b"));
        return 5;
      }),
    ).toBe(5);
    expect(done).toEqual(["a"]);
  });
});
