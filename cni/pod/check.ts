// The pod's side of CHECK, and the refusal of an interface name the pod already has.
import { canonicalIp, parseCidr } from "../../lib/ip";
import { listAddresses } from "../netlink/addr";
import { findLinkByName, type Link } from "../netlink/link";
import { listRoutes } from "../netlink/route";
import type { NetlinkSocket } from "../netlink/socket";
import { statPath } from "../../lib/fileio";
import { Netns } from "../netns";
import { mismatch } from "../skel/chain";
import { CniError, CniCode } from "../skel/errors";
import type { IpConfig, Result } from "../skel/result";
import { canonical, gatewayOf } from "./setup";

/** True when `path` is the network namespace the plugin itself runs in (the host's). */
export function isOwnNetns(path: string): boolean {
  try {
    const a = statPath(path),
      b = statPath("/proc/thread-self/ns/net");
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/**
 * Opens the pod's namespace for ADD or CHECK; code 4 when CNI_NETNS names the plugin's own
 * namespace: the pod's address and default route would land on the host.
 */
export function openPodNetns(path: string): Netns {
  if (isOwnNetns(path)) {
    throw new CniError(
      CniCode.InvalidEnv,
      `CNI_NETNS=${path} is the plugin's own (host) network namespace`,
      "CNI_NETNS must be the container's network namespace; a pod sharing the host network needs no CNI attachment",
    );
  }
  return Netns.open(path);
}

/** openPodNetns, `fn`, close. */
export function usePodNetns<T>(path: string, fn: (ns: Netns) => T): T {
  const ns = openPodNetns(path);
  try {
    return fn(ns);
  } finally {
    ns.close();
  }
}

/** Code 142 when the pod already has an interface `ifName` (checked before anything is allocated). */
export function refuseExistingIfName(pod: Netns, ifName: string): void {
  if (findLinkByName(pod.nl, ifName)) throw ifNameTaken(pod.path, ifName);
}

export function ifNameTaken(netns: string, ifName: string): CniError {
  return new CniError(
    CniCode.DeviceBusy,
    `interface "${ifName}" already exists in network namespace ${netns}`,
    "CNI_IFNAME must name a new interface in the pod; pick another name, or DEL the attachment that created it first",
  );
}

/** CHECK: the interface exists with prevResult's MAC, addresses and routes. Returns it. */
export function checkPodInterface(
  nl: NetlinkSocket,
  ifName: string,
  netns: string,
  prev: Result,
  ips: IpConfig[],
  wantMac: string | undefined,
): Link {
  const link = findLinkByName(nl, ifName);
  if (!link) throw mismatch(`interface "${ifName}" does not exist in ${netns}`);
  if (wantMac && link.mac !== wantMac.toLowerCase())
    throw mismatch(`interface "${ifName}" has MAC ${link.mac}, prevResult says ${wantMac}`);
  const have = new Set(listAddresses(nl, { index: link.index }).map((a) => canonical(a.cidr)));
  for (const ip of ips) {
    if (!have.has(canonical(ip.address))) throw mismatch(`interface "${ifName}" lacks address ${ip.address} from prevResult`);
  }
  // prevResult's routes are the whole chain's (a route names no interface): each must exist in the
  // pod; one without gw is ours when it is on our link with our family's gateway, else anyone's.
  const routes = listRoutes(nl, { table: "all" });
  const sameIp = (a: string | undefined, b: string | undefined) => a !== undefined && b !== undefined && canonicalIp(a) === canonicalIp(b);
  for (const r of prev.routes ?? []) {
    const dst = canonical(r.dst);
    const implied = gatewayOf(ips, parseCidr(r.dst)?.family as 4 | 6);
    const ok = routes.some(
      (k) =>
        canonical(k.dst) === dst &&
        (r.gw !== undefined
          ? sameIp(k.gateway, r.gw)
          : k.index !== link.index || (implied === undefined ? k.gateway === undefined : sameIp(k.gateway, implied))),
    );
    const via = r.gw ?? implied;
    if (!ok) throw mismatch(`route ${r.dst}${via ? ` via ${via}` : ""} from prevResult is missing in ${netns}`);
  }
  return link;
}
