// Network configuration on stdin: the fields every Berth plugin shares.
import { ipFamily, normalizeMac, parseCidr } from "../../lib/ip";
import { validateNetworkName } from "./env";
import { CniError, CniCode } from "./errors";
import { isLogLevel, type LogLevel } from "./log";
import { isObject, parseDns, parseResult, type Dns, type Result } from "./result";
import { atLeast, incompatibleVersion, isSupportedVersion, type CniVersion } from "./version";
import type { Command } from "./env";

interface IpamConf {
  type: string;
  /** Every other key of the "ipam" object, as given. */
  [key: string]: unknown;
}

interface RuntimeConfig {
  /** Capability "ips": requested addresses, "10.1.0.5/24" or "10.1.0.5". */
  ips?: string[];
  /** Capability "mac". */
  mac?: string;
  /** Capability "deviceID": PCI address of a VF / device. */
  deviceID?: string;
  [key: string]: unknown;
}

interface ValidAttachment {
  containerID: string;
  ifname: string;
}

export interface NetConf {
  cniVersion: CniVersion;
  name: string;
  type: string;
  ipam?: IpamConf;
  dns?: Dns;
  runtimeConfig: RuntimeConfig;
  /** "args": {"cni": {...}} — the conventional place for ips/mac in the config. */
  argsCni: { ips?: string[]; mac?: string; [key: string]: unknown };
  prevResult?: Result;
  /** DEL only: why prevResult was unreadable (DEL goes on without it). */
  prevResultProblem?: string;
  logFile?: string;
  logLevel: LogLevel;
  /** GC only: "cni.dev/valid-attachments". */
  validAttachments?: ValidAttachment[];
  /** The config object exactly as decoded (plugins read their own keys here). */
  raw: Record<string, unknown>;
}

function invalid(field: string, why: string, fix: string): CniError {
  return new CniError(CniCode.InvalidConfig, `invalid network config: ${field} ${why}`, fix);
}

/** Decodes stdin; code 6 when it is not a JSON object. */
export function decodeConfig(stdin: string): Record<string, unknown> {
  if (stdin.trim() === "") {
    throw new CniError(
      CniCode.DecodeFailure,
      "no network config on stdin",
      "the runtime must write the network configuration (JSON) to the plugin's stdin",
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(
      CniCode.DecodeFailure,
      `error decoding network config: ${(e as Error).message}`,
      "the network configuration on stdin must be valid JSON",
    );
  }
  if (!isObject(raw)) {
    throw new CniError(
      CniCode.DecodeFailure,
      "error decoding network config: not a JSON object",
      "the network configuration on stdin must be a JSON object",
    );
  }
  return raw;
}

/** The config's cniVersion; code 1 when missing or unsupported. */
export function configVersion(raw: Record<string, unknown>): CniVersion {
  const v = raw.cniVersion;
  if (v === undefined || v === "") {
    // libcni reads a missing cniVersion as 0.1.0, which Berth does not speak.
    throw incompatibleVersion("0.1.0 (cniVersion missing)");
  }
  if (typeof v !== "string") {
    throw new CniError(CniCode.DecodeFailure, "cniVersion is not a string", 'set "cniVersion": "1.1.0"');
  }
  if (!isSupportedVersion(v)) throw incompatibleVersion(v);
  return v;
}

/**
 * Refuses verbs the config's version does not have, as libcni's skel does:
 * CHECK needs >= 0.4.0, STATUS and GC need >= 1.1.0 (code 1).
 */
export function requireVerbSupported(command: Command, version: string): void {
  const min = command === "CHECK" ? "0.4.0" : command === "STATUS" || command === "GC" ? "1.1.0" : undefined;
  if (min && !atLeast(version, min)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `config version does not allow ${command}`,
      `${command} exists from CNI ${min}; the config says cniVersion "${version}"`,
    );
  }
}

