// berth-hostdev: moves a whole host NIC (a cloud ENI, a spare port) into the pod and gives it back
// on DEL exactly as it was: name, MTU, MAC, up/down, alias, altnames, addresses and routes. The
// original state is on disk before the first change (cni/device/). See docs/plugins/hostdev.md.
import { exists } from "../../lib/fileio";
import { removeFile } from "../../lib/files";
import { withFileLock } from "../../lib/lock";
import { join } from "../../lib/paths";
import { canonicalCidr, normalizeMac, parseCidr } from "../../lib/ip";
import { checkMovedDevice, collectDeviceGarbage, giveBackDevice } from "../device/attach";
import { moveIntoPod, returnToHost } from "../device/move";
import { snapshotDevice } from "../device/snapshot";
import {
  attachmentHeader,
  attachmentStatePath,
  ensureStateDir,
  isOwnRecord,
  listStateFiles,
  noNetdev,
  readJson,
  writeDurable,
  type AttachmentState,
} from "../device/state";
import { USERSPACE_DRIVERS, driverOfPci, netdevsOfPci, pciAddressOf } from "../device/sysfs";
import { ipamOf, withIpamDefaults } from "../ipam/client";
import { findLinkByMac, findLinkByName, type Link } from "../netlink/link";
import { NetlinkSocket } from "../netlink/socket";
import type { Netns } from "../netns";
import { openPodNetns, refuseExistingIfName } from "../pod/check";
import { bandwidthLimits, checkPodShapingIn, removePodShaping, shapePodInterface } from "../pod/bandwidth";
import { configurePodInterface, podNetOptions } from "../pod/setup";
import { extendResult, mismatch } from "../skel/chain";
import type { NetConf } from "../skel/config";
import { validateIfName } from "../skel/env";
import { CniError, CniCode, toCniError } from "../skel/errors";
import { definePlugin, type CniContext } from "../skel/plugin";
import type { IpConfig, Result } from "../skel/result";
import { withUndo } from "../skel/undo";
import { invalid, mtuFrom, normalizePci, stateDirFrom, sysfsRootFrom, unicastMac } from "./config";

const DEFAULT_HOSTDEV_STATE_DIR = "/var/lib/berth/hostdev";
const PLUGIN = "berth-hostdev";

type DeviceSelector =
  | { by: "device"; value: string }
  | { by: "hwaddr"; value: string }
  | { by: "pciBusID"; value: string }
  | { by: "deviceID"; value: string };

interface HostdevConfig {
  selector: DeviceSelector;
  mtu?: number;
  mac?: string;
  /** static addresses per device, keyed by lower-case MAC or by name */
  addresses: Record<string, string[]>;
  stateDir: string;
  sysfsRoot: string;
}

