// ipamd's Kubernetes side, end to end: the REAL daemon (built bundle, own socket and SQLite file),
// the REAL @kubernetes/client-node inside it, and the strict test API server (test/helpers/kube, a
// fixture, not a cluster) that enforces conf/kubernetes/rbac.yaml and records every request.
import { parseAllDocuments } from "yaml";
import { readFileSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import { buildConfig } from "../../ipamd/config";
import { connectKube } from "../../ipamd/kube/connection";
import { LeaseElector } from "../../ipamd/kube/elector";
import { cleanupIpamdTest, type DaemonHandle, runIpamctl, startIpamd } from "../helpers/ipamd";
import { KubeApiServer } from "../helpers/kube/apiserver";
import { add, eventsFor, ip, memberPod, nodeObj, podObj, reservedIps, stsObj, until } from "./helpers";

const ROOT = join(import.meta.dirname, "../..");
let api: KubeApiServer;
const daemons: DaemonHandle[] = [];

beforeAll(async () => {
  api = await KubeApiServer.start({ bookmarkIntervalMs: 0 });
}, 60_000);
afterAll(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  await cleanupIpamdTest();
  await api?.close();
});

const KUBE = { leakGraceSeconds: 1, reconcileSeconds: 0.3, apiTimeoutSeconds: 3 };

async function daemon(node: string, pools: Record<string, unknown>[], extra: Record<string, unknown> = {}): Promise<DaemonHandle> {
  const d = await startIpamd({
    config: { node: { name: node }, pools, cooldownSeconds: 0, kubernetes: KUBE, ...extra },
    args: ["--kubeconfig", api.kubeconfigPath],
  });
  daemons.push(d);
  return d;
}

async function ipamdError(p: Promise<unknown>): Promise<IpamdError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof IpamdError) return e;
    throw e;
  }
  throw new Error("expected the call to fail");
}

const ofNode = (node: string) => api.requests.filter((r) => r.query.fieldSelector?.endsWith(`=${node}`));

