// The IPAM client side of every Berth plugin: one interface, two implementations. ipam.type
// "berth-ipam" talks to the node's ipamd in-process over its unix socket (ipamd.ts); any other
// type is delegated to that plugin executable in CNI_PATH (delegate.ts: host-local, static,
// dhcp, whereabouts...).
import { CniError, CniCode } from "../skel/errors";
import type { CniContext, CniPlugin } from "../skel/plugin";
import type { Result } from "../skel/result";
import type { UndoStack } from "../skel/undo";
import { DelegatedIpam } from "./delegate";
import { BERTH_IPAM, IpamdIpam } from "./ipamd";

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

/** IPAM for one attachment (the context it was made for). */
export interface Ipam {
  /**
   * Allocates addresses for the attachment. With `undo`, registers their release so a later
   * failure in the plugin gives them back; berth-ipam does not when ipamd says the attachment
   * already held them (a repeated ADD).
   */
  add(undo?: UndoStack): Promise<IpamAllocation>;
  /** Releases the attachment's addresses; succeeds when there are none (berth-ipam: and when ipamd is down). */
  del(): Promise<void>;
  /** CHECK; berth-ipam also verifies prevResult carries what ipamd holds and returns the daemon's view. */
  check(): Promise<IpamAllocation | undefined>;
  /** STATUS: code 50 when IPAM cannot allocate. */
  status(): Promise<void>;
  /** GC: addresses of this network not held by a valid attachment are released. */
  gc(): Promise<void>;
}

/** The IPAM of ctx's network config; undefined when it has no "ipam" section. */
export function ipamOf(ctx: CniContext<unknown>): Ipam | undefined {
  const type = ctx.conf.ipam?.type;
  if (ctx.conf.ipam === undefined) return undefined;
  if (!type) {
    throw new CniError(
      CniCode.InvalidConfig,
      "invalid network config: ipam is missing",
      'add "ipam": {"type": "berth-ipam"} (or another IPAM plugin such as host-local) to the network config',
    );
  }
  return type === BERTH_IPAM ? new IpamdIpam(ctx) : new DelegatedIpam(ctx, type);
}

/**
 * DEL: starts the IPAM release without waiting for it, so it runs while the plugin removes the
 * interface; resolves to the release's error (undefined when it worked or there is no IPAM).
 */
export function releaseMeanwhile(ctx: CniContext<unknown>): Promise<unknown> {
  const ipam = ipamOf(ctx);
  return ipam
    ? ipam.del().then(
        () => undefined,
        (e: unknown) => e,
      )
    : Promise.resolve(undefined);
}

/** STATUS and GC that a plugin leaves out are its IPAM's: ready when IPAM is, GC of IPAM's leftovers. */
export function withIpamDefaults<P>(plugin: CniPlugin<P>): CniPlugin<P> {
  return {
    status: async (ctx) => {
      await ipamOf(ctx)?.status();
    },
    gc: async (ctx) => {
      await ipamOf(ctx)?.gc();
    },
    ...plugin,
  };
}
