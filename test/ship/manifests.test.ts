// The Kubernetes manifests, the install script and the systemd unit agree with the code:
// binary names, paths, the socket, and config keys the daemon and the plugins accept.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { decodeConfig, parseConfig } from "../../cni/skel/config";
import { configSchema } from "../../ipamd/config";
import { DEFAULT_SOCKET } from "../../api/client";
import { pickVersion, pluginConfigs, type ConfList, type Libcni } from "../helpers/libcni";
import { ROOT, pluginPath, runCni } from "../helpers/plugins";

const K8S = join(ROOT, "conf/kubernetes");
const PLUGINS = ["berth-macvlan", "berth-hostdev", "berth-sriov", "berth-ipam", "ipamctl"];

function docs(file: string): any[] {
  return parseAllDocuments(readFileSync(file, "utf8")).map((d) => {
    expect(d.errors, `${file}: YAML errors`).toEqual([]);
    return d.toJS();
  });
}
const all = readdirSync(K8S)
  .filter((f) => f.endsWith(".yaml"))
  .flatMap((f) => docs(join(K8S, f)));
const find = (kind: string) => all.find((d) => d.kind === kind);
const daemonSet = find("DaemonSet");
const configMap = find("ConfigMap");
const pod = daemonSet.spec.template.spec;

