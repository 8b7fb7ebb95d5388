// Cluster mode over TLS with client certificates, as production runs it: two ipamd nodes on a 3-member etcd that
// serves https and requires a client certificate. A StatefulSet member moves between them. Then the PKI is rotated
// (a new CA, server and client certificates; the members restarted one by one): the node whose files were updated
// goes on without a restart, the node whose files were not is refused and says why, until its files are updated.
import { copyFileSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import type { AllocateRequest } from "../../api/types";
import { type ClusterNodeHandle, firstIp, freshPrefix, startClusterNodes, until } from "../helpers/cluster";
import { EtcdCluster } from "../helpers/etcd";
import { cleanupIpamdTest, makeTempDir } from "../helpers/ipamd";

const POOLS = [{ name: "tls-v4", subnet: "10.83.0.0/24", ranges: [{ start: "10.83.0.10", end: "10.83.0.100" }], networks: ["underlay"] }];
const FILES = ["caFile", "certFile", "keyFile"] as const;
type Files = Record<(typeof FILES)[number], string>;

let etcd: EtcdCluster;
let a: ClusterNodeHandle;
let b: ClusterNodeHandle;
const own = new Map<ClusterNodeHandle, Files>();
const dirs: string[] = [];

/** As a secret volume or cert-manager updates the files: each a new file renamed over the old one. */
function install(from: Files, to: Files): void {
  for (const k of FILES) {
    copyFileSync(from[k], `${to[k]}.new`);
    renameSync(`${to[k]}.new`, to[k]);
  }
}

const member = (containerID: string, ordinal: number): AllocateRequest => ({
  containerID,
  ifName: "eth0",
  network: "underlay",
  podNamespace: "db",
  podName: `web-${ordinal}`,
});

beforeAll(async () => {
  etcd = await EtcdCluster.start({ tls: true });
  const prefix = freshPrefix("tls");
  [a, b] = (await Promise.all(
    ["node-a", "node-b"].map(async (name) => {
      const dir = makeTempDir(`berth-tls-${name}-`);
      dirs.push(dir);
      mkdirSync(join(dir, "etcd"));
      const files = { caFile: join(dir, "etcd/ca.crt"), certFile: join(dir, "etcd/client.crt"), keyFile: join(dir, "etcd/client.key") };
      install(etcd.tlsFiles!, files);
      const [n] = await startClusterNodes(etcd, [{ name }], {
        pools: POOLS,
        prefix,
        cluster: { etcd: files },
        extra: { statefulSets: [{ namespace: "db", name: "web" }] },
      });
      own.set(n!, files);
      return n!;
    }),
  )) as [ClusterNodeHandle, ClusterNodeHandle];
}, 120_000);
afterAll(async () => {
  await cleanupIpamdTest();
  await etcd?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("cluster mode over TLS", () => {
  it("a member moves between nodes over https with client certificates", async () => {
    const first = firstIp(await a.client.allocate(member("web0-on-a", 0)));
    await a.client.release({ containerID: "web0-on-a", ifName: "eth0", network: "underlay" });
    expect(firstIp(await b.client.allocate(member("web0-on-b", 0)))).toBe(first);
    expect((await b.client.status()).cluster!.etcd.state).toBe("connected");
  });

  it("rotated TLS files are used without a restart; a node still on the old ones says why it is refused", async () => {
    const before = (await b.client.reservations({ owner: "db/web/0" })).reservations[0]!.ip;
    const next = etcd.rotateTls();
    install(next, own.get(b)!);
    for (let i = 0; i < etcd.members.length; i++) {
      await etcd.stop(i);
      await etcd.restart(i, false);
    }
    await etcd.waitHealthy(20_000);

    // Node B (new files): the member's DEL and ADD again need etcd, and work.
    // Its liveness renewal and watches connect again on their own.
    const connected = async (n: ClusterNodeHandle) => (await n.client.status()).cluster!.etcd.state === "connected";
    await until("node B connected with the new files", () => connected(b), 30_000);
    await b.client.release({ containerID: "web0-on-b", ifName: "eth0", network: "underlay" });
    expect(firstIp(await b.client.allocate(member("web0-on-b2", 0)))).toBe(before);
    expect(await b.client.metrics()).toMatch(/berth_ipamd_etcd_tls_reloads_total\{outcome="ok"\} 1\n/);
    expect(b.stderr()).toContain("the etcd TLS files changed; new connections use them");

    // Node A (old files): a new member needs etcd and is refused, naming etcd and the certificate problem.
    const refused = await a.client.allocate(member("web1-on-a", 1)).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(IpamdError);
    expect((refused as Error).message).toContain("checked against cluster.etcd.caFile");
    expect((refused as Error).message).not.toContain("--use-system-ca");
    expect((refused as Error).message).toMatch(/etcd/);
    expect((refused as Error).message).toMatch(/certificate|alert/i);

    // Its files updated too: it goes on, no restart.
    install(next, own.get(a)!);
    await until("node A connected with the new files", () => connected(a), 30_000);
    const web1 = await a.client.allocate(member("web1-on-a", 1));
    expect(web1.owner).toBe("db/web/1");
    expect(a.stderr()).toContain("the etcd TLS files changed; new connections use them");
  }, 120_000);
});
