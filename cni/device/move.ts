// Moving a whole host device (ENI, SR-IOV VF netdev) into a pod and giving it back exactly as it
// was: whatever happened meanwhile (the device renamed inside the pod, the namespace deleted: the
// kernel gives a physical device back to the host namespace, as "devN" or under its pod name, so
// it is found by MAC or PCI address). Shared by berth-hostdev and berth-sriov.
import { sleepSync } from "../../lib/files";
import { addAddress } from "../netlink/addr";
import {
  addAltName,
  deleteAltName,
  findLinkByName,
  getLinkByIndex,
  listLinks,
  setLinkAlias,
  setLinkDown,
  setLinkMac,
  setLinkMtu,
  setLinkName,
  setLinkNetns,
  setLinkUp,
  type Link,
} from "../netlink/link";
import { addRoute, type RouteOptions } from "../netlink/route";
import { isNetlinkError, type NetlinkSocket } from "../netlink/socket";
import { Netns, NetnsError, closeFd, openNetnsFd } from "../netns";
import { ifNameTaken } from "../pod/check";
import { CniError, CniCode } from "../skel/errors";
import type { Logger } from "../skel/log";
import type { AttachmentState } from "./state";
import { netdevsOfPci } from "./sysfs";

const SELF_NETNS = "/proc/thread-self/ns/net";

function tempName(prefix: string): string {
  return `${prefix}${Math.floor(Math.random() * 0xffffffff)
    .toString(16)
    .padStart(8, "0")}`;
}

/** Every name and altname used in the namespace of `nl`. */
function namesIn(nl: NetlinkSocket): Set<string> {
  const names = new Set<string>();
  for (const l of listLinks(nl)) {
    names.add(l.name);
    for (const a of l.altNames) names.add(a);
  }
  return names;
}

/**
 * Moves the host link into the pod under a temporary name (unique in both namespaces), renames it
 * to ifName there. Altnames that the pod already uses are removed first and returned (DEL adds
 * them back). Returns the link as it is in the pod.
 */
export function moveIntoPod(
  host: NetlinkSocket,
  link: Link,
  pod: Netns,
  ifName: string,
  prefix: string,
  log: Logger,
): { link: Link; removedAltNames: string[] } {
  const podNames = namesIn(pod.nl);
  if (podNames.has(ifName)) throw ifNameTaken(pod.path, ifName);
  const removedAltNames = link.altNames.filter((a) => podNames.has(a));
  for (const a of removedAltNames) {
    deleteAltName(host, link.index, a);
    log.info("removed altname that the pod namespace already uses", { device: link.name, altname: a });
  }
  const hostNames = namesIn(host);
  let tmp = tempName(prefix);
  while (podNames.has(tmp) || hostNames.has(tmp)) tmp = tempName(prefix);
  if (link.up) setLinkDown(host, link.index);
  setLinkName(host, link.index, tmp);
  try {
    setLinkNetns(host, link.index, pod.fd);
  } catch (e) {
    setLinkName(host, link.index, link.name);
    throw e;
  }
  const l = findLinkByName(pod.nl, tmp);
  if (!l)
    throw new CniError(
      CniCode.DeviceNotFound,
      `device ${link.name} (as ${tmp}) vanished after the move into ${pod.path}`,
      "check the node for a concurrent network agent",
    );
  setLinkName(pod.nl, l.index, ifName);
  return { link: getLinkByIndex(pod.nl, l.index), removedAltNames };
}

// ---- give back

/** The link that is our device in `nl`'s namespace: by name first when its MAC fits, else by MAC/PCI. */
function findDevice(
  nl: NetlinkSocket,
  st: AttachmentState,
  preferName: string | undefined,
  sysfsRoot: string | undefined,
  nameAlone = false,
): Link | undefined {
  const macs = new Set([st.podMac, st.original.mac, st.original.permAddress].filter((m): m is string => !!m && m !== "00:00:00:00:00:00"));
  const links = listLinks(nl);
  const matches = (l: Link) => macs.has(l.mac) || (l.permAddress !== undefined && macs.has(l.permAddress));
  const byName = preferName ? links.find((l) => l.name === preferName) : undefined;
  if (byName && (matches(byName) || macs.size === 0)) return byName;
  const byMac = links.filter(matches).filter((l) => l.kind === st.original.kind);
  if (byMac.length === 1) return byMac[0];
  if (st.pciAddress && sysfsRoot) {
    for (const n of netdevsOfPci(sysfsRoot, st.pciAddress)) {
      const l = links.find((x) => x.name === n);
      if (l) return l;
    }
  }
  // Inside the pod only: the pod's ifname with the right kind, even if its MAC was changed there.
  if (nameAlone && byName && byName.kind === st.original.kind) return byName;
  const byIndex = nameAlone && st.podIndex !== undefined ? links.find((l) => l.index === st.podIndex) : undefined;
  if (byIndex && byIndex.kind === st.original.kind && !byMac.length) return byIndex;
  return byMac[0];
}

interface ReturnOptions {
  /** where to look when the device is no longer in the pod (the host namespace) */
  sysfsRoot?: string;
  /** how long to wait for the kernel to return a physical device of a deleted namespace */
  returnWaitMs?: number;
  log: Logger;
}

