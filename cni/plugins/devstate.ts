// Moving a whole host device (ENI, SR-IOV VF netdev) into a pod and giving it back exactly as it
// was. Shared by berth-hostdev and berth-sriov.
//
// Before the first change, ADD records the device's host state (name, MTU, MAC, up/down, alias,
// altnames, addresses, routes) in a state file (<stateDir>/<containerID>-<ifName>.json, 0600,
// written to a temp file, fsync-ed, renamed, directory fsync-ed). DEL restores from that file,
// whatever happened meanwhile: the device renamed inside the pod, the namespace deleted (the kernel
// gives a physical device back to the host namespace, as "devN" or under its pod name, so it is
// found by MAC or PCI address), or DEL run twice (no file: nothing to do).
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { addAddress, listAddresses } from "../netlink/addr";
import {
  addAltName, deleteAltName, findLinkByName, getLinkByIndex, listLinks, setLinkAlias, setLinkDown, setLinkMac,
  setLinkMtu, setLinkName, setLinkNetns, setLinkUp, type Link,
} from "../netlink/link";
import { addRoute, listRoutes, type RouteOptions } from "../netlink/route";
import { NetlinkSocket, isNetlinkError } from "../netlink/socket";
import { NetnsError, closeFd, openNetnsFd, withNetns, type Netns } from "../netns";
import { findInterface, ipsForInterface, requirePrevResult } from "../skel/chain";
import { CniError, ErrorCode } from "../skel/errors";
import { hasIpam, ipamCheck, ipamDel } from "../skel/ipam";
import type { Logger } from "../skel/log";
import type { CniContext } from "../skel/plugin";
import type { IpConfig, Result } from "../skel/result";
import type { Scope } from "../netlink/addr";
import { withFileLock } from "./filelock";
import { checkPodInterface, ifNameTaken, invalid, kernelError, mismatch } from "./podnet";

export const SELF_NETNS = "/proc/thread-self/ns/net";

export interface SavedAddress { cidr: string; broadcast?: string }
export interface SavedRoute { dst: string; gateway?: string; metric?: number; table: number; scope: Scope; onLink: boolean }

/** The host-side state of a device, as ADD found it. */
export interface DeviceSnapshot {
  name: string;
  mac: string;
  permAddress?: string;
  mtu: number;
  up: boolean;
  alias?: string;
  altNames: string[];
  /** rtnetlink kind ("veth"...); absent for physical NICs, which the kernel returns to the host when a netns dies */
  kind?: string;
  addresses: SavedAddress[];
  routes: SavedRoute[];
}

export interface AttachmentState {
  version: 1;
  plugin: string;
  network: string;
  containerId: string;
  ifName: string;
  netns: string;
  /** PCI address of the device, when it has one */
  pciAddress?: string;
  original: DeviceSnapshot;
  /** the MAC the device has in the pod */
  podMac: string;
  /** ifindex in the pod namespace (stable there across renames and MAC changes) */
  podIndex?: number;
  /** altnames removed on the host side because the pod namespace had the same names */
  removedAltNames?: string[];
  /** plugin-specific data (berth-sriov: the VF's PF-side state) */
  extra?: Record<string, unknown>;
}

// ---- config keys of berth-hostdev and berth-sriov

export function sysfsRootFrom(raw: Record<string, unknown>): string {
  if (raw.sysfsRoot !== undefined && raw.sysfsRoot !== null) {
    if (typeof raw.sysfsRoot !== "string" || !raw.sysfsRoot.startsWith("/")) {
      throw invalid("sysfsRoot", "is not an absolute path", 'remove it to use "/sys"');
    }
    return raw.sysfsRoot;
  }
  return process.env.BERTH_SYSFS_ROOT || "/sys";
}

export function stateDirFrom(raw: Record<string, unknown>, dflt: string): string {
  if (raw.stateDir === undefined || raw.stateDir === null) return dflt;
  if (typeof raw.stateDir !== "string" || !raw.stateDir.startsWith("/")) throw invalid("stateDir", "is not an absolute path", `remove it to use ${dflt}`);
  return raw.stateDir;
}

export function mtuFrom(raw: Record<string, unknown>): number | undefined {
  if (raw.mtu === undefined || raw.mtu === null || raw.mtu === 0) return undefined;
  if (typeof raw.mtu !== "number" || !Number.isInteger(raw.mtu) || raw.mtu < 68 || raw.mtu > 65535) {
    throw invalid("mtu", `${JSON.stringify(raw.mtu)} is not an MTU`, "use 68-65535, or leave it out to keep the device's MTU");
  }
  return raw.mtu;
}

