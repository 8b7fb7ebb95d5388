// ipamd configuration: pools, node identity, StatefulSets, tuning. Validated with zod;
// every error names the JSON path of the offending field.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { parseCidr, parseIp } from "../lib/ip";
import { type ClusterConfig, clusterConfigSchema } from "./cluster/config";
import {
  compilePool,
  excludeInfrastructure,
  type NodeSelector,
  overlaps,
  parseDashRange,
  type Pool,
  PoolSpecError,
  type PoolSpec,
} from "./pools";

const ipString = z.string().refine((s) => parseIp(s) !== null, { message: "not a valid IPv4/IPv6 address" });
const cidrString = z.string().refine((s) => parseCidr(s) !== null, {
  message: "not a valid CIDR (expected address/prefix, e.g. 10.99.0.0/24 or fd00::/64)",
});
const labelKey = z.string().min(1).max(317);

const selectorRequirement = z
  .strictObject({
    key: labelKey,
    operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
    values: z.array(z.string()).optional(),
  })
  .superRefine((r, ctx) => {
    const needsValues = r.operator === "In" || r.operator === "NotIn";
    if (needsValues && (!r.values || r.values.length === 0)) {
      ctx.addIssue({ code: "custom", path: ["values"], message: `operator ${r.operator} needs a non-empty values list` });
    }
    if (!needsValues && r.values && r.values.length > 0) {
      ctx.addIssue({ code: "custom", path: ["values"], message: `operator ${r.operator} takes no values; remove the list` });
    }
  });

const nodeSelectorSchema = z.strictObject({
  matchLabels: z.record(labelKey, z.string()).optional(),
  matchExpressions: z.array(selectorRequirement).optional(),
}) satisfies z.ZodType<NodeSelector>;

const poolSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/, {
    message: "pool name must be 1-63 lowercase letters, digits, '.', '_' or '-', starting and ending alphanumeric",
  }),
  subnet: cidrString,
  ranges: z.array(z.strictObject({ start: ipString, end: ipString })).optional(),
  exclude: z
    .array(
      z.string().refine((s) => parseIp(s) !== null || parseCidr(s) !== null || parseDashRange(s) !== null, {
        message: "expected an address, a CIDR or a range 'first-last'",
      }),
    )
    .optional(),
  gateway: ipString.optional(),
  routes: z.array(z.strictObject({ dst: cidrString, gw: ipString.optional() })).optional(),
  dns: z
    .strictObject({
      nameservers: z.array(ipString).optional(),
      domain: z.string().optional(),
      search: z.array(z.string()).optional(),
      options: z.array(z.string()).optional(),
    })
    .optional(),
  vlan: z.number().int().min(0).max(4094).optional(),
  networks: z.array(z.string().min(1)).optional(),
  nodeSelector: nodeSelectorSchema.optional(),
}) satisfies z.ZodType<PoolSpec>;

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const configSchema = z.strictObject({
  node: z
    .strictObject({
      name: z.string().min(1).optional(),
      labels: z.record(labelKey, z.string()).optional(),
    })
    .optional(),
  socket: z.string().min(1).optional(),
  database: z.string().min(1).optional(),
  spoolDir: z.string().startsWith("/", { message: "must be an absolute path" }).optional(),
  metricsAddress: z
    .string()
    .regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, {
      message: "expected host:port, e.g. 127.0.0.1:9631",
    })
    .optional(),
  logFile: z.string().optional(),
  logLevel: z.enum(LOG_LEVELS).optional(),
  /** Reservation events kept for watchers that resume (GET /v1/reservations?watch=true&since=). */
  reservationEventsKept: z.number().int().min(1).max(1_000_000).default(10_000),
  cooldownSeconds: z
    .number()
    .min(0)
    .max(86400 * 7)
    .default(30),
  detachedTTLSeconds: z.number().min(0).default(0),
  maxBatch: z.number().int().min(1).max(10000).default(512),
  statefulSets: z.array(z.strictObject({ namespace: z.string().min(1), name: z.string().min(1) })).default([]),
  pools: z.array(poolSchema).min(1, { message: "define at least one pool" }),
  kubernetes: z
    .strictObject({
      enabled: z.boolean().default(true),
      kubeconfig: z.string().min(1).optional(),
      inClusterRoot: z.string().min(1).default("/"),
      leakGraceSeconds: z.number().min(0).default(300),
      reconcileSeconds: z.number().min(0.2).default(60),
      apiTimeoutSeconds: z.number().min(0.1).max(60).default(5),
      leaderLeaseSeconds: z.number().min(1).default(15),
      leaderRetrySeconds: z.number().min(0.1).default(2),
    })
    .prefault({}),
  cluster: clusterConfigSchema.optional(),
});

/**
 * The Kubernetes side (ipamd/kube). The connection: --kubeconfig (or kubernetes.kubeconfig), else
 * in-cluster (service account under inClusterRoot and KUBERNETES_SERVICE_HOST), else $KUBECONFIG,
 * else none (labels and StatefulSets from the config, as without an API).
 */
