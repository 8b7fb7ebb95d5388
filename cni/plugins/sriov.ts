// berth-sriov: gives a pod an SR-IOV virtual function. The VF's PF-side settings (VLAN, MAC,
// spoofchk, trust, link state, rates) are applied through the PF, its netdev is moved into the pod
// (cni/device/), and DEL restores both exactly as they were. See docs/plugins/sriov.md.
//
// Per VF (keyed by its PCI address) <stateDir>/vf-<pci>.json records which attachment holds it,
// under the flock <stateDir>/vf-<pci>.lock. A VF held by a live namespace is refused (code 11); a
// record whose namespace is gone is stale and is cleared (the VF restored first); an old pod's DEL
// never resets a VF that a new pod holds.
import { exists, readDir, readLink } from "../../lib/fileio";
import { removeFile } from "../../lib/files";
import { withFileLock } from "../../lib/lock";
import { basename, join } from "../../lib/paths";
import { checkMovedDevice, collectDeviceGarbage, giveBackDevice } from "../device/attach";
import { moveIntoPod, returnToHost } from "../device/move";
import { snapshotDevice } from "../device/snapshot";
import {
  attachmentHeader,
  attachmentStatePath,
  ensureStateDir,
  noNetdev,
  readJson,
  writeDurable,
  type AttachmentState,
} from "../device/state";
import { USERSPACE_DRIVERS, netdevsOfPci } from "../device/sysfs";
import { ipamOf, withIpamDefaults } from "../ipam/client";
import { findLinkByName, getLinkByName, requestNaming } from "../netlink/link";
import { NetlinkSocket } from "../netlink/socket";
import { encodeSetVf, getVf, type VfInfo, type VfLinkState, type VfSettings } from "../netlink/sriov";
import type { Netns } from "../netns";
import { openPodNetns, refuseExistingIfName } from "../pod/check";
import { vfRateFromBandwidth } from "../pod/bandwidth";
import { configurePodInterface, podNetOptions } from "../pod/setup";
import { extendResult, mismatch } from "../skel/chain";
import type { NetConf } from "../skel/config";
import { CniError, CniCode, toCniError } from "../skel/errors";
import type { Logger } from "../skel/log";
import { definePlugin, type CniContext, type CniPlugin } from "../skel/plugin";
import type { IpConfig, Result } from "../skel/result";
import { withUndo } from "../skel/undo";
import { invalid, mtuFrom, normalizePci, stateDirFrom, sysfsRootFrom, unicastMac } from "./config";

const DEFAULT_SRIOV_STATE_DIR = "/var/lib/berth/sriov";
const PLUGIN = "berth-sriov";

interface SriovConfig {
  /** VF PCI address from config or runtimeConfig.deviceID (which wins) */
  deviceID?: string;
  pf?: string;
  vf?: number;
  vlan?: number;
  vlanQoS?: number;
  vlanProto?: "802.1Q" | "802.1ad";
  mac?: string;
  spoofchk?: boolean;
  trust?: boolean;
  linkState?: VfLinkState;
  minTxRate?: number;
  maxTxRate?: number;
  mtu?: number;
  stateDir: string;
  sysfsRoot: string;
}