describe("1. node labels from the Node object", () => {
  it("select the pools in-cluster (service account, KUBERNETES_SERVICE_HOST), re-select at once on a change; " +
    "a member's sticky pool off the node fails with the L2-domain error and an Event naming the nodes it selects", async () => {
    api.create("nodes", nodeObj("n1", { "berth.dev/rack": "r1" }));
    api.create("nodes", nodeObj("n1-peer", { "berth.dev/rack": "r1" }));
    api.create("apps/statefulsets", stsObj("l1", "web"));
    const pools = [
      { name: "r1-v4", subnet: "10.101.0.0/24", nodeSelector: { matchLabels: { "berth.dev/rack": "r1" } } },
      { name: "r2-v4", subnet: "10.102.0.0/24", nodeSelector: { matchLabels: { "berth.dev/rack": "r2" } } },
    ];
    const saved = { ...process.env };
    Object.assign(process.env, api.inClusterEnv);
    let d: DaemonHandle;
    try {
      d = await startIpamd({
        config: {
          node: { name: "n1", labels: { "berth.dev/rack": "r9" } },
          pools,
          cooldownSeconds: 0,
          kubernetes: { ...KUBE, inClusterRoot: api.inClusterRoot },
        },
      });
    } finally {
      process.env = saved;
    }
    daemons.push(d);
    const status = await d.client.status();
    expect(status.kubernetes).toMatchObject({ mode: "in-cluster", server: api.url, releaseLeader: true });
    expect(status.node.labels).toEqual({ "berth.dev/rack": "r1" }); // the Node's, not the config's r9
    expect(status.poolsSelected).toEqual(["r1-v4"]);
    const plain = await add(d.client, "l1", "nginx-a", undefined);
    expect(ip(plain)).toMatch(/^10\.101\.0\./);
    const webUid = memberPod(api, "l1", "web", 0, "n1");
    const web = await add(d.client, "l1", "web-0", webUid);
    expect(web).toMatchObject({ owner: "l1/web/0", sticky: true });
    expect(ip(web)).toMatch(/^10\.101\.0\./);
    await d.client.release({ containerID: web.containerID, ifName: "eth0", network: "underlay" });

    api.patch("nodes", undefined, "n1", { metadata: { labels: { "berth.dev/rack": "r2" } } });
    await until("the re-selection", async () => (await d.client.status()).poolsSelected.join() === "r2-v4");
    expect(ip(await add(d.client, "l1", "nginx-b", undefined))).toMatch(/^10\.102\.0\./);

    // The member's reservation in r1-v4 is kept, but not used on a node r1-v4 no longer selects.
    const e = await ipamdError(add(d.client, "l1", "web-0", webUid));
    expect(e.code).toBe("no_pool");
    expect(e.message).toContain(`l1/web/0 holds ${ip(web)} in pool "r1-v4", which does not select node n1`);
    expect(e.message).toContain('{"matchLabels":{"berth.dev/rack":"r1"}}');
    expect(e.message).toContain("L2 domain");
    expect((await reservedIps(d.client, "l1", "web"))[0]).toBe(ip(web));
    await until("the StickyPoolNotOnNode Event", () => eventsFor(api, "l1", "web-0").some((ev) => ev.reason === "StickyPoolNotOnNode"));
    const ev = eventsFor(api, "l1", "web-0").find((x) => x.reason === "StickyPoolNotOnNode")!;
    expect(ev.note).toContain("Nodes the pool selects: n1-peer");
    expect(ev.eventTime).toMatch(/\.\d{6}Z$/);
    expect(ev).toMatchObject({ type: "Warning", reportingController: "berth.dev/ipamd", reportingInstance: "ipamd-n1" });

    // Watches named by field selector, and every call says who made it.
    const watched = ofNode("n1")
      .filter((r) => r.verb === "watch")
      .map((r) => `${r.resource} ${r.query.fieldSelector}`);
    expect(watched).toEqual(expect.arrayContaining(["nodes metadata.name=n1", "pods spec.nodeName=n1"]));
    const mine = api.requests.filter((r) => r.query.fieldSelector?.endsWith("=n1") || r.name?.startsWith("web-0") || r.namespace === "l1");
    expect(mine.map((r) => r.verb)).toEqual(expect.arrayContaining(["list", "watch", "create"]));
    for (const r of mine) expect(r.userAgent).toBe("berth-ipamd/0.1.0 (node n1)");
    const { stdout } = await runIpamctl(["--socket", d.socket, "status"]);
    expect(stdout).toContain(`kubernetes:    in-cluster ${api.url}`);
    expect(stdout).toMatch(/watch node +watching since/);
  }, 60_000);
});

describe("2. StatefulSet identity from the controller ownerReference", () => {
  it("a member needs no registration and keeps its address across recreation; " +
    "a Deployment pod with an all-digit suffix is not one", async () => {
    api.create("nodes", nodeObj("n2", {}));
    // The config lists a StatefulSet named like the Deployment's ReplicaSet: without the API, its pod would be a member.
    const d = await daemon("n2", [{ name: "p2", subnet: "10.2.0.0/24" }], { statefulSets: [{ namespace: "m2", name: "web-6d5f8" }] });
    api.create("apps/statefulsets", stsObj("m2", "redis"));
    const uid1 = memberPod(api, "m2", "redis", 0, "n2");
    const first = await add(d.client, "m2", "redis-0", uid1);
    expect(first).toMatchObject({ owner: "m2/redis/0", sticky: true });
    expect((await d.client.statefulSets()).statefulsets).toEqual([{ namespace: "m2", name: "web-6d5f8", source: "config" }]);
    await d.client.release({ containerID: first.containerID, ifName: "eth0", network: "underlay" });
    api.remove("pods", "m2", "redis-0");
    const uid2 = memberPod(api, "m2", "redis", 0, "n2");
    expect(uid2).not.toBe(uid1);
    const again = await add(d.client, "m2", "redis-0", uid2);
    expect(ip(again)).toBe(ip(first));

    const rs = api.create(
      "pods",
      podObj("m2", "web-6d5f8-24579", "n2", { owner: { kind: "ReplicaSet", name: "web-6d5f8", uid: "rs-uid" } }),
    );
    const deployment = await add(d.client, "m2", "web-6d5f8-24579", rs.metadata.uid);
    expect(deployment.sticky).toBe(false);
    expect(deployment.owner).toBe(`${deployment.containerID}/eth0`);
  }, 60_000);
});