function parseHostdevConfig(conf: NetConf): HostdevConfig {
  const raw = conf.raw;
  const given: DeviceSelector[] = [];
  const present = (k: string) => raw[k] !== undefined && raw[k] !== null && raw[k] !== "";
  if (present("device")) {
    try {
      validateIfName(raw.device as string);
    } catch {
      throw invalid(
        "device",
        `${JSON.stringify(raw.device)} is not an interface name`,
        "use the host interface name, 1-15 characters without '/', ':' or spaces",
      );
    }
    given.push({ by: "device", value: raw.device as string });
  }
  if (present("hwaddr")) given.push({ by: "hwaddr", value: unicastMac(raw.hwaddr, "hwaddr") });
  const pciBusID = present("pciBusID") ? normalizePci(raw.pciBusID, "pciBusID") : undefined;
  const deviceID =
    conf.runtimeConfig.deviceID !== undefined && conf.runtimeConfig.deviceID !== ""
      ? normalizePci(conf.runtimeConfig.deviceID, "runtimeConfig.deviceID")
      : undefined;
  // Multus v4 injects the device plugin's deviceID next to a NAD's own pciBusID: one device named
  // twice is one selection (the reference host-device lets deviceID override pciBusID).
  if (pciBusID !== undefined && deviceID !== undefined && pciBusID !== deviceID) {
    throw invalid(
      "pciBusID",
      `${pciBusID} and runtimeConfig.deviceID ${deviceID} name different devices`,
      "the device plugin allocated another device than the NAD's pciBusID: drop pciBusID from the NAD and let the device plugin " +
        "choose (capability deviceID), or drop the k8s.v1.cni.cncf.io/resourceName annotation to use the fixed pciBusID",
    );
  }
  if (deviceID !== undefined) given.push({ by: "deviceID", value: deviceID });
  else if (pciBusID !== undefined) given.push({ by: "pciBusID", value: pciBusID });
  if (given.length !== 1) {
    throw invalid(
      "device selection",
      given.length === 0 ? "is missing" : `is ambiguous (${given.map((g) => g.by).join(" and ")} given)`,
      'name the host device by exactly one of "device" (name), "hwaddr" (MAC), "pciBusID", ' +
        "or runtimeConfig.deviceID (from a device plugin through Multus)",
    );
  }
  const addresses: Record<string, string[]> = {};
  if (raw.addresses !== undefined && raw.addresses !== null) {
    if (typeof raw.addresses !== "object" || Array.isArray(raw.addresses)) {
      throw invalid("addresses", "is not an object", 'use {"<MAC or device name>": ["10.0.0.5/24"]}');
    }
    for (const [key, list] of Object.entries(raw.addresses as Record<string, unknown>)) {
      if (!Array.isArray(list) || !list.every((c) => typeof c === "string" && parseCidr(c) !== null)) {
        throw invalid(`addresses["${key}"]`, "is not a list of addresses with prefix length", 'use e.g. ["10.0.0.5/24", "fd00::5/64"]');
      }
      const k = normalizeMac(key) ? unicastMac(key, `addresses key "${key}"`) : key;
      addresses[k] = list as string[];
    }
  }
  return {
    selector: given[0]!,
    mtu: mtuFrom(raw),
    ...(present("mac") ? { mac: unicastMac(raw.mac, "mac") } : {}),
    addresses,
    stateDir: stateDirFrom(raw, DEFAULT_HOSTDEV_STATE_DIR),
    sysfsRoot: sysfsRootFrom(raw),
  };
}

type Ctx = CniContext<HostdevConfig>;

function describeSelector(s: DeviceSelector): string {
  return s.by === "device"
    ? `device "${s.value}"`
    : s.by === "hwaddr"
      ? `device with MAC ${s.value}`
      : `device at PCI ${s.value} (${s.by})`;
}

/** The selected device in the host namespace (code 141 when there is none). */
function findHostDevice(nl: NetlinkSocket, cfg: HostdevConfig): Link {
  const s = cfg.selector;
  let link: Link | undefined;
  let hint = "check the name with `ip link show` on the node";
  if (s.by === "device") link = findLinkByName(nl, s.value);
  else if (s.by === "hwaddr") link = findLinkByMac(nl, s.value);
  else {
    const names = netdevsOfPci(cfg.sysfsRoot, s.value);
    hint = names.length
      ? `its netdev ${names.join(", ")} is not in the host namespace (already in a pod?)`
      : `${join(cfg.sysfsRoot, "bus/pci/devices", s.value)} has no netdev (under net/, or virtioN/net/ for virtio-net): ` +
        `the device does not exist or is bound to a userspace driver (vfio-pci)`;
    for (const n of names) link ??= findLinkByName(nl, n);
  }
  if (!link) {
    throw new CniError(CniCode.DeviceNotFound, `${describeSelector(s)} not found in the host network namespace`, hint);
  }
  return link;
}

function statePath(cfg: HostdevConfig, ctx: Ctx): string {
  return attachmentStatePath(cfg.stateDir, { network: ctx.conf.name, containerId: ctx.containerId, ifName: ctx.ifName });
}

/** The PCI function of a PCI selector when it is bound to a userspace driver (DPDK): nothing to move. */
function userspaceDevice(cfg: HostdevConfig): { pci: string; driver: string } | undefined {
  const s = cfg.selector;
  if (s.by !== "pciBusID" && s.by !== "deviceID") return undefined;
  const driver = driverOfPci(cfg.sysfsRoot, s.value);
  return driver && USERSPACE_DRIVERS.includes(driver) ? { pci: s.value, driver } : undefined;
}