export function normalizePci(value: unknown, field: string): string {
  if (typeof value !== "string") throw invalid(field, `${JSON.stringify(value)} is not a PCI address`, 'use the form "0000:3b:02.0"');
  const v = value.toLowerCase();
  const full = /^[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(v) ? `0000:${v}` : v;
  if (!PCI_ADDRESS.test(full)) throw invalid(field, `"${value}" is not a PCI address`, 'use the form "0000:3b:02.0" (domain:bus:device.function)');
  return full;
}

// ---- state files

export function ensureStateDir(dir: string, plugin: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new CniError(ErrorCode.IOFailure, `cannot create the state directory ${dir}: ${(e as Error).message}`,
      `${plugin} records each device's original state there before moving it; make it writable for root or set stateDir`);
  }
}

export function stateFileName(containerId: string, ifName: string): string {
  return `${containerId}-${ifName}.json`;
}

/** Writes `data` durably: temp file 0600, fsync, rename over `path`, fsync of the directory. */
export function writeDurable(path: string, data: unknown): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, JSON.stringify(data, null, 1) + "\n");
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dirFd = openSync(join(path, ".."), "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

export function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CniError(ErrorCode.IOFailure, `cannot read state file ${path}: ${(e as Error).message}`,
      "the file is damaged; restore the device by hand (see the file) and remove it");
  }
}

export function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

export function listStateFiles(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => join(dir, f));
  } catch {
    return [];
  }
}

// ---- sysfs

// A virtio-net netdev (KVM clouds, the kernel lab) hangs off a virtio device, virtioN, which is
// the child of the PCI function: <pci>/virtioN/net/<name> instead of <pci>/net/<name>.
const VIRTIO_DEVICE = /^virtio\d+$/;

/** PCI address (0000:3b:02.0) of a netdev by name, from <sysfs>/class/net/<name>/device; undefined if none. */
export function pciAddressOf(sysfsRoot: string, name: string): string | undefined {
  const device = join(sysfsRoot, "class/net", name, "device");
  try {
    const target = basename(readlinkSync(device));
    if (PCI_ADDRESS.test(target)) return target;
    if (!VIRTIO_DEVICE.test(target)) return undefined;
    const parent = basename(dirname(realpathSync(device)));
    return PCI_ADDRESS.test(parent) ? parent : undefined;
  } catch {
    return undefined;
  }
}

export const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Netdev names under <sysfs>/bus/pci/devices/<addr>/net/ (or <addr>/virtioN/net/ for virtio-net). */
export function netdevsOfPci(sysfsRoot: string, addr: string): string[] {
  const dir = join(sysfsRoot, "bus/pci/devices", addr);
  const names = readdirOrEmpty(join(dir, "net"));
  for (const child of readdirOrEmpty(dir)) {
    if (VIRTIO_DEVICE.test(child)) names.push(...readdirOrEmpty(join(dir, child, "net")));
  }
  return names.sort();
}

// ---- snapshot

function isLinkLocal6(cidr: string): boolean {
  return /^fe[89ab][0-9a-f]:/i.test(cidr);
}

/** The device's current host state: what DEL restores. */
export function snapshotDevice(nl: NetlinkSocket, link: Link): DeviceSnapshot {
  // The kernel regenerates IPv6 link-local addresses and the prefix/local/multicast routes of
  // addresses; only what an operator or a cloud agent configured is saved.
  const addresses = listAddresses(nl, { index: link.index })
    .filter((a) => !(a.family === 6 && isLinkLocal6(a.cidr)) && (a.permanent || a.family === 4))
    .map((a) => ({ cidr: a.cidr, ...(a.broadcast ? { broadcast: a.broadcast } : {}) }));
  const routes = listRoutes(nl, { table: "all", index: link.index })
    .filter((r) => r.protocol !== 2 /* kernel */ && r.table !== 255 && r.type === 1 /* unicast */ && !r.multipath
      && !(r.family === 6 && (isLinkLocal6(r.dst) || /^ff/i.test(r.dst))))
    .map((r) => ({
      dst: r.dst, table: r.table, scope: (typeof r.scope === "string" && !/^\d+$/.test(r.scope) ? r.scope : "global") as Scope, onLink: r.onLink,
      ...(r.gateway ? { gateway: r.gateway } : {}), ...(r.metric !== undefined ? { metric: r.metric } : {}),
    }));
  return {
    name: link.name, mac: link.mac, mtu: link.mtu, up: link.up, altNames: link.altNames, addresses, routes,
    ...(link.permAddress ? { permAddress: link.permAddress } : {}),
    ...(link.alias ? { alias: link.alias } : {}),
    ...(link.kind ? { kind: link.kind } : {}),
  };
}