describe("3. release policy (berth.dev/ip-retention)", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    api.create("nodes", nodeObj("n3", {}));
    d = await daemon("n3", [{ name: "p3", subnet: "10.3.0.0/24" }]);
  }, 60_000);

  /** Member pods start..start+n-1 of a StatefulSet, each ADDed and then DELeted (their reservations detached). */
  async function members(ns: string, sts: string, ordinals: number[]): Promise<Record<number, string>> {
    for (const o of ordinals) {
      const r = await add(d.client, ns, `${sts}-${o}`, memberPod(api, ns, sts, o, "n3"));
      await d.client.release({ containerID: r.containerID, ifName: "eth0", network: "underlay" });
    }
    return reservedIps(d.client, ns, sts);
  }

  it("defaults (whenDeleted: Delete, whenScaled: Retain): scale-down keeps, deletion releases everything", async () => {
    api.create("apps/statefulsets", stsObj("r3", "a", { replicas: 2 }));
    const held = await members("r3", "a", [0, 1]);
    api.patch("apps/statefulsets", "r3", "a", { spec: { replicas: 1 } });
    api.remove("pods", "r3", "a-1");
    await new Promise((r) => setTimeout(r, 1500)); // several reconcile rounds
    expect(await reservedIps(d.client, "r3", "a")).toEqual(held);
    api.remove("apps/statefulsets", "r3", "a");
    await until("one ordinal still has its pod", async () => Object.keys(await reservedIps(d.client, "r3", "a")).join() === "0");
    api.remove("pods", "r3", "a-0");
    await until("the deletion's releases", async () => Object.keys(await reservedIps(d.client, "r3", "a")).length === 0);
  }, 60_000);

  it("whenScaled: Delete releases ordinals >= start+replicas once their pods are gone; " +
    "one recreated during the release keeps its address", async () => {
    api.create(
      "apps/statefulsets",
      stsObj("r3", "b", { replicas: 3, start: 5, annotations: { "berth.dev/ip-retention": '{"whenScaled":"Delete"}' } }),
    );
    const held = await members("r3", "b", [5, 6, 7]);
    api.patch("apps/statefulsets", "r3", "b", { spec: { replicas: 1 } });
    await new Promise((r) => setTimeout(r, 1000));
    expect(await reservedIps(d.client, "r3", "b")).toEqual(held); // their pods still exist
    api.remove("pods", "r3", "b-7");
    await until("b-7 released", async () => !(7 in (await reservedIps(d.client, "r3", "b"))));

    // b-6: the pod re-check finds none, then the StatefulSet re-check is slow; meanwhile the pod is
    // recreated and its ADD attaches the address: the release must then free nothing.
    api.inject({ verb: "get", resource: "apps/statefulsets", namespace: "r3", name: "b" }, { delayMs: 2000 });
    const slowGets = () => api.requests.filter((r) => r.verb === "get" && r.resource === "apps/statefulsets" && r.name === "b").length;
    const before = slowGets();
    api.remove("pods", "r3", "b-6");
    await until("the StatefulSet re-check", () => slowGets() > before);
    const back = await add(d.client, "r3", "b-6", memberPod(api, "r3", "b", 6, "n3"));
    expect(ip(back)).toBe(held[6]);
    await new Promise((r) => setTimeout(r, 2500));
    const now = await reservedIps(d.client, "r3", "b");
    expect(now).toEqual({ 5: held[5], 6: held[6] });
    const { reservations } = await d.client.reservations({ ip: held[6] });
    expect(reservations).toMatchObject([{ owner: "r3/b/6", state: "attached", containerID: back.containerID }]);
  }, 60_000);

  it("whenDeleted: Retain keeps the addresses and a StatefulSet recreated with a new UID inherits them", async () => {
    const retain = { "berth.dev/ip-retention": '{"whenDeleted":"Retain","whenScaled":"Retain"}' };
    api.create("apps/statefulsets", stsObj("r3", "c", { annotations: retain }));
    const held = await members("r3", "c", [0]);
    api.remove("pods", "r3", "c-0");
    api.remove("apps/statefulsets", "r3", "c");
    await new Promise((r) => setTimeout(r, 1500));
    expect(await reservedIps(d.client, "r3", "c")).toEqual(held);
    api.create("apps/statefulsets", stsObj("r3", "c", { annotations: retain }));
    expect(ip(await add(d.client, "r3", "c-0", memberPod(api, "r3", "c", 0, "n3")))).toBe(held[0]);
  }, 60_000);

  it("a StatefulSet recreated with a new UID under whenDeleted: Delete does not inherit the old addresses", async () => {
    const first = api.create("apps/statefulsets", stsObj("r3", "e"));
    const held = await members("r3", "e", [0]);
    const trackedUid = (): string | undefined => {
      const db = new DatabaseSync(d.db, { readOnly: true });
      try {
        const row = db.prepare("SELECT uid FROM kube_statefulsets WHERE namespace = 'r3' AND name = 'e'").get() as
          | { uid: string }
          | undefined;
        return row?.uid;
      } finally {
        db.close();
      }
    };
    await until("the StatefulSet watch to record its UID", () => trackedUid() === first.metadata.uid);
    api.remove("pods", "r3", "e-0");
    api.remove("apps/statefulsets", "r3", "e");
    api.create("apps/statefulsets", stsObj("r3", "e"));
    const fresh = await add(d.client, "r3", "e-0", memberPod(api, "r3", "e", 0, "n3"));
    expect(ip(fresh)).not.toBe(held[0]);
    expect(await reservedIps(d.client, "r3", "e")).toEqual({ 0: ip(fresh) });
    expect((await d.client.reservations({ ip: held[0] })).reservations).toEqual([]);
  }, 60_000);

  it("a ttl releases identities detached for longer (pods gone)", async () => {
    api.create("apps/statefulsets", stsObj("r3", "t", { annotations: { "berth.dev/ip-retention": '{"ttl":"1s"}' } }));
    await members("r3", "t", [0]);
    api.remove("pods", "r3", "t-0");
    await until("the ttl", async () => Object.keys(await reservedIps(d.client, "r3", "t")).length === 0);
  }, 60_000);
});

