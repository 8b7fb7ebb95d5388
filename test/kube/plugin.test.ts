// One ADD end to end: the BUILT berth-ipam executable, run as a runtime runs it (CNI_ARGS with
// kubelet's K8S_POD_NAMESPACE/NAME/UID), asks the REAL ipamd, which knows the pod from the test API
// server (a fixture, not a cluster): a StatefulSet member by its ownerReference, its address pinned
// by the StatefulSet template's berth.dev/ips for its ordinal.
import { afterAll, beforeAll, expect, it } from "vitest";
import { cleanupIpamdTest, type DaemonHandle, startIpamd } from "../helpers/ipamd";
import { KubeApiServer } from "../helpers/kube/apiserver";
import { createNetns, removeNetns, type TestNetns } from "../helpers/netns";
import { spawn } from "node:child_process";
import { outputOf } from "../helpers/child";
import { cleanupPlugins, pluginDir, pluginPath } from "../helpers/plugins";
import { memberPod, nodeObj, stsObj } from "./helpers";

let api: KubeApiServer;
let daemon: DaemonHandle;
let pod: TestNetns | undefined;

beforeAll(async () => {
  api = await KubeApiServer.start({ bookmarkIntervalMs: 0 });
  api.create("nodes", nodeObj("plugin-node", { "berth.dev/rack": "r1" }));
  daemon = await startIpamd({
    config: {
      node: { name: "plugin-node" },
      cooldownSeconds: 0,
      pools: [{ name: "r1-v4", subnet: "10.60.0.0/24", gateway: "10.60.0.1", nodeSelector: { matchLabels: { "berth.dev/rack": "r1" } } }],
    },
    args: ["--kubeconfig", api.kubeconfigPath],
  });
  pod = createNetns("kubeplug");
}, 120_000);

afterAll(async () => {
  removeNetns(pod);
  await daemon?.stop();
  await cleanupIpamdTest();
  await api?.close();
  cleanupPlugins();
});

/** As runCni, but without blocking this process: the test API server lives in it and must answer ipamd meanwhile. */
function runPlugin(
  executable: string,
  env: Record<string, string>,
  config: unknown,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(executable, [], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_PATH: pluginDir(), ...env } });
  p.stdin.end(JSON.stringify(config));
  return outputOf(p);
}

it("ADD through berth-ipam with K8S_POD_* CNI_ARGS: membership and the pinned address come from the API", async () => {
  api.create(
    "apps/statefulsets",
    stsObj("db", "pg", { replicas: 3, template: { "berth.dev/ips": '["10.60.0.40","10.60.0.41","10.60.0.42"]' } }),
  );
  const uid = memberPod(api, "db", "pg", 2, "plugin-node");
  const config = { cniVersion: "1.0.0", name: "underlay", type: "macvlan", ipam: { type: "berth-ipam", socket: daemon.socket } };
  const r = await runPlugin(
    pluginPath("berth-ipam"),
    {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "ctr-pg-2",
      CNI_NETNS: pod!.path,
      CNI_IFNAME: "eth0",
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=db;K8S_POD_NAME=pg-2;K8S_POD_INFRA_CONTAINER_ID=ctr-pg-2;K8S_POD_UID=${uid}`,
    },
    config,
  );
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  expect(JSON.parse(r.stdout).ips).toEqual([{ address: "10.60.0.42/24", gateway: "10.60.0.1" }]);
  const { reservations } = await daemon.client.reservations({ ip: "10.60.0.42" });
  expect(reservations).toMatchObject([{ owner: "db/pg/2", sticky: true, pinned: true, podUID: uid, containerID: "ctr-pg-2" }]);
  expect(api.requests.every((q) => q.status !== 403)).toBe(true);
});