export interface KubeSettings {
  enabled: boolean;
  kubeconfig?: string;
  inClusterRoot: string;
  /** An attachment whose pod is gone is released after this long (and a re-check). */
  leakGraceMs: number;
  /** How often the leak reconciler and the StatefulSet lifecycle resync run. */
  reconcileMs: number;
  /** Deadline of one API call (the pod fetched at ADD, re-checks, Events). */
  apiTimeoutMs: number;
  /** Cluster mode: the release-leader Lease's duration, and how often it is renewed or tried. */
  leaderLeaseMs: number;
  leaderRetryMs: number;
}
export interface Config {
  nodeName: string;
  nodeLabels: Record<string, string>;
  socket: string;
  database: string;
  /** Release records the plugins write when ipamd is unreachable on DEL (applied at start and when they appear). */
  spoolDir: string;
  metricsAddress?: string;
  logFile?: string;
  /** pino's level; the audit trail is at info. */
  logLevel: LogLevel;
  reservationEventsKept: number;
  cooldownMs: number;
  detachedTtlMs: number;
  maxBatch: number;
  statefulSets: { namespace: string; name: string }[];
  pools: Pool[];
  kubernetes: KubeSettings;
  /** Cluster mode (etcd); absent: the single-node daemon. */
  cluster?: ClusterConfig;
}

export class ConfigError extends Error {}

function formatZodIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
      return `  ${path || "(top level)"}: ${issue.message}`;
    })
    .join("\n");
}

interface Overrides {
  socket?: string;
  database?: string;
  spoolDir?: string;
  nodeName?: string;
  nodeLabels?: Record<string, string>;
  metricsAddress?: string;
  logFile?: string;
  logLevel?: LogLevel;
  kubeconfig?: string;
}

export function buildConfig(input: unknown, overrides: Overrides = {}, source = "config"): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) {
    throw new ConfigError(`${source} is invalid:\n${formatZodIssues(result.error)}`);
  }
  const raw = result.data;
  const errors: string[] = [];
  const pools: Pool[] = [];
  const names = new Set<string>();
  raw.pools.forEach((p, i) => {
    if (names.has(p.name)) {
      errors.push(`  pools[${i}].name: pool name "${p.name}" is used twice`);
      return;
    }
    names.add(p.name);
    try {
      pools.push(compilePool(p, i));
    } catch (e) {
      if (e instanceof PoolSpecError) errors.push(`  pools[${i}].${e.field}: ${e.message}`);
      else throw e;
    }
  });
  for (const o of excludeInfrastructure(pools)) errors.push(`  pools[${o.pool.index}]: ${o.message}`);
  for (const o of overlaps(pools)) errors.push(`  pools[${o.pool.index}]: ${o.message}`);
  const nodeName = overrides.nodeName ?? raw.node?.name ?? process.env.NODE_NAME ?? "";
  if (!nodeName) errors.push("  node.name: the node name is missing; set node.name in the config, --node-name, or NODE_NAME");
  if (errors.length > 0) throw new ConfigError(`${source} is invalid:\n${errors.join("\n")}`);
  const database = overrides.database ?? raw.database ?? "/var/lib/berth/ipamd.db";
  return {
    nodeName,
    nodeLabels: { ...(raw.node?.labels ?? {}), ...(overrides.nodeLabels ?? {}) },
    socket: overrides.socket ?? raw.socket ?? "/run/berth/ipamd.sock",
    database,
    spoolDir: overrides.spoolDir ?? raw.spoolDir ?? join(dirname(database), "spool"),
    metricsAddress: overrides.metricsAddress ?? raw.metricsAddress,
    logFile: overrides.logFile ?? raw.logFile,
    logLevel: overrides.logLevel ?? raw.logLevel ?? "info",
    reservationEventsKept: raw.reservationEventsKept,
    cooldownMs: Math.round(raw.cooldownSeconds * 1000),
    detachedTtlMs: Math.round(raw.detachedTTLSeconds * 1000),
    maxBatch: raw.maxBatch,
    statefulSets: raw.statefulSets,
    pools,
    kubernetes: {
      enabled: raw.kubernetes.enabled,
      kubeconfig: overrides.kubeconfig ?? raw.kubernetes.kubeconfig,
      inClusterRoot: raw.kubernetes.inClusterRoot,
      leakGraceMs: Math.round(raw.kubernetes.leakGraceSeconds * 1000),
      reconcileMs: Math.round(raw.kubernetes.reconcileSeconds * 1000),
      apiTimeoutMs: Math.round(raw.kubernetes.apiTimeoutSeconds * 1000),
      leaderLeaseMs: Math.round(raw.kubernetes.leaderLeaseSeconds * 1000),
      leaderRetryMs: Math.round(raw.kubernetes.leaderRetrySeconds * 1000),
    },
    ...(raw.cluster ? { cluster: raw.cluster } : {}),
  };
}

export function loadConfig(path: string, overrides: Overrides = {}): Config {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read config ${path}: ${(e as Error).message}; pass --config with the path of ipamd.json`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config ${path} is not valid JSON: ${(e as Error).message}`);
  }
  return buildConfig(json, overrides, `config ${path}`);
}
