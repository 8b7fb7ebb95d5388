// berth-ipam's client side: the node's ipamd, over its unix socket, in-process.
import { IpamdClient, IpamdError, IpamdUnreachable } from "../../api/client";
import { DEFAULT_SPOOL_DIR, spoolRelease } from "../../api/spool";
import type { AllocateResponse } from "../../api/types";
import { canonicalCidr } from "../../lib/ip";
import { CniError, CniCode } from "../skel/errors";
import type { CniContext } from "../skel/plugin";
import type { IpConfig, Route } from "../skel/result";
import type { UndoStack } from "../skel/undo";
import type { Ipam, IpamAddress, IpamAllocation } from "./client";

export const BERTH_IPAM = "berth-ipam";
const DEFAULT_IPAMD_SOCKET = "/run/berth/ipamd.sock";
const DEFAULT_TIMEOUT_MS = 10_000;

interface BerthIpamConf {
  socket: string;
  pools?: string[];
  timeoutMs: number;
  /** Where DEL records a release when ipamd is unreachable (ipamd's spoolDir). */
  spoolDir: string;
}

/** Reads and validates the berth-ipam keys of the "ipam" object. */
export function berthIpamConf(ctx: CniContext<unknown>): BerthIpamConf {
  const ipam = ctx.conf.ipam ?? { type: BERTH_IPAM };
  const bad = (field: string, why: string, fix: string) =>
    new CniError(CniCode.InvalidConfig, `invalid network config: ipam.${field} ${why}`, fix);
  const conf: BerthIpamConf = { socket: DEFAULT_IPAMD_SOCKET, timeoutMs: DEFAULT_TIMEOUT_MS, spoolDir: DEFAULT_SPOOL_DIR };
  if (ipam.spoolDir !== undefined) {
    if (typeof ipam.spoolDir !== "string" || !ipam.spoolDir.startsWith("/")) {
      throw bad("spoolDir", "is not an absolute path", `use ipamd's spoolDir, e.g. "${DEFAULT_SPOOL_DIR}" (the default)`);
    }
    conf.spoolDir = ipam.spoolDir;
  }
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

/** IPAM by the node's ipamd, over its unix socket. */
export class IpamdIpam implements Ipam {
  private daemon?: { conf: BerthIpamConf; client: IpamdClient };

  constructor(private readonly ctx: CniContext<unknown>) {}

  // Read on first use, inside the verb: a bad ipam section fails that verb (DEL reports it afterwards).
  private get conf(): BerthIpamConf {
    return this.connect().conf;
  }

  private get client(): IpamdClient {
    return this.connect().client;
  }

  private connect(): { conf: BerthIpamConf; client: IpamdClient } {
    if (!this.daemon) {
      const conf = berthIpamConf(this.ctx);
      this.daemon = { conf, client: new IpamdClient(conf.socket, { timeoutMs: conf.timeoutMs }) };
    }
    return this.daemon;
  }

  private attachment() {
    return { containerID: this.ctx.containerId, ifName: this.ctx.ifName, network: this.ctx.conf.name };
  }

  async add(undo?: UndoStack): Promise<IpamAllocation> {
    const { ctx, conf } = this;
    const request = {
      ...this.attachment(),
      ...(ctx.pod.namespace ? { podNamespace: ctx.pod.namespace } : {}),
      ...(ctx.pod.name ? { podName: ctx.pod.name } : {}),
      ...(ctx.pod.uid ? { podUID: ctx.pod.uid } : {}),
      ...(conf.pools ? { pools: conf.pools } : {}),
      ...(ctx.requestedIps.length ? { ips: ctx.requestedIps } : {}),
    };
    let response: AllocateResponse;
    try {
      response = await this.client.allocate(request);
    } catch (e) {
      throw daemonError(e, conf, "ADD");
    }
    // A repeated ADD of a live attachment gets that pod's addresses: a failure now must not free them.
    if (response.existing !== true) undo?.push("release addresses (ipamd)", () => this.client.release(this.attachment()));
    ctx.log.info(response.existing ? "ipamd answered with the attachment's existing addresses" : "ipamd allocated", {
      owner: response.owner,
      sticky: response.sticky,
      ips: response.ips,
    });
    return fromDaemon(ctx, response);
  }

  async del(): Promise<void> {
    const { ctx, conf } = this;
    try {
      const out = await this.client.release(this.attachment());
      ctx.log.info("ipamd released", { released: out.released, kept: out.kept });
    } catch (e) {
      if (e instanceof IpamdUnreachable) {
        // DEL must not fail on a down daemon, nor be lost (no runtime may ever send GC): record the
        // release on the node; ipamd applies it when it is back.
        let file: string;
        try {
          file = spoolRelease(conf.spoolDir, { version: 1, ...this.attachment(), at: Date.now() });
        } catch (w) {
          throw new CniError(
            CniCode.TryAgainLater,
            `ipamd is not reachable at ${conf.socket} (${e.message}) and the release cannot be ` +
              `recorded in ${conf.spoolDir}: ${(w as Error).message}`,
            "start berth-ipamd, or make ipam.spoolDir writable for root; the runtime retries DEL",
          );
        }
        ctx.log.warn("ipamd unreachable on DEL; the release is recorded for ipamd to apply", {
          socket: conf.socket,
          error: e.message,
          file,
        });
        return;
      }
      throw daemonError(e, conf, "DEL");
    }
  }

  async check(): Promise<IpamAllocation> {
    const { ctx, conf } = this;
    let response: AllocateResponse;
    try {
      response = await this.client.check(this.attachment());
    } catch (e) {
      throw daemonError(e, conf, "CHECK");
    }
    const allocation = fromDaemon(ctx, response);
    const prev = ctx.conf.prevResult;
    if (prev) {
      const canonical = (c: string) => canonicalCidr(c) ?? c;
      const have = new Set((prev.ips ?? []).map((ip) => canonical(ip.address)));
      for (const a of allocation.addresses) {
        if (!have.has(canonical(a.address))) {
          throw new CniError(
            CniCode.CheckMismatch,
            `ipamd holds ${a.address} for container ${ctx.containerId} interface ${ctx.ifName}, but prevResult does not list it`,
            `prevResult has [${[...have].join(", ")}]; delete and re-create the pod sandbox to resynchronise`,
          );
        }
      }
    }
    return allocation;
  }

  /**
   * 50 when ADD would fail: ipamd cannot be reached, no pool serves this network (and
   * ipam.pools) on this node, or those pools have no free address.
   */
  async status(): Promise<void> {
    const { ctx, conf } = this;
    try {
      const status = await this.client.status();
      if (status.status !== "ok") {
        const why =
          [
            ...(status.commit?.ok === false ? [`its database cannot commit: ${status.commit.error}`] : []),
            ...(status.hold ? [`allocation is held: ${status.hold.reasons.join("; ")}`] : []),
          ].join("; ") || status.status;
        throw new CniError(
          CniCode.PluginNotAvailable,
          `ipamd at ${conf.socket} cannot allocate now: ${why}`,
          "see ipamctl status and the ipamd log (a full disk, a lock on the database, or a database to accept with " +
            "ipamctl database accept)",
        );
      }
      const out = await this.client.networkStatus({ network: ctx.conf.name, ...(conf.pools ? { pools: conf.pools } : {}) });
      ctx.log.debug("ipamd ready for this network", { pools: out.pools });
    } catch (e) {
      if (e instanceof IpamdUnreachable) {
        throw new CniError(
          CniCode.PluginNotAvailable,
          unreachable(conf, e),
          "start berth-ipamd on this node, or set ipam.socket to the socket it listens on",
        );
      }
      if (e instanceof IpamdError && (e.code === "no_pool" || e.code === "pool_exhausted")) {
        throw new CniError(
          CniCode.PluginNotAvailable,
          `ipamd cannot serve ADD for network "${ctx.conf.name}": ${e.message}`,
          DAEMON_FIXES[e.code],
        );
      }
      throw daemonError(e, conf, "STATUS");
    }
  }

  async gc(): Promise<void> {
    const { ctx, conf } = this;
    const valid = (ctx.conf.validAttachments ?? []).map((a) => ({ containerID: a.containerID, ifName: a.ifname }));
    try {
      const out = await this.client.gc(ctx.conf.name, valid);
      ctx.log.info("ipamd gc", { released: out.released });
    } catch (e) {
      throw daemonError(e, conf, "GC");
    }
  }
}

function fromDaemon(ctx: CniContext<unknown>, r: AllocateResponse): IpamAllocation {
  // Loops, not map/filter/spread: every ADD runs this once (see docs/architecture.md, "Plugins").
  const addresses: IpamAddress[] = [];
  const ips: IpConfig[] = [];
  const vlans: number[] = [];
  for (const ip of r.ips) {
    const gateway = ip.gateway ? { gateway: ip.gateway } : {};
    const vlan = ip.vlan ?? undefined;
    addresses.push({ address: ip.address, family: ip.family, pool: ip.pool, ...gateway, ...(vlan !== undefined ? { vlan } : {}) });
    ips.push({ address: ip.address, ...gateway });
    if (vlan !== undefined && !vlans.includes(vlan)) vlans.push(vlan);
  }
  const routes: Route[] = [];
  for (const rt of r.routes) routes.push({ dst: rt.dst, ...(rt.gw ? { gw: rt.gw } : {}) });
  const dns = r.dns && Object.keys(r.dns).length ? r.dns : ctx.conf.dns;
  if (vlans.length > 1) {
    ctx.log.warn("pools of this attachment carry different VLANs; using the first", { vlans });
  }
  return {
    result: { ips, routes, ...(dns ? { dns } : {}) },
    addresses,
    vlan: vlans[0],
    owner: r.owner,
    sticky: r.sticky,
    source: BERTH_IPAM,
  };
}

const DAEMON_CODES: Record<string, number> = {
  no_pool: CniCode.IpamNoPool,
  pool_exhausted: CniCode.IpamPoolExhausted,
  ip_unavailable: CniCode.IpamIpUnavailable,
  forbidden: CniCode.IpamForbidden,
  not_found: CniCode.IpamAllocationMissing,
  shutting_down: CniCode.TryAgainLater,
  previous_sandbox_attached: CniCode.TryAgainLater,
  database_unverified: CniCode.TryAgainLater,
  cluster_unavailable: CniCode.TryAgainLater,
  attached_elsewhere: CniCode.TryAgainLater,
  l2_domain: CniCode.IpamNoPool,
};

const DAEMON_FIXES: Record<string, string> = {
  no_pool:
    "no pool matches this node's labels and the network (ipamctl pools shows which pools this node may use); " +
    "check ipam.pools and the pools' nodeSelector",
  pool_exhausted: "the pool has no free address: add a range, release detached reservations (ipamctl reservations), or use another pool",
  ip_unavailable:
    "the requested IP (runtimeConfig.ips, args.cni.ips or CNI_ARGS IP) is taken or outside this node's pools; " +
    "request another or release it with ipamctl",
  forbidden: "ipamd refused the caller; run the plugin as root on the node",
  not_found: "ipamd holds no address for this attachment; delete and re-create the pod sandbox",
  shutting_down: "ipamd is restarting; the runtime retries",
  previous_sandbox_attached:
    "the pod's previous sandbox still holds the address; the runtime retries, and the address is handed over " +
    "once that sandbox's DEL (or a GC) comes",
  database_unverified: "ipamd lost its database while pods hold addresses; an operator runs ipamctl database accept (see ipamctl status)",
  cluster_unavailable:
    "ipamd needs etcd for this and cannot reach a quorum of it: check the etcd members and this node's " +
    "connectivity and TLS files (ipamctl status shows the etcd state); the runtime retries",
  attached_elsewhere:
    "the StatefulSet member's previous pod still holds its address on another node: the runtime retries " +
    "until that pod's CNI DEL reaches etcd or the node is declared dead",
  l2_domain: "schedule the pod onto a node whose labels the pool's nodeSelector matches (the address only works in that L2 domain)",
};

function daemonError(e: unknown, conf: BerthIpamConf, verb: string): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof IpamdUnreachable) {
    return new CniError(
      CniCode.TryAgainLater,
      unreachable(conf, e),
      "start berth-ipamd on this node (its DaemonSet or systemd unit), or set ipam.socket to the socket it listens on; the runtime retries",
    );
  }
  if (e instanceof IpamdError) {
    const code = DAEMON_CODES[e.code] ?? CniCode.IpamRejected;
    return new CniError(
      code,
      `ipamd ${verb} failed: ${e.message}`,
      DAEMON_FIXES[e.code] ?? `ipamd answered ${e.httpStatus} ${e.code}; see the ipamd log`,
    );
  }
  throw e;
}

/** "ipamd is not reachable at <socket>: <reason>", said once, without the HTTP client's own hints. */
function unreachable(conf: BerthIpamConf, e: IpamdUnreachable): string {
  const reason = e.reason.replace(/\s*Was there a typo in the url or port\?\s*/i, " ").trim();
  return `ipamd is not reachable at ${conf.socket}: ${reason || "no connection"}`;
}