describe("4. annotations berth.dev/ips and berth.dev/pools", () => {
  let d: DaemonHandle;
  beforeAll(async () => {
    api.create("nodes", nodeObj("n4", {}));
    d = await daemon("n4", [
      { name: "a4", subnet: "10.4.0.0/24" },
      { name: "b4", subnet: "10.44.0.0/24" },
    ]);
  }, 60_000);

  it("pin by ordinal from the pod template; " +
    "a changed annotation moves the member and frees the old address in the same transaction", async () => {
    api.create("apps/statefulsets", stsObj("a4", "e", { replicas: 2, template: { "berth.dev/ips": '["10.4.0.50","10.4.0.51"]' } }));
    const first = await add(d.client, "a4", "e-1", memberPod(api, "a4", "e", 1, "n4"));
    expect(ip(first)).toBe("10.4.0.51");
    expect((await d.client.reservations({ ip: "10.4.0.51" })).reservations[0]).toMatchObject({ owner: "a4/e/1", pinned: true });
    await d.client.release({ containerID: first.containerID, ifName: "eth0", network: "underlay" });
    api.remove("pods", "a4", "e-1");
    const uid = memberPod(api, "a4", "e", 1, "n4", { "berth.dev/ips": '["10.4.0.60","10.4.0.61"]' }); // the pod's own wins
    const moved = await add(d.client, "a4", "e-1", uid);
    expect(ip(moved)).toBe("10.4.0.61");
    // In the answer's commit: the member holds only the new address, the old one is free (no stale reservation).
    expect(await reservedIps(d.client, "a4", "e")).toEqual({ 1: "10.4.0.61" });
    expect((await d.client.reservations({ ip: "10.4.0.51" })).reservations).toEqual([]);
    const other = await add(d.client, "a4", "plain", undefined, { ips: ["10.4.0.51"] });
    expect(ip(other)).toBe("10.4.0.51");
  }, 60_000);

  it("berth.dev/pools picks the pools per interface; an invalid annotation fails the ADD naming it, with an Event", async () => {
    const p = api.create("pods", podObj("a4", "picky", "n4", { annotations: { "berth.dev/pools": '{"eth0":["b4"]}' } }));
    expect(ip(await add(d.client, "a4", "picky", p.metadata.uid))).toMatch(/^10\.44\.0\./);
    const bad = api.create("pods", podObj("a4", "bad", "n4", { annotations: { "berth.dev/ips": "10.4.0.9" } }));
    const e = await ipamdError(add(d.client, "a4", "bad", bad.metadata.uid));
    expect(e.code).toBe("invalid_request");
    expect(e.field).toBe("berth.dev/ips");
    expect(e.message).toContain("annotation berth.dev/ips on pod a4/bad is invalid: not JSON");
    await until("the InvalidAnnotation Event", () => eventsFor(api, "a4", "bad").some((ev) => ev.reason === "InvalidAnnotation"));
  }, 60_000);
});