/**
 * Puts the device back into the calling namespace (the host) and restores its recorded state.
 * Returns false when the device is nowhere to be found (a virtual device destroyed with its
 * namespace); throws only when it exists but cannot be restored.
 */
export function returnToHost(host: NetlinkSocket, st: AttachmentState, o: ReturnOptions): boolean {
  const { log } = o;
  let hostLink: Link | undefined;
  if (st.netns) {
    try {
      hostLink = pullFromPod(host, st, o);
    } catch (e) {
      if (!(e instanceof NetnsError && (e.code === "ENOENT" || e.code === "EINVAL"))) throw e;
      log.info("pod network namespace is gone; looking for the device in the host namespace", { netns: st.netns });
    }
  }
  if (!hostLink) {
    hostLink = findDevice(host, st, st.ifName, o.sysfsRoot);
    // The kernel returns physical devices of a dying namespace asynchronously.
    const deadline = Date.now() + (st.original.kind ? 0 : (o.returnWaitMs ?? 2000));
    while (!hostLink && Date.now() < deadline) {
      sleepSync(50);
      hostLink = findDevice(host, st, st.ifName, o.sysfsRoot);
    }
  }
  if (!hostLink) {
    log.warn("device not found in the pod or the host namespace; nothing to restore", {
      device: st.original.name,
      mac: st.podMac,
      kind: st.original.kind,
    });
    return false;
  }
  restoreOnHost(host, hostLink, st, log);
  return true;
}

/** Moves the device from the pod to the host under a temporary name; undefined when it is not in the pod. */
function pullFromPod(host: NetlinkSocket, st: AttachmentState, o: ReturnOptions): Link | undefined {
  const hostNames = namesIn(host);
  let tmp = tempName("bret");
  while (hostNames.has(tmp)) tmp = tempName("bret");
  const hostFd = openNetnsFd(SELF_NETNS);
  try {
    const moved = Netns.use(st.netns, ({ nl }) => {
      const link = findDevice(nl, st, st.ifName, undefined, true);
      if (!link) return false;
      if (link.name !== st.ifName) o.log.info("device was renamed inside the pod", { expected: st.ifName, found: link.name });
      if (link.up) setLinkDown(nl, link.index);
      setLinkName(nl, link.index, tmp);
      setLinkNetns(nl, link.index, hostFd);
      return true;
    });
    return moved ? findLinkByName(host, tmp) : undefined;
  } finally {
    closeFd(hostFd);
  }
}

function ignoreExists(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (!isNetlinkError(e, "EEXIST")) throw e;
  }
}

/** Name, MTU, MAC, alias, altnames, addresses, up/down, routes: back as they were. */
function restoreOnHost(host: NetlinkSocket, link: Link, st: AttachmentState, log: Logger): void {
  const o = st.original;
  // A running netdev cannot be renamed, and some drivers refuse a MAC change while up. Only then
  // is it taken down: an ADD undone before the device moved must not flap a host NIC.
  const needsDown = link.name !== o.name || (!!o.mac && link.mac !== o.mac);
  let up = link.up;
  if (up && (needsDown || !o.up)) {
    setLinkDown(host, link.index);
    up = false;
  }
  if (link.name !== o.name) {
    const holder = findLinkByName(host, o.name);
    if (holder && holder.index !== link.index) {
      throw new CniError(
        CniCode.DeviceBusy,
        `cannot give ${link.name} its original name "${o.name}": another host interface (ifindex ${holder.index}) now has it`,
        `rename or remove that interface, then run DEL again; the device's saved state stays in the state file until then`,
      );
    }
    setLinkName(host, link.index, o.name);
  }
  if (link.mtu !== o.mtu) setLinkMtu(host, link.index, o.mtu);
  if (o.mac && link.mac !== o.mac) setLinkMac(host, link.index, o.mac);
  if ((link.alias ?? "") !== (o.alias ?? "")) setLinkAlias(host, link.index, o.alias ?? "");
  for (const a of st.removedAltNames ?? []) {
    if (!link.altNames.includes(a)) {
      try {
        addAltName(host, link.index, a);
      } catch (e) {
        log.warn("could not restore altname", { altname: a, error: (e as Error).message });
      }
    }
  }
  for (const a of o.addresses)
    ignoreExists(() =>
      addAddress(host, { index: link.index, cidr: a.cidr, ...(a.broadcast ? { broadcast: a.broadcast } : { broadcast: false }) }),
    );
  if (o.up && !up) setLinkUp(host, link.index);
  for (const r of o.routes) {
    const opts: RouteOptions = {
      dst: r.dst,
      index: link.index,
      table: r.table,
      scope: r.scope,
      ...(r.gateway ? { gateway: r.gateway } : {}),
      ...(r.metric !== undefined ? { metric: r.metric } : {}),
      ...(r.onLink ? { onLink: true } : {}),
    };
    try {
      ignoreExists(() => addRoute(host, opts));
    } catch (e) {
      // A route via a gateway that is only reachable once another route exists: log, keep going.
      log.warn("could not restore route", { route: r, error: (e as Error).message });
    }
  }
  log.info("device restored on the host", { name: o.name, mtu: o.mtu, mac: o.mac, up: o.up });
}
