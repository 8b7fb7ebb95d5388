// Layer-3 setup of an interface already inside the pod namespace, over the pod's netlink socket:
// neighbour announcements (arp_notify/ndisc_notify), addresses, up, IPv6 DAD, routes. Shared by
// berth-macvlan, berth-hostdev and berth-sriov.
import { sleepSync } from "../../lib/files";
import { canonicalCidr, cidrContains, parseCidr, parseIp, type Cidr } from "../../lib/ip";
import { addAddress, listAddresses } from "../netlink/addr";
import { IPV4_DEVCONF_ARP_NOTIFY, getLinkByIndex, setIpv4Conf, setLinkMac, setLinkMtu, setLinkUp, type Link } from "../netlink/link";
import { addRoute } from "../netlink/route";
import { isNetlinkError, type NetlinkSocket } from "../netlink/socket";
import { ifaceSysctl, setSysctl, type Netns } from "../netns";
import { CniError, CniCode } from "../skel/errors";
import type { NetConf } from "../skel/config";
import type { Logger } from "../skel/log";
import type { IpConfig, Route } from "../skel/result";

/** Text to compare addresses by ("fd00:0::1/64" and "fd00::1/64" are one). */
export const canonical = (cidr: string): string => canonicalCidr(cidr) ?? cidr;

const DAD_TIMEOUT_MS = 5_000;
const IFF_LOWER_UP = 0x10000;
const DEFAULT_CARRIER_WAIT_MS = 1_000;

/**
 * IPv6 duplicate address detection, per network ("ipv6DAD"): "optimistic" (default, as
 * sriov-cni) makes the addresses usable at once while DAD runs; "wait" holds ADD until DAD is
 * done and fails it on a duplicate; "off" skips DAD.
 */
type DadMode = "optimistic" | "wait" | "off";
const DAD_MODES: DadMode[] = ["optimistic", "wait", "off"];

interface PodNetOptions {
  dad: DadMode;
  /** how long ADD waits for carrier to announce the addresses (gratuitous ARP, unsolicited NA) */
  carrierWaitMs: number;
}

/** The network config's "ipv6DAD" and "carrierWaitMs" (code 7 when malformed). */
export function podNetOptions(conf: NetConf): PodNetOptions {
  const raw = conf.raw;
  const out: PodNetOptions = { dad: "optimistic", carrierWaitMs: DEFAULT_CARRIER_WAIT_MS };
  if (raw.ipv6DAD !== undefined && raw.ipv6DAD !== null) {
    if (!(DAD_MODES as unknown[]).includes(raw.ipv6DAD)) {
      throw new CniError(
        CniCode.InvalidConfig,
        `invalid network config: ipv6DAD ${JSON.stringify(raw.ipv6DAD)} is not a DAD mode`,
        'use "optimistic" (default: addresses usable at once), "wait" (ADD waits for DAD and fails on a duplicate) or "off"',
      );
    }
    out.dad = raw.ipv6DAD as DadMode;
  }
  if (raw.carrierWaitMs !== undefined && raw.carrierWaitMs !== null) {
    const v = raw.carrierWaitMs;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 30_000) {
      throw new CniError(
        CniCode.InvalidConfig,
        `invalid network config: carrierWaitMs ${JSON.stringify(v)} is not 0-30000`,
        "give the milliseconds ADD waits for carrier before announcing the pod's addresses (default 1000; 0: do not wait)",
      );
    }
    out.carrierWaitMs = v;
  }
  return out;
}
const SCOPES: Record<number, "global" | "site" | "link" | "host"> = { 0: "global", 200: "site", 253: "link", 254: "host" };

interface PodNetSettings {
  ifName: string;
  mtu?: number;
  mac?: string;
  ips: IpConfig[];
  routes: Route[];
  log: Logger;
  dad?: DadMode;
  carrierWaitMs?: number;
}

/** MTU, MAC, arp_notify/ndisc_notify, addresses, up, DAD, routes, announcement. Returns the link as configured. */
export function configurePodInterface(pod: Netns, index: number, s: PodNetSettings): Link {
  const nl = pod.nl;
  const dad = s.dad ?? "optimistic";
  if (s.mtu) setLinkMtu(nl, index, s.mtu);
  if (s.mac) setLinkMac(nl, index, s.mac);
  let hasV6 = false; // a loop, not some(): see docs/architecture.md, "Plugins"
  for (const ip of s.ips) if (parseCidr(ip.address)?.family === 6) hasV6 = true;
  // Neighbours learn the pod's MAC for a returning (sticky) IP at once: gratuitous ARP and
  // unsolicited NA when the link comes up with its addresses. arp_notify goes over netlink; the
  // IPv6 settings have no netlink form, they are written in /proc/sys inside the pod.
  setIpv4Conf(nl, index, [[IPV4_DEVCONF_ARP_NOTIFY, 1]]);
  if (hasV6) setIpv6Notify(pod, s.ifName, dad);

  for (const ip of s.ips) {
    try {
      addAddress(nl, { index, cidr: ip.address, ...(dad === "off" ? { nodad: true } : dad === "optimistic" ? { optimistic: true } : {}) });
    } catch (e) {
      if (!isNetlinkError(e, "EEXIST")) throw e;
    }
  }
  setLinkUp(nl, index);
  if (hasV6 && dad === "wait") waitForDad(nl, index, s);
  addRoutes(nl, index, s.ips, s.routes, s.log);
  return s.ips.length ? announceAfterCarrier(nl, index, s) : getLinkByIndex(nl, index);
}

