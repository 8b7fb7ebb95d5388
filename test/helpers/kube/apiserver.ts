// A strict test Kubernetes API server: a fixture for tests, not a cluster. It speaks the real wire
// protocol for exactly what Berth uses and refuses the rest the way kube-apiserver does:
//   HTTPS with a CA minted per run; bearer-token authentication (401 otherwise); authorization by
//   the rules conf/kubernetes/rbac.yaml binds to the berth service account (403 otherwise);
//   get/list/create/update/patch/delete on core/v1 nodes, pods, events, apps/v1 statefulsets,
//   coordination.k8s.io/v1 leases and events.k8s.io/v1 events; objects carry one increasing
//   resourceVersion; list returns the collection's resourceVersion; `?watch=1` streams newline-
//   delimited events from a resourceVersion, BOOKMARKs when allowWatchBookmarks=true, and an ERROR
//   event with a 410 Expired Status (then closes) for a compacted one; label selectors in full,
//   field selectors only where listed below (400 for others); MicroTime fields must carry exactly
//   6 fraction digits (400); PUT of a stale resourceVersion is 409 Conflict.
// The test drives scenarios through the methods (create/update/patch/remove, compact, faults).
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type Rbac as RbacType, Rbac } from "./rbac";
import { type Matcher, parseFieldSelector, parseLabelSelector, SelectorError } from "./selectors";
import { mintPki } from "./tls";

export type KubeObject = Record<string, unknown> & {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name?: string;
    generateName?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
};

/** "nodes", "pods", "events" (core/v1) or "<group>/<resource>". */
type ResourceKey = "nodes" | "pods" | "events" | "apps/statefulsets" | "coordination.k8s.io/leases" | "events.k8s.io/events";

interface ResourceType {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
  fieldSelectors: readonly string[];
  /** PUT without metadata.resourceVersion is allowed (as for pods); leases require it. */
  unconditionalUpdate: boolean;
  validate?: (obj: KubeObject) => string | undefined;
}

const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$/;
const TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

function microTime(obj: KubeObject, path: string, required: boolean): string | undefined {
  const value = path.split(".").reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
  if (value === undefined || value === null) return required ? `${path}: Required value` : undefined;
  if (typeof value !== "string" || !MICRO_TIME.test(value)) {
    // What kube-apiserver answers when a MicroTime is not RFC 3339 with 6 fraction digits.
    return (
      `${path}: Invalid value: ${JSON.stringify(value)}: parsing time ${JSON.stringify(value)} ` +
      'as "2006-01-02T15:04:05.000000Z07:00": ' +
      "cannot parse as MicroTime (exactly 6 fraction digits)"
    );
  }
  return undefined;
}

const RESOURCES: Record<ResourceKey, ResourceType> = {
  nodes: {
    group: "",
    version: "v1",
    resource: "nodes",
    kind: "Node",
    namespaced: false,
    fieldSelectors: ["metadata.name"],
    unconditionalUpdate: true,
  },
  pods: {
    group: "",
    version: "v1",
    resource: "pods",
    kind: "Pod",
    namespaced: true,
    fieldSelectors: ["spec.nodeName"],
    unconditionalUpdate: true,
  },
  events: {
    group: "",
    version: "v1",
    resource: "events",
    kind: "Event",
    namespaced: true,
    fieldSelectors: [],
    unconditionalUpdate: true,
    validate: (o) =>
      microTime(o, "eventTime", false) ??
      ["firstTimestamp", "lastTimestamp"]
        .map((f) => (o[f] == null || (typeof o[f] === "string" && TIME.test(o[f])) ? undefined : `${f}: Invalid value: not RFC 3339`))
        .find(Boolean) ??
      (o.involvedObject ? undefined : "involvedObject: Required value"),
  },
  "apps/statefulsets": {
    group: "apps",
    version: "v1",
    resource: "statefulsets",
    kind: "StatefulSet",
    namespaced: true,
    fieldSelectors: [],
    unconditionalUpdate: true,
  },
  "coordination.k8s.io/leases": {
    group: "coordination.k8s.io",
    version: "v1",
    resource: "leases",
    kind: "Lease",
    namespaced: true,
    fieldSelectors: [],
    unconditionalUpdate: false,
    validate: (o) => microTime(o, "spec.acquireTime", false) ?? microTime(o, "spec.renewTime", false),
  },
  "events.k8s.io/events": {
    group: "events.k8s.io",
    version: "v1",
    resource: "events",
    kind: "Event",
    namespaced: true,
    fieldSelectors: [],
    unconditionalUpdate: true,
    validate: (o) =>
      microTime(o, "eventTime", true) ??
      microTime(o, "series.lastObservedTime", false) ??
      ["reportingController", "reportingInstance", "action", "reason"]
        .map((f) => (o[f] ? undefined : `${f}: Required value`))
        .find(Boolean) ??
      (o.type === "Normal" || o.type === "Warning"
        ? undefined
        : `type: Unsupported value: ${JSON.stringify(o.type)}: supported values: "Normal", "Warning"`) ??
      (typeof o.note === "string" && Buffer.byteLength(o.note) > 1024 ? "note: Too long: must have at most 1024 bytes" : undefined),
  },
};

