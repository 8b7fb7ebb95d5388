// IPAM for every Berth plugin through one set of functions. ipam.type "berth-ipam" talks to the
// node's ipamd in-process over its unix socket; any other type is delegated to that plugin
// executable in CNI_PATH (host-local, static, dhcp, whereabouts...).
import type { AllocateResponse } from "../../api/types";
import { IpamdClient, IpamdError, IpamdUnreachable } from "../../api/client";
import { canonicalCidr } from "./cidr";
import { CniError, ErrorCode } from "./errors";
import type { CniContext } from "./plugin";
import type { IpConfig, Result } from "./result";
import type { UndoStack } from "./undo";

export const BERTH_IPAM = "berth-ipam";
export const DEFAULT_IPAMD_SOCKET = "/run/berth/ipamd.sock";
const DEFAULT_TIMEOUT_MS = 10_000;

export interface IpamAddress {
  /** "10.1.0.5/24" */
  address: string;
  gateway?: string;
  family: 4 | 6;
  /** berth-ipam only: the pool the address came from and the VLAN its traffic carries. */
  pool?: string;
  vlan?: number;
}

export interface IpamAllocation {
  /** ips (no interface index), routes, dns: ready to put into the plugin's result. */
  result: Result;
  addresses: IpamAddress[];
  /** berth-ipam: the VLAN of the allocated pools (undefined when none set, or delegated). */
  vlan?: number;
  /** berth-ipam: the owner the daemon recorded and whether the reservation is sticky. */
  owner?: string;
  sticky?: boolean;
  /** "berth-ipam" or the delegated plugin's type. */
  source: string;
}

export interface BerthIpamConf {
  socket: string;
  pools?: string[];
  timeoutMs: number;
}

export function hasIpam(ctx: CniContext<unknown>): boolean {
  return ctx.conf.ipam !== undefined;
}

function ipamType(ctx: CniContext<unknown>): string {
  const type = ctx.conf.ipam?.type;
  if (!type) {
    throw new CniError(ErrorCode.InvalidConfig, "invalid network config: ipam is missing",
      'add "ipam": {"type": "berth-ipam"} (or another IPAM plugin such as host-local) to the network config');
  }
  return type;
}

/** Reads and validates the berth-ipam keys of the "ipam" object. */
export function berthIpamConf(ctx: CniContext<unknown>): BerthIpamConf {
  const ipam = ctx.conf.ipam ?? { type: BERTH_IPAM };
  const bad = (field: string, why: string, fix: string) =>
    new CniError(ErrorCode.InvalidConfig, `invalid network config: ipam.${field} ${why}`, fix);
  const conf: BerthIpamConf = { socket: DEFAULT_IPAMD_SOCKET, timeoutMs: DEFAULT_TIMEOUT_MS };
  if (ipam.socket !== undefined) {
    if (typeof ipam.socket !== "string" || !ipam.socket.startsWith("/")) {
      throw bad("socket", "is not an absolute path", `use the path ipamd listens on, e.g. "${DEFAULT_IPAMD_SOCKET}"`);
    }
    conf.socket = ipam.socket;
  }
  if (ipam.pools !== undefined) {
    if (!Array.isArray(ipam.pools) || !ipam.pools.every((p) => typeof p === "string" && p !== "")) {
      throw bad("pools", "is not a list of pool names", 'use e.g. "pools": ["rack1-v4", "rack1-v6"]; ipamctl pools lists them');
    }
    if (ipam.pools.length) conf.pools = ipam.pools as string[];
  }
  if (ipam.timeoutMs !== undefined) {
    if (typeof ipam.timeoutMs !== "number" || !Number.isInteger(ipam.timeoutMs) || ipam.timeoutMs < 100 || ipam.timeoutMs > 120_000) {
      throw bad("timeoutMs", "is not a number of milliseconds between 100 and 120000", "remove it to use the default (10000)");
    }
    conf.timeoutMs = ipam.timeoutMs;
  }
  return conf;
}

function client(conf: BerthIpamConf): IpamdClient {
  return new IpamdClient(conf.socket, { timeoutMs: conf.timeoutMs });
}

function attachment(ctx: CniContext<unknown>) {
  return { containerID: ctx.containerId, ifName: ctx.ifName, network: ctx.conf.name };
}

/**
 * Allocates addresses for ctx's attachment. With `undo`, registers their release so a later
 * failure in the plugin gives them back.
 */
