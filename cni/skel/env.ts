// CNI_* environment: validated before anything else is touched.
import { exists, filesystemType } from "../../lib/fileio";
import { ipFamily, normalizeMac, parseCidr } from "../../lib/ip";
import { containerIdProblem, ifNameProblem, networkNameProblem } from "../../lib/names";
import { CniError, CniCode } from "./errors";

export type Command = "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" | "VERSION";
const COMMANDS: readonly Command[] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];

export interface CniEnv {
  command: Command;
  /** CNI_CONTAINERID; "" for STATUS, GC, VERSION. */
  containerId: string;
  /** CNI_NETNS; "" when absent (allowed for DEL, STATUS, GC). */
  netns: string;
  /** CNI_IFNAME; "" for STATUS, GC, VERSION. */
  ifName: string;
  /** CNI_PATH split on ":". */
  path: string[];
  /** CNI_ARGS exactly as given. */
  argsRaw: string;
}

/** CNI_ARGS keys Berth understands (kubelet, CRI-O and containerd send the K8S_ ones). */
export interface CniArgs {
  IgnoreUnknown: boolean;
  K8S_POD_NAMESPACE?: string;
  K8S_POD_NAME?: string;
  K8S_POD_UID?: string;
  K8S_POD_INFRA_CONTAINER_ID?: string;
  /** IP=10.1.0.5 or IP=10.1.0.5/24; several separated by ",". */
  IP?: string[];
  MAC?: string;
  /** Keys accepted because IgnoreUnknown was set, or declared by the plugin (extraKeys). */
  other: Record<string, string>;
}

const NSFS_MAGIC = 0x6e736673;

const REQUIRED: Record<Exclude<Command, "VERSION">, string[]> = {
  ADD: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
  CHECK: ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
  DEL: ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
  STATUS: ["CNI_PATH"],
  GC: ["CNI_PATH"],
};

function invalidEnv(msg: string, details: string): CniError {
  return new CniError(CniCode.InvalidEnv, msg, details);
}

/** Reads CNI_COMMAND only; VERSION needs nothing else. */
export function readCommand(env: NodeJS.ProcessEnv): Command {
  const cmd = env.CNI_COMMAND;
  if (cmd === undefined || cmd === "") {
    throw invalidEnv(
      "required env variables [CNI_COMMAND] missing",
      `set CNI_COMMAND to one of ${COMMANDS.join(", ")}; this program is a CNI plugin and is run by a container runtime`,
    );
  }
  if (!(COMMANDS as readonly string[]).includes(cmd)) {
    throw invalidEnv(`unknown CNI_COMMAND: ${cmd}`, `CNI_COMMAND must be one of ${COMMANDS.join(", ")}`);
  }
  return cmd as Command;
}

/** Validates the whole CNI environment for `command` (not VERSION). */
export function readEnv(env: NodeJS.ProcessEnv, command: Command): CniEnv {
  const out: CniEnv = { command, containerId: "", netns: "", ifName: "", path: [], argsRaw: env.CNI_ARGS ?? "" };
  if (command === "VERSION") return out;

  // Loops rather than filter here and below: see docs/architecture.md, "Plugins".
  const missing: string[] = [];
  for (const k of REQUIRED[command]) if (!env[k]) missing.push(k);
  if (missing.length) {
    throw invalidEnv(
      `required env variables [${missing.join(" ")}] missing`,
      `CNI ${command} needs ${REQUIRED[command].join(", ")} set by the container runtime`,
    );
  }
  for (const d of (env.CNI_PATH ?? "").split(":")) if (d !== "") out.path.push(d);

  if (command === "ADD" || command === "CHECK" || command === "DEL") {
    out.containerId = env.CNI_CONTAINERID!;
    validateContainerId(out.containerId);
    out.ifName = env.CNI_IFNAME!;
    validateIfName(out.ifName);
    out.netns = env.CNI_NETNS ?? "";
    if (command !== "DEL") validateNetns(out.netns);
  }
  return out;
}

function validateContainerId(id: string): void {
  const problem = containerIdProblem(id);
  if (problem?.startsWith("is too long")) {
    throw invalidEnv(
      `CNI_CONTAINERID ${problem}`,
      "the runtime must use a container ID of at most 256 characters (ipamd keys attachments by it)",
    );
  }
  if (problem) {
    throw invalidEnv(
      `invalid characters in CNI_CONTAINERID "${id}"`,
      "the container ID must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
    );
  }
}

/** Linux interface name rules (dev_valid_name): 1-15 bytes, no '/', ':' or whitespace, not "." or "..". */
export function validateIfName(name: string): void {
  const problem = ifNameProblem(name);
  if (!problem) return;
  const fix = "use a Linux interface name of 1 to 15 characters without '/', ':' or whitespace, e.g. eth0 or net1";
  throw invalidEnv(name === "" ? "CNI_IFNAME is empty" : `CNI_IFNAME ${JSON.stringify(name)} ${problem}`, fix);
}

