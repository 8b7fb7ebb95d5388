// The test API server (test/helpers/kube) driven by the REAL @kubernetes/client-node: what Berth's
// Kubernetes side will rely on, and the client's behaviour docs/kubernetes.md writes down.
import { request } from "node:https";
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  EventsV1Api,
  KubeConfig,
  ListWatch,
  makeInformer,
  type V1Node,
  type V1Pod,
  V1MicroTime,
  Watch,
} from "@kubernetes/client-node";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connectKube } from "../../ipamd/kube/connection";
import { ResilientWatch } from "../../ipamd/kube/watch";
import { KubeApiServer } from "../helpers/kube/apiserver";

let api: KubeApiServer;
let kc: KubeConfig;
let core: CoreV1Api;
const informers: { stop(): Promise<void> }[] = [];

beforeAll(async () => {
  api = await KubeApiServer.start({ bookmarkIntervalMs: 0 });
  kc = new KubeConfig();
  kc.loadFromFile(api.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
});
afterEach(async () => {
  await Promise.all(informers.splice(0).map((i) => i.stop()));
  // The server notices a stopped watch when its connection closes: the next test counts only its own.
  await until("the stopped watches to close", () => api.openWatches("pods") === 0);
  api.clearFaults();
});
afterAll(async () => {
  await api?.close();
});

const node = (name: string, labels: Record<string, string> = {}) => ({ apiVersion: "v1", kind: "Node", metadata: { name, labels } });
const pod = (name: string, nodeName: string, namespace = "default") => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace },
  spec: { nodeName, containers: [{ name: "c", image: "busybox" }] },
});

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function rejection(p: Promise<unknown>): Promise<ApiException<string>> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiException) return e as ApiException<string>;
    throw e;
  }
  throw new Error("expected the call to fail");
}