function intIn(raw: Record<string, unknown>, key: string, min: number, max: number, fix: string): number | undefined {
  const v = raw[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw invalid(key, `${JSON.stringify(v)} is out of range`, fix);
  return v;
}

function onOff(raw: Record<string, unknown>, key: string): boolean | undefined {
  const v = raw[key];
  if (v === undefined || v === null || v === "") return undefined;
  if (v !== "on" && v !== "off")
    throw invalid(
      key,
      `${JSON.stringify(v)} is not "on" or "off"`,
      `use "${key}": "on" or "off", or leave it out to keep the VF's setting`,
    );
  return v === "on";
}

function parseSriovConfig(conf: NetConf): SriovConfig {
  const raw = conf.raw;
  const cfg: SriovConfig = { stateDir: stateDirFrom(raw, DEFAULT_SRIOV_STATE_DIR), sysfsRoot: sysfsRootFrom(raw) };
  const runtimeId = conf.runtimeConfig.deviceID;
  if (runtimeId !== undefined && runtimeId !== "") cfg.deviceID = normalizePci(runtimeId, "runtimeConfig.deviceID");
  else if (raw.deviceID !== undefined && raw.deviceID !== null && raw.deviceID !== "")
    cfg.deviceID = normalizePci(raw.deviceID, "deviceID");
  const hasPf = raw.pf !== undefined && raw.pf !== null && raw.pf !== "";
  const vf = intIn(raw, "vf", 0, 65535, "use the VF index on the PF, from 0");
  if (hasPf || vf !== undefined) {
    if (cfg.deviceID)
      throw invalid(
        "pf/vf",
        "are given together with deviceID",
        "select the VF either by deviceID (its PCI address) or by pf + vf, not both",
      );
    if (!hasPf || typeof raw.pf !== "string" || vf === undefined)
      throw invalid("pf/vf", "must be given together", 'use e.g. "pf": "ens1f0", "vf": 3');
    cfg.pf = raw.pf;
    cfg.vf = vf;
  } else if (!cfg.deviceID) {
    throw invalid(
      "deviceID",
      "is missing",
      'set runtimeConfig.deviceID (the SR-IOV device plugin does it through Multus), "deviceID": "0000:3b:02.0", or "pf" + "vf"',
    );
  }
  cfg.vlan = intIn(raw, "vlan", 0, 4094, "use 0-4094 (0: untagged)");
  cfg.vlanQoS = intIn(raw, "vlanQoS", 0, 7, "use an 802.1p priority 0-7");
  if (raw.vlanProto !== undefined && raw.vlanProto !== null && raw.vlanProto !== "") {
    const p = String(raw.vlanProto).toLowerCase();
    if (p !== "802.1q" && p !== "802.1ad")
      throw invalid("vlanProto", `${JSON.stringify(raw.vlanProto)} is not a VLAN protocol`, 'use "802.1q" (default) or "802.1ad"');
    cfg.vlanProto = p === "802.1ad" ? "802.1ad" : "802.1Q";
  }
  const poolVlan = conf.ipam?.type === "berth-ipam";
  if ((cfg.vlanQoS !== undefined || cfg.vlanProto !== undefined) && cfg.vlan === undefined && !poolVlan) {
    throw invalid("vlanQoS/vlanProto", "need vlan", 'set "vlan" (or use berth-ipam with a pool that carries a VLAN)');
  }
  if (cfg.vlan === 0 && (cfg.vlanQoS || cfg.vlanProto === "802.1ad"))
    throw invalid("vlanQoS/vlanProto", "need a non-zero vlan", "set vlan 1-4094 or remove them");
  if (raw.mac !== undefined && raw.mac !== null && raw.mac !== "") cfg.mac = unicastMac(raw.mac, "mac");
  cfg.spoofchk = onOff(raw, "spoofchk");
  cfg.trust = onOff(raw, "trust");
  if (raw.link_state !== undefined && raw.link_state !== null && raw.link_state !== "") {
    if (!["auto", "enable", "disable"].includes(raw.link_state as string))
      throw invalid("link_state", `${JSON.stringify(raw.link_state)} is not a VF link state`, 'use "auto", "enable" or "disable"');
    cfg.linkState = raw.link_state as VfLinkState;
  }
  cfg.minTxRate = intIn(raw, "min_tx_rate", 0, 0xffffffff, "use Mbps, 0 for no guarantee");
  cfg.maxTxRate = intIn(raw, "max_tx_rate", 0, 0xffffffff, "use Mbps, 0 for no limit");
  if (cfg.minTxRate !== undefined && cfg.maxTxRate !== undefined && cfg.maxTxRate !== 0 && cfg.minTxRate > cfg.maxTxRate) {
    throw invalid("min_tx_rate", `(${cfg.minTxRate}) is above max_tx_rate (${cfg.maxTxRate})`, "min_tx_rate must be at most max_tx_rate");
  }
  cfg.mtu = mtuFrom(raw);
  return cfg;
}

// ---- sysfs

interface VfDevice {
  vfPci: string;
  pfPci: string;
  pfName: string;
  vfIndex: number;
  driver?: string;
  dpdk: boolean;
  /** the VF's netdev name as sysfs lists it; undefined for userspace drivers */
  netdev?: string;
}

function link(path: string): string | undefined {
  try {
    return basename(readLink(path));
  } catch {
    return undefined;
  }
}

/** PF, VF index, driver and netdev of the selected VF, from sysfs (code 141 when absent). */
function resolveVf(cfg: SriovConfig): VfDevice {
  const devices = join(cfg.sysfsRoot, "bus/pci/devices");
  let vfPci: string;
  let pfPci: string;
  if (cfg.deviceID) {
    vfPci = cfg.deviceID;
    if (!exists(join(devices, vfPci))) {
      throw new CniError(
        CniCode.DeviceNotFound,
        `PCI device ${vfPci} does not exist (${join(devices, vfPci)})`,
        "check deviceID against `lspci -D` and the device plugin's resource pool",
      );
    }
    const pf = link(join(devices, vfPci, "physfn"));
    if (!pf)
      throw new CniError(
        CniCode.DeviceNotFound,
        `PCI device ${vfPci} is not an SR-IOV VF (no physfn link)`,
        "deviceID must be a VF's PCI address, not the PF's",
      );
    pfPci = pf;
  } else {
    const pf = link(join(cfg.sysfsRoot, "class/net", cfg.pf!, "device"));
    if (!pf)
      throw new CniError(
        CniCode.DeviceNotFound,
        `PF "${cfg.pf}" not found (${join(cfg.sysfsRoot, "class/net", cfg.pf!, "device")})`,
        "set pf to the name of the SR-IOV physical function's netdev",
      );
    pfPci = pf;
    const vf = link(join(devices, pfPci, `virtfn${cfg.vf}`));
    if (!vf)
      throw new CniError(
        CniCode.DeviceNotFound,
        `PF "${cfg.pf}" has no VF ${cfg.vf}`,
        `see ${join(cfg.sysfsRoot, "class/net", cfg.pf!, "device/sriov_numvfs")}`,
      );
    vfPci = vf;
  }
  let vfIndex = -1;
  for (const entry of readDir(join(devices, pfPci))) {
    const m = /^virtfn(\d+)$/.exec(entry);
    if (m && link(join(devices, pfPci, entry)) === vfPci) vfIndex = Number(m[1]);
  }
  if (vfIndex < 0)
    throw new CniError(
      CniCode.DeviceNotFound,
      `no virtfnN link of PF ${pfPci} points to VF ${vfPci}`,
      "the VF list of the PF changed; check sriov_numvfs",
    );
  const pfName = netdevsOfPci(cfg.sysfsRoot, pfPci)[0];
  if (!pfName)
    throw new CniError(
      CniCode.DeviceNotFound,
      `PF ${pfPci} of VF ${vfPci} has no netdev`,
      "the PF must be bound to its kernel driver to configure VFs",
    );
  const driver = link(join(devices, vfPci, "driver"));
  const dpdk = driver !== undefined && USERSPACE_DRIVERS.includes(driver);
  const netdev = dpdk ? undefined : netdevsOfPci(cfg.sysfsRoot, vfPci)[0];
  return { vfPci, pfPci, pfName, vfIndex, dpdk, ...(driver ? { driver } : {}), ...(netdev ? { netdev } : {}) };
}

// ---- PF-side VF operations

/** The PF-side VF operations: one setting per request, so a driver refusing one is named. */
export interface PfOps {
  readVf(pf: string, vf: number): VfInfo;
  setVf(pf: string, vf: number, s: VfSettings, what: string): void;
}

class NetlinkPfOps implements PfOps {
  constructor(private readonly nl: NetlinkSocket) {}
  readVf(pf: string, vf: number): VfInfo {
    return getVf(this.nl, getLinkByName(this.nl, pf).index, vf);
  }
  setVf(pf: string, vf: number, s: VfSettings, what: string): void {
    const index = getLinkByName(this.nl, pf).index;
    requestNaming(this.nl, encodeSetVf(index, vf, s), () => `RTM_NEWLINK set "${pf}" vf ${vf} ${what}`);
  }
}

/** Makes the PF-side operations for a command (the shipped plugin: NetlinkPfOps over the host socket). */
type PfOpsFactory = (nl: NetlinkSocket, log: Logger) => PfOps;

type VfStep = "vlan" | "mac" | "rate" | "spoofchk" | "trust" | "link_state";

interface Step {
  step: VfStep;
  settings: VfSettings;
  what: string;
}

/** The PF-side steps for this config, in apply order (as sriov-cni: vlan, mac, rate, spoofchk, trust, state). */
function applySteps(cfg: SriovConfig, vlan: number, mac: string | undefined): Step[] {
  const steps: Step[] = [];
  const proto = cfg.vlanProto ?? "802.1Q";
  // The VLAN is always set (0 = untagged) so that a VF left tagged by someone else is not inherited.
  steps.push({
    step: "vlan",
    settings: { vlan, qos: cfg.vlanQoS ?? 0, ...(proto === "802.1ad" ? { vlanProto: proto } : {}) },
    what: `vlan ${vlan} qos ${cfg.vlanQoS ?? 0} proto ${proto}`,
  });
  if (mac) steps.push({ step: "mac", settings: { mac }, what: `mac ${mac}` });
  if (cfg.minTxRate !== undefined || cfg.maxTxRate !== undefined) {
    const min = cfg.minTxRate ?? 0,
      max = cfg.maxTxRate ?? 0;
    steps.push({ step: "rate", settings: { minTxRate: min, maxTxRate: max }, what: `min_tx_rate ${min} max_tx_rate ${max}` });
  }
  if (cfg.spoofchk !== undefined)
    steps.push({ step: "spoofchk", settings: { spoofChk: cfg.spoofchk }, what: `spoofchk ${cfg.spoofchk ? "on" : "off"}` });
  if (cfg.trust !== undefined) steps.push({ step: "trust", settings: { trust: cfg.trust }, what: `trust ${cfg.trust ? "on" : "off"}` });
  if (cfg.linkState !== undefined)
    steps.push({ step: "link_state", settings: { linkState: cfg.linkState }, what: `state ${cfg.linkState}` });
  return steps;
}

/**
 * Steps that put back the original values of `applied`, in reverse apply order: link state, trust,
 * spoofchk (so spoofchk is back before the admin MAC changes), rate, MAC, VLAN last.
 */
function restoreSteps(applied: VfStep[], orig: VfInfo): Step[] {
  const out: Step[] = [];
  for (const step of [...applied].reverse()) {
    if (step === "vlan") {
      out.push({
        step,
        settings: {
          vlan: orig.vlan,
          qos: orig.qos,
          ...(orig.vlanProto === "802.1ad" && orig.vlan ? { vlanProto: "802.1ad" as const } : {}),
        },
        what: `vlan ${orig.vlan} qos ${orig.qos} proto ${orig.vlanProto}`,
      });
    } else if (step === "mac") out.push({ step, settings: { mac: orig.mac }, what: `mac ${orig.mac}` });
    else if (step === "rate")
      out.push({
        step,
        settings: { minTxRate: orig.minTxRate, maxTxRate: orig.maxTxRate },
        what: `min_tx_rate ${orig.minTxRate} max_tx_rate ${orig.maxTxRate}`,
      });
    else if (step === "spoofchk")
      out.push({ step, settings: { spoofChk: orig.spoofChk ?? true }, what: `spoofchk ${(orig.spoofChk ?? true) ? "on" : "off"}` });
    else if (step === "trust") out.push({ step, settings: { trust: orig.trust ?? false }, what: `trust ${orig.trust ? "on" : "off"}` });
    else out.push({ step, settings: { linkState: orig.linkState ?? "auto" }, what: `state ${orig.linkState ?? "auto"}` });
  }
  return out;
}

/** vf: the VF's PF-side settings before ADD; set: what ADD set (CHECK compares the VF with it). */
interface SriovExtra {
  pf: string;
  pfPci: string;
  vfIndex: number;
  dpdk: boolean;
  vf: VfInfo;
  applied: VfStep[];
  set?: VfSettings;
}
/** netdev: the VF's host netdev as ADD found it, and its MAC in the pod (to take it back without the state file). */
interface VfRecord {
  containerId: string;
  ifName: string;
  network: string;
  netns: string;
  stateFile: string;
  netdev?: { name: string; podMac: string; kind?: string };
}

type Ctx = CniContext<SriovConfig>;

const recordPath = (dir: string, pci: string) => join(dir, `vf-${pci}.json`);
const lockPath = (dir: string, pci: string) => join(dir, `vf-${pci}.lock`);
const statePath = (cfg: SriovConfig, ctx: Ctx) =>
  attachmentStatePath(cfg.stateDir, { network: ctx.conf.name, containerId: ctx.containerId, ifName: ctx.ifName });

/** Restores the VF's PF-side settings and its netdev; tolerates a VF or netdev that is gone. */
function restoreVf(host: NetlinkSocket, ops: PfOps, st: AttachmentState, cfg: SriovConfig, log: Logger): void {
  const x = st.extra as unknown as SriovExtra;
  let error: unknown;
  // PF side first: once the admin MAC is back, drivers that pin an administratively set MAC
  // (iavf/ice without trust) accept the netdev's own MAC being set back.
  if (!exists(join(cfg.sysfsRoot, "bus/pci/devices", x.pfPci, `virtfn${x.vfIndex}`))) {
    log.warn("VF no longer exists (sriov_numvfs changed or the node rebooted); PF-side settings not restored", { pf: x.pf, vf: x.vfIndex });
  } else {
    for (const s of restoreSteps(x.applied, x.vf)) {
      try {
        ops.setVf(x.pf, x.vfIndex, s.settings, s.what);
      } catch (e) {
        log.warn("could not restore a VF setting", { pf: x.pf, vf: x.vfIndex, step: s.what, error: (e as Error).message });
        error ??= e;
      }
    }
  }
  if (!x.dpdk) {
    try {
      returnToHost(host, st, { log, sysfsRoot: cfg.sysfsRoot });
    } catch (e) {
      error ??= e;
    }
  }
  if (error) throw error;
}

/** Under the VF lock: refuse a VF held by a live namespace; restore and clear a stale holder. */
function claimVf(host: NetlinkSocket, ops: PfOps, cfg: SriovConfig, ctx: Ctx, vf: VfDevice): void {
  const rec = readJson<VfRecord>(recordPath(cfg.stateDir, vf.vfPci));
  if (!rec) return;
  if (rec.containerId === ctx.containerId && rec.ifName === ctx.ifName) {
    throw new CniError(
      CniCode.DeviceBusy,
      `VF ${vf.vfPci} is already attached to this container as ${ctx.ifName}`,
      "run DEL for this attachment first",
    );
  }
  if (rec.netns && exists(rec.netns)) {
    throw new CniError(
      CniCode.TryAgainLater,
      `VF ${vf.vfPci} (${vf.pfName} vf ${vf.vfIndex}) is held by container ${rec.containerId} ` +
        `(${rec.ifName} in ${rec.netns}), whose network namespace still exists`,
      "the device plugin gave out a VF that is still in use; the runtime retries; " +
        `the VF is free once DEL of that attachment (network ${rec.network}) runs or its namespace is gone`,
    );
  }
  ctx.log.warn("clearing the stale record of a VF whose pod namespace is gone", { vf: vf.vfPci, containerId: rec.containerId });
  const stale = readJson<AttachmentState>(rec.stateFile);
  if (stale) {
    try {
      restoreVf(host, ops, stale, cfg, ctx.log);
    } catch (e) {
      ctx.log.warn("restoring the stale holder's VF state failed; continuing with the VF as it is", { error: (e as Error).message });
    }
    removeFile(rec.stateFile);
  }
  removeFile(recordPath(cfg.stateDir, vf.vfPci));
}

async function add(ctx: Ctx, pfOps: PfOpsFactory): Promise<Result> {
  // the bandwidth capability's egressRate as max_tx_rate, unless the config sets rates
  const cfg = { ...ctx.pluginConfig, ...vfRateFromBandwidth(ctx.conf, ctx.pluginConfig, ctx.log) };
  const log = ctx.log;
  const mac = ctx.requestedMac ? unicastMac(ctx.requestedMac, "runtimeConfig.mac / CNI_ARGS MAC") : cfg.mac;
  const host = NetlinkSocket.open();
  let pod: Netns | undefined; // none for a DPDK VF: nothing goes into the pod's network namespace
  try {
    const vf = resolveVf(cfg);
    if (!vf.dpdk) {
      if (!vf.netdev)
        throw new CniError(
          CniCode.DeviceNotFound,
          `VF ${vf.vfPci} has no netdev (driver ${vf.driver ?? "none"})`,
          "bind the VF to its kernel driver (e.g. iavf, mlx5_core) or to vfio-pci for DPDK",
        );
      pod = openPodNetns(ctx.netns);
      refuseExistingIfName(pod, ctx.ifName);
    }
    const podNs = pod;
    ensureStateDir(cfg.stateDir, PLUGIN);
    const ops = pfOps(host, log);
    return await withUndo(log, async (undo) => {
      const alloc = await ipamOf(ctx)?.add(undo);
      if (cfg.vlan !== undefined && alloc?.vlan !== undefined && alloc.vlan !== cfg.vlan)
        log.warn("the config's vlan overrides the pool's", { config: cfg.vlan, pool: alloc.vlan });
      const vlan = cfg.vlan ?? alloc?.vlan ?? 0;
      if ((cfg.vlanQoS || cfg.vlanProto === "802.1ad") && vlan === 0) {
        throw invalid(
          "vlanQoS/vlanProto",
          "need a VLAN, and neither the config nor the pool has one",
          'set "vlan" or remove vlanQoS/vlanProto',
        );
      }
      const ips: IpConfig[] = alloc?.result.ips ?? [];
      const podLink = withFileLock(lockPath(cfg.stateDir, vf.vfPci), `VF ${vf.vfPci}`, () => {
        claimVf(host, ops, cfg, ctx, vf);
        const netdev = vf.dpdk ? undefined : findLinkByName(host, vf.netdev!);
        if (!vf.dpdk && !netdev) {
          throw new CniError(
            CniCode.DeviceBusy,
            `VF netdev ${vf.netdev} (${vf.vfPci}) is not in the host network namespace`,
            "another pod or agent holds it; DEL that attachment first",
          );
        }
        const steps = applySteps(cfg, vlan, mac);
        const path = statePath(cfg, ctx);
        const extra: SriovExtra = {
          pf: vf.pfName,
          pfPci: vf.pfPci,
          vfIndex: vf.vfIndex,
          dpdk: vf.dpdk,
          vf: ops.readVf(vf.pfName, vf.vfIndex),
          applied: steps.map((s) => s.step),
          set: Object.assign({}, ...steps.map((s) => s.settings)) as VfSettings,
        };
        const st: AttachmentState = {
          ...attachmentHeader(ctx, PLUGIN),
          pciAddress: vf.vfPci,
          original: netdev ? snapshotDevice(host, netdev) : noNetdev(),
          podMac: mac ?? netdev?.mac ?? "",
          extra: extra as unknown as Record<string, unknown>,
        };
        writeDurable(path, st); // before the first change
        undo.push(`restore VF ${vf.vfPci}`, () => {
          try {
            restoreVf(host, ops, st, cfg, log);
          } finally {
            removeFile(recordPath(cfg.stateDir, vf.vfPci));
            removeFile(path);
          }
        });
        writeDurable(recordPath(cfg.stateDir, vf.vfPci), {
          containerId: ctx.containerId,
          ifName: ctx.ifName,
          network: ctx.conf.name,
          netns: ctx.netns,
          stateFile: path,
          ...(netdev ? { netdev: { name: netdev.name, podMac: mac ?? netdev.mac, ...(netdev.kind ? { kind: netdev.kind } : {}) } } : {}),
        } satisfies VfRecord);
        for (const s of steps) ops.setVf(vf.pfName, vf.vfIndex, s.settings, s.what);
        if (!netdev || !podNs) return undefined;
        const moved = moveIntoPod(host, netdev, podNs, ctx.ifName, "bsv", log);
        st.podIndex = moved.link.index;
        if (moved.removedAltNames.length) st.removedAltNames = moved.removedAltNames; // the undo step sees them too
        writeDurable(path, st);
        return configurePodInterface(podNs, moved.link.index, {
          ifName: ctx.ifName,
          ips,
          routes: alloc?.result.routes ?? [],
          log,
          ...podNetOptions(ctx.conf),
          ...(cfg.mtu ? { mtu: cfg.mtu } : {}),
          ...(mac ? { mac } : {}),
        });
      });
      return extendResult(ctx.conf.prevResult, {
        interfaces: [
          podLink
            ? { name: ctx.ifName, mac: podLink.mac, mtu: podLink.mtu, sandbox: ctx.netns, pciID: vf.vfPci }
            : { name: ctx.ifName, sandbox: ctx.netns, pciID: vf.vfPci },
        ],
        ips: ips.map((ip): IpConfig => ({ ...ip, interface: 0 })),
        routes: alloc?.result.routes ?? [],
        dns: ctx.conf.dns ?? alloc?.result.dns ?? {},
      });
    });
  } catch (e) {
    throw toCniError(e, `${PLUGIN} ADD ${ctx.ifName}`);
  } finally {
    pod?.close();
    host.close();
  }
}

/** Gives the VF of `st` back (PF side and netdev) unless its VF record names another attachment. */
function giveBackVf(ctx: Ctx, pfOps: PfOpsFactory, host: NetlinkSocket, st: AttachmentState): void {
  const cfg = ctx.pluginConfig;
  const x = st.extra as unknown as SriovExtra;
  const rec = readJson<VfRecord>(recordPath(cfg.stateDir, st.pciAddress!));
  if (rec && (rec.containerId !== st.containerId || rec.ifName !== st.ifName)) {
    ctx.log.warn("the VF now belongs to another attachment; not touching it", { vf: st.pciAddress, holder: rec.containerId });
    return;
  }
  restoreVf(host, pfOps(host, ctx.log), st, cfg, ctx.log);
  removeFile(recordPath(cfg.stateDir, st.pciAddress!));
  ctx.log.info("VF given back", { vf: st.pciAddress, pf: x.pf, index: x.vfIndex });
}

const vfLock = (cfg: SriovConfig, st: AttachmentState) => ({ file: lockPath(cfg.stateDir, st.pciAddress!), what: `VF ${st.pciAddress}` });

async function del(ctx: Ctx, pfOps: PfOpsFactory): Promise<void> {
  const cfg = ctx.pluginConfig;
  const path = statePath(cfg, ctx);
  if (!exists(path)) {
    try {
      resetWithoutState(ctx, pfOps);
    } catch (e) {
      ctx.log.warn("DEL without a state file: could not reset the VF", { error: (e as Error).message });
    }
  }
  await giveBackDevice(ctx, {
    path,
    lock: (st) => vfLock(cfg, st),
    doing: (st) => `${PLUGIN} DEL ${ctx.ifName}: give VF ${st.pciAddress} back`,
    restore: (host, st) => giveBackVf(ctx, pfOps, host, st),
  });
}

/** The known neutral PF-side state of a VF whose original state is lost, in restore order. */
const NEUTRAL_STEPS: Step[] = [
  { step: "link_state", settings: { linkState: "auto" }, what: "state auto" },
  { step: "trust", settings: { trust: false }, what: "trust off" },
  { step: "spoofchk", settings: { spoofChk: true }, what: "spoofchk on" },
  { step: "rate", settings: { minTxRate: 0, maxTxRate: 0 }, what: "min_tx_rate 0 max_tx_rate 0" },
  { step: "mac", settings: { mac: "00:00:00:00:00:00" }, what: "mac 00:00:00:00:00:00" },
  { step: "vlan", settings: { vlan: 0, qos: 0 }, what: "vlan 0 qos 0" },
];

/**
 * DEL when the attachment's state file is lost but the VF record still names this attachment:
 * the VF's original settings are unknown, so it goes back to a known neutral state (VLAN 0,
 * spoofchk on, trust off, no rates, admin MAC zeroed where the driver allows, link state auto)
 * and its netdev returns to the host under its recorded name with the PF's MTU.
 */
function resetWithoutState(ctx: Ctx, pfOps: PfOpsFactory): void {
  const cfg = ctx.pluginConfig;
  let vf: VfDevice;
  try {
    vf = resolveVf(cfg);
  } catch (e) {
    ctx.log.info("no state file and the VF cannot be resolved from the config; nothing to reset", { error: (e as Error).message });
    return;
  }
  withFileLock(lockPath(cfg.stateDir, vf.vfPci), `VF ${vf.vfPci}`, () => {
    const rec = readJson<VfRecord>(recordPath(cfg.stateDir, vf.vfPci));
    if (!rec || rec.containerId !== ctx.containerId || rec.ifName !== ctx.ifName || rec.network !== ctx.conf.name) {
      ctx.log.info("no state file and no VF record of this attachment; nothing to give back", { vf: vf.vfPci, holder: rec?.containerId });
      return;
    }
    ctx.log.warn(
      "the attachment's state file is lost: resetting the VF to a neutral state (VLAN 0, spoofchk on, trust off, rates 0, " +
        "admin MAC zeroed, link state auto) and taking its netdev back with the PF's MTU",
      { vf: vf.vfPci, pf: vf.pfName, index: vf.vfIndex },
    );
    const host = NetlinkSocket.open();
    try {
      const ops = pfOps(host, ctx.log);
      for (const s of NEUTRAL_STEPS) {
        try {
          ops.setVf(vf.pfName, vf.vfIndex, s.settings, s.what);
        } catch (e) {
          ctx.log.warn("the driver refused a neutral VF setting", { step: s.what, error: (e as Error).message });
        }
      }
      if (rec.netdev && !vf.dpdk) {
        const pfMtu = findLinkByName(host, vf.pfName)?.mtu ?? 1500;
        const st: AttachmentState = {
          version: 1,
          plugin: PLUGIN,
          network: rec.network,
          containerId: rec.containerId,
          ifName: rec.ifName,
          netns: ctx.netns || rec.netns,
          pciAddress: vf.vfPci,
          podMac: rec.netdev.podMac,
          original: {
            name: rec.netdev.name,
            mac: "",
            mtu: pfMtu,
            up: false,
            altNames: [],
            addresses: [],
            routes: [],
            ...(rec.netdev.kind ? { kind: rec.netdev.kind } : {}),
          },
        };
        returnToHost(host, st, { log: ctx.log, sysfsRoot: cfg.sysfsRoot });
      }
    } finally {
      host.close();
    }
    removeFile(recordPath(cfg.stateDir, vf.vfPci));
  });
}

/** CHECK: the pod side as for any moved device, and the VF's PF-side settings as ADD set them. */
async function check(ctx: Ctx, pfOps: PfOpsFactory): Promise<void> {
  const cfg = ctx.pluginConfig;
  const { st } = await checkMovedDevice(ctx, {
    path: statePath(cfg, ctx),
    plugin: PLUGIN,
    inPod: (st) => !(st.extra as unknown as SriovExtra).dpdk,
  });
  const x = st.extra as unknown as SriovExtra;
  if (!x.set) return; // recorded before Berth kept what it set
  const host = NetlinkSocket.open();
  try {
    const now = pfOps(host, ctx.log).readVf(x.pf, x.vfIndex);
    const drift = vfDrift(x.set, now);
    if (drift.length) {
      throw mismatch(
        `VF ${st.pciAddress} (${x.pf} vf ${x.vfIndex}) no longer has the settings ADD gave it: ${drift.join(", ")}`,
        "something changed the VF on the PF (ip link set PF vf N ...); delete and re-create the pod sandbox, or set it back",
      );
    }
  } catch (e) {
    throw toCniError(e, `${PLUGIN} CHECK ${ctx.ifName}: VF ${st.pciAddress}`);
  } finally {
    host.close();
  }
}

/** What of `want` the VF no longer has, as "vlan 0 (ADD set 100)". */
function vfDrift(want: VfSettings, now: VfInfo): string[] {
  const out: string[] = [];
  const differ = (what: string, has: unknown, set: unknown) => {
    if (has !== set) out.push(`${what} ${String(has)} (ADD set ${String(set)})`);
  };
  if (want.vlan !== undefined) {
    differ("vlan", now.vlan, want.vlan);
    differ("qos", now.qos, want.qos ?? 0);
    if (want.vlan) differ("vlan protocol", now.vlanProto, want.vlanProto ?? "802.1Q");
  }
  if (want.mac !== undefined) differ("mac", now.mac.toLowerCase(), want.mac.toLowerCase());
  if (want.minTxRate !== undefined) differ("min_tx_rate", now.minTxRate, want.minTxRate);
  if (want.maxTxRate !== undefined) differ("max_tx_rate", now.maxTxRate, want.maxTxRate);
  const onOff = (b: boolean | undefined) => (b === undefined ? "unknown" : b ? "on" : "off");
  if (want.spoofChk !== undefined && now.spoofChk !== undefined) differ("spoofchk", onOff(now.spoofChk), onOff(want.spoofChk));
  if (want.trust !== undefined && now.trust !== undefined) differ("trust", onOff(now.trust), onOff(want.trust));
  if (want.linkState !== undefined && now.linkState !== undefined) differ("link state", now.linkState, want.linkState);
  return out;
}

/** berth-sriov with the given PF-side operations (a test build passes a recording double). */
export function sriovPluginWith(pfOps: PfOpsFactory): CniPlugin<SriovConfig> {
  return withIpamDefaults(
    definePlugin<SriovConfig>({
      name: PLUGIN,
      parse: (conf) => parseSriovConfig(conf),
      add: (ctx) => add(ctx, pfOps),
      del: (ctx) => del(ctx, pfOps),
      check: (ctx) => check(ctx, pfOps),
      gc: async (ctx) => {
        await ipamOf(ctx)?.gc();
        collectDeviceGarbage(ctx, {
          stateDir: ctx.pluginConfig.stateDir,
          plugin: PLUGIN,
          lock: (st) => vfLock(ctx.pluginConfig, st),
          restore: (host, st) => giveBackVf(ctx, pfOps, host, st),
        });
      },
    }),
  );
}

export const sriovPlugin = sriovPluginWith((nl) => new NetlinkPfOps(nl));