describe("conf/kubernetes", () => {
  it("every document has apiVersion, kind and a name", () => {
    for (const d of all) {
      expect(d.apiVersion, JSON.stringify(d).slice(0, 80)).toBeTruthy();
      expect(d.kind).toBeTruthy();
      expect(d.metadata.name).toBeTruthy();
    }
  });

  it("the DaemonSet mounts exactly the host paths it needs", () => {
    expect(pod.hostNetwork).toBe(true);
    const hostPaths = pod.volumes
      .filter((v: any) => v.hostPath)
      .map((v: any) => v.hostPath.path)
      .sort();
    expect(hostPaths).toEqual(["/etc/cni/net.d", "/opt/cni/bin", "/run/berth", "/run/netns", "/var/lib/berth"]);
    for (const c of [...pod.initContainers, ...pod.containers]) {
      expect(c.securityContext.privileged ?? false).toBe(false);
      expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
      expect(c.securityContext.capabilities.drop).toEqual(["ALL"]);
      expect(c.securityContext.capabilities.add).toBeUndefined();
    }
  });

  it("the probes ask ipamctl about the socket the daemon serves", () => {
    const ipamd = pod.containers.find((c: any) => c.name === "ipamd");
    const config = configSchema.parse(JSON.parse(configMap.data["ipamd.json"]));
    expect(config.socket).toBe(DEFAULT_SOCKET);
    // Ready while a commit can succeed (ipamctl status exits 1 otherwise); alive whenever it answers.
    expect(ipamd.readinessProbe.exec.command).toEqual(["/usr/lib/berth/bin/ipamctl", "--socket", DEFAULT_SOCKET, "status"]);
    expect(ipamd.livenessProbe.exec.command).toEqual(["/usr/lib/berth/bin/ipamctl", "--socket", DEFAULT_SOCKET, "status", "--liveness"]);
    const socketMount = ipamd.volumeMounts.find((m: any) => m.mountPath === "/run/berth");
    expect(pod.volumes.find((v: any) => v.name === socketMount.name).hostPath.path).toBe("/run/berth");
    expect(config.database?.startsWith("/var/lib/berth/")).toBe(true);
    const heap = ipamd.command.filter((a: string) => a.startsWith("--max-"));
    expect(heap).toContain("--max-old-space-size=128"); // fits the 256Mi limit (test/ipamd/health.test.ts measures it)
    expect(ipamd.command.filter((a: string) => !a.startsWith("--max-")).slice(0, 4)).toEqual([
      "node",
      "/usr/lib/berth/ipamd/ipamd.mjs",
      "--config",
      "/etc/berth/ipamd.json",
    ]);
  });

  it("the ConfigMap's ipamd.json is a valid daemon config", () => {
    const parsed = configSchema.safeParse(JSON.parse(configMap.data["ipamd.json"]));
    expect(parsed.error?.issues ?? []).toEqual([]);
  });

  it("the ConfigMap's conflist uses plugins this build ships and points at the daemon's socket", () => {
    const list = JSON.parse(configMap.data["10-berth.conflist"]);
    for (const p of list.plugins) {
      expect(PLUGINS).toContain(p.type);
      if (p.ipam?.type === "berth-ipam") expect(p.ipam.socket ?? DEFAULT_SOCKET).toBe(DEFAULT_SOCKET);
    }
    const init = pod.initContainers.find((c: any) => c.name === "install-cni");
    const env = Object.fromEntries(init.env.map((e: any) => [e.name, e.value]));
    expect(env.CNI_CONFLIST).toBe("/etc/berth/10-berth.conflist");
  });

  it("RBAC reads nodes, pods and statefulsets, writes only events.k8s.io Events and the kube-system Lease", () => {
    const grants = (kind: string) =>
      docs(join(K8S, "rbac.yaml"))
        .filter((d: any) => d.kind === kind)
        .flatMap((d: any) =>
          d.rules.flatMap((r: any) => r.resources.map((res: any) => `${r.apiGroups[0]}/${res}: ${[...r.verbs].sort().join(",")}`)),
        )
        .sort();
    expect(grants("ClusterRole")).toEqual([
      "/nodes: list,watch",
      "/pods: get,list,watch",
      "apps/statefulsets: get,list,watch",
      "events.k8s.io/events: create",
    ]);
    expect(grants("Role")).toEqual(["coordination.k8s.io/leases: create,get,update"]);
    expect(find("ServiceAccount").metadata.name).toBe(pod.serviceAccountName);
  });

  it("the install script and the Containerfile install every binary the build makes", () => {
    const install = readFileSync(join(ROOT, "scripts/install-cni.sh"), "utf8");
    const build = readFileSync(join(ROOT, "scripts/build.sh"), "utf8");
    const makefile = readFileSync(join(ROOT, "Makefile"), "utf8");
    for (const name of PLUGINS) {
      expect(install).toContain(name);
      expect(build).toContain(name);
      expect(makefile).toContain(name);
    }
    const containerfile = readFileSync(join(K8S, "Containerfile"), "utf8");
    expect(containerfile).toContain("COPY dist/bin/ /usr/lib/berth/bin/");
    expect(containerfile).toContain("COPY dist/ipamd/ /usr/lib/berth/ipamd/");
    expect(containerfile).toContain("COPY scripts/install-cni.sh /usr/lib/berth/install-cni.sh");
    expect(pod.initContainers[0].command).toEqual(["/usr/lib/berth/install-cni.sh"]);
  });

  it("every Multus NetworkAttachmentDefinition holds a valid CNI config for a known plugin", () => {
    const nads = readdirSync(join(K8S, "multus")).flatMap((f) => docs(join(K8S, "multus", f)));
    // Conflists, not single configs: libcni reads "cniVersions" only in a list.
    const types = nads.map((n) => JSON.parse(n.spec.config).plugins[0].type).sort();
    expect(types).toEqual(["berth-hostdev", "berth-macvlan", "berth-sriov", "ipvlan"]);
    for (const n of nads) {
      const conf = JSON.parse(n.spec.config);
      expect(conf.plugins).toHaveLength(1);
      expect(conf.plugins[0].ipam.type).toBe("berth-ipam");
      // Multus passes a network selection's "ips" and "mac" only to plugins that declare them;
      // ipvlan shares its master's MAC, so it takes "ips" only.
      const wanted = conf.plugins[0].type === "ipvlan" ? { ips: true } : { ips: true, mac: true };
      expect({ nad: n.metadata.name, ...conf.plugins[0].capabilities }).toMatchObject({ nad: n.metadata.name, ...wanted });
      if (n.metadata.annotations?.["k8s.v1.cni.cncf.io/resourceName"]) expect(conf.plugins[0].capabilities.deviceID).toBe(true);
    }
  });

  it("the installer defaults to a secondary network; the primary conflist only with BERTH_PRIMARY=1", () => {
    const init = pod.initContainers.find((c: any) => c.name === "install-cni");
    expect(init.env.find((e: any) => e.name === "BERTH_PRIMARY")).toEqual({ name: "BERTH_PRIMARY", value: "0" });
    expect(pod.volumes.find((v: any) => v.name === "config").configMap.name).toBe(configMap.metadata.name);
  });

  it("ipamd serves metrics on the node's address, on the port the Service and ServiceMonitor scrape", () => {
    const ipamd = pod.containers.find((c: any) => c.name === "ipamd");
    const i = ipamd.command.indexOf("--metrics-address");
    expect(ipamd.command[i + 1]).toBe("$(NODE_IP):9631");
    expect(ipamd.env.find((e: any) => e.name === "NODE_IP").valueFrom.fieldRef.fieldPath).toBe("status.hostIP");
    expect(ipamd.ports).toEqual([{ name: "metrics", containerPort: 9631, hostPort: 9631, protocol: "TCP" }]);
    const monitoring = docs(join(K8S, "monitoring/metrics.yaml"));
    const service = monitoring.find((d) => d.kind === "Service");
    expect(service.spec.selector).toEqual(daemonSet.spec.template.metadata.labels);
    expect(service.spec.ports[0]).toMatchObject({ name: "metrics", port: 9631, targetPort: "metrics" });
    const monitor = monitoring.find((d) => d.kind === "ServiceMonitor");
    expect(monitor.spec.endpoints[0]).toMatchObject({ port: "metrics", path: "/metrics" });
    expect(monitor.spec.selector.matchLabels).toEqual(service.metadata.labels);
  });

  it("the uninstall DaemonSet runs the uninstall script the image carries, on the paths the installer wrote", () => {
    const un = docs(join(K8S, "uninstall.yaml")).find((d) => d.kind === "DaemonSet").spec.template.spec;
    expect(un.initContainers[0].command).toEqual(["/usr/lib/berth/uninstall-cni.sh"]);
    expect(readFileSync(join(K8S, "Containerfile"), "utf8")).toContain("COPY scripts/uninstall-cni.sh /usr/lib/berth/uninstall-cni.sh");
    const env = (c: any) => Object.fromEntries(c.env.map((e: any) => [e.name, e.value]));
    const install = env(pod.initContainers[0]);
    const uninstall = env(un.initContainers[0]);
    for (const key of ["CNI_BIN_DIR", "CNI_CONF_DIR", "CNI_CONFLIST"]) expect(uninstall[key]).toBe(install[key]);
    expect(uninstall.BERTH_PURGE).toBe("0");
    expect(un.initContainers[0].image).toBe(pod.initContainers[0].image);
  });

  it("the systemd unit runs the installed daemon with the installed config", () => {
    const unit = readFileSync(join(ROOT, "conf/systemd/berth-ipamd.service"), "utf8");
    expect(unit).toMatch(/ExecStart=\/usr\/bin\/node (--max-\S+ )+\/usr\/lib\/berth\/ipamd\/ipamd\.mjs --config \/etc\/berth\/ipamd\.json/);
    expect(unit).toMatch(/RuntimeDirectory=berth\n/);
    expect(unit).toMatch(/StateDirectory=berth\n/);
  });
});