/** This attachment's state file, refused when one exists (the attachment already holds a device). */
function freeStatePath(ctx: Ctx): string {
  const path = statePath(ctx.pluginConfig, ctx);
  if (exists(path)) {
    throw new CniError(
      CniCode.DeviceBusy,
      `container ${ctx.containerId} interface ${ctx.ifName} already holds a host device (${path})`,
      "run DEL for this attachment first; ADD is not repeated for an existing attachment",
    );
  }
  return path;
}

/**
 * A device bound to vfio-pci/uio (the DPDK path of Multus and the SR-IOV device plugin): as the
 * reference host-device, nothing moves; the pod gets the IPAM result and the device's PCI
 * address. The record says so, for CHECK and DEL.
 */
async function addUserspace(ctx: Ctx, dev: { pci: string; driver: string }): Promise<Result> {
  const cfg = ctx.pluginConfig;
  ensureStateDir(cfg.stateDir, PLUGIN);
  const path = freeStatePath(ctx);
  return withUndo(ctx.log, async (undo) => {
    const alloc = await ipamOf(ctx)?.add(undo);
    const st: AttachmentState = {
      ...attachmentHeader(ctx, PLUGIN),
      pciAddress: dev.pci,
      original: noNetdev(),
      podMac: "",
      extra: { userspaceDriver: dev.driver },
    };
    writeDurable(path, st);
    undo.push(`remove ${path}`, () => removeFile(path));
    ctx.log.info("device is bound to a userspace driver; nothing moved into the pod", { pci: dev.pci, driver: dev.driver });
    const ips = [...(cfg.addresses[dev.pci] ?? []).map((address) => ({ address })), ...(alloc?.result.ips ?? [])];
    return extendResult(ctx.conf.prevResult, {
      interfaces: [{ name: ctx.ifName, sandbox: ctx.netns, pciID: dev.pci }],
      ips: ips.map((ip): IpConfig => ({ ...ip, interface: 0 })),
      routes: alloc?.result.routes ?? [],
      dns: ctx.conf.dns ?? alloc?.result.dns ?? {},
    });
  });
}

const isUserspace = (st: AttachmentState) => typeof st.extra?.userspaceDriver === "string";

/** The record is of the device the selector names (as the record saw it before the move). */
function selects(s: DeviceSelector, a: AttachmentState): boolean {
  if (s.by === "device") return a.original.name === s.value;
  if (s.by === "hwaddr") return [a.original.mac, a.original.permAddress, a.podMac].includes(s.value);
  return a.pciAddress === s.value;
}

/** The configured static addresses of the device: by its MAC, permanent MAC or name. */
function staticAddresses(cfg: HostdevConfig, dev: { mac: string; permAddress?: string; name: string }): string[] {
  return cfg.addresses[dev.mac] ?? (dev.permAddress ? cfg.addresses[dev.permAddress] : undefined) ?? cfg.addresses[dev.name] ?? [];
}

function sameDevice(a: AttachmentState, link: Link, pci: string | undefined): boolean {
  if (pci && a.pciAddress) return pci === a.pciAddress;
  const mine = new Set([link.mac, link.permAddress].filter(Boolean));
  return mine.has(a.original.permAddress ?? a.original.mac) || mine.has(a.podMac);
}