export async function ipamAdd(ctx: CniContext<unknown>, undo?: UndoStack): Promise<IpamAllocation> {
  const type = ipamType(ctx);
  if (type !== BERTH_IPAM) {
    const result = (await delegate(ctx, "ADD", type))!;
    undo?.push(`release addresses (${type})`, () => delegate(ctx, "DEL", type));
    const addresses = (result.ips ?? []).map((ip) => ({ address: ip.address, gateway: ip.gateway, family: family(ip.address) }));
    // An IPAM plugin returns no interfaces: drop indexes it may have copied from elsewhere.
    const ips = (result.ips ?? []).map(({ interface: _drop, ...ip }) => ip);
    return { result: { ...result, interfaces: undefined, ips }, addresses, source: type };
  }

  const conf = berthIpamConf(ctx);
  const request = {
    ...attachment(ctx),
    ...(ctx.pod.namespace ? { podNamespace: ctx.pod.namespace } : {}),
    ...(ctx.pod.name ? { podName: ctx.pod.name } : {}),
    ...(ctx.pod.uid ? { podUID: ctx.pod.uid } : {}),
    ...(conf.pools ? { pools: conf.pools } : {}),
    ...(ctx.requestedIps.length ? { ips: ctx.requestedIps } : {}),
  };
  const ipamd = client(conf);
  let response: AllocateResponse;
  try {
    response = await ipamd.allocate(request);
  } catch (e) {
    throw daemonError(e, conf, "ADD");
  }
  undo?.push("release addresses (ipamd)", () => ipamd.release(attachment(ctx)));
  ctx.log.info("ipamd allocated", { owner: response.owner, sticky: response.sticky, ips: response.ips });
  return fromDaemon(ctx, response);
}

/** Releases ctx's addresses. Succeeds when there are none and when ipamd is down. */
export async function ipamDel(ctx: CniContext<unknown>): Promise<void> {
  const type = ipamType(ctx);
  if (type !== BERTH_IPAM) {
    await delegate(ctx, "DEL", type);
    return;
  }
  const conf = berthIpamConf(ctx);
  try {
    const out = await client(conf).release(attachment(ctx));
    ctx.log.info("ipamd released", { released: out.released, kept: out.kept });
  } catch (e) {
    if (e instanceof IpamdUnreachable) {
      // DEL must not fail on a down daemon: its GC (valid attachments) and the sticky rules
      // settle the address when it is back.
      ctx.log.warn("ipamd unreachable on DEL; the address is settled by ipamd GC later", { socket: conf.socket, error: e.message });
      return;
    }
    throw daemonError(e, conf, "DEL");
  }
}

/**
 * CHECK: berth-ipam asks ipamd what the attachment holds and verifies prevResult carries those
 * addresses; returns the daemon's view. Other types run the plugin's CHECK and return undefined.
 */
export async function ipamCheck(ctx: CniContext<unknown>): Promise<IpamAllocation | undefined> {
  const type = ipamType(ctx);
  if (type !== BERTH_IPAM) {
    await delegate(ctx, "CHECK", type);
    return undefined;
  }
  const conf = berthIpamConf(ctx);
  let response: AllocateResponse;
  try {
    response = await client(conf).check(attachment(ctx));
  } catch (e) {
    throw daemonError(e, conf, "CHECK");
  }
  const allocation = fromDaemon(ctx, response);
  const prev = ctx.conf.prevResult;
  if (prev) {
    const have = new Set((prev.ips ?? []).map((ip) => canonicalCidr(ip.address)));
    for (const a of allocation.addresses) {
      if (!have.has(canonicalCidr(a.address))) {
        throw new CniError(ErrorCode.CheckMismatch,
          `ipamd holds ${a.address} for container ${ctx.containerId} interface ${ctx.ifName}, but prevResult does not list it`,
          `prevResult has [${[...have].join(", ")}]; delete and re-create the pod sandbox to resynchronise`);
      }
    }
  }
  return allocation;
}

/** STATUS: 50 when ipamd cannot be reached or has no pools; delegated for other types. */
export async function ipamStatus(ctx: CniContext<unknown>): Promise<void> {
  const type = ipamType(ctx);
  if (type !== BERTH_IPAM) {
    await delegate(ctx, "STATUS", type);
    return;
  }
  const conf = berthIpamConf(ctx);
  try {
    const status = await client(conf).status();
    if (status.pools === 0) {
      throw new CniError(ErrorCode.PluginNotAvailable, `ipamd at ${conf.socket} has no address pools`,
        "define pools in the ipamd config (ipamctl pools shows what it loaded) so that ADD can allocate");
    }
  } catch (e) {
    if (e instanceof IpamdUnreachable) {
      throw new CniError(ErrorCode.PluginNotAvailable, `ipamd is not reachable at ${conf.socket}: ${e.message}`,
        "start berth-ipamd on this node, or set ipam.socket to the socket it listens on");
    }
    throw daemonError(e, conf, "STATUS");
  }
}