// Every CNI config Berth ships or documents, by where it comes from.
function shippedConfLists(): [string, ConfList][] {
  const out: [string, ConfList][] = [];
  const confDir = join(ROOT, "conf/cni");
  for (const f of readdirSync(confDir).filter((f) => f.endsWith(".conflist"))) {
    out.push([`conf/cni/${f}`, JSON.parse(readFileSync(join(confDir, f), "utf8"))]);
  }
  out.push(["ConfigMap 10-berth.conflist", JSON.parse(configMap.data["10-berth.conflist"])]);
  for (const f of readdirSync(join(K8S, "multus"))) {
    for (const nad of docs(join(K8S, "multus", f))) out.push([`multus/${f}`, JSON.parse(nad.spec.config)]);
  }
  for (const md of markdownFiles(ROOT)) {
    const text = readFileSync(md, "utf8");
    for (const m of text.matchAll(/```json\n([\s\S]*?)```/g)) {
      // Network configs (not the error documents): a documented example is a conflist too.
      if (m[1]!.includes('"cniVersion"') && m[1]!.includes('"type"')) out.push([md.slice(ROOT.length + 1), JSON.parse(m[1]!)]);
    }
  }
  return out;
}

function markdownFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name.startsWith(".") || ["node_modules", "dist", "test-results"].includes(e.name)) return [];
    const path = join(dir, e.name);
    return e.isDirectory() ? markdownFiles(path) : e.name.endsWith(".md") ? [path] : [];
  });
}