async function add(ctx: Ctx): Promise<Result> {
  const cfg = ctx.pluginConfig;
  const log = ctx.log;
  const requestedMac = ctx.requestedMac ? unicastMac(ctx.requestedMac, "runtimeConfig.mac / CNI_ARGS MAC") : cfg.mac;
  const userspace = userspaceDevice(cfg);
  if (userspace) {
    try {
      return await addUserspace(ctx, userspace);
    } catch (e) {
      throw toCniError(e, `${PLUGIN} ADD ${ctx.ifName} (${describeSelector(cfg.selector)})`);
    }
  }
  const bandwidth = bandwidthLimits(ctx.conf);
  const host = NetlinkSocket.open();
  let pod: Netns | undefined;
  try {
    ensureStateDir(cfg.stateDir, PLUGIN);
    // A device whose pod died without DEL may be back under another name (devN, the pod's
    // ifname): records that name it by the selector are restored first, then it is found.
    withFileLock(join(cfg.stateDir, ".lock"), "the host device records", () =>
      clearStaleRecords(host, cfg, (a) => selects(cfg.selector, a), ctx),
    );
    findHostDevice(host, cfg); // refuse before allocating anything
    const podNs = (pod = openPodNetns(ctx.netns));
    refuseExistingIfName(podNs, ctx.ifName);
    const path = freeStatePath(ctx);
    return await withUndo(log, async (undo) => {
      const alloc = await ipamOf(ctx)?.add(undo);
      // The lock covers choosing and moving the device; once the record names the pod's live
      // namespace no other ADD takes it, so addresses and the DAD wait run without the lock.
      const { moved, ips, pci } = withFileLock(join(cfg.stateDir, ".lock"), "the host device records", () => {
        let link = findHostDevice(host, cfg);
        const pci =
          cfg.selector.by === "pciBusID" || cfg.selector.by === "deviceID" ? cfg.selector.value : pciAddressOf(cfg.sysfsRoot, link.name);
        if (clearStaleRecords(host, cfg, (a) => sameDevice(a, link, pci), ctx)) link = findHostDevice(host, cfg);
        const ips: IpConfig[] = [...staticAddresses(cfg, link).map((address) => ({ address })), ...(alloc?.result.ips ?? [])];
        const st: AttachmentState = {
          ...attachmentHeader(ctx, PLUGIN),
          ...(pci ? { pciAddress: pci } : {}),
          original: snapshotDevice(host, link),
          podMac: requestedMac ?? link.mac,
        };
        writeDurable(path, st); // before the first change
        undo.push(`give ${link.name} back to the host`, () => {
          returnToHost(host, st, { log, returnWaitMs: 0 });
          removeFile(path);
        });
        const moved = moveIntoPod(host, link, podNs, ctx.ifName, "bhd", log);
        st.podIndex = moved.link.index;
        if (moved.removedAltNames.length) st.removedAltNames = moved.removedAltNames; // the undo step sees them too
        writeDurable(path, st);
        log.info("moved host device into the pod", { device: link.name, ifName: ctx.ifName, netns: ctx.netns });
        return { moved, ips, pci };
      });
      const podLink = configurePodInterface(podNs, moved.link.index, {
        ifName: ctx.ifName,
        ips,
        routes: alloc?.result.routes ?? [],
        log,
        ...podNetOptions(ctx.conf),
        ...(cfg.mtu ? { mtu: cfg.mtu } : {}),
        ...(requestedMac ? { mac: requestedMac } : {}),
      });
      if (bandwidth) shapePodInterface(podNs, ctx.ifName, bandwidth, undo, log);
      return extendResult(ctx.conf.prevResult, {
        interfaces: [{ name: ctx.ifName, mac: podLink.mac, mtu: podLink.mtu, sandbox: ctx.netns, ...(pci ? { pciID: pci } : {}) }],
        ips: ips.map((ip): IpConfig => ({ ...ip, interface: 0 })),
        routes: alloc?.result.routes ?? [],
        dns: ctx.conf.dns ?? alloc?.result.dns ?? {},
      });
    });
  } catch (e) {
    throw toCniError(e, `${PLUGIN} ADD ${ctx.ifName} (${describeSelector(cfg.selector)})`);
  } finally {
    pod?.close();
    host.close();
  }
}

/**
 * A record of another attachment for the same device whose namespace is gone is stale (its DEL
 * never came): drop it so that DEL can never take the device from the pod that has it now.
 */
function clearStaleRecords(host: NetlinkSocket, cfg: HostdevConfig, matches: (a: AttachmentState) => boolean, ctx: Ctx): boolean {
  let cleared = false;
  for (const file of listStateFiles(cfg.stateDir)) {
    const other = readJson<AttachmentState>(file);
    if (!other || isUserspace(other) || !matches(other)) continue;
    if (other.netns && exists(other.netns)) {
      throw new CniError(
        CniCode.DeviceBusy,
        `${describeSelector(cfg.selector)} is recorded as attached to container ` +
          `${other.containerId} (${other.ifName} in ${other.netns}), whose namespace still exists`,
        `run DEL for that attachment first, or remove ${file} if the device was taken back by hand`,
      );
    }
    // Its DEL never came: put the device back as that record saw it first, so that this ADD
    // records the host's state and not the dead pod's.
    ctx.log.warn("restoring the device from the stale record of a deleted pod", { file, containerId: other.containerId });
    try {
      returnToHost(host, { ...other, netns: "" }, { log: ctx.log, sysfsRoot: cfg.sysfsRoot, returnWaitMs: 0 });
    } catch (e) {
      ctx.log.warn("restoring from the stale record failed; taking the device as it is", { error: (e as Error).message });
    }
    removeFile(file);
    cleared = true;
  }
  return cleared;
}