/** IPv6 on (lo too) in the pod, unsolicited NA, and with optimistic DAD its two switches. */
function setIpv6Notify(pod: Netns, ifName: string, dad: DadMode): void {
  pod.enter(() => {
    for (const dev of ["lo", ifName]) {
      try {
        setSysctl(ifaceSysctl(6, dev, "disable_ipv6"), 0);
      } catch (e) {
        throw new CniError(
          CniCode.NetnsFailure,
          `cannot enable IPv6 on ${dev} in ${pod.path}: ${(e as Error).message}`,
          "the pod gets an IPv6 address; IPv6 must not be disabled on the node (ipv6.disable=1 kernel parameter)",
        );
      }
    }
    setSysctl(ifaceSysctl(6, ifName, "ndisc_notify"), 1);
    if (dad === "optimistic") {
      setSysctl(ifaceSysctl(6, ifName, "optimistic_dad"), 1);
      setSysctl(ifaceSysctl(6, ifName, "use_optimistic"), 1);
    }
  });
}

/**
 * The kernel announces (arp_notify, ndisc_notify) at admin-up, when a NIC or VF often has no
 * carrier yet and the packets are lost. Once carrier is there, setting the MAC it already has
 * (NETDEV_CHANGEADDR) makes the kernel send the gratuitous ARP and the unsolicited NA again.
 * Returns the link as last read (setting the MAC it has changes nothing ADD reports).
 */
function announceAfterCarrier(nl: NetlinkSocket, index: number, s: PodNetSettings): Link {
  const deadline = Date.now() + (s.carrierWaitMs ?? DEFAULT_CARRIER_WAIT_MS);
  let link = getLinkByIndex(nl, index);
  while (!(link.flags & IFF_LOWER_UP) && Date.now() < deadline) {
    sleepSync(20);
    link = getLinkByIndex(nl, index);
  }
  if (!(link.flags & IFF_LOWER_UP)) {
    s.log.warn("no carrier on the pod interface; its addresses were not announced (neighbours learn them on first traffic)", {
      ifName: s.ifName,
      waitedMs: s.carrierWaitMs ?? DEFAULT_CARRIER_WAIT_MS,
    });
    return link;
  }
  if (!link.mac) return link;
  try {
    setLinkMac(nl, index, link.mac);
  } catch (e) {
    s.log.warn("could not re-announce the pod's addresses", { ifName: s.ifName, error: (e as Error).message });
  }
  return link;
}

function waitForDad(nl: NetlinkSocket, index: number, s: PodNetSettings): void {
  const want = new Set(s.ips.map((ip) => canonical(ip.address)).filter((c) => c.includes(":")));
  const deadline = Date.now() + DAD_TIMEOUT_MS;
  for (;;) {
    const mine = listAddresses(nl, { index, family: 6 }).filter((a) => want.has(canonical(a.cidr)));
    const failed = mine.find((a) => a.dadFailed);
    if (failed) {
      throw new CniError(
        CniCode.IpamIpUnavailable,
        `IPv6 address ${failed.cidr} is already in use on the network: duplicate address detection failed on ${s.ifName}`,
        "another host answers for this address; find it (ip -6 neigh) and remove the duplicate, or exclude the address from the pool",
      );
    }
    if (!mine.some((a) => a.tentative)) return;
    if (Date.now() > deadline) {
      const link = getLinkByIndex(nl, index);
      throw new CniError(
        CniCode.NetlinkFailure,
        `duplicate address detection for ${mine
          .filter((a) => a.tentative)
          .map((a) => a.cidr)
          .join(", ")} did not finish within ${DAD_TIMEOUT_MS / 1000} s`,
        link.operState !== "up"
          ? `${s.ifName} is ${link.operState}: its parent has no carrier; bring it up and check the cable, ` +
              `switch port or the PF's link state`
          : "the link may be losing packets; check the parent NIC and the switch port",
      );
    }
    sleepSync(20);
  }
}

/**
 * A route without gw uses its family's gateway (as the reference plugins do); a gateway no
 * address prefix of the interface covers is added on-link instead of failing.
 */
function addRoutes(nl: NetlinkSocket, index: number, ips: IpConfig[], routes: Route[], log: Logger): void {
  // Loops, not map/filter/some/find, here and in gatewayOf: see docs/architecture.md, "Plugins".
  const prefixes: Cidr[] = [];
  for (const ip of ips) {
    const c = parseCidr(ip.address);
    if (c) prefixes.push(c);
  }
  for (const r of routes) {
    const family = parseCidr(r.dst)?.family as 4 | 6;
    const gw = r.gw ?? gatewayOf(ips, family);
    const via = gw === undefined ? null : parseIp(gw);
    let onLink = via !== null;
    for (const p of prefixes) if (via && cidrContains(p, via.family, via.value)) onLink = false;
    if (r.mtu || r.advmss) log.warn("route mtu/advmss are not applied", { route: r });
    try {
      addRoute(nl, {
        dst: r.dst,
        index,
        ...(gw ? { gateway: gw } : {}),
        ...(onLink ? { onLink } : {}),
        ...(r.priority !== undefined ? { metric: r.priority } : {}),
        ...(r.table !== undefined ? { table: r.table } : {}),
        ...(r.scope !== undefined && SCOPES[r.scope] ? { scope: SCOPES[r.scope] } : {}),
      });
    } catch (e) {
      if (!isNetlinkError(e, "EEXIST")) throw e;
    }
  }
}

export function gatewayOf(ips: IpConfig[], family: 4 | 6): string | undefined {
  for (const ip of ips) if (ip.gateway && parseCidr(ip.address)?.family === family) return ip.gateway;
  return undefined;
}