const BERTH_TYPES = new Set(PLUGINS.filter((p) => p !== "ipamctl"));

/** The executable a runtime would run for `type`: ours from the build, the others from /usr/lib/cni. */
function executableOf(type: string): string {
  return BERTH_TYPES.has(type) ? pluginPath(type) : `/usr/lib/cni/${type}`;
}

function supports(executable: string, conf: Record<string, unknown>): string[] {
  const r = runCni(executable, { command: "VERSION", config: conf });
  expect(r.code, `${executable} VERSION: ${r.stdout}${r.stderr}`).toBe(0);
  return r.json.supportedVersions;
}

describe("CNI versions in every shipped and documented config", () => {
  const lists = shippedConfLists();

  it("finds the conflists, the ConfigMap and every NAD", () => {
    expect(lists.filter(([where]) => where.startsWith("conf/cni/")).length).toBeGreaterThanOrEqual(8);
    expect(lists.filter(([where]) => where.startsWith("multus/"))).toHaveLength(4);
  });

  it('each says "cniVersion": "1.0.0" with "cniVersions": ["1.0.0", "1.1.0"]', () => {
    for (const [where, list] of lists) {
      expect({ where, cniVersion: list.cniVersion, cniVersions: list.cniVersions }).toEqual({
        where,
        cniVersion: "1.0.0",
        cniVersions: ["1.0.0", "1.1.0"],
      });
    }
  });

  it("libcni 1.1.x runtimes pick 1.0.0 and libcni >= 1.2 runtimes pick 1.1.0", () => {
    for (const [, list] of lists) {
      expect(pickVersion(list, "1.1")).toBe("1.0.0");
      expect(pickVersion(list, "1.2")).toBe("1.1.0");
    }
  });

  // Debian's reference plugins (1.1.1, libcni 1.1) stop at 1.0.0: they are checked with the
  // version libcni 1.1 runtimes pick; with 1.1.0 a node needs reference plugins that speak it.
  for (const libcni of ["1.1", "1.2"] as Libcni[]) {
    it(`every plugin and IPAM plugin of every list speaks what a libcni ${libcni} runtime picks, and ours parse it`, () => {
      for (const [where, list] of lists) {
        for (const conf of pluginConfigs(list, libcni)) {
          const types = [conf.type as string, (conf.ipam as { type?: string } | undefined)?.type].filter((t) => t !== undefined);
          for (const type of types) {
            if (!BERTH_TYPES.has(type) && (libcni === "1.2" || !existsSync(executableOf(type)))) continue;
            expect(supports(executableOf(type), conf), `${where}: ${type}`).toContain(conf.cniVersion);
          }
          if (BERTH_TYPES.has(conf.type as string)) {
            expect(parseConfig(decodeConfig(JSON.stringify(conf)), "ADD").cniVersion).toBe(conf.cniVersion);
          }
        }
      }
    });
  }

  it("a plugin handed the list's cniVersions too answers in the cniVersion the runtime chose", () => {
    const conf = { cniVersion: "1.0.0", cniVersions: ["1.0.0", "1.1.0"], name: "n", type: "berth-ipam", ipam: { type: "berth-ipam" } };
    expect(parseConfig(decodeConfig(JSON.stringify(conf)), "ADD").cniVersion).toBe("1.0.0");
    // STATUS exists from 1.1.0: a runtime that chose 1.0.0 cannot ask for it, whatever the list offers.
    const status = runCni(pluginPath("berth-ipam"), { command: "STATUS", config: conf });
    expect(status.json).toMatchObject({ cniVersion: "1.0.0", code: 1, msg: "config version does not allow STATUS" });
  });
});