/** GC: ipamd releases this network's addresses not held by a valid attachment. */
export async function ipamGc(ctx: CniContext<unknown>): Promise<void> {
  const type = ipamType(ctx);
  if (type !== BERTH_IPAM) {
    await delegate(ctx, "GC", type);
    return;
  }
  const conf = berthIpamConf(ctx);
  const valid = (ctx.conf.validAttachments ?? []).map((a) => ({ containerID: a.containerID, ifName: a.ifname }));
  try {
    const out = await client(conf).gc(ctx.conf.name, valid);
    ctx.log.info("ipamd gc", { released: out.released });
  } catch (e) {
    throw daemonError(e, conf, "GC");
  }
}

// Loaded only for a delegated type: berth-ipam never needs child_process.
async function delegate(ctx: CniContext<unknown>, command: "ADD" | "DEL" | "CHECK" | "STATUS" | "GC", type: string): Promise<Result | undefined> {
  const { delegateIpam } = await import("./delegate");
  return delegateIpam({
    command, ipamType: type, stdin: ctx.stdin, env: ctx.processEnv, cniPath: ctx.env.path,
    cniVersion: ctx.conf.cniVersion, log: ctx.log,
  });
}

function fromDaemon(ctx: CniContext<unknown>, r: AllocateResponse): IpamAllocation {
  const addresses: IpamAddress[] = r.ips.map((ip) => ({
    address: ip.address, family: ip.family, pool: ip.pool,
    ...(ip.gateway ? { gateway: ip.gateway } : {}),
    ...(ip.vlan !== undefined && ip.vlan !== null ? { vlan: ip.vlan } : {}),
  }));
  const ips: IpConfig[] = addresses.map((a) => ({ address: a.address, ...(a.gateway ? { gateway: a.gateway } : {}) }));
  const dns = r.dns && Object.keys(r.dns).length ? r.dns : ctx.conf.dns;
  const vlans = [...new Set(addresses.map((a) => a.vlan).filter((v): v is number => v !== undefined))];
  if (vlans.length > 1) {
    ctx.log.warn("pools of this attachment carry different VLANs; using the first", { vlans });
  }
  return {
    result: { ips, routes: r.routes.map((rt) => ({ dst: rt.dst, ...(rt.gw ? { gw: rt.gw } : {}) })), ...(dns ? { dns } : {}) },
    addresses,
    vlan: vlans[0],
    owner: r.owner,
    sticky: r.sticky,
    source: BERTH_IPAM,
  };
}

function family(address: string): 4 | 6 {
  return address.includes(":") ? 6 : 4;
}

const DAEMON_CODES: Record<string, number> = {
  no_pool: ErrorCode.IpamNoPool,
  pool_exhausted: ErrorCode.IpamPoolExhausted,
  ip_unavailable: ErrorCode.IpamIpUnavailable,
  forbidden: ErrorCode.IpamForbidden,
  not_found: ErrorCode.IpamAllocationMissing,
  shutting_down: ErrorCode.TryAgainLater,
};

const DAEMON_FIXES: Record<string, string> = {
  no_pool: "no pool matches this node's labels and the network (ipamctl pools shows which pools this node may use); check ipam.pools and the pools' nodeSelector",
  pool_exhausted: "the pool has no free address: add a range, release detached reservations (ipamctl reservations), or use another pool",
  ip_unavailable: "the requested IP (runtimeConfig.ips, args.cni.ips or CNI_ARGS IP) is taken or outside this node's pools; request another or release it with ipamctl",
  forbidden: "ipamd refused the caller; run the plugin as root on the node",
  not_found: "ipamd holds no address for this attachment; delete and re-create the pod sandbox",
  shutting_down: "ipamd is restarting; the runtime retries",
};

function daemonError(e: unknown, conf: BerthIpamConf, verb: string): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof IpamdUnreachable) {
    return new CniError(ErrorCode.TryAgainLater, `ipamd is not reachable at ${conf.socket}: ${e.message}`,
      "start berth-ipamd on this node (its DaemonSet or systemd unit), or set ipam.socket to the socket it listens on; the runtime retries");
  }
  if (e instanceof IpamdError) {
    const code = DAEMON_CODES[e.code] ?? ErrorCode.IpamRejected;
    return new CniError(code, `ipamd ${verb} failed: ${e.message}`,
      DAEMON_FIXES[e.code] ?? `ipamd answered ${e.httpStatus} ${e.code}; see the ipamd log`);
  }
  throw e;
}
