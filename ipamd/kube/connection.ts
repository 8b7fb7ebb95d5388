// How ipamd reaches the Kubernetes API: --kubeconfig (or the config's kubernetes.kubeconfig), else
// in-cluster (the service account's token and CA, KUBERNETES_SERVICE_HOST/PORT), else $KUBECONFIG,
// else not at all. Every call and every watch says who it is: `berth-ipamd/<version> (node <name>)`.
import { existsSync } from "node:fs";
import { join } from "node:path";
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  createConfiguration,
  EventsV1Api,
  KubeConfig,
  ServerConfiguration,
  setHeaderMiddleware,
} from "@kubernetes/client-node";
import type { KubeSettings } from "../config";

const SERVICE_ACCOUNT = "var/run/secrets/kubernetes.io/serviceaccount";

/** A KubeConfig that puts Berth's User-Agent on every request it authenticates (Watch sets none of its own). */
class BerthKubeConfig extends KubeConfig {
  userAgent = "berth-ipamd";

  override async applySecurityAuthentication(context: Parameters<KubeConfig["applySecurityAuthentication"]>[0]): Promise<void> {
    await super.applySecurityAuthentication(context);
    context.setHeaderParam("User-Agent", this.userAgent);
  }
}

export interface KubeConnection {
  mode: "in-cluster" | "kubeconfig";
  /** Where the settings came from: the kubeconfig file, or the service account directory. */
  source: string;
  server: string;
  userAgent: string;
  kc: KubeConfig;
  core: CoreV1Api;
  apps: AppsV1Api;
  events: EventsV1Api;
  leases: CoordinationV1Api;
}

export class KubeConnectionError extends Error {}

/** The connection the settings and the environment give, or undefined (no API: today's behaviour). */
export function connectKube(
  settings: KubeSettings,
  version: string,
  node: string,
  env: NodeJS.ProcessEnv = process.env,
): KubeConnection | undefined {
  if (!settings.enabled) return undefined;
  const kc = new BerthKubeConfig();
  let mode: KubeConnection["mode"];
  let source: string;
  const saDir = join(settings.inClusterRoot, SERVICE_ACCOUNT);
  const file = settings.kubeconfig;
  try {
    if (file) {
      mode = "kubeconfig";
      source = file;
      kc.loadFromFile(file);
    } else if (env.KUBERNETES_SERVICE_HOST && existsSync(join(saDir, "token"))) {
      mode = "in-cluster";
      source = saDir;
      kc.loadFromCluster(settings.inClusterRoot === "/" ? undefined : settings.inClusterRoot);
    } else if (env.KUBECONFIG) {
      mode = "kubeconfig";
      source = env.KUBECONFIG;
      kc.loadFromFile(env.KUBECONFIG);
    } else {
      return undefined;
    }
  } catch (e) {
    throw new KubeConnectionError(
      `cannot load the Kubernetes ${mode!} config from ${source!}: ${(e as Error).message}; ` +
        "fix the file (or pass --kubeconfig), or set kubernetes.enabled to false in the ipamd config to run without the API",
    );
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new KubeConnectionError(
      `the Kubernetes config from ${source} has no current cluster; set current-context, ` +
        "or pass --kubeconfig with a file that has one",
    );
  }
  kc.userAgent = `berth-ipamd/${version} (node ${node})`;
  const make = <T>(Api: new (c: ReturnType<typeof createConfiguration>) => T): T =>
    new Api(
      createConfiguration({
        baseServer: new ServerConfiguration(cluster.server, {}),
        authMethods: { default: kc },
        middleware: [setHeaderMiddleware("User-Agent", kc.userAgent)],
      }),
    );
  return {
    mode,
    source,
    server: cluster.server,
    userAgent: kc.userAgent,
    kc,
    core: make(CoreV1Api),
    apps: make(AppsV1Api),
    events: make(EventsV1Api),
    leases: make(CoordinationV1Api),
  };
}

/** The HTTP status of a failed API call (client-node's ApiException), if any. */
export function statusOf(e: unknown): number | undefined {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === "number" ? code : undefined;
}

/** Rejects after `ms`: an API call must never hold up its caller for long. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer from the Kubernetes API within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}