function keyOf(t: ResourceType): ResourceKey {
  return (t.group === "" ? t.resource : `${t.group}/${t.resource}`) as ResourceKey;
}

function apiVersionOf(t: ResourceType): string {
  return t.group === "" ? t.version : `${t.group}/${t.version}`;
}

interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  verb: string;
  resource?: ResourceKey;
  namespace?: string;
  name?: string;
  status: number;
  userAgent?: string;
  contentType?: string;
}

/** Which requests a fault applies to; every field given must match. */
interface RequestMatch {
  verb?: string;
  resource?: ResourceKey;
  namespace?: string;
  name?: string;
  watch?: boolean;
}

interface Fault {
  /** Answer with this status and a Status object instead of serving the request. */
  status?: number;
  reason?: string;
  message?: string;
  /** Hold the request this long before answering (or before serving it normally). */
  delayMs?: number;
  /** Cut the connection without an answer; for a watch, after this many ms of streaming (0: at once). */
  dropAfterMs?: number;
  /** How many matching requests it applies to (default 1; Infinity for all). */
  times?: number;
}

interface StoredEvent {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  key: ResourceKey;
  object: KubeObject;
  previous?: KubeObject;
}

interface OpenWatch {
  type: ResourceType;
  namespace?: string;
  match: Matcher;
  bookmarks: boolean;
  res: ServerResponse;
  socket: Socket;
}

interface KubeApiServerOptions {
  /** Defaults to conf/kubernetes/rbac.yaml; the fixture grants exactly what it binds to the service account. */
  rbacFile?: string;
  /** The service account the bearer token belongs to (default kube-system/berth, as in rbac.yaml). */
  serviceAccount?: { namespace: string; name: string };
  /** How often an open watch with allowWatchBookmarks=true gets a BOOKMARK (default 1000 ms; 0: only on bookmark()). */
  bookmarkIntervalMs?: number;
}

const ROOT = resolve(import.meta.dirname, "../../..");
const LIST_PARAMS = new Set([
  "labelSelector",
  "fieldSelector",
  "resourceVersion",
  "resourceVersionMatch",
  "watch",
  "allowWatchBookmarks",
  "timeoutSeconds",
  "pretty",
]);

export class KubeApiServer {
  readonly url: string;
  readonly token = `berth-test-${randomBytes(16).toString("hex")}`;
  /** PEM of the CA that signed the server certificate, and a file holding it. */
  readonly ca: string;
  readonly caFile: string;
  /** A kubeconfig file for the service account (server, CA, token). */
  readonly kubeconfigPath: string;
  /**
   * A root under which var/run/secrets/kubernetes.io/serviceaccount holds token, ca.crt and namespace, as in a pod
   * (client-node: `loadFromCluster(inClusterRoot)` with `inClusterEnv` set).
   */
  readonly inClusterRoot: string;
  /** KUBERNETES_SERVICE_HOST/PORT as the kubelet sets them in a pod. */
  readonly inClusterEnv: Record<string, string>;
  /** Every request served, in order, with its verb, resource and answer status. */
  readonly requests: RecordedRequest[] = [];

  private rv = 0;
  /** Watches from a resourceVersion below this get 410 Expired. */
  private oldestRv = 0;
  private readonly objects = new Map<ResourceKey, Map<string, KubeObject>>();
  private readonly history: StoredEvent[] = [];
  private readonly watches = new Set<OpenWatch>();
  private readonly faults: { match: RequestMatch; fault: Fault; left: number }[] = [];
  private readonly bookmarkTimer?: NodeJS.Timeout;