/** Gives the device of `st` back to the host (a userspace-driver device never left it). */
function restore(ctx: Ctx, host: NetlinkSocket, st: AttachmentState): void {
  if (isUserspace(st)) return;
  returnToHost(host, st, { log: ctx.log, sysfsRoot: ctx.pluginConfig.sysfsRoot });
}

function ownsDevice(ctx: Ctx, path: string): boolean {
  try {
    const st = readJson<AttachmentState>(path);
    return !!st && !isUserspace(st) && isOwnRecord(st, { network: ctx.conf.name, containerId: ctx.containerId, ifName: ctx.ifName });
  } catch {
    return false;
  }
}

const recordsLock = (cfg: HostdevConfig) => ({ file: join(cfg.stateDir, ".lock"), what: "the host device records" });

async function del(ctx: Ctx): Promise<void> {
  const cfg = ctx.pluginConfig;
  const path = statePath(cfg, ctx);
  // the ifb first (the move back to the host drops the device's qdiscs), and only for our own device
  if (ownsDevice(ctx, path)) removePodShaping(ctx.netns, ctx.ifName, ctx.log);
  await giveBackDevice(ctx, {
    path,
    lock: () => recordsLock(cfg),
    doing: (st) => `${PLUGIN} DEL ${ctx.ifName}: give ${st.original.name || st.pciAddress} back to the host`,
    restore: (host, st) => restore(ctx, host, st),
  });
}

async function gc(ctx: Ctx): Promise<void> {
  await ipamOf(ctx)?.gc();
  const cfg = ctx.pluginConfig;
  collectDeviceGarbage(ctx, {
    stateDir: cfg.stateDir,
    plugin: PLUGIN,
    lock: () => recordsLock(cfg),
    restore: (host, st) => restore(ctx, host, st),
  });
}

/** STATUS: not ready (50) when the configured device is nowhere: not on the host, not held by a pod of ours. */
async function status(ctx: Ctx): Promise<void> {
  const cfg = ctx.pluginConfig;
  if (cfg.selector.by !== "deviceID") {
    const held = listStateFiles(cfg.stateDir).some((f) => {
      try {
        const st = readJson<AttachmentState>(f);
        return !!st && selects(cfg.selector, st);
      } catch {
        return false;
      }
    });
    let present = held || userspaceDevice(cfg) !== undefined;
    if (!present) {
      const host = NetlinkSocket.open();
      try {
        findHostDevice(host, cfg);
        present = true;
      } catch (e) {
        if (!(e instanceof CniError)) throw e;
        throw new CniError(
          CniCode.PluginNotAvailable,
          `${describeSelector(cfg.selector)} does not exist on this node: ADD would fail`,
          e.details,
        );
      } finally {
        host.close();
      }
    }
  }
  await ipamOf(ctx)?.status();
}

async function check(ctx: Ctx): Promise<void> {
  const cfg = ctx.pluginConfig;
  const { st, ips } = await checkMovedDevice(ctx, { path: statePath(cfg, ctx), plugin: PLUGIN, inPod: (s) => !isUserspace(s) });
  const canonical = (c: string) => canonicalCidr(c) ?? c;
  const have = new Set(ips.map((ip) => canonical(ip.address)));
  for (const a of staticAddresses(cfg, st.original)) {
    if (!have.has(canonical(a))) throw mismatch(`prevResult lacks the configured static address ${a} of ${st.original.name}`);
  }
  if (!isUserspace(st)) checkPodShapingIn(ctx.netns, ctx.ifName, bandwidthLimits(ctx.conf));
}

export const hostdevPlugin = withIpamDefaults(
  definePlugin<HostdevConfig>({
    name: PLUGIN,
    parse: (conf) => parseHostdevConfig(conf),
    add,
    del,
    check,
    gc,
    status,
  }),
);
