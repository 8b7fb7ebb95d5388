// DEL and CHECK of berth-hostdev and berth-sriov: give the device back as its state file says,
// and compare the pod's interface with prevResult.
import { removeFile } from "../../lib/files";
import { withFileLock } from "../../lib/lock";
import { ipamOf } from "../ipam/client";
import { NetlinkSocket } from "../netlink/socket";
import { Netns } from "../netns";
import { checkPodInterface } from "../pod/check";
import { findInterface, ipsForInterface, mismatch, requirePrevResult } from "../skel/chain";
import { toCniError } from "../skel/errors";
import type { CniContext } from "../skel/plugin";
import type { IpConfig, Result } from "../skel/result";
import { readJson, type AttachmentState } from "./state";

export interface GiveBack {
  /** the attachment's state file */
  path: string;
  /** the flock serialising this device's ADD and DEL, and what it guards (for the timeout error) */
  lock: (st: AttachmentState) => { file: string; what: string };
  /** for the error: what DEL was doing */
  doing: (st: AttachmentState) => string;
  /** restores the device from `st` (netns: CNI_NETNS when given, else the recorded one) */
  restore: (host: NetlinkSocket, st: AttachmentState) => void;
}

/**
 * DEL: gives the device back as its state file says, under the device's lock, and drops the file;
 * nothing to do without a file (DEL twice). The IPAM release runs meanwhile (see berth-macvlan's
 * DEL); a device error is reported before an IPAM error.
 */
export async function giveBackDevice(ctx: CniContext<unknown>, g: GiveBack): Promise<void> {
  const ipam = ipamOf(ctx);
  const released = ipam ? ipam.del().then(() => undefined, (e: unknown) => e) : undefined;
  let deviceError: unknown;
  try {
    giveBackUnderLock(ctx, g);
  } catch (e) {
    deviceError = e;
  }
  const ipamError = await released; // also lets the release finish before the process answers
  if (deviceError) throw deviceError;
  if (ipamError) throw ipamError;
}

function giveBackUnderLock(ctx: CniContext<unknown>, g: GiveBack): void {
  const seen = readJson<AttachmentState>(g.path);
  if (!seen) {
    ctx.log.info("no saved device state for this attachment; nothing to give back", { path: g.path });
    return;
  }
  const host = NetlinkSocket.open();
  const lock = g.lock(seen);
  try {
    withFileLock(lock.file, lock.what, () => {
      // Read again under the lock: an ADD of the same device may have cleared it as stale meanwhile.
      const st = readJson<AttachmentState>(g.path);
      if (!st) return;
      g.restore(host, { ...st, netns: ctx.netns || st.netns });
      removeFile(g.path);
    });
  } catch (e) {
    throw toCniError(e, g.doing(seen));
  } finally {
    host.close();
  }
}

/**
 * CHECK, common part: IPAM, prevResult's interface, the state file, and (unless `inPod` is false)
 * the interface in the pod with prevResult's MAC, addresses and routes and the configured MTU.
 */
export async function checkMovedDevice(ctx: CniContext<unknown>, o: { path: string; plugin: string; mtu?: number; inPod?: (st: AttachmentState) => boolean }): Promise<{ st: AttachmentState; ips: IpConfig[] }> {
  const prev: Result = requirePrevResult(ctx);
  await ipamOf(ctx)?.check();
  const found = findInterface(prev, ctx.ifName, ctx.netns);
  if (!found) throw mismatch(`prevResult has no interface "${ctx.ifName}" in ${ctx.netns}`, "the runtime must pass the result of ADD as prevResult");
  const st = readJson<AttachmentState>(o.path);
  if (!st) throw mismatch(`no saved state for container ${ctx.containerId} interface ${ctx.ifName} (${o.path}): the device was not attached by this plugin or already given back`);
  const ips = ipsForInterface(prev, ctx.ifName, ctx.netns);
  if (o.inPod?.(st) === false) return { st, ips };
  try {
    const link = Netns.use(ctx.netns, ({ nl }) => checkPodInterface(nl, ctx.ifName, ctx.netns, prev, ips, found.iface.mac));
    if (o.mtu && link.mtu !== o.mtu) throw mismatch(`interface "${ctx.ifName}" has MTU ${link.mtu}, the config says ${o.mtu}`);
  } catch (e) {
    throw toCniError(e, `${o.plugin} CHECK ${ctx.ifName}`);
  }
  return { st, ips };
}
