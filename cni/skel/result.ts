// CNI results: one internal shape (the 1.1.0 one) and conversion from/to every supported version.
import { parseCidr, ipFamily } from "../../lib/ip";
import { CniError, CniCode } from "./errors";
import { atLeast } from "./version";

export interface Interface {
  name: string;
  mac?: string;
  /** 1.1.0 only. */
  mtu?: number;
  sandbox?: string;
  /** 1.1.0 only. */
  socketPath?: string;
  /** 1.1.0 only. */
  pciID?: string;
}

export interface IpConfig {
  /** "10.1.0.5/24" */
  address: string;
  gateway?: string;
  /** Index into Result.interfaces. */
  interface?: number;
}

export interface Route {
  dst: string;
  gw?: string;
  /** mtu, advmss, priority, table, scope: 1.1.0 only. */
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface Dns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface Result {
  interfaces?: Interface[];
  ips?: IpConfig[];
  routes?: Route[];
  dns?: Dns;
}

type Json = Record<string, unknown>;

/** Encodes a result for `version` (the config's cniVersion), in the key order libcni uses. */
export function encodeResult(result: Result, version: string): Json {
  const v11 = atLeast(version, "1.1.0");
  const v1 = atLeast(version, "1.0.0");
  const out: Json = { cniVersion: version };
  if (result.interfaces?.length) {
    out.interfaces = compactEach(result.interfaces, (i) => ({
      name: i.name,
      mac: i.mac || undefined,
      mtu: v11 && i.mtu ? i.mtu : undefined,
      sandbox: i.sandbox || undefined,
      socketPath: v11 && i.socketPath ? i.socketPath : undefined,
      pciID: v11 && i.pciID ? i.pciID : undefined,
    }));
  }
  if (result.ips?.length) {
    out.ips = compactEach(result.ips, (ip) => ({
      version: v1 ? undefined : String(parseCidr(ip.address)?.family ?? 4),
      interface: ip.interface,
      address: ip.address,
      gateway: ip.gateway || undefined,
    }));
  }
  if (result.routes?.length) {
    out.routes = compactEach(result.routes, (r) => ({
      dst: r.dst,
      gw: r.gw || undefined,
      mtu: v11 && r.mtu ? r.mtu : undefined,
      advmss: v11 && r.advmss ? r.advmss : undefined,
      priority: v11 && r.priority ? r.priority : undefined,
      table: v11 ? r.table : undefined,
      scope: v11 ? r.scope : undefined,
    }));
  }
  const dns = result.dns ?? {};
  out.dns = compact({
    nameservers: dns.nameservers?.length ? dns.nameservers : undefined,
    domain: dns.domain || undefined,
    search: dns.search?.length ? dns.search : undefined,
    options: dns.options?.length ? dns.options : undefined,
  });
  return out;
}

/** `items.map((x) => compact(encode(x)))` as a loop: every ADD runs this once (docs/architecture.md, "Plugins"). */
function compactEach<T>(items: T[], encode: (item: T) => Json): Json[] {
  const out: Json[] = [];
  for (const item of items) out.push(compact(encode(item)));
  return out;
}

function compact(o: Json): Json {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * Parses a result written in `version` (prevResult, or a delegated IPAM plugin's output) into
 * the internal shape. `what` names the source in errors ("prevResult", "IPAM plugin host-local result").
 */
export function parseResult(raw: unknown, version: string, what: string): Result {
  const bad = (field: string, why: string) =>
    new CniError(
      CniCode.DecodeFailure,
      `invalid ${what}: ${field ? `${field} ` : ""}${why}`,
      `the ${what} must be a CNI ${version} result`,
    );
  if (!isObject(raw)) throw bad("", `is not a JSON object (got ${Array.isArray(raw) ? "a list" : typeof raw})`);
  const v1 = atLeast(version, "1.0.0");
  const result: Result = {};

  if (raw.interfaces !== undefined && raw.interfaces !== null) {
    if (!Array.isArray(raw.interfaces)) throw bad("interfaces", "is not a list");
    result.interfaces = raw.interfaces.map((i, n) => {
      if (!isObject(i) || typeof i.name !== "string") throw bad(`interfaces[${n}].name`, "is missing");
      const out: Interface = { name: i.name };
      for (const k of ["mac", "sandbox", "socketPath", "pciID"] as const) {
        if (i[k] === undefined || i[k] === "") continue;
        if (typeof i[k] !== "string") throw bad(`interfaces[${n}].${k}`, "is not a string");
        out[k] = i[k] as string;
      }
      if (i.mtu !== undefined && i.mtu !== 0) out.mtu = int(i.mtu, `interfaces[${n}].mtu`, bad);
      return out;
    });
  }

  if (raw.ips !== undefined && raw.ips !== null) {
    if (!Array.isArray(raw.ips)) throw bad("ips", "is not a list");
    result.ips = raw.ips.map((ip, n) => {
      if (!isObject(ip)) throw bad(`ips[${n}]`, "is not an object");
      const cidr = typeof ip.address === "string" ? parseCidr(ip.address) : undefined;
      if (!cidr) throw bad(`ips[${n}].address`, `"${String(ip.address)}" is not an address with prefix (10.1.0.5/24)`);
      if (!v1 && ip.version !== undefined && ip.version !== String(cidr.family)) {
        throw bad(`ips[${n}].version`, `"${String(ip.version)}" does not match address ${ip.address}`);
      }
      const out: IpConfig = { address: ip.address as string };
      if (ip.gateway !== undefined && ip.gateway !== "") {
        if (typeof ip.gateway !== "string" || ipFamily(ip.gateway) === 0) throw bad(`ips[${n}].gateway`, "is not an IP address");
        out.gateway = ip.gateway;
      }
      if (ip.interface !== undefined && ip.interface !== null) {
        const idx = int(ip.interface, `ips[${n}].interface`, bad);
        if (idx < 0 || (result.interfaces && idx >= result.interfaces.length)) {
          throw bad(`ips[${n}].interface`, `index ${idx} does not name an entry of interfaces`);
        }
        out.interface = idx;
      }
      return out;
    });
  }

  if (raw.routes !== undefined && raw.routes !== null) {
    if (!Array.isArray(raw.routes)) throw bad("routes", "is not a list");
    result.routes = raw.routes.map((r, n) => parseRoute(r, `${what} routes[${n}]`, bad));
  }

  if (raw.dns !== undefined && raw.dns !== null) {
    if (!isObject(raw.dns)) throw bad("dns", "is not an object");
    result.dns = parseDns(raw.dns, (f) => bad(`dns.${f}`, "has the wrong type"));
  }
  return result;
}

export function parseRoute(r: unknown, where: string, bad: (field: string, why: string) => CniError): Route {
  if (!isObject(r)) throw bad(where, "is not an object");
  const dst = typeof r.dst === "string" ? parseCidr(r.dst) : undefined;
  if (!dst) throw bad(`${where}.dst`, `"${String(r.dst)}" is not a destination prefix (0.0.0.0/0)`);
  const out: Route = { dst: r.dst as string };
  if (r.gw !== undefined && r.gw !== "") {
    if (typeof r.gw !== "string" || ipFamily(r.gw) === 0) throw bad(`${where}.gw`, `"${String(r.gw)}" is not an IP address`);
    out.gw = r.gw;
  }
  for (const k of ["mtu", "advmss", "priority", "table", "scope"] as const) {
    if (r[k] !== undefined && r[k] !== null) out[k] = int(r[k], `${where}.${k}`, bad);
  }
  return out;
}

export function parseDns(d: Record<string, unknown>, bad: (field: string) => CniError): Dns {
  const out: Dns = {};
  for (const k of ["nameservers", "search", "options"] as const) {
    if (d[k] === undefined || d[k] === null) continue;
    if (!Array.isArray(d[k]) || !(d[k] as unknown[]).every((s) => typeof s === "string")) throw bad(k);
    if ((d[k] as string[]).length) out[k] = [...(d[k] as string[])];
  }
  if (d.domain !== undefined && d.domain !== "") {
    if (typeof d.domain !== "string") throw bad("domain");
    out.domain = d.domain;
  }
  return out;
}

function int(v: unknown, field: string, bad: (field: string, why: string) => CniError): number {
  if (typeof v !== "number" || !Number.isInteger(v)) throw bad(field, "is not an integer");
  return v;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
