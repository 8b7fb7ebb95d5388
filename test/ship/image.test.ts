// The image the DaemonSet runs: conf/kubernetes/Containerfile built by Debian's podman (isolated
// storage, test/helpers/podman.ts) FROM a Node 24 base made here without any registry: a
// debootstrap'd Debian 12 (scripts/debian-base.sh, cached) with the project's Node 24 binary added.
// Then both containers run their real commands, taken from conf/kubernetes/daemonset.yaml, under
// the DaemonSet's security context (root, read-only root file system, every capability dropped):
// the installer writes into a temp dir standing for the node's /opt/cni/bin and /etc/cni/net.d, and
// ipamd serves its socket in a host dir where its readiness/liveness probe, a client on the
// "host" and the metrics address answer; it stops cleanly on SIGTERM.
import { execFileSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdClient } from "../../api/client";
import { ROOT, pluginDir } from "../helpers/plugins";
import { startPodman, type Podman } from "../helpers/podman";

const TAG = "localhost/berth:test";
const BASE = "localhost/berth-node24-base:test";
const work = mkdtempSync(join(tmpdir(), "berth-image-"));
const node = join(work, "node"); // the node's file system as the DaemonSet mounts it
let podman: Podman;

const daemonSet = parseAllDocuments(readFileSync(join(ROOT, "conf/kubernetes/daemonset.yaml"), "utf8"))
  .map((d) => d.toJS())
  .find((d) => d.kind === "DaemonSet").spec.template.spec;
const configMap = parseAllDocuments(readFileSync(join(ROOT, "conf/kubernetes/configmap.yaml"), "utf8"))
  .map((d) => d.toJS())
  .find((d) => d.kind === "ConfigMap");

/** The DaemonSet's security context as podman flags. */
function securityFlags(c: any): string[] {
  const s = c.securityContext;
  return [
    "--user",
    String(s.runAsUser),
    ...(s.readOnlyRootFilesystem ? ["--read-only"] : []),
    ...(s.capabilities.drop.includes("ALL") ? ["--cap-drop", "ALL"] : []),
    ...(s.allowPrivilegeEscalation === false ? ["--security-opt", "no-new-privileges"] : []),
  ];
}

/** Kubernetes' $(VAR) expansion of a container's command with the given values. */
const expand = (args: string[], vars: Record<string, string>) =>
  args.map((a) => a.replace(/\$\((\w+)\)/g, (_m, v: string) => vars[v] ?? _m));

/** `-v` for each volumeMount of the container, from the node dir (hostPath) or the ConfigMap dir. */
function volumeFlags(c: any, configDir: string): string[] {
  return c.volumeMounts.flatMap((m: any) => {
    const v = daemonSet.volumes.find((x: any) => x.name === m.name);
    const src = v.configMap ? configDir : join(node, v.hostPath.path);
    mkdirSync(src, { recursive: true });
    return ["-v", `${src}:${m.mountPath}${m.readOnly ? ":ro" : ""}`];
  });
}

beforeAll(() => {
  pluginDir(); // dist/ must be built
  podman = startPodman(["/usr/lib/cni"]); // no container here uses a CNI network (--network none)
  // The base: Debian 12 minbase (debootstrap, cached) plus Node 24, as one imported layer.
  const debian = execFileSync(join(ROOT, "scripts/debian-base.sh"), { encoding: "utf8", timeout: 900_000 }).trim();
  podman.ok(["import", "--quiet", debian, "localhost/debian-minbase:bookworm"]);
  const baseCtx = join(work, "base");
  mkdirSync(baseCtx);
  cpSync(realpathSync(join(ROOT, "node_modules/.bin/node")), join(baseCtx, "node"));
  writeFileSync(join(baseCtx, "Containerfile"), "FROM localhost/debian-minbase:bookworm\nCOPY node /usr/local/bin/node\n");
  podman.ok(["build", "--quiet", "--layers=false", "--network", "none", "-t", BASE, baseCtx]);

  // The build context: what the Containerfile copies, from the dist/ under test.
  const dist = resolve(process.env.BERTH_DIST ?? join(ROOT, "dist"));
  const ctx = join(work, "ctx");
  mkdirSync(join(ctx, "scripts"), { recursive: true });
  cpSync(join(dist, "bin"), join(ctx, "dist/bin"), { recursive: true, verbatimSymlinks: true });
  cpSync(join(dist, "ipamd"), join(ctx, "dist/ipamd"), { recursive: true });
  for (const f of ["scripts/install-cni.sh", "scripts/uninstall-cni.sh", "LICENSE"]) cpSync(join(ROOT, f), join(ctx, f));
  podman.ok([
    "build",
    "--quiet",
    "--layers=false",
    "--network",
    "none",
    "-f",
    join(ROOT, "conf/kubernetes/Containerfile"),
    "--build-arg",
    `NODE_IMAGE=${BASE}`,
    "-t",
    TAG,
    ctx,
  ]);
}, 900_000);

