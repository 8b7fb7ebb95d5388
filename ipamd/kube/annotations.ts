// Berth's annotations, on a pod or on its StatefulSet's pod template (the pod's own win), and on a
// StatefulSet itself (retention, reserve). docs/kubernetes.md shows each with an example.
//   berth.dev/pools         which pools: ["a-v4","a-v6"] for every interface, or {"eth0":["a-v4"],"net1":["b-v4"]}
//   berth.dev/ips           fixed addresses by ordinal: ["10.0.0.10","10.0.0.11,fd00::11"] (entry i for ordinal i;
//                           one address per family, comma-separated), or {"eth0":[...],"net1":[...]} per interface
//   berth.dev/ip-retention  {"whenDeleted":"Delete","whenScaled":"Retain","ttl":"24h"} (StatefulSet)
//   berth.dev/reserve       "true": reserve every replica's addresses as soon as the StatefulSet exists
import { ApiError } from "../errors";
import { parseIp } from "../../lib/ip";

export const POOLS = "berth.dev/pools";
export const IPS = "berth.dev/ips";
export const RETENTION = "berth.dev/ip-retention";
export const RESERVE = "berth.dev/reserve";

/** A bad annotation: ADD fails with it, and the pod gets an InvalidAnnotation Event. */
export class InvalidAnnotation extends ApiError {
  constructor(
    readonly annotation: string,
    readonly where: string,
    why: string,
    example: string,
  ) {
    super("invalid_request", `annotation ${annotation} on ${where} is invalid: ${why}; write it as e.g. ${example}`, annotation);
  }
}

export type RetentionAction = "Retain" | "Delete";

export interface Retention {
  whenDeleted: RetentionAction;
  whenScaled: RetentionAction;
  ttlMs?: number;
}

/** As persistentVolumeClaimRetentionPolicy's defaults would be for addresses: a deleted StatefulSet's go, a scaled one's stay. */
export const DEFAULT_RETENTION: Retention = { whenDeleted: "Delete", whenScaled: "Retain" };

const RETENTION_EXAMPLE = '{"whenDeleted":"Delete","whenScaled":"Retain","ttl":"24h"}';

export function parseRetention(value: string | undefined, where: string): Retention {
  if (value === undefined) return DEFAULT_RETENTION;
  const bad = (why: string): never => {
    throw new InvalidAnnotation(RETENTION, where, why, RETENTION_EXAMPLE);
  };
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch {
    bad("not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) bad("not a JSON object");
  const o = v as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !["whenDeleted", "whenScaled", "ttl"].includes(k));
  if (unknown.length) bad(`unknown field(s) ${unknown.join(", ")}`);
  const action = (k: "whenDeleted" | "whenScaled"): RetentionAction => {
    const a = o[k] ?? DEFAULT_RETENTION[k];
    if (a !== "Retain" && a !== "Delete") bad(`${k} must be "Retain" or "Delete", not ${JSON.stringify(a)}`);
    return a as RetentionAction;
  };
  const out: Retention = { whenDeleted: action("whenDeleted"), whenScaled: action("whenScaled") };
  if (o.ttl !== undefined) {
    const ms = typeof o.ttl === "string" ? parseDuration(o.ttl) : undefined;
    if (ms === undefined || ms <= 0) {
      bad(`ttl must be a positive duration such as "90s", "30m", "24h" or "7d", not ${JSON.stringify(o.ttl)}`);
    }
    out.ttlMs = ms;
  }
  return out;
}

function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "ms" | "s" | "m" | "h" | "d"];
  return Math.round(Number(m[1]) * unit);
}

export function parseReserve(value: string | undefined, where: string): boolean {
  if (value === undefined || value === "false") return false;
  if (value === "true") return true;
  throw new InvalidAnnotation(RESERVE, where, `must be "true" or "false", not ${JSON.stringify(value)}`, '"true"');
}

/** Per interface name, or for every interface ("*"). */
type PerInterface<T> = Map<string, T>;

function perInterface(annotation: string, value: string, where: string, example: string): PerInterface<unknown> {
  let v: unknown;
  try {
    v = JSON.parse(value);
  } catch {
    throw new InvalidAnnotation(annotation, where, "not JSON", example);
  }
  if (Array.isArray(v)) return new Map([["*", v]]);
  if (typeof v === "object" && v !== null) return new Map(Object.entries(v));
  throw new InvalidAnnotation(annotation, where, "neither a JSON list nor an object keyed by interface name", example);
}

const POOLS_EXAMPLE = '["rack1-v4","rack1-v6"] or {"eth0":["rack1-v4"]}';

/** The pools the annotation names for `ifName` (undefined: it does not say). */
export function poolsFor(value: string | undefined, ifName: string, where: string): string[] | undefined {
  if (value === undefined) return undefined;
  const all = perInterface(POOLS, value, where, POOLS_EXAMPLE);
  for (const [key, list] of all) {
    if (!Array.isArray(list) || list.length === 0 || !list.every((p) => typeof p === "string" && p !== "")) {
      throw new InvalidAnnotation(
        POOLS,
        where,
        `${key === "*" ? "the list" : `"${key}"`} is not a non-empty list of pool names`,
        POOLS_EXAMPLE,
      );
    }
  }
  return (all.get(ifName) ?? all.get("*")) as string[] | undefined;
}

const IPS_EXAMPLE = '["10.20.0.10","10.20.0.11,fd00:20::11"] (entry i is ordinal i)';

/** The addresses the annotation fixes for `ordinal` on `ifName` (undefined: it does not say), each checked. */
export function ipsFor(value: string | undefined, ifName: string, ordinal: number, where: string): string[] | undefined {
  if (value === undefined) return undefined;
  const all = perInterface(IPS, value, where, IPS_EXAMPLE);
  const checked = new Map<string, string[][]>();
  for (const [key, list] of all) {
    const what = key === "*" ? "the list" : `"${key}"`;
    if (!Array.isArray(list) || !list.every((e) => typeof e === "string")) {
      throw new InvalidAnnotation(IPS, where, `${what} is not a list of strings`, IPS_EXAMPLE);
    }
    checked.set(
      key,
      (list as string[]).map((entry, i) => {
        const addresses = entry
          .split(",")
          .map((a) => a.trim())
          .filter(Boolean);
        const families = addresses.map((a) => {
          const ip = parseIp(a.split("/")[0]!);
          if (!ip) throw new InvalidAnnotation(IPS, where, `entry ${i} of ${what}: ${JSON.stringify(a)} is not an IP address`, IPS_EXAMPLE);
          return ip.family;
        });
        if (new Set(families).size !== families.length) {
          throw new InvalidAnnotation(IPS, where, `entry ${i} of ${what} has two addresses of one family`, IPS_EXAMPLE);
        }
        return addresses;
      }),
    );
  }
  const mine = checked.get(ifName) ?? checked.get("*");
  if (!mine) return undefined;
  const entry = mine[ordinal];
  if (!entry || entry.length === 0) {
    throw new InvalidAnnotation(
      IPS,
      where,
      `it has no entry for ordinal ${ordinal} (${mine.length} entries); ` + "give one per replica, or remove the annotation",
      IPS_EXAMPLE,
    );
  }
  return entry;
}
