// DEL and CHECK of berth-hostdev and berth-sriov: give the device back as its state file says,
// and compare the pod's interface with prevResult.
import { removeFile } from "../../lib/files";
import { withFileLock } from "../../lib/lock";
import { ipamOf, releaseMeanwhile } from "../ipam/client";
import { NetlinkSocket } from "../netlink/socket";
import { checkPodInterface, usePodNetns } from "../pod/check";
import { findInterface, ipsForInterface, mismatch, requirePrevResult } from "../skel/chain";
import { toCniError } from "../skel/errors";
import type { CniContext } from "../skel/plugin";
import type { IpConfig, Result } from "../skel/result";
import { isOwnRecord, listStateFiles, readJson, type AttachmentState } from "./state";

interface GiveBack {
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
  const released = releaseMeanwhile(ctx);
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

const attachmentOf = (ctx: CniContext<unknown>) => ({ network: ctx.conf.name, containerId: ctx.containerId, ifName: ctx.ifName });

function giveBackUnderLock(ctx: CniContext<unknown>, g: GiveBack): void {
  const seen = readJson<AttachmentState>(g.path);
  if (!seen) {
    ctx.log.info("no saved device state for this attachment; nothing to give back", { path: g.path });
    return;
  }
  if (!isOwnRecord(seen, attachmentOf(ctx))) {
    ctx.log.warn("the state file holds another attachment's record; not touching its device", {
      path: g.path,
      record: { network: seen.network, containerId: seen.containerId, ifName: seen.ifName },
    });
    return;
  }
  const host = NetlinkSocket.open();
  const lock = g.lock(seen);
  try {
    withFileLock(lock.file, lock.what, () => {
      // Read again under the lock: an ADD of the same device may have cleared it as stale meanwhile.
      const st = readJson<AttachmentState>(g.path);
      if (!st || !isOwnRecord(st, attachmentOf(ctx))) return;
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
 * the interface in the pod with prevResult's MAC, addresses and routes.
 */
export async function checkMovedDevice(
  ctx: CniContext<unknown>,
  o: { path: string; plugin: string; inPod?: (st: AttachmentState) => boolean },
): Promise<{ st: AttachmentState; ips: IpConfig[] }> {
  const prev: Result = requirePrevResult(ctx);
  await ipamOf(ctx)?.check();
  const found = findInterface(prev, ctx.ifName, ctx.netns);
  if (!found)
    throw mismatch(`prevResult has no interface "${ctx.ifName}" in ${ctx.netns}`, "the runtime must pass the result of ADD as prevResult");
  const st = readJson<AttachmentState>(o.path);
  if (!st || !isOwnRecord(st, attachmentOf(ctx))) {
    throw mismatch(
      `no saved state for container ${ctx.containerId} interface ${ctx.ifName} (${o.path}): ` +
        "the device was not attached by this plugin or already given back",
    );
  }
  const ips = ipsForInterface(prev, ctx.ifName, ctx.netns);
  if (o.inPod?.(st) === false) return { st, ips };
  try {
    // No MTU comparison with the config: a later plugin of the chain (tuning) may change it.
    usePodNetns(ctx.netns, ({ nl }) => checkPodInterface(nl, ctx.ifName, ctx.netns, prev, ips, found.iface.mac));
  } catch (e) {
    throw toCniError(e, `${o.plugin} CHECK ${ctx.ifName}`);
  }
  return { st, ips };
}

/**
 * GC (cni.dev/valid-attachments): the devices this network's records hold for attachments the
 * runtime no longer has (their DEL never came) are given back as DEL would, and the records go.
 * Best effort: every record is tried; the first failure is reported afterwards.
 */
export function collectDeviceGarbage(
  ctx: CniContext<unknown>,
  o: {
    stateDir: string;
    plugin: string;
    lock: GiveBack["lock"];
    restore: GiveBack["restore"];
  },
): void {
  const valid = new Set((ctx.conf.validAttachments ?? []).map((a) => `${a.containerID}\0${a.ifname}`));
  let firstError: unknown;
  const host = NetlinkSocket.open();
  try {
    for (const path of listStateFiles(o.stateDir)) {
      let st: AttachmentState | undefined;
      try {
        st = readJson<AttachmentState>(path);
      } catch (e) {
        ctx.log.warn("GC: skipping a damaged state file", { path, error: (e as Error).message });
        continue;
      }
      if (!st || st.plugin !== o.plugin || st.network !== ctx.conf.name || valid.has(`${st.containerId}\0${st.ifName}`)) continue;
      const lock = o.lock(st);
      try {
        withFileLock(lock.file, lock.what, () => {
          const again = readJson<AttachmentState>(path);
          if (!again || !isOwnRecord(again, st!)) return;
          ctx.log.info("GC: giving back the device of an attachment the runtime no longer has", {
            containerId: again.containerId,
            ifName: again.ifName,
            device: again.original.name || again.pciAddress,
          });
          o.restore(host, again);
          removeFile(path);
        });
      } catch (e) {
        ctx.log.warn("GC: could not give the device back", { path, error: (e as Error).message });
        firstError ??= toCniError(e, `${o.plugin} GC: give back the device of container ${st.containerId} ${st.ifName}`);
      }
    }
  } finally {
    host.close();
  }
  if (firstError) throw firstError;
}