describe("5. reserve at creation (berth.dev/reserve)", () => {
  it("reserves every replica (from spec.ordinals.start) as soon as the StatefulSet exists; ipamctl reservations shows them", async () => {
    api.create("nodes", nodeObj("n5", { zone: "z5" }));
    const d = await daemon("n5", [{ name: "p5", subnet: "10.5.0.0/24" }]);
    // Single-node mode: every node whose labels the pod template's nodeSelector matches reserves (its addresses are its own).
    api.create(
      "apps/statefulsets",
      stsObj("r5", "lb", { replicas: 3, start: 2, annotations: { "berth.dev/reserve": "true" }, nodeSelector: { zone: "z5" } }),
    );
    api.create(
      "apps/statefulsets",
      stsObj("r5", "elsewhere", { replicas: 2, annotations: { "berth.dev/reserve": "true" }, nodeSelector: { zone: "z9" } }),
    );
    await until("the reservations", async () => Object.keys(await reservedIps(d.client, "r5", "lb")).length === 3);
    const held = await reservedIps(d.client, "r5", "lb");
    expect(Object.keys(held)).toEqual(["2", "3", "4"]);
    const { stdout } = await runIpamctl(["--socket", d.socket, "reservations", "--namespace", "r5"]);
    for (const addr of Object.values(held)) expect(stdout).toContain(addr);
    expect(await reservedIps(d.client, "r5", "elsewhere")).toEqual({}); // its pods cannot land on this node
    expect(ip(await add(d.client, "r5", "lb-3", memberPod(api, "r5", "lb", 3, "n5")))).toBe(held[3]);
    // An invalid annotation is said once, not at every resync round (0.3 s here), and again when it changes.
    api.create(
      "apps/statefulsets",
      stsObj("r5", "typo", { annotations: { "berth.dev/reserve": "true" }, template: { "berth.dev/pools": "p5" } }),
    );
    const said = () =>
      d
        .stderr()
        .split("\n")
        .filter((l) => l.includes("r5/typo") && l.includes("not reserving at creation")).length;
    await until("the warning", () => said() === 1);
    const onTypo = () => eventsFor(api, "r5", "typo", "StatefulSet");
    await until("the StatefulSet's Event", () => onTypo().length === 1);
    await new Promise((r) => setTimeout(r, 1500));
    expect(said()).toBe(1);
    expect(onTypo()).toEqual([
      expect.objectContaining({
        type: "Warning",
        reason: "InvalidAnnotation",
        action: "ReserveAddresses",
        regarding: expect.objectContaining({ apiVersion: "apps/v1", kind: "StatefulSet", name: "typo", uid: expect.any(String) }),
      }),
    ]);
    expect(onTypo()[0]!.note).toMatch(
      /^not reserving at creation: invalid annotation: annotation berth\.dev\/pools on the pod template of statefulset r5\/typo/,
    );
    api.patch("apps/statefulsets", "r5", "typo", { spec: { template: { metadata: { annotations: { "berth.dev/pools": "5" } } } } });
    await until("the changed warning", () => said() === 2);
    await until("an Event for the changed warning", () => onTypo().length === 2);
  }, 60_000);
});