afterAll(() => {
  podman?.destroy();
  rmSync(work, { recursive: true, force: true });
});

describe("the Berth image", () => {
  it("is built FROM the base given as NODE_IMAGE and runs Node 24", () => {
    const node = podman.ok(["run", "--rm", "--network", "none", TAG, "node", "--version"]).trim();
    expect(node).toMatch(/^v24\./);
    expect(podman.ok(["run", "--rm", "--network", "none", TAG, "cat", "/usr/share/doc/berth/LICENSE"])).toContain("Apache License");
    const history = podman.ok(["image", "inspect", "--format", "{{.Config.Cmd}}", TAG]).trim();
    expect(history).toBe("[node /usr/lib/berth/ipamd/ipamd.mjs --config /etc/berth/ipamd.json]");
  });

  it("the install-cni init container installs the plugins onto the node (BERTH_PRIMARY=1: and the conflist)", () => {
    const init = daemonSet.initContainers.find((c: any) => c.name === "install-cni");
    const config = join(work, "configmap");
    mkdirSync(config, { recursive: true });
    for (const [k, v] of Object.entries(configMap.data)) writeFileSync(join(config, k), v as string);
    const env = (primary: string) => init.env.flatMap((e: any) => ["-e", `${e.name}=${e.name === "BERTH_PRIMARY" ? primary : e.value}`]);
    const run = (primary: string) =>
      podman.ok([
        "run",
        "--rm",
        "--network",
        "none",
        ...securityFlags(init),
        ...volumeFlags(init, config),
        ...env(primary),
        TAG,
        ...init.command,
      ]);

    expect(run("0")).toContain("secondary network: nothing written to /host/etc/cni/net.d");
    const bin = join(node, "opt/cni/bin");
    for (const name of ["berth-macvlan", "berth-hostdev", "berth-sriov", "berth-ipam", "ipamctl", "loopback"]) {
      expect(readlinkSync(join(bin, name))).toBe("berth");
    }
    expect(readdirSync(join(node, "etc/cni/net.d"))).toEqual([]);
    // The installed binary runs on the node (it needs nothing from the image).
    expect(execFileSync(join(bin, "berth"), ["--version"], { encoding: "utf8", env: {} })).toMatch(/^berth \d+\.\d+\.\d+/);

    expect(run("1")).toContain("Berth is the primary network of new pods");
    expect(readFileSync(join(node, "etc/cni/net.d/10-berth.conflist"), "utf8")).toBe(configMap.data["10-berth.conflist"]);
  });

  it("the ipamd container serves its socket on the node, answers its probes and metrics, and stops cleanly", async () => {
    const ipamd = daemonSet.containers.find((c: any) => c.name === "ipamd");
    const config = join(work, "configmap-ipamd");
    mkdirSync(config, { recursive: true });
    writeFileSync(join(config, "ipamd.json"), configMap.data["ipamd.json"]);
    // --network none: the container's own loopback stands for the node's address (NODE_IP).
    const command = expand(ipamd.command, { NODE_NAME: "image-test-node", NODE_IP: "127.0.0.1" });
    const id = podman
      .ok(["run", "-d", "--name", "ipamd", "--network", "none", ...securityFlags(ipamd), ...volumeFlags(ipamd, config), TAG, ...command])
      .trim();
    const socket = join(node, "run/berth/ipamd.sock");
    const deadline = Date.now() + 30_000;
    while (!existsSync(socket) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(socket), podman.run(["logs", id]).stderr).toBe(true);

    for (const probe of [ipamd.readinessProbe, ipamd.livenessProbe]) {
      const r = podman.run(["exec", "ipamd", ...probe.exec.command]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain("ipamd");
    }
    const status = await new IpamdClient(socket).status(); // a plugin on the node reaches the same socket
    expect(status.node.name).toBe("image-test-node");
    expect(existsSync(join(node, "var/lib/berth/ipamd.db"))).toBe(true);
    const metrics = podman.ok([
      "exec",
      "ipamd",
      "node",
      "-e",
      "fetch('http://127.0.0.1:9631/metrics').then(async (r) => process.stdout.write(r.status + '\\n' + await r.text()))",
    ]);
    expect(metrics).toMatch(/^200\n/);
    expect(metrics).toContain("berth_ipamd_build_info{");

    podman.ok(["stop", "--time", "15", "ipamd"]);
    expect(podman.ok(["inspect", "--format", "{{.State.ExitCode}}", "ipamd"]).trim()).toBe("0");
    expect(existsSync(socket)).toBe(false);
    podman.ok(["rm", "ipamd"]);
  });
});
