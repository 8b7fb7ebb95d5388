// Layer-3 setup of an interface already inside the pod namespace, over the pod's netlink socket:
// neighbour announcements (arp_notify/ndisc_notify), addresses, up, IPv6 DAD, routes. Shared by
// berth-macvlan, berth-hostdev and berth-sriov.
import { sleepSync } from "../../lib/files";
import { canonicalCidr, cidrContains, parseCidr, parseIp } from "../../lib/ip";
import { addAddress, listAddresses } from "../netlink/addr";
import { getLinkByIndex, setLinkMac, setLinkMtu, setLinkUp, type Link } from "../netlink/link";
import { addRoute } from "../netlink/route";
import { isNetlinkError, type NetlinkSocket } from "../netlink/socket";
import { ifaceSysctl, setSysctl, type Netns } from "../netns";
import { CniError, CniCode } from "../skel/errors";
import type { Logger } from "../skel/log";
import type { IpConfig, Route } from "../skel/result";

/** Text to compare addresses by ("fd00:0::1/64" and "fd00::1/64" are one). */
export const canonical = (cidr: string): string => canonicalCidr(cidr) ?? cidr;

const DAD_TIMEOUT_MS = 5_000;
const SCOPES: Record<number, "global" | "site" | "link" | "host"> = { 0: "global", 200: "site", 253: "link", 254: "host" };

export interface PodNetSettings {
  ifName: string;
  mtu?: number;
  mac?: string;
  ips: IpConfig[];
  routes: Route[];
  log: Logger;
}

/** MTU, MAC, arp_notify/ndisc_notify, addresses, up, DAD, routes. Returns the link as configured. */
export function configurePodInterface(pod: Netns, index: number, s: PodNetSettings): Link {
  const nl = pod.nl;
  if (s.mtu) setLinkMtu(nl, index, s.mtu);
  if (s.mac) setLinkMac(nl, index, s.mac);
  const hasV6 = s.ips.some((ip) => parseCidr(ip.address)?.family === 6);
  // Neighbours learn the pod's MAC for a returning (sticky) IP at once: gratuitous ARP and
  // unsolicited NA when the link comes up with its addresses.
  pod.enter(() => {
    setSysctl(ifaceSysctl(4, s.ifName, "arp_notify"), 1);
    if (!hasV6) return;
    for (const dev of ["lo", s.ifName]) {
      try {
        setSysctl(ifaceSysctl(6, dev, "disable_ipv6"), 0);
      } catch (e) {
        throw new CniError(CniCode.NetnsFailure, `cannot enable IPv6 on ${dev} in ${pod.path}: ${(e as Error).message}`,
          "the pod gets an IPv6 address; IPv6 must not be disabled on the node (ipv6.disable=1 kernel parameter)");
      }
    }
    setSysctl(ifaceSysctl(6, s.ifName, "ndisc_notify"), 1);
  });
  for (const ip of s.ips) {
    try {
      addAddress(nl, { index, cidr: ip.address });
    } catch (e) {
      if (!isNetlinkError(e, "EEXIST")) throw e;
    }
  }
  setLinkUp(nl, index);
  if (hasV6) waitForDad(nl, index, s);
  addRoutes(nl, index, s.ips, s.routes, s.log);
  return getLinkByIndex(nl, index);
}

function waitForDad(nl: NetlinkSocket, index: number, s: PodNetSettings): void {
  const want = new Set(s.ips.map((ip) => canonical(ip.address)).filter((c) => c.includes(":")));
  const deadline = Date.now() + DAD_TIMEOUT_MS;
  for (;;) {
    const mine = listAddresses(nl, { index, family: 6 }).filter((a) => want.has(canonical(a.cidr)));
    const failed = mine.find((a) => a.dadFailed);
    if (failed) {
      throw new CniError(CniCode.IpamIpUnavailable, `IPv6 address ${failed.cidr} is already in use on the network: duplicate address detection failed on ${s.ifName}`,
        "another host answers for this address; find it (ip -6 neigh) and remove the duplicate, or exclude the address from the pool");
    }
    if (!mine.some((a) => a.tentative)) return;
    if (Date.now() > deadline) {
      const link = getLinkByIndex(nl, index);
      throw new CniError(CniCode.NetlinkFailure, `duplicate address detection for ${mine.filter((a) => a.tentative).map((a) => a.cidr).join(", ")} did not finish within ${DAD_TIMEOUT_MS / 1000} s`,
        link.operState !== "up"
          ? `${s.ifName} is ${link.operState}: its parent has no carrier; bring it up and check the cable, switch port or the PF's link state`
          : "the link may be losing packets; check the parent NIC and the switch port");
    }
    sleepSync(20);
  }
}

/**
 * A route without gw uses its family's gateway (as the reference plugins do); a gateway no
 * address prefix of the interface covers is added on-link instead of failing.
 */
function addRoutes(nl: NetlinkSocket, index: number, ips: IpConfig[], routes: Route[], log: Logger): void {
  const prefixes = ips.map((ip) => parseCidr(ip.address)).filter((c) => c !== null);
  for (const r of routes) {
    const family = parseCidr(r.dst)?.family as 4 | 6;
    const gw = r.gw ?? gatewayOf(ips, family);
    const via = gw === undefined ? null : parseIp(gw);
    const onLink = via !== null && !prefixes.some((p) => cidrContains(p, via.family, via.value));
    if (r.mtu || r.advmss) log.warn("route mtu/advmss are not applied", { route: r });
    try {
      addRoute(nl, {
        dst: r.dst, index, ...(gw ? { gateway: gw } : {}), ...(onLink ? { onLink } : {}),
        ...(r.priority !== undefined ? { metric: r.priority } : {}), ...(r.table !== undefined ? { table: r.table } : {}),
        ...(r.scope !== undefined && SCOPES[r.scope] ? { scope: SCOPES[r.scope] } : {}),
      });
    } catch (e) {
      if (!isNetlinkError(e, "EEXIST")) throw e;
    }
  }
}

export function gatewayOf(ips: IpConfig[], family: 4 | 6): string | undefined {
  return ips.find((ip) => ip.gateway && parseCidr(ip.address)?.family === family)?.gateway;
}