function validateNetns(path: string): void {
  if (!path.startsWith("/")) {
    throw invalidEnv(
      `CNI_NETNS "${path}" is not an absolute path`,
      "CNI_NETNS must be the path of the container's network namespace, e.g. /var/run/netns/cni-1234 or /proc/<pid>/ns/net",
    );
  }
  if (!exists(path)) {
    throw new CniError(
      CniCode.ContainerUnknown,
      `network namespace CNI_NETNS=${path} does not exist`,
      "the container (or its sandbox) is gone; the runtime should not retry ADD/CHECK for it",
    );
  }
  let type: number | undefined;
  try {
    type = filesystemType(path);
  } catch {
    type = undefined; // statfs unsupported here: the open in the plugin will fail with its own error
  }
  if (type !== undefined && type !== NSFS_MAGIC) {
    throw invalidEnv(
      `CNI_NETNS=${path} is not a network namespace`,
      "CNI_NETNS must be a bind-mounted network namespace (nsfs) or /proc/<pid>/ns/net",
    );
  }
}

export function validateNetworkName(name: unknown): string {
  if (typeof name !== "string" || name === "") {
    throw new CniError(CniCode.InvalidConfig, "missing network name", 'set "name" in the network config, e.g. "name": "underlay"');
  }
  const problem = networkNameProblem(name);
  if (problem?.startsWith("is too long")) {
    throw new CniError(CniCode.InvalidConfig, `invalid network config: name ${problem}`, "use a shorter network name");
  }
  if (problem) {
    throw new CniError(
      CniCode.InvalidConfig,
      `invalid characters found in network name "${name}"`,
      "the network name must start with a letter or digit and contain only letters, digits, '_', '.' and '-'",
    );
  }
  return name;
}

const KNOWN_ARGS = new Set([
  "IgnoreUnknown",
  "K8S_POD_NAMESPACE",
  "K8S_POD_NAME",
  "K8S_POD_UID",
  "K8S_POD_INFRA_CONTAINER_ID",
  "IP",
  "MAC",
]);

/**
 * Parses CNI_ARGS ("K=V;K=V") the way libcni's types.LoadArgs does: every pair must be exactly
 * one "=" (an empty pair, e.g. from a trailing ";", is invalid), IgnoreUnknown is a bool
 * (1/0/true/false, any case), and keys the plugin does not know are an error unless
 * IgnoreUnknown is true. libcni reports these as plain errors (code 999); Berth uses
 * 2 (unsupported field) for unknown keys and 4 (invalid env) for malformed pairs and values.
 */
export function parseCniArgs(raw: string, extraKeys: readonly string[] = []): CniArgs {
  const args: CniArgs = { IgnoreUnknown: false, other: {} };
  if (raw === "") return args;
  const unknown: string[] = [];
  for (const pair of raw.split(";")) {
    const kv = pair.split("=");
    if (kv.length !== 2) {
      throw invalidEnv(
        `CNI_ARGS: invalid pair "${pair}"`,
        'CNI_ARGS must be "KEY=VALUE" pairs separated by ";" (no empty pairs, one "=" per pair)',
      );
    }
    const [key, value] = kv as [string, string];
    const badValue = (why: string) => invalidEnv(`CNI_ARGS: error parsing value of pair "${pair}": ${why}`, `fix ${key} in CNI_ARGS`);
    switch (key) {
      case "IgnoreUnknown": {
        const v = value.toLowerCase();
        if (v === "1" || v === "true") args.IgnoreUnknown = true;
        else if (v === "0" || v === "false") args.IgnoreUnknown = false;
        else throw badValue(`boolean unmarshal error: invalid input ${value} (use 1, 0, true or false)`);
        break;
      }
      case "IP": {
        const ips = value
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s !== "");
        for (const ip of ips) {
          if (ipFamily(ip) === 0 && !parseCidr(ip)) throw badValue(`invalid IP address ${ip}`);
        }
        args.IP = ips;
        break;
      }
      case "MAC": {
        const mac = normalizeMac(value);
        if (!mac) throw badValue(`invalid MAC address ${value} (use aa:bb:cc:dd:ee:ff)`);
        args.MAC = mac;
        break;
      }
      case "K8S_POD_NAMESPACE":
      case "K8S_POD_NAME":
      case "K8S_POD_UID":
      case "K8S_POD_INFRA_CONTAINER_ID":
        args[key] = value;
        break;
      default:
        if (extraKeys.includes(key)) args.other[key] = value;
        else unknown.push(pair);
    }
  }
  if (unknown.length) {
    if (!args.IgnoreUnknown) {
      throw new CniError(
        CniCode.UnsupportedField,
        `CNI_ARGS: unknown args [${unknown.map((p) => JSON.stringify(p)).join(" ")}]`,
        `known keys: ${[...KNOWN_ARGS, ...extraKeys].join(", ")}; add IgnoreUnknown=1 to CNI_ARGS to ignore the others`,
      );
    }
    for (const pair of unknown) {
      const [k, v] = pair.split("=") as [string, string];
      args.other[k] = v;
    }
  }
  return args;
}