describe("6. leaks reconciled against the pods on this node", () => {
  it("frees a leaked attachment after its grace, never one whose pod came back; a refused takeover gets an Event", async () => {
    api.create("nodes", nodeObj("n6", {}));
    const d = await daemon("n6", [{ name: "p6", subnet: "10.6.0.0/24" }]);
    const gone = api.create("pods", podObj("l6", "gone", "n6"));
    const leaked = await add(d.client, "l6", "gone", gone.metadata.uid);
    api.create("apps/statefulsets", stsObj("l6", "h"));
    const h1 = await add(d.client, "l6", "h-0", memberPod(api, "l6", "h", 0, "n6"));
    const keep = api.create("pods", podObj("l6", "keep", "n6"));
    const kept = await add(d.client, "l6", "keep", keep.metadata.uid);
    const t0 = Date.now();
    api.remove("pods", "l6", "gone"); // no CNI DEL: its attachment leaks
    api.remove("pods", "l6", "h-0"); // no CNI DEL either, but the pod comes back at once
    const uid2 = memberPod(api, "l6", "h", 0, "n6");
    // The old sandbox still holds the member's address: the new pod is refused (CNI 11, the kubelet retries)
    // until the reconciler has released the old attachment, whose pod is gone.
    expect((await ipamdError(add(d.client, "l6", "h-0", uid2))).code).toBe("previous_sandbox_attached");
    let h2: Awaited<ReturnType<typeof add>> | undefined;
    await until("the member's address handed over", async () => {
      h2 = await add(d.client, "l6", "h-0", uid2).catch((e: unknown) => {
        if (e instanceof IpamdError && e.code === "previous_sandbox_attached") return undefined;
        throw e;
      });
      return h2 !== undefined;
    });
    expect(ip(h2!)).toBe(ip(h1));
    await until("the leak freed", async () => (await d.client.reservations({ ip: ip(leaked) })).reservations.length === 0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000); // not before the grace
    await new Promise((r) => setTimeout(r, 1500));
    expect((await d.client.reservations({ ip: ip(h1) })).reservations).toMatchObject([{ state: "attached", containerID: h2!.containerID }]);
    expect((await d.client.reservations({ ip: ip(kept) })).reservations).toMatchObject([{ state: "attached" }]);
    await until("the PreviousSandboxAttached Event", () =>
      eventsFor(api, "l6", "h-0").some((ev) => ev.reason === "PreviousSandboxAttached"),
    );
    // Two leaks: the gone pod's address, and h-0's previous sandbox (detached, the member keeps its address).
    expect(await d.client.metrics()).toMatch(/berth_ipamd_kube_released_addresses_total\{reason="leaked"\} 2/);
  }, 60_000);
});