// ---- move in

function tempName(prefix: string): string {
  return `${prefix}${Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, "0")}`;
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
export function moveIntoPod(host: NetlinkSocket, link: Link, pod: Netns, ifName: string, prefix: string, log: Logger): { link: Link; removedAltNames: string[] } {
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
  if (!l) throw new CniError(ErrorCode.DeviceNotFound, `device ${link.name} (as ${tmp}) vanished after the move into ${pod.path}`, "check the node for a concurrent network agent");
  setLinkName(pod.nl, l.index, ifName);
  return { link: getLinkByIndex(pod.nl, l.index), removedAltNames };
}

// ---- give back

/** The link that is our device in `nl`'s namespace: by name first when its MAC fits, else by MAC/PCI. */
function findDevice(nl: NetlinkSocket, st: AttachmentState, preferName: string | undefined, sysfsRoot: string | undefined, nameAlone = false): Link | undefined {
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

export interface ReturnOptions {
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
    const deadline = Date.now() + (st.original.kind ? 0 : o.returnWaitMs ?? 2000);
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    while (!hostLink && Date.now() < deadline) {
      Atomics.wait(sleeper, 0, 0, 50);
      hostLink = findDevice(host, st, st.ifName, o.sysfsRoot);
    }
  }
  if (!hostLink) {
    log.warn("device not found in the pod or the host namespace; nothing to restore", { device: st.original.name, mac: st.podMac, kind: st.original.kind });
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
    const moved = withNetns(st.netns, (nl) => {
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
      throw new CniError(ErrorCode.DeviceBusy, `cannot give ${link.name} its original name "${o.name}": another host interface (ifindex ${holder.index}) now has it`,
        `rename or remove that interface, then run DEL again; the device's saved state stays in the state file until then`);
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
  for (const a of o.addresses) ignoreExists(() => addAddress(host, { index: link.index, cidr: a.cidr, ...(a.broadcast ? { broadcast: a.broadcast } : { broadcast: false }) }));
  if (o.up && !up) setLinkUp(host, link.index);
  for (const r of o.routes) {
    const opts: RouteOptions = {
      dst: r.dst, index: link.index, table: r.table, scope: r.scope,
      ...(r.gateway ? { gateway: r.gateway } : {}), ...(r.metric !== undefined ? { metric: r.metric } : {}), ...(r.onLink ? { onLink: true } : {}),
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


// ---- DEL and CHECK of berth-hostdev and berth-sriov

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
  const released = hasIpam(ctx) ? ipamDel(ctx).then(() => undefined, (e: unknown) => e) : undefined;
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
    throw kernelError(e, g.doing(seen));
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
  if (hasIpam(ctx)) await ipamCheck(ctx);
  const found = findInterface(prev, ctx.ifName, ctx.netns);
  if (!found) throw mismatch(`prevResult has no interface "${ctx.ifName}" in ${ctx.netns}`, "the runtime must pass the result of ADD as prevResult");
  const st = readJson<AttachmentState>(o.path);
  if (!st) throw mismatch(`no saved state for container ${ctx.containerId} interface ${ctx.ifName} (${o.path}): the device was not attached by this plugin or already given back`);
  const ips = ipsForInterface(prev, ctx.ifName, ctx.netns);
  if (o.inPod?.(st) === false) return { st, ips };
  try {
    const link = withNetns(ctx.netns, (nl) => checkPodInterface(nl, ctx.ifName, ctx.netns, prev, ips, found.iface.mac));
    if (o.mtu && link.mtu !== o.mtu) throw mismatch(`interface "${ctx.ifName}" has MTU ${link.mtu}, the config says ${o.mtu}`);
  } catch (e) {
    throw kernelError(e, `${o.plugin} CHECK ${ctx.ifName}`);
  }
  return { st, ips };
}