  private constructor(
    private readonly server: Server,
    private readonly dir: string,
    private readonly rbac: RbacType,
    bookmarkIntervalMs: number,
  ) {
    const { port } = server.address() as AddressInfo;
    this.url = `https://127.0.0.1:${port}`;
    this.caFile = join(dir, "ca.crt");
    this.ca = "";
    this.kubeconfigPath = join(dir, "kubeconfig");
    this.inClusterRoot = join(dir, "pod-root");
    this.inClusterEnv = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(port) };
    for (const key of Object.keys(RESOURCES) as ResourceKey[]) this.objects.set(key, new Map());
    if (bookmarkIntervalMs > 0) {
      this.bookmarkTimer = setInterval(() => this.bookmark(), bookmarkIntervalMs);
      this.bookmarkTimer.unref();
    }
  }

  static async start(opts: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const dir = mkdtempSync(join(tmpdir(), "berth-kube-apiserver-"));
    const pki = mintPki(dir);
    const sa = opts.serviceAccount ?? { namespace: "kube-system", name: "berth" };
    const rbac = Rbac.load(opts.rbacFile ?? join(ROOT, "conf/kubernetes/rbac.yaml"), sa);
    let self: KubeApiServer | undefined;
    const server = createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
      self!.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) self!.status(res, 500, "InternalError", `test API server bug: ${(e as Error).stack}`);
        else res.destroy();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    self = new KubeApiServer(server, dir, rbac, opts.bookmarkIntervalMs ?? 1000);
    Object.assign(self, { ca: pki.ca });
    writeFileSync(
      self.kubeconfigPath,
      [
        "apiVersion: v1",
        "kind: Config",
        "current-context: test",
        "clusters:",
        "- name: test",
        "  cluster:",
        `    server: ${self.url}`,
        `    certificate-authority: ${pki.caFile}`,
        "users:",
        `- name: ${rbac.user}`,
        "  user:",
        `    token: ${self.token}`,
        "contexts:",
        "- name: test",
        "  context:",
        "    cluster: test",
        `    user: ${rbac.user}`,
        `    namespace: ${sa.namespace}`,
        "",
      ].join("\n"),
    );
    const saDir = join(self.inClusterRoot, "var/run/secrets/kubernetes.io/serviceaccount");
    mkdirSync(saDir, { recursive: true });
    writeFileSync(join(saDir, "token"), self.token);
    writeFileSync(join(saDir, "ca.crt"), pki.ca);
    writeFileSync(join(saDir, "namespace"), sa.namespace);
    return self;
  }

  async close(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    for (const w of this.watches) w.socket.destroy();
    this.watches.clear();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    rmSync(this.dir, { recursive: true, force: true });
  }

  // ---------- the test's side ----------

  /** Stores a new object (metadata.uid, resourceVersion, creationTimestamp filled in) and tells the watches. */
  create(resource: ResourceKey, obj: KubeObject): KubeObject {
    const created = this.doCreate(RESOURCES[resource], structuredClone(obj), obj.metadata.namespace);
    if (typeof created === "string") throw new Error(created);
    return structuredClone(created);
  }

  /** Replaces an object (no resourceVersion precondition unless the object carries one). */
  update(resource: ResourceKey, obj: KubeObject): KubeObject {
    const t = RESOURCES[resource];
    const current = this.find(resource, obj.metadata.namespace, obj.metadata.name!);
    if (!current) throw new Error(`${resource} ${obj.metadata.namespace ?? ""}/${obj.metadata.name} does not exist`);
    const next = structuredClone(obj);
    next.metadata.resourceVersion ??= current.metadata.resourceVersion;
    const r = this.doUpdate(t, current, next);
    if (r instanceof Refusal) throw new Error(r.message);
    return structuredClone(r);
  }

  /** JSON merge patch (RFC 7386) of an object, e.g. `{ metadata: { labels: { rack: "r2" } } }`. */
  patch(resource: ResourceKey, namespace: string | undefined, name: string, patch: Record<string, unknown>): KubeObject {
    const current = this.find(resource, namespace, name);
    if (!current) throw new Error(`${resource} ${namespace ?? ""}/${name} does not exist`);
    const r = this.doUpdate(RESOURCES[resource], current, mergePatch(structuredClone(current), patch) as KubeObject);
    if (r instanceof Refusal) throw new Error(r.message);
    return structuredClone(r);
  }

  /** Deletes an object at once (no graceful termination) and tells the watches. */
  remove(resource: ResourceKey, namespace: string | undefined, name: string): KubeObject {
    const current = this.find(resource, namespace, name);
    if (!current) throw new Error(`${resource} ${namespace ?? ""}/${name} does not exist`);
    return structuredClone(this.doDelete(RESOURCES[resource], current));
  }

  get(resource: ResourceKey, namespace: string | undefined, name: string): KubeObject | undefined {
    const o = this.find(resource, namespace, name);
    return o && structuredClone(o);
  }

  list(resource: ResourceKey, namespace?: string): KubeObject[] {
    return [...this.objects.get(resource)!.values()]
      .filter((o) => namespace === undefined || o.metadata.namespace === namespace)
      .map((o) => structuredClone(o));
  }

  /** The newest resourceVersion handed out. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /**
   * As etcd compaction: forgets the change history, so a watch from any older resourceVersion gets
   * 410 Expired and the client must relist. Open watches are not affected (as with the watch cache).
   */
  compact(): void {
    this.oldestRv = this.rv;
    this.history.length = 0;
  }

  /** Sends a BOOKMARK with the current resourceVersion on every open watch that asked for bookmarks. */
  bookmark(): void {
    for (const w of this.watches) {
      if (!w.bookmarks) continue;
      const t = w.type;
      this.send(w, "BOOKMARK", { kind: t.kind, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(this.rv) } });
    }
  }

  /** Cuts every open watch stream (of one resource, or all) without a final chunk, as a lost connection does. */
  dropWatches(resource?: ResourceKey): number {
    let n = 0;
    for (const w of [...this.watches]) {
      if (resource && keyOf(w.type) !== resource) continue;
      this.watches.delete(w);
      w.socket.destroy();
      n++;
    }
    return n;
  }

  /** Ends every open watch stream (of one resource, or all) cleanly, as the apiserver does when a watch times out. */
  endWatches(resource?: ResourceKey): number {
    let n = 0;
    for (const w of [...this.watches]) {
      if (resource && keyOf(w.type) !== resource) continue;
      this.watches.delete(w);
      w.res.end();
      n++;
    }
    return n;
  }

  /** Open watch streams, per resource key. */
  openWatches(resource?: ResourceKey): number {
    return [...this.watches].filter((w) => !resource || keyOf(w.type) === resource).length;
  }

  /** Server-side fault injection for the next matching request(s). */
  inject(match: RequestMatch, fault: Fault): void {
    this.faults.push({ match, fault, left: fault.times ?? 1 });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  // ---------- the wire ----------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const query = Object.fromEntries(url.searchParams);
    const record: RecordedRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query,
      verb: "",
      status: 0,
      userAgent: req.headers["user-agent"],
      contentType: req.headers["content-type"],
    };
    this.requests.push(record);
    res.on("finish", () => {
      record.status = res.statusCode;
    });
    res.on("close", () => {
      if (!record.status) record.status = res.headersSent ? res.statusCode : -1;
    });

    const auth = req.headers.authorization ?? "";
    if (auth !== `Bearer ${this.token}`) {
      this.status(res, 401, "Unauthorized", "Unauthorized");
      return;
    }

    const route = parsePath(url.pathname);
    if (!route) {
      this.status(res, 404, "NotFound", `the server could not find the requested resource (${url.pathname})`);
      return;
    }
    const watch = query.watch === "1" || query.watch === "true";
    const verb = verbOf(req.method ?? "GET", route.name !== undefined, watch);
    Object.assign(record, { verb, namespace: route.namespace, name: route.name });
    if (!this.rbac.allows({ verb, group: route.group, resource: route.resource, namespace: route.namespace, name: route.name })) {
      const where = route.namespace ? ` in the namespace "${route.namespace}"` : " at the cluster scope";
      const what = route.group ? `${route.resource}.${route.group}` : route.resource;
      const named = route.name ? ` "${route.name}"` : "";
      this.status(
        res,
        403,
        "Forbidden",
        `${what}${named} is forbidden: User "${this.rbac.user}" cannot ${verb} ` +
          `resource "${route.resource}" in API group "${route.group}"${where}`,
      );
      return;
    }
    const type = Object.values(RESOURCES).find(
      (t) => t.group === route.group && t.version === route.version && t.resource === route.resource,
    );
    if (!type || (route.namespace !== undefined && !type.namespaced) || (route.namespace === undefined && type.namespaced && route.name)) {
      this.status(res, 404, "NotFound", `the server could not find the requested resource (${req.method} ${url.pathname})`);
      return;
    }
    record.resource = keyOf(type);

    const fault = this.takeFault({ verb, resource: keyOf(type), namespace: route.namespace, name: route.name, watch });
    if (fault?.delayMs) await new Promise((r) => setTimeout(r, fault.delayMs));
    if (fault?.dropAfterMs !== undefined && !watch) {
      req.socket.destroy();
      return;
    }
    if (fault?.status) {
      const reason = fault.reason ?? (fault.status === 410 ? "Expired" : fault.status >= 500 ? "InternalError" : "BadRequest");
      this.status(res, fault.status, reason, fault.message ?? `injected fault: ${fault.status} ${reason}`);
      return;
    }

    const body = await readBody(req);
    switch (verb) {
      case "list":
      case "watch":
        return this.serveCollection(type, route.namespace, query, watch, res, fault);
      case "get":
        return this.serveGet(type, route.namespace, route.name!, res);
      case "create":
        return this.serveCreate(type, route.namespace, body, req.headers["content-type"], res);
      case "update":
        return this.serveUpdate(type, route.namespace, route.name!, body, req.headers["content-type"], res);
      case "patch":
        return this.servePatch(type, route.namespace, route.name!, body, req.headers["content-type"], res);
      case "delete":
        return this.serveDelete(type, route.namespace, route.name!, res);
      default:
        this.status(res, 405, "MethodNotAllowed", `the server does not allow this method on the requested resource`);
    }
  }

  private serveCollection(
    t: ResourceType,
    namespace: string | undefined,
    q: Record<string, string>,
    watch: boolean,
    res: ServerResponse,
    fault: Fault | undefined,
  ): void {
    const unknown = Object.keys(q).filter((k) => !LIST_PARAMS.has(k));
    if (unknown.length) {
      this.status(res, 400, "BadRequest", `this test API server does not serve the parameter(s) ${unknown.join(", ")}`);
      return;
    }
    if (q.resourceVersionMatch && q.resourceVersionMatch !== "NotOlderThan") {
      this.status(res, 400, "BadRequest", `resourceVersionMatch=${q.resourceVersionMatch} is not served by this test API server`);
      return;
    }
    let match: Matcher;
    try {
      const labels = q.labelSelector ? parseLabelSelector(q.labelSelector) : () => true;
      const fields = q.fieldSelector ? parseFieldSelector(q.fieldSelector, t.fieldSelectors, t.resource) : () => true;
      match = (o) => labels(o) && fields(o) && (namespace === undefined || (o as KubeObject).metadata?.namespace === namespace);
    } catch (e) {
      if (e instanceof SelectorError) {
        this.status(res, 400, "BadRequest", e.message);
        return;
      }
      throw e;
    }
    const rvParam = q.resourceVersion;
    if (rvParam !== undefined && rvParam !== "" && !/^\d+$/.test(rvParam)) {
      this.status(res, 400, "BadRequest", `invalid resource version ${JSON.stringify(rvParam)}`);
      return;
    }
    const from = rvParam ? Number(rvParam) : 0;
    if (from > this.rv) {
      this.status(res, 504, "Timeout", `Too large resource version: ${from}, current: ${this.rv}`);
      return;
    }
    const items = [...this.objects.get(keyOf(t))!.values()].filter(match);
    if (!watch) {
      this.json(res, 200, {
        kind: `${t.kind}List`,
        apiVersion: apiVersionOf(t),
        metadata: { resourceVersion: String(this.rv) },
        // The apiserver leaves kind/apiVersion off list items.
        items: items.map(({ kind: _k, apiVersion: _a, ...rest }) => rest),
      });
      return;
    }
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked", "cache-control": "no-cache" });
    res.flushHeaders();
    const w: OpenWatch = {
      type: t,
      namespace,
      match,
      bookmarks: q.allowWatchBookmarks === "true" || q.allowWatchBookmarks === "1",
      res,
      socket: res.socket!,
    };
    if (from === 0) {
      // No resourceVersion (or "0"): the current state as ADDED events first, then the changes.
      for (const o of items) this.send(w, "ADDED", o);
    } else if (from < this.oldestRv) {
      this.send(w, "ERROR", statusObject(410, "Expired", `too old resource version: ${from} (${this.oldestRv})`));
      res.end();
      return;
    } else {
      for (const e of this.history) if (e.rv > from && e.key === keyOf(t)) this.deliver(w, e);
    }
    this.watches.add(w);
    res.on("close", () => this.watches.delete(w));
    if (q.timeoutSeconds) {
      const timer = setTimeout(() => {
        this.watches.delete(w);
        res.end();
      }, Number(q.timeoutSeconds) * 1000);
      res.on("close", () => clearTimeout(timer));
    }
    if (fault?.dropAfterMs !== undefined) {
      setTimeout(() => {
        this.watches.delete(w);
        w.socket.destroy();
      }, fault.dropAfterMs);
    }
  }

  private serveGet(t: ResourceType, namespace: string | undefined, name: string, res: ServerResponse): void {
    const o = this.find(keyOf(t), namespace, name);
    if (!o) {
      this.notFound(res, t, name);
      return;
    }
    this.json(res, 200, o);
  }

  private serveCreate(
    t: ResourceType,
    namespace: string | undefined,
    body: string,
    contentType: string | undefined,
    res: ServerResponse,
  ): void {
    const obj = this.parseObject(t, body, contentType, namespace, res);
    if (!obj) return;
    if (!obj.metadata.name && !obj.metadata.generateName) {
      this.status(res, 422, "Invalid", `${t.kind} is invalid: metadata.name: Required value: name or generateName is required`);
      return;
    }
    if (obj.metadata.name && this.find(keyOf(t), namespace, obj.metadata.name)) {
      this.status(res, 409, "AlreadyExists", `${t.resource}${t.group ? `.${t.group}` : ""} "${obj.metadata.name}" already exists`);
      return;
    }
    const r = this.doCreate(t, obj, namespace);
    if (typeof r === "string") {
      this.status(res, 400, "BadRequest", r);
      return;
    }
    this.json(res, 201, r);
  }

  private serveUpdate(
    t: ResourceType,
    namespace: string | undefined,
    name: string,
    body: string,
    contentType: string | undefined,
    res: ServerResponse,
  ): void {
    const obj = this.parseObject(t, body, contentType, namespace, res);
    if (!obj) return;
    if (obj.metadata.name !== name) {
      this.status(res, 400, "BadRequest", `the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
      return;
    }
    const current = this.find(keyOf(t), namespace, name);
    if (!current) {
      this.notFound(res, t, name);
      return;
    }
    if (!obj.metadata.resourceVersion && !t.unconditionalUpdate) {
      this.status(
        res,
        422,
        "Invalid",
        `${t.kind}.${t.group} "${name}" is invalid: ` + "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
      );
      return;
    }
    this.answerUpdate(res, t, name, this.doUpdate(t, current, obj));
  }

  private servePatch(
    t: ResourceType,
    namespace: string | undefined,
    name: string,
    body: string,
    contentType: string | undefined,
    res: ServerResponse,
  ): void {
    const current = this.find(keyOf(t), namespace, name);
    if (!current) {
      this.notFound(res, t, name);
      return;
    }
    const type = (contentType ?? "").split(";")[0]!.trim();
    if (type !== "application/merge-patch+json" && type !== "application/strategic-merge-patch+json") {
      this.status(
        res,
        415,
        "UnsupportedMediaType",
        `the body of the request was in an unknown format - accepted media types by this ` +
          `test API server: application/merge-patch+json, application/strategic-merge-patch+json (got ${contentType ?? "none"})`,
      );
      return;
    }
    let patch: unknown;
    try {
      patch = JSON.parse(body);
    } catch (e) {
      this.status(res, 400, "BadRequest", `invalid JSON patch body: ${(e as Error).message}`);
      return;
    }
    if (!isPlainObject(patch)) {
      this.status(res, 400, "BadRequest", "a merge patch must be a JSON object");
      return;
    }
    if (type === "application/strategic-merge-patch+json" && hasListOrDirective(patch)) {
      this.status(
        res,
        400,
        "BadRequest",
        "this test API server applies strategic merge patches to maps only " +
          "(labels, annotations, fields), " +
          "not to lists or $patch directives",
      );
      return;
    }
    const next = mergePatch(structuredClone(current), patch) as KubeObject;
    if (patch.metadata && isPlainObject(patch.metadata) && patch.metadata.resourceVersion === undefined) {
      next.metadata.resourceVersion = current.metadata.resourceVersion;
    }
    this.answerUpdate(res, t, name, this.doUpdate(t, current, next));
  }

  private serveDelete(t: ResourceType, namespace: string | undefined, name: string, res: ServerResponse): void {
    const current = this.find(keyOf(t), namespace, name);
    if (!current) {
      this.notFound(res, t, name);
      return;
    }
    this.json(res, 200, this.doDelete(t, current));
  }

  // ---------- storage ----------

  private doCreate(t: ResourceType, obj: KubeObject, namespace: string | undefined): KubeObject | string {
    obj.apiVersion ??= apiVersionOf(t);
    obj.kind ??= t.kind;
    obj.metadata ??= {};
    if (t.namespaced) obj.metadata.namespace = namespace ?? obj.metadata.namespace ?? "default";
    else delete obj.metadata.namespace;
    if (!obj.metadata.name) {
      if (!obj.metadata.generateName) return `${t.kind}: metadata.name: Required value`;
      obj.metadata.name = obj.metadata.generateName + randomBytes(4).toString("hex").slice(0, 5);
    }
    if (this.find(keyOf(t), obj.metadata.namespace, obj.metadata.name)) return `${t.resource} "${obj.metadata.name}" already exists`;
    const invalid = t.validate?.(obj);
    if (invalid) return `${t.kind} "${obj.metadata.name}" is invalid: ${invalid}`;
    obj.metadata.uid = randomUUID();
    obj.metadata.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    if (t.kind === "StatefulSet") obj.metadata.generation = 1;
    obj.metadata.resourceVersion = String(++this.rv);
    this.objects.get(keyOf(t))!.set(storeKey(obj.metadata.namespace, obj.metadata.name), obj);
    this.publish({ rv: this.rv, type: "ADDED", key: keyOf(t), object: obj });
    return obj;
  }

  /** The stored object, or why not (409 or 400). */
  private doUpdate(t: ResourceType, current: KubeObject, next: KubeObject): KubeObject | Refusal {
    const name = current.metadata.name!;
    if (next.metadata.resourceVersion && next.metadata.resourceVersion !== current.metadata.resourceVersion) {
      return new Refusal(
        409,
        `Operation cannot be fulfilled on ${t.resource}${t.group ? `.${t.group}` : ""} "${name}": ` +
          "the object has been modified; please apply your changes to the latest version and try again",
      );
    }
    const invalid = t.validate?.(next);
    if (invalid) return new Refusal(400, `${t.kind} "${name}" is invalid: ${invalid}`);
    next.apiVersion = apiVersionOf(t);
    next.kind = t.kind;
    const { uid, creationTimestamp, namespace, name: currentName } = current.metadata;
    Object.assign(next.metadata, { uid, creationTimestamp, namespace, name: currentName });
    if (t.kind === "StatefulSet" && JSON.stringify(next.spec) !== JSON.stringify(current.spec)) {
      next.metadata.generation = Number(current.metadata.generation ?? 1) + 1;
    }
    next.metadata.resourceVersion = String(++this.rv);
    this.objects.get(keyOf(t))!.set(storeKey(next.metadata.namespace, name), next);
    this.publish({ rv: this.rv, type: "MODIFIED", key: keyOf(t), object: next, previous: current });
    return next;
  }

  private doDelete(t: ResourceType, current: KubeObject): KubeObject {
    this.objects.get(keyOf(t))!.delete(storeKey(current.metadata.namespace, current.metadata.name!));
    const gone = structuredClone(current);
    gone.metadata.resourceVersion = String(++this.rv);
    this.publish({ rv: this.rv, type: "DELETED", key: keyOf(t), object: gone, previous: current });
    return gone;
  }

  private find(resource: ResourceKey, namespace: string | undefined, name: string): KubeObject | undefined {
    const t = RESOURCES[resource];
    return this.objects.get(resource)!.get(storeKey(t.namespaced ? (namespace ?? "default") : undefined, name));
  }

  private publish(e: StoredEvent): void {
    this.history.push(e);
    for (const w of this.watches) if (keyOf(w.type) === e.key) this.deliver(w, e);
  }

  /** As the apiserver's filtered watch: an object entering the selector is ADDED, one leaving it DELETED. */
  private deliver(w: OpenWatch, e: StoredEvent): void {
    const now = w.match(e.object);
    const before = e.previous ? w.match(e.previous) : false;
    if (e.type === "ADDED" && now) this.send(w, "ADDED", e.object);
    else if (e.type === "MODIFIED" && now) this.send(w, before ? "MODIFIED" : "ADDED", e.object);
    else if (e.type === "MODIFIED" && before) this.send(w, "DELETED", { ...e.object });
    else if (e.type === "DELETED" && before) this.send(w, "DELETED", e.object);
  }

  private send(w: OpenWatch, type: string, object: unknown): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private takeFault(r: Required<Pick<RequestMatch, "verb" | "resource" | "watch">> & RequestMatch): Fault | undefined {
    const i = this.faults.findIndex(
      ({ match: m }) =>
        (m.verb === undefined || m.verb === r.verb) &&
        (m.resource === undefined || m.resource === r.resource) &&
        (m.namespace === undefined || m.namespace === r.namespace) &&
        (m.name === undefined || m.name === r.name) &&
        (m.watch === undefined || m.watch === r.watch),
    );
    if (i < 0) return undefined;
    const f = this.faults[i]!;
    if (--f.left <= 0) this.faults.splice(i, 1);
    return f.fault;
  }

  private parseObject(
    t: ResourceType,
    body: string,
    contentType: string | undefined,
    namespace: string | undefined,
    res: ServerResponse,
  ): KubeObject | undefined {
    if (!(contentType ?? "").startsWith("application/json")) {
      this.status(
        res,
        415,
        "UnsupportedMediaType",
        `this test API server accepts only application/json bodies (got ${contentType ?? "none"})`,
      );
      return undefined;
    }
    let obj: unknown;
    try {
      obj = JSON.parse(body);
    } catch (e) {
      this.status(res, 400, "BadRequest", `invalid JSON: ${(e as Error).message}`);
      return undefined;
    }
    if (!isPlainObject(obj) || !isPlainObject(obj.metadata)) {
      this.status(res, 400, "BadRequest", "the body must be an object with metadata");
      return undefined;
    }
    const o = obj as KubeObject;
    // As the apiserver's decoder: missing apiVersion/kind default to the endpoint's; others must match it.
    if ((o.kind !== undefined && o.kind !== t.kind) || (o.apiVersion !== undefined && o.apiVersion !== apiVersionOf(t))) {
      this.status(
        res,
        400,
        "BadRequest",
        `the API version in the data (${o.apiVersion}) and kind (${o.kind}) do not match ` + `the endpoint (${apiVersionOf(t)}, ${t.kind})`,
      );
      return undefined;
    }
    if (t.namespaced && o.metadata.namespace && o.metadata.namespace !== namespace) {
      this.status(res, 400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request");
      return undefined;
    }
    return o;
  }

  private answerUpdate(res: ServerResponse, t: ResourceType, name: string, r: KubeObject | Refusal): void {
    if (r instanceof Refusal) {
      this.status(res, r.code, r.code === 409 ? "Conflict" : "BadRequest", r.message, { name, group: t.group, kind: t.resource });
      return;
    }
    this.json(res, 200, r);
  }

  private notFound(res: ServerResponse, t: ResourceType, name: string): void {
    const what = t.group ? `${t.resource}.${t.group}` : t.resource;
    this.status(res, 404, "NotFound", `${what} "${name}" not found`, { name, group: t.group, kind: t.resource });
  }

  private status(res: ServerResponse, code: number, reason: string, message: string, details?: Record<string, string>): void {
    this.json(res, code, statusObject(code, reason, message, details));
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }
}

class Refusal {
  constructor(
    readonly code: number,
    readonly message: string,
  ) {}
}

function statusObject(code: number, reason: string, message: string, details?: Record<string, string>): Record<string, unknown> {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, ...(details ? { details } : {}), code };
}

interface Route {
  group: string;
  version: string;
  namespace?: string;
  resource: string;
  name?: string;
}

/** /api/v1/[namespaces/NS/]RESOURCE[/NAME] and /apis/GROUP/VERSION/[namespaces/NS/]RESOURCE[/NAME]. */
function parsePath(path: string): Route | undefined {
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === "api" && parts.length >= 3) {
    group = "";
    version = parts[1]!;
    rest = parts.slice(2);
  } else if (parts[0] === "apis" && parts.length >= 4) {
    group = parts[1]!;
    version = parts[2]!;
    rest = parts.slice(3);
  } else return undefined;
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  if (rest.length < 1 || rest.length > 2) return undefined; // no subresources (status, log, ...) here
  return { group, version, namespace, resource: rest[0]!, name: rest[1] };
}

function verbOf(method: string, item: boolean, watch: boolean): string {
  switch (method) {
    case "GET":
      return item ? "get" : watch ? "watch" : "list";
    case "POST":
      return item ? "(post to an item)" : "create";
    case "PUT":
      return item ? "update" : "(put to a collection)";
    case "PATCH":
      return item ? "patch" : "(patch to a collection)";
    case "DELETE":
      return item ? "delete" : "deletecollection";
    default:
      return method.toLowerCase();
  }
}

function storeKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? ""}/${name}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function hasListOrDirective(v: Record<string, unknown>): boolean {
  return Object.entries(v).some(([k, x]) => k.startsWith("$") || Array.isArray(x) || (isPlainObject(x) && hasListOrDirective(x)));
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return patch;
  const out: Record<string, unknown> = isPlainObject(target) ? target : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolveBody(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}