/** The whole config for `command`: version first (code 1), then the verb, then every field. */
export function parseConfig(raw: Record<string, unknown>, command: Command): NetConf {
  const cniVersion = configVersion(raw);
  requireVerbSupported(command, cniVersion);
  const name = validateNetworkName(raw.name);
  if (typeof raw.type !== "string" || raw.type === "") {
    throw invalid("type", "is missing", 'set "type" to the plugin name, e.g. "berth-macvlan"');
  }
  const conf: NetConf = {
    cniVersion,
    name,
    type: raw.type,
    runtimeConfig: {},
    argsCni: {},
    logLevel: "info",
    raw,
  };

  if (raw.ipam !== undefined) {
    if (!isObject(raw.ipam)) throw invalid("ipam", "is not an object", 'use "ipam": {"type": "berth-ipam"}');
    if (raw.ipam.type !== undefined && (typeof raw.ipam.type !== "string" || raw.ipam.type === "")) {
      throw invalid("ipam.type", "is not a plugin name", 'use e.g. "berth-ipam", "host-local" or "static"');
    }
    if (typeof raw.ipam.type === "string") conf.ipam = raw.ipam as IpamConf;
  }

  if (raw.dns !== undefined && raw.dns !== null) {
    if (!isObject(raw.dns)) throw invalid("dns", "is not an object", 'use "dns": {"nameservers": ["10.0.0.53"]}');
    conf.dns = parseDns(raw.dns, (f) =>
      invalid(`dns.${f}`, "has the wrong type", "nameservers/search/options are lists of strings, domain a string"),
    );
  }

  if (raw.runtimeConfig !== undefined && raw.runtimeConfig !== null) {
    if (!isObject(raw.runtimeConfig))
      throw invalid("runtimeConfig", "is not an object", "runtimeConfig is set by the runtime from capabilities");
    const rc = raw.runtimeConfig;
    conf.runtimeConfig = { ...rc };
    if (rc.ips !== undefined) conf.runtimeConfig.ips = ipList(rc.ips, "runtimeConfig.ips");
    if (rc.mac !== undefined) conf.runtimeConfig.mac = mac(rc.mac, "runtimeConfig.mac");
    if (rc.deviceID !== undefined) {
      if (typeof rc.deviceID !== "string" || rc.deviceID === "")
        throw invalid("runtimeConfig.deviceID", "is not a string", 'the "deviceID" capability is a PCI address such as 0000:3b:02.1');
      conf.runtimeConfig.deviceID = rc.deviceID;
    }
  }

  if (raw.args !== undefined && raw.args !== null) {
    if (!isObject(raw.args)) throw invalid("args", "is not an object", 'use "args": {"cni": {"ips": ["10.1.0.5/24"]}}');
    const cni = raw.args.cni;
    if (cni !== undefined && cni !== null) {
      if (!isObject(cni)) throw invalid("args.cni", "is not an object", 'use "args": {"cni": {"ips": ["10.1.0.5/24"]}}');
      conf.argsCni = { ...cni };
      if (cni.ips !== undefined) conf.argsCni.ips = ipList(cni.ips, "args.cni.ips");
      if (cni.mac !== undefined) conf.argsCni.mac = mac(cni.mac, "args.cni.mac");
    }
  }

  if (raw.prevResult !== undefined && raw.prevResult !== null) {
    try {
      conf.prevResult = parseResult(raw.prevResult, cniVersion, "prevResult");
    } catch (e) {
      const err = e as CniError;
      // DEL is best effort (as the reference plugins): a damaged prevResult must not make the
      // runtime retry it forever. The dispatcher logs it; DEL goes on without it.
      if (command === "DEL") conf.prevResultProblem = err.message;
      else throw new CniError(CniCode.InvalidConfig, err.message, err.details);
    }
  }

  if (raw.logFile !== undefined) {
    if (typeof raw.logFile !== "string" || !raw.logFile.startsWith("/")) {
      throw invalid("logFile", "is not an absolute path", 'use e.g. "logFile": "/var/log/berth/cni.log", or remove it to disable logging');
    }
    conf.logFile = raw.logFile;
  }
  if (raw.logLevel !== undefined) {
    if (!isLogLevel(raw.logLevel)) throw invalid("logLevel", `"${String(raw.logLevel)}" is not a level`, "use debug, info, warn or error");
    conf.logLevel = raw.logLevel;
  }

  if (command === "GC") {
    // The released 1.1.0 SPEC text named the key "cni.dev/attachments"; libcni sends
    // "cni.dev/valid-attachments" (and, from v1.2.3, both). Accept either.
    const key = raw["cni.dev/valid-attachments"] !== undefined ? "cni.dev/valid-attachments" : "cni.dev/attachments";
    const va = raw[key];
    if (!Array.isArray(va)) {
      throw invalid(
        "cni.dev/valid-attachments",
        va === undefined ? "is missing" : "is not a list",
        "GC needs the list of attachments still in use (cni.dev/valid-attachments); the runtime sets it",
      );
    }
    conf.validAttachments = va.map((a, i) => {
      if (!isObject(a) || typeof a.containerID !== "string" || typeof a.ifname !== "string") {
        throw invalid(`${key}[${i}]`, "is not {containerID, ifname}", "each entry needs containerID and ifname strings");
      }
      return { containerID: a.containerID, ifname: a.ifname };
    });
  }
  return conf;
}

function ipList(v: unknown, field: string): string[] {
  if (!Array.isArray(v)) throw invalid(field, "is not a list", `use "${field.split(".").pop()}": ["10.1.0.5/24"]`);
  return v.map((s, i) => {
    if (typeof s !== "string" || (ipFamily(s) === 0 && !parseCidr(s))) {
      throw invalid(`${field}[${i}]`, `"${String(s)}" is not an IP address`, "use an address such as 10.1.0.5/24 or fd00::5/64");
    }
    return s;
  });
}

/** aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff (as CNI_ARGS MAC), in lower-case colon form. */
function mac(v: unknown, field: string): string {
  const m = normalizeMac(v);
  if (!m) throw invalid(field, `"${String(v)}" is not a MAC address`, "use the form aa:bb:cc:dd:ee:ff");
  return m;
}
