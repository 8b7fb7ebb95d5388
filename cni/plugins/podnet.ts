// Layer-3 setup of an interface already inside the pod namespace, over the pod's netlink socket:
// neighbour announcements, addresses, up, IPv6 DAD, routes; and the CHECK counterpart.
// Shared by berth-macvlan, berth-hostdev and berth-sriov.
import { addAddress, listAddresses } from "../netlink/addr";
import { findLinkByName, getLinkByIndex, setLinkMac, setLinkMtu, setLinkUp, type Link } from "../netlink/link";
import { addRoute, listRoutes } from "../netlink/route";
import { NetlinkError, NetlinkSocket, isNetlinkError } from "../netlink/socket";
import { NetnsError, ifaceSysctl, setSysctl, type Netns } from "../netns";
import { canonicalCidr, canonicalIp, parseCidr } from "../skel/cidr";
import { CniError, ErrorCode } from "../skel/errors";
import type { Logger } from "../skel/log";
import type { IpConfig, Result, Route } from "../skel/result";

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
        throw new CniError(ErrorCode.NetnsFailure, `cannot enable IPv6 on ${dev} in ${pod.path}: ${(e as Error).message}`,
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
  const want = new Set(s.ips.map((ip) => canonicalCidr(ip.address)).filter((c) => c.includes(":")));
  const deadline = Date.now() + DAD_TIMEOUT_MS;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const mine = listAddresses(nl, { index, family: 6 }).filter((a) => want.has(canonicalCidr(a.cidr)));
    const failed = mine.find((a) => a.dadFailed);
    if (failed) {
      throw new CniError(ErrorCode.IpamIpUnavailable, `IPv6 address ${failed.cidr} is already in use on the network: duplicate address detection failed on ${s.ifName}`,
        "another host answers for this address; find it (ip -6 neigh) and remove the duplicate, or exclude the address from the pool");
    }
    if (!mine.some((a) => a.tentative)) return;
    if (Date.now() > deadline) {
      const link = getLinkByIndex(nl, index);
      throw new CniError(ErrorCode.NetlinkFailure, `duplicate address detection for ${mine.filter((a) => a.tentative).map((a) => a.cidr).join(", ")} did not finish within ${DAD_TIMEOUT_MS / 1000} s`,
        link.operState !== "up"
          ? `${s.ifName} is ${link.operState}: its parent has no carrier; bring it up and check the cable, switch port or the PF's link state`
          : "the link may be losing packets; check the parent NIC and the switch port");
    }
    Atomics.wait(sleeper, 0, 0, 20);
  }
}

/**
 * A route without gw uses its family's gateway (as the reference plugins do); a gateway no
 * address prefix of the interface covers is added on-link instead of failing.
 */
