// What a Berth plugin implements, and the context the dispatcher hands it.
import type { NetConf } from "./config";
import type { CniArgs, CniEnv, Command } from "./env";
import type { Logger } from "./log";
import type { Result } from "./result";

export interface PodRef {
  namespace?: string;
  name?: string;
  uid?: string;
}

export interface CniContext<P = undefined> {
  command: Command;
  /** Validated CNI_* variables. */
  env: CniEnv;
  containerId: string;
  ifName: string;
  /** "" when the runtime gave none (allowed for DEL, STATUS, GC). */
  netns: string;
  args: CniArgs;
  conf: NetConf;
  /** The plugin's own config, as returned by CniPlugin.parse. */
  pluginConfig: P;
  /** The config exactly as read from stdin (delegated IPAM plugins get these bytes). */
  stdin: string;
  /** The environment the plugin was started with (passed on to delegated plugins). */
  processEnv: NodeJS.ProcessEnv;
  log: Logger;
  /** Kubernetes pod from CNI_ARGS K8S_POD_*. */
  pod: PodRef;
  /** runtimeConfig.ips, else args.cni.ips, else CNI_ARGS IP (one source), without duplicates. */
  requestedIps: string[];
  /** runtimeConfig.mac, else args.cni.mac, else CNI_ARGS MAC. */
  requestedMac?: string;
  /** runtimeConfig.deviceID (capability "deviceID"). */
  deviceId?: string;
}

export interface CniPlugin<P = undefined> {
  /** Plugin name for logs and errors, e.g. "berth-macvlan". */
  name: string;
  /** CNI_ARGS keys the plugin accepts besides the common ones. */
  cniArgs?: readonly string[];
  /**
   * Validates the plugin's own keys of conf.raw and returns them typed; throw
   * CniError(CniCode.InvalidConfig, ...) naming the field and the fix.
   */
  parse?(conf: NetConf, command: Command): P;
  /** Returns the result; the dispatcher encodes it in the config's cniVersion. */
  add(ctx: CniContext<P>): Promise<Result>;
  /** Must succeed when things are already gone (idempotent). */
  del(ctx: CniContext<P>): Promise<void>;
  /** Compares what exists with ctx.conf.prevResult; throws on a difference. */
  check(ctx: CniContext<P>): Promise<void>;
  /** Absent: STATUS answers "ready" (withIpamDefaults in cni/ipam makes it IPAM's STATUS). */
  status?(ctx: CniContext<P>): Promise<void>;
  /** Absent: GC does nothing (withIpamDefaults in cni/ipam makes it IPAM's GC). */
  gc?(ctx: CniContext<P>): Promise<void>;
}

/** Identity helper that gives plugin objects full type inference. */
export function definePlugin<P = undefined>(plugin: CniPlugin<P>): CniPlugin<P> {
  return plugin;
}