/** Raw HTTPS GET with the test CA, to see the wire without the client. */
function rawGet(path: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${api.url}${path}`, { ca: api.ca, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("authentication and authorization", () => {
  it("refuses a request without the bearer token with 401 and a Status", async () => {
    const r = await rawGet("/api/v1/nodes");
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toMatchObject({ kind: "Status", reason: "Unauthorized", code: 401 });
    const wrong = new KubeConfig();
    wrong.loadFromOptions({
      clusters: kc.clusters,
      contexts: kc.contexts,
      currentContext: kc.currentContext,
      users: [{ name: kc.getCurrentUser()!.name, token: "not-the-token" }],
    });
    expect((await rejection(wrong.makeApiClient(CoreV1Api).listNode())).code).toBe(401);
  });

  it("answers 403 for what rbac.yaml does not grant the berth service account", async () => {
    api.create("pods", pod("victim", "n1"));
    const e = await rejection(core.deleteNamespacedPod({ namespace: "default", name: "victim" }));
    expect(e.code).toBe(403);
    expect(JSON.parse(e.body)).toMatchObject({ reason: "Forbidden", code: 403 });
    expect(JSON.parse(e.body).message).toContain('User "system:serviceaccount:kube-system:berth" cannot delete resource "pods"');
    expect((await rejection(core.listNamespacedSecret({ namespace: "default" }))).code).toBe(403);
    expect(
      (
        await rejection(
          core.createNamespacedEvent({
            namespace: "default",
            body: {
              metadata: { name: "x" },
              involvedObject: { kind: "Pod", name: "victim", namespace: "default" },
            },
          }),
        )
      ).code,
    ).toBe(403);
    expect(api.get("pods", "default", "victim")).toBeDefined();
    api.remove("pods", "default", "victim");
  });

  it("serves a client configured in-cluster (service account files and KUBERNETES_SERVICE_HOST/PORT)", async () => {
    const inCluster = new KubeConfig();
    const saved = { ...process.env };
    Object.assign(process.env, api.inClusterEnv);
    try {
      inCluster.loadFromCluster(api.inClusterRoot);
    } finally {
      process.env = saved;
    }
    const list = await inCluster.makeApiClient(CoreV1Api).listNode();
    expect(list.kind).toBe("NodeList");
  });
});

describe("list and watch", () => {
  it("lists with the collection's resourceVersion and field and label selectors; refuses other field selectors with 400", async () => {
    api.create("nodes", node("sel-a", { rack: "r1", zone: "z1" }));
    api.create("nodes", node("sel-b", { rack: "r2", zone: "z1" }));
    const one = await core.listNode({ fieldSelector: "metadata.name=sel-a" });
    expect(one.items.map((n) => n.metadata!.name)).toEqual(["sel-a"]);
    expect(Number(one.metadata!.resourceVersion)).toBe(Number(api.resourceVersion));
    const byLabel = await core.listNode({ labelSelector: "zone=z1,rack in (r2,r3)" });
    expect(byLabel.items.map((n) => n.metadata!.name)).toEqual(["sel-b"]);
    const bad = await rejection(core.listNode({ fieldSelector: "spec.unschedulable=true" }));
    expect(bad.code).toBe(400);
    expect(JSON.parse(bad.body).message).toContain("field label not supported: spec.unschedulable");
    expect((await rejection(core.listNode({ labelSelector: "rack in (r1" }))).code).toBe(400);
    api.create("pods", pod("p-on-a", "sel-a"));
    api.create("pods", pod("p-on-b", "sel-b", "other"));
    const pods = await core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=sel-a" });
    expect(pods.items.map((p) => p.metadata!.name)).toEqual(["p-on-a"]);
    expect((await rejection(core.listPodForAllNamespaces({ fieldSelector: "status.phase=Running" }))).code).toBe(400);
  });

  it("makeInformer with the field selector in the path follows one node's labels", async () => {
    api.create("nodes", node("inf-1", { rack: "r1" }));
    api.create("nodes", node("inf-2", { rack: "r1" }));
    const path = "/api/v1/nodes?fieldSelector=metadata.name%3Dinf-1";
    const informer = makeInformer<V1Node>(kc, path, () => core.listNode({ fieldSelector: "metadata.name=inf-1" }));
    informers.push(informer);
    const seen: string[] = [];
    informer.on("add", (n) => seen.push(`add ${n.metadata!.name} ${n.metadata!.labels!.rack}`));
    informer.on("update", (n) => seen.push(`update ${n.metadata!.name} ${n.metadata!.labels!.rack}`));
    await informer.start();
    await until("the watch", () => api.openWatches("nodes") === 1);
    api.patch("nodes", undefined, "inf-2", { metadata: { labels: { rack: "r9" } } });
    api.patch("nodes", undefined, "inf-1", { metadata: { labels: { rack: "r2" } } });
    await until("the label change", () => seen.includes("update inf-1 r2"));
    expect(seen).toEqual(["add inf-1 r1", "update inf-1 r2"]);
    expect(informer.get("inf-1")!.metadata!.labels).toEqual({ rack: "r2" });
    const watchReq = api.requests.find((r) => r.verb === "watch" && r.resource === "nodes")!;
    expect(watchReq.query).toMatchObject({ fieldSelector: "metadata.name=inf-1", watch: "true" });
    expect(watchReq.query.allowWatchBookmarks).toBeUndefined(); // informers never ask for bookmarks
  });

  it("ListWatch takes a field selector: pods of one node, an object leaving the selector is a delete", async () => {
    const lw = new ListWatch<V1Pod>(
      "/api/v1/pods",
      new Watch(kc),
      () => core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=lw-node" }),
      false,
      undefined,
      "spec.nodeName=lw-node",
    );
    informers.push(lw);
    const events: string[] = [];
    lw.on("add", (p) => events.push(`add ${p.metadata!.name}`));
    lw.on("delete", (p) => events.push(`delete ${p.metadata!.name}`));
    api.create("pods", pod("lw-0", "lw-node"));
    await lw.start();
    await until("the watch", () => api.openWatches("pods") === 1);
    api.create("pods", pod("lw-1", "lw-node"));
    api.create("pods", pod("elsewhere", "other-node"));
    api.patch("pods", "default", "lw-0", { spec: { nodeName: "moved" } });
    await until("lw-0 leaving", () => events.includes("delete lw-0"));
    expect(events).toEqual(["add lw-0", "add lw-1", "delete lw-0"]);
    expect(lw.list().map((p) => p.metadata!.name)).toEqual(["lw-1"]);
  });

  it("relists after 410 Expired, in the stream or as the answer, and sees what changed meanwhile", async () => {
    api.create("pods", pod("gone-0", "rl-node"));
    const lw = new ListWatch<V1Pod>(
      "/api/v1/pods",
      new Watch(kc),
      () => core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=rl-node" }),
      false,
      undefined,
      "spec.nodeName=rl-node",
    );
    informers.push(lw);
    const events: string[] = [];
    lw.on("add", (p) => events.push(`add ${p.metadata!.name}`));
    lw.on("delete", (p) => events.push(`delete ${p.metadata!.name}`));
    await lw.start();
    await until("the watch", () => api.openWatches("pods") === 1);
    const lists = () => api.requests.filter((r) => r.verb === "list" && r.query.fieldSelector === "spec.nodeName=rl-node").length;
    expect(lists()).toBe(1);

    // The watch times out, changes happen and etcd compacts: the client's resourceVersion is expired.
    api.endWatches("pods");
    api.remove("pods", "default", "gone-0");
    api.create("pods", pod("new-0", "rl-node"));
    api.compact();
    await until("the relist", () => lists() === 2 && api.openWatches("pods") === 1);
    const expired = api.requests.filter((r) => r.verb === "watch" && r.status === 200).at(-2)!;
    expect(expired.query.resourceVersion).not.toBe("");
    expect(events).toEqual(["add gone-0", "delete gone-0", "add new-0"]);

    // Some apiservers answer the watch request itself with 410.
    api.inject({ verb: "watch", resource: "pods" }, { status: 410 });
    api.endWatches("pods");
    await until("the second relist", () => lists() === 3 && api.openWatches("pods") === 1);
    expect(lw.list().map((p) => p.metadata!.name)).toEqual(["new-0"]);
    // The server counts a watch before the client's request resolves; a ListWatch stopped in between keeps that
    // stream open (client-node 2.0.1, pinned below). An event on it shows the client holds it, so stop() ends it.
    api.create("pods", pod("probe-0", "rl-node"));
    await until("the client's watch", () => events.includes("add probe-0"));
  });

  it("sends BOOKMARKs with the current resourceVersion when asked", async () => {
    const got: { type: string; rv: string }[] = [];
    let done = false;
    const from = api.resourceVersion;
    const ctl = await new Watch(kc).watch(
      "/api/v1/pods",
      { allowWatchBookmarks: true, resourceVersion: from },
      (type, obj) => got.push({ type, rv: obj.metadata.resourceVersion }),
      () => {
        done = true;
      },
    );
    await until("the watch", () => api.openWatches("pods") === 1);
    api.create("pods", pod("bm-0", "bm-node"));
    api.bookmark();
    await until("the bookmark", () => got.some((g) => g.type === "BOOKMARK"));
    expect(got).toEqual([
      { type: "ADDED", rv: api.resourceVersion },
      { type: "BOOKMARK", rv: api.resourceVersion },
    ]);
    ctl.abort();
    await until("the end of the watch", () => done);
  });

  it("informers stop for good on any other error (500 on list or watch): the caller must restart them", async () => {
    for (const verb of ["list", "watch"] as const) {
      const lw = new ListWatch<V1Pod>(
        "/api/v1/pods",
        new Watch(kc),
        () => core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=err-node" }),
        false,
        undefined,
        "spec.nodeName=err-node",
      );
      informers.push(lw);
      const errors: unknown[] = [];
      lw.on("error", (e) => errors.push(e));
      await lw.start();
      await until("the watch", () => api.openWatches("pods") === 1);
      api.inject({ verb, resource: "pods" }, { status: 500, times: Infinity });
      if (verb === "list") api.inject({ verb: "watch", resource: "pods" }, { status: 410 }); // forces the relist
      api.endWatches("pods");
      await until(`the ${verb} error`, () => errors.length > 0, 5000);
      const before = api.requests.length;
      await new Promise((r) => setTimeout(r, 2500)); // past the client's 1 s reconnect delay
      expect(api.requests.length).toBe(before);
      expect(api.openWatches("pods")).toBe(0);
      api.clearFaults();
      await lw.stop();
    }
  });

  it("a watch ended by the server is resumed from the last resourceVersion, without a relist", async () => {
    const lw = new ListWatch<V1Pod>(
      "/api/v1/pods",
      new Watch(kc),
      () => core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=end-node" }),
      false,
      undefined,
      "spec.nodeName=end-node",
    );
    informers.push(lw);
    await lw.start();
    await until("the watch", () => api.openWatches("pods") === 1);
    const rv = lw.latestResourceVersion();
    api.endWatches("pods");
    api.create("pods", pod("end-0", "end-node"));
    await until("end-0", () => lw.get("end-0", "default") !== undefined);
    const watches = api.requests.filter((r) => r.verb === "watch" && r.query.fieldSelector === "spec.nodeName=end-node");
    expect(watches.map((w) => w.query.resourceVersion)).toEqual([rv, rv]);
    expect(api.requests.filter((r) => r.verb === "list" && r.query.fieldSelector === "spec.nodeName=end-node").length).toBe(1);
  });

  it("a dropped connection (or a delayed answer then a cut) stops the informer with an error: no reconnect", async () => {
    const lw = new ListWatch<V1Pod>(
      "/api/v1/pods",
      new Watch(kc),
      () => core.listPodForAllNamespaces({ fieldSelector: "spec.nodeName=drop-node" }),
      false,
      undefined,
      "spec.nodeName=drop-node",
    );
    informers.push(lw);
    const errors: Error[] = [];
    lw.on("error", (e) => errors.push(e as Error));
    api.inject({ verb: "watch", resource: "pods" }, { delayMs: 200, dropAfterMs: 100 });
    await lw.start();
    await until("the error", () => errors.length > 0);
    expect(errors[0]!.message).toMatch(/terminated|socket|other side closed/i);
    const before = api.requests.length;
    await new Promise((r) => setTimeout(r, 2500));
    expect(api.requests.length).toBe(before);
    expect(api.openWatches("pods")).toBe(0);
  });
});

describe("a stopped watch stays stopped", () => {
  const podsOn = (nodeName: string) => () => core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${nodeName}` });
  const settle = () => new Promise((r) => setTimeout(r, 1500));

  it("client-node's ListWatch stopped while it lists opens its watch anyway (why ResilientWatch guards it)", async () => {
    api.inject({ verb: "list", resource: "pods" }, { delayMs: 400 });
    const lw = new ListWatch<V1Pod>("/api/v1/pods", new Watch(kc), podsOn("lw-stop"), false, undefined, "spec.nodeName=lw-stop");
    const started = lw.start();
    await until("the list", () => api.requests.some((r) => r.verb === "list" && r.query.fieldSelector === "spec.nodeName=lw-stop"));
    await lw.stop();
    await started;
    await settle();
    // If this fails, client-node fixed the race: StoppableWatch (ipamd/kube/watch.ts) can go.
    expect(api.openWatches("pods")).toBe(1);
    api.endWatches("pods");
  });

  for (const verb of ["list", "watch"] as const) {
    it(`ResilientWatch stopped while its ${verb} request is answered holds no watch open`, async () => {
      const selector = `spec.nodeName=rw-${verb}`;
      const kube = connectKube(
        {
          enabled: true,
          kubeconfig: api.kubeconfigPath,
          inClusterRoot: "/",
          leakGraceMs: 60_000,
          reconcileMs: 60_000,
          apiTimeoutMs: 5000,
          leaderLeaseMs: 15_000,
          leaderRetryMs: 2000,
        },
        "test",
        "rw-node",
      )!;
      const w = new ResilientWatch<V1Pod>(
        kube,
        { resource: "pods", path: "/api/v1/pods", list: podsOn(`rw-${verb}`), fieldSelector: selector },
        pino({ level: "silent" }),
      );
      api.inject({ verb, resource: "pods" }, { delayMs: 400 });
      w.start();
      await until(`the ${verb}`, () => api.requests.some((r) => r.verb === verb && r.query.fieldSelector === selector));
      await w.stop();
      await settle();
      expect(api.openWatches("pods")).toBe(0);
      expect(w.status().state).toBe("stopped");
      // Started again, it watches (once).
      w.start();
      await w.whenSynced();
      await until("the watch", () => api.openWatches("pods") === 1);
      await w.stop();
    });
  }
});