describe("7. Events and watch recovery", () => {
  it("NoPoolForNode and PoolExhausted Events on the pod", async () => {
    api.create("nodes", nodeObj("n7", { rack: "tiny" }));
    const d = await daemon("n7", [
      { name: "tiny", subnet: "10.7.0.0/30", networks: ["underlay"], nodeSelector: { matchLabels: { rack: "tiny" } } },
      { name: "other", subnet: "10.77.0.0/24", networks: ["storage"] },
    ]);
    for (const n of ["t-a", "t-b"]) await add(d.client, "e7", n, api.create("pods", podObj("e7", n, "n7")).metadata.uid);
    const full = api.create("pods", podObj("e7", "t-c", "n7"));
    expect((await ipamdError(add(d.client, "e7", "t-c", full.metadata.uid))).code).toBe("pool_exhausted");
    const nopool = api.create("pods", podObj("e7", "t-d", "n7"));
    expect((await ipamdError(add(d.client, "e7", "t-d", nopool.metadata.uid, { network: "backup", pools: undefined }))).code).toBe(
      "no_pool",
    );
    await until(
      "the Events",
      () =>
        eventsFor(api, "e7", "t-c").some((e) => e.reason === "PoolExhausted") &&
        eventsFor(api, "e7", "t-d").some((e) => e.reason === "NoPoolForNode"),
    );
    expect(eventsFor(api, "e7", "t-d")[0]!.note).toContain('no pool serves network "backup" on node n7');
    // The kubelet retries ADD every few seconds: one Event per pod and reason, not one per retry.
    await ipamdError(add(d.client, "e7", "t-c", full.metadata.uid));
    await new Promise((r) => setTimeout(r, 300));
    expect(eventsFor(api, "e7", "t-c").length).toBe(1);
  }, 60_000);

  it("watches recover from 410 Expired, 500s and dropped streams; their state is in status and metrics; " +
    "an ADD whose pod the cache lacks fetches it once", async () => {
    // Faults match by verb and resource: only this test's daemon may watch nodes and pods now.
    await Promise.all(daemons.splice(0).map((x) => x.stop()));
    api.create("nodes", nodeObj("n8", { rack: "a" }));
    const d = await daemon("n8", [
      { name: "pa", subnet: "10.8.0.0/24", nodeSelector: { matchLabels: { rack: "a" } } },
      { name: "pb", subnet: "10.88.0.0/24", nodeSelector: { matchLabels: { rack: "b" } } },
    ]);
    const watchOf = async (resource: string) => (await d.client.status()).kubernetes.watches!.find((w) => w.resource === resource)!;
    const selected = async () => (await d.client.status()).poolsSelected.join();
    const nodeWatches = () => ofNode("n8").filter((r) => r.resource === "nodes" && r.verb === "watch").length;
    let rack = "a";
    const flip = async (what: string) => {
      rack = rack === "a" ? "b" : "a";
      api.patch("nodes", undefined, "n8", { metadata: { labels: { rack } } });
      await until(`the label change after ${what}`, async () => (await selected()) === `p${rack}`);
    };

    // 410: the watch ends, history is compacted, the client relists.
    const lists = () => ofNode("n8").filter((r) => r.resource === "nodes" && r.verb === "list").length;
    api.endWatches("nodes");
    api.create("nodes", nodeObj("n8-other", {})); // history moves on past the client's resourceVersion
    api.compact();
    await until("the relist", () => lists() === 2);
    await flip("410");

    // 500s on the watch (client-node stops for good): ipamd restarts it with backoff.
    api.inject({ verb: "watch", resource: "nodes" }, { status: 500, times: 2 });
    const w0 = nodeWatches();
    api.endWatches("nodes");
    await until("the failed restarts", async () => (await watchOf("node")).restarts >= 2);
    const failed = await watchOf("node");
    expect(failed.lastError).toContain("HTTP 500");
    await until("watching again", async () => (await watchOf("node")).state === "watching" && nodeWatches() >= w0 + 3);
    await flip("500s");

    // A dropped stream (connection cut mid-watch).
    const restartsBefore = (await watchOf("node")).restarts;
    api.dropWatches("nodes");
    await until("the restart after the drop", async () => (await watchOf("node")).restarts > restartsBefore);
    await until("watching again", async () => (await watchOf("node")).state === "watching");
    await flip("a dropped stream");

    // The pod watch down (500s): an ADD fetches the pod once and still knows its StatefulSet.
    api.inject({ verb: "watch", resource: "pods" }, { status: 500, times: Infinity });
    api.dropWatches("pods");
    await until("the pod watch in backoff", async () => (await watchOf("pods")).state === "backoff");
    expect(await d.client.metrics()).toMatch(/berth_ipamd_kube_watch_up\{resource="pods"\} 0/);
    api.create("apps/statefulsets", stsObj("w8", "kafka"));
    const uid = memberPod(api, "w8", "kafka", 0, "n8");
    expect(await add(d.client, "w8", "kafka-0", uid)).toMatchObject({ owner: "w8/kafka/0", sticky: true });
    expect(api.requests.filter((r) => r.verb === "get" && r.resource === "pods" && r.name === "kafka-0").length).toBe(1);
    api.clearFaults();
    await until("the pod watch back", async () => (await watchOf("pods")).state === "watching", 40_000);
    expect(await d.client.metrics()).toMatch(/berth_ipamd_kube_watch_up\{resource="pods"\} 1/);
  }, 90_000);
});