function addRoutes(nl: NetlinkSocket, index: number, ips: IpConfig[], routes: Route[], log: Logger): void {
  const prefixes = ips.map((ip) => parseCidr(ip.address)!).filter(Boolean);
  for (const r of routes) {
    const family = parseCidr(r.dst)?.family as 4 | 6;
    const gw = r.gw ?? gatewayOf(ips, family);
    const onLink = gw !== undefined && !prefixes.some((p) => p.family === family && covers(p.ip, p.prefix, gw));
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

function gatewayOf(ips: IpConfig[], family: 4 | 6): string | undefined {
  return ips.find((ip) => ip.gateway && parseCidr(ip.address)?.family === family)?.gateway;
}

/** The address's bytes: 4 for IPv4, 16 for IPv6. */
export function ipBytes(ip: string): number[] {
  if (!ip.includes(":")) return ip.split(".").map(Number);
  const c = canonicalIp(ip);
  const [head, tail] = c.includes("::") ? (c.split("::") as [string, string]) : [c, undefined];
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = [...h, ...(tail !== undefined ? Array(8 - h.length - t.length).fill("0") : []), ...t];
  return groups.flatMap((g) => { const v = parseInt(g, 16); return [v >> 8, v & 255]; });
}

function covers(net: string, prefix: number, ip: string): boolean {
  const bits = (a: string) => ipBytes(a).map((b) => b.toString(2).padStart(8, "0")).join("");
  const a = bits(net), b = bits(ip);
  return a.length === b.length && a.slice(0, prefix) === b.slice(0, prefix);
}

/** Code 7 naming the config field, what is wrong with it and the fix. */
export function invalid(field: string, why: string, fix: string): CniError {
  return new CniError(ErrorCode.InvalidConfig, `invalid network config: ${field} ${why}`, fix);
}

export const MAC = /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/;

/** Lower-case colon form; code 7 for malformed, multicast or all-zero MACs. */
export function normalizeMac(value: unknown, field: string): string {
  if (typeof value !== "string" || !MAC.test(value)) {
    throw invalid(field, `"${String(value)}" is not a MAC address`, "use the form 0a:58:0a:01:00:05");
  }
  const mac = value.toLowerCase().replace(/-/g, ":");
  if (parseInt(mac.slice(0, 2), 16) & 1) {
    throw invalid(field, `${mac} is a multicast MAC address`, "a pod needs a unicast MAC: the lowest bit of the first byte must be 0 (e.g. 0a:...)");
  }
  if (mac === "00:00:00:00:00:00") throw invalid(field, "is all zeros", "use a unicast MAC such as 0a:58:0a:01:00:05");
  return mac;
}

/** Code 142 when the pod already has an interface `ifName` (checked before anything is allocated). */
export function refuseExistingIfName(pod: Netns, ifName: string): void {
  if (findLinkByName(pod.nl, ifName)) throw ifNameTaken(pod.path, ifName);
}

export function ifNameTaken(netns: string, ifName: string): CniError {
  return new CniError(ErrorCode.DeviceBusy, `interface "${ifName}" already exists in network namespace ${netns}`,
    "CNI_IFNAME must name a new interface in the pod; pick another name, or DEL the attachment that created it first");
}

/** Kernel and namespace failures as CNI errors naming what was attempted. */
export function kernelError(e: unknown, doing: string): unknown {
  if (e instanceof CniError) return e;
  if (e instanceof NetlinkError) {
    return new CniError(ErrorCode.NetlinkFailure, `${doing}: ${e.message}`, "see the kernel's reason above; the plugin log (logFile) has the details");
  }
  if (e instanceof NetnsError) {
    return new CniError(ErrorCode.NetnsFailure, `${doing}: ${e.message}`, "check CNI_NETNS: the container's network namespace must exist");
  }
  return e;
}

export function mismatch(what: string, fix = "delete and re-create the pod sandbox to repair it"): CniError {
  return new CniError(ErrorCode.CheckMismatch, what, fix);
}

/** CHECK: the interface exists with prevResult's MAC, addresses and routes. Returns it. */
export function checkPodInterface(nl: NetlinkSocket, ifName: string, netns: string, prev: Result, ips: IpConfig[], wantMac: string | undefined): Link {
  const link = findLinkByName(nl, ifName);
  if (!link) throw mismatch(`interface "${ifName}" does not exist in ${netns}`);
  if (wantMac && link.mac !== wantMac.toLowerCase()) throw mismatch(`interface "${ifName}" has MAC ${link.mac}, prevResult says ${wantMac}`);
  const have = new Set(listAddresses(nl, { index: link.index }).map((a) => canonicalCidr(a.cidr)));
  for (const ip of ips) {
    if (!have.has(canonicalCidr(ip.address))) throw mismatch(`interface "${ifName}" lacks address ${ip.address} from prevResult`);
  }
  const routes = listRoutes(nl, { table: "all" });
  for (const r of prev.routes ?? []) {
    const dst = canonicalCidr(r.dst);
    const via = r.gw ?? gatewayOf(ips, parseCidr(r.dst)?.family as 4 | 6);
    const ok = routes.some((k) => canonicalCidr(k.dst) === dst && k.index === link.index
      && (via === undefined ? k.gateway === undefined : k.gateway !== undefined && canonicalIp(k.gateway) === canonicalIp(via)));
    if (!ok) throw mismatch(`route ${r.dst}${via ? ` via ${via}` : ""} dev ${ifName} from prevResult is missing in ${netns}`);
  }
  return link;
}