describe("writes", () => {
  it("Lease create and update with V1MicroTime; a stale resourceVersion is 409; a plain Date is 400", async () => {
    const leases = kc.makeApiClient(CoordinationV1Api);
    const created = await leases.createNamespacedLease({
      namespace: "kube-system",
      body: {
        metadata: { name: "berth-release-leader" },
        spec: { holderIdentity: "n1", leaseDurationSeconds: 15, acquireTime: new V1MicroTime(), renewTime: new V1MicroTime() },
      },
    });
    const stored = api.get("coordination.k8s.io/leases", "kube-system", "berth-release-leader")!;
    expect((stored.spec as { renewTime: string }).renewTime).toMatch(/\.\d{6}Z$/);
    const renewed = await leases.replaceNamespacedLease({
      name: "berth-release-leader",
      namespace: "kube-system",
      body: {
        ...created,
        spec: { ...created.spec, renewTime: new V1MicroTime() },
      },
    });
    expect(Number(renewed.metadata!.resourceVersion)).toBeGreaterThan(Number(created.metadata!.resourceVersion));
    const stale = await rejection(
      leases.replaceNamespacedLease({
        name: "berth-release-leader",
        namespace: "kube-system",
        body: {
          ...created,
          spec: { ...created.spec, holderIdentity: "n2" },
        },
      }),
    );
    expect(stale.code).toBe(409);
    expect(JSON.parse(stale.body)).toMatchObject({ reason: "Conflict" });
    const plainDate = await rejection(
      leases.createNamespacedLease({
        namespace: "kube-system",
        body: {
          metadata: { name: "plain-date" },
          spec: { holderIdentity: "n1", renewTime: new Date() as V1MicroTime },
        },
      }),
    );
    expect(plainDate.code).toBe(400);
    expect(JSON.parse(plainDate.body).message).toContain("spec.renewTime");
    const elsewhere = leases.createNamespacedLease({ namespace: "default", body: { metadata: { name: "elsewhere" } } });
    expect((await rejection(elsewhere)).code).toBe(403); // the Role grants leases in kube-system only
  });

  it("events.k8s.io/v1 Event creation with a MicroTime eventTime; 3 fraction digits are 400", async () => {
    const events = kc.makeApiClient(EventsV1Api);
    const body = {
      metadata: { generateName: "web-0." },
      eventTime: new V1MicroTime(),
      reportingController: "berth.dev/ipamd",
      reportingInstance: "ipamd-n1",
      action: "AllocateAddress",
      reason: "NoPoolForNode",
      type: "Warning",
      note: "no pool selects node n1 for network data",
      regarding: { kind: "Pod", namespace: "default", name: "web-0", apiVersion: "v1" },
    };
    const created = await events.createNamespacedEvent({ namespace: "default", body });
    expect(created.metadata!.name).toMatch(/^web-0\./);
    expect(api.list("events.k8s.io/events", "default").map((e) => e.reason)).toContain("NoPoolForNode");
    const threeDigits = { ...body, eventTime: new Date() as V1MicroTime };
    const bad = await rejection(events.createNamespacedEvent({ namespace: "default", body: threeDigits }));
    expect(bad.code).toBe(400);
    expect(JSON.parse(bad.body).message).toContain("eventTime");
  });

  it("records the User-Agent each kind of call sends", async () => {
    await core.listNode();
    const list = api.requests.filter((r) => r.verb === "list").at(-1)!;
    expect(list.userAgent).toMatch(/^kubernetes-client-javascript\/2\./);
    const watch = api.requests.find((r) => r.verb === "watch")!;
    expect(watch.userAgent).toBe("undici"); // Watch sets none: undici's default
  });
});