describe("the release-leader Lease (cluster mode's elector; single-node mode needs none)", () => {
  it("exactly one of two nodes leads; MicroTime renewals; the other takes over when the leader stops", async () => {
    const log = pino({ level: "silent" });
    const make = (node: string) => {
      const config = buildConfig({
        node: { name: node },
        pools: [{ name: "x", subnet: "10.9.0.0/24" }],
        kubernetes: { kubeconfig: api.kubeconfigPath },
      });
      const kube = connectKube(config.kubernetes, "0.1.0", node)!;
      return new LeaseElector(
        kube.leases,
        { namespace: "kube-system", name: "berth-release-leader", identity: node, leaseDurationMs: 2000, retryMs: 300, timeoutMs: 2000 },
        log,
      );
    };
    const a = make("lease-a");
    const b = make("lease-b");
    expect(await a.tick()).toBe(true);
    expect(await b.tick()).toBe(false);
    expect(await a.tick()).toBe(true); // renewed
    const lease = api.get("coordination.k8s.io/leases", "kube-system", "berth-release-leader")!;
    expect(lease.spec).toMatchObject({ holderIdentity: "lease-a", leaseDurationSeconds: 2 });
    expect((lease.spec as { renewTime: string }).renewTime).toMatch(/\.\d{6}Z$/);
    b.start();
    await a.stop(); // gives the lease up
    await until("b leads", () => b.isLeader());
    expect(a.isLeader()).toBe(false);
    await b.stop();
  }, 30_000);
});

describe("RBAC: conf/kubernetes/rbac.yaml grants exactly what the code uses", () => {
  it("no request of the tests above was refused, and every grant was used by one", () => {
    const refused = api.requests.filter((r) => r.status === 401 || r.status === 403);
    expect(refused.map((r) => `${r.method} ${r.path} -> ${r.status}`)).toEqual([]);
    type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
    const docs = parseAllDocuments(readFileSync(join(ROOT, "conf/kubernetes/rbac.yaml"), "utf8")).map(
      (x) => x.toJS() as { kind?: string; rules?: Rule[] },
    );
    const granted = docs
      .filter((x) => x.kind === "ClusterRole" || x.kind === "Role")
      .flatMap((x) => x.rules ?? [])
      .flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g ? `${g}/` : ""}${res} ${v}`))));
    // A request gets its resource once authorized (open watches are still streaming: no status yet).
    const used = new Set(api.requests.filter((r) => r.resource).map((r) => `${r.resource} ${r.verb}`));
    expect(granted.filter((g) => !used.has(g))).toEqual([]);
    expect([...used].filter((u) => !granted.includes(u))).toEqual([]);
  });
});
