// berth-macvlan: puts a macvlan of a host NIC, or of its VLAN sub-interface master.vlan, into the
// pod. The VLAN comes from the config, else from the pool ipamd allocated from (so IPAM runs
// before any link is made). See docs/plugins/macvlan.md for the config keys.
import { ipToBytes, parseCidr, type Cidr } from "../../lib/ip";
import { ipamOf, releaseMeanwhile, type IpamAllocation } from "../ipam/client";
import {
  addMacvlan,
  deleteLink,
  findLinkByIndex,
  findLinkByName,
  getLinkByName,
  renameLink,
  type Link,
  type MacvlanMode,
} from "../netlink/link";
import { bufferToMac } from "../netlink/wire";
import { NetlinkSocket, isNetlinkError } from "../netlink/socket";
import { Netns, NetnsError } from "../netns";
import { checkPodInterface, isOwnNetns, openPodNetns, refuseExistingIfName, usePodNetns } from "../pod/check";
import { bandwidthLimits, checkBurstFitsMtu, checkPodShaping, removePodIfb, shapePodInterface } from "../pod/bandwidth";
import { configurePodInterface, podNetOptions } from "../pod/setup";
import { extendResult, findInterface, ipsForInterface, mismatch, requirePrevResult } from "../skel/chain";
import type { NetConf } from "../skel/config";
import { validateIfName } from "../skel/env";
import { CniError, CniCode, toCniError } from "../skel/errors";
import type { Logger } from "../skel/log";
import { definePlugin, type CniContext } from "../skel/plugin";
import type { IpConfig, Result } from "../skel/result";
import { withUndo } from "../skel/undo";
import { invalid, unicastMac } from "./config";
import {
  DEFAULT_STATE_DIR,
  attachmentKey,
  ensureVlanLink,
  readRecord,
  recordAttachment,
  recordNames,
  recordsHolding,
  releaseVlanLink,
  vlanLinkName,
  withVlanLock,
} from "./vlan";

type PodMacvlanMode = Exclude<MacvlanMode, "source">;
const MODES: PodMacvlanMode[] = ["bridge", "private", "vepa", "passthru"];

interface MacvlanConfig {
  master: string;
  /** 0: untagged on the master (unless the pool carries a VLAN) */
  vlan: number;
  mode: PodMacvlanMode;
  /** 0: the parent's */
  mtu: number;
  mac?: string;
  macFromIP: boolean;
  stateDir: string;
}

function parseMacvlanConfig(conf: NetConf): MacvlanConfig {
  const raw = conf.raw;
  if (typeof raw.master !== "string" || raw.master === "") {
    throw invalid("master", "is missing", 'set "master" to the host NIC that carries the pod traffic, e.g. "master": "eth0"');
  }
  try {
    validateIfName(raw.master);
  } catch (e) {
    throw invalid(
      "master",
      `"${raw.master}" is not an interface name (${(e as CniError).message.replace(/^CNI_IFNAME /, "")})`,
      "use the name of a host interface, 1-15 characters without '/', ':' or spaces",
    );
  }
  const cfg: MacvlanConfig = { master: raw.master, vlan: 0, mode: "bridge", mtu: 0, macFromIP: false, stateDir: DEFAULT_STATE_DIR };

  if (raw.vlan !== undefined && raw.vlan !== null) {
    if (typeof raw.vlan !== "number" || !Number.isInteger(raw.vlan) || raw.vlan < 0 || raw.vlan > 4094) {
      throw invalid(
        "vlan",
        `${JSON.stringify(raw.vlan)} is not a VLAN ID`,
        "use an integer 1-4094, or 0 (or leave it out) for untagged traffic on the master or the pool's VLAN",
      );
    }
    cfg.vlan = raw.vlan;
  }
  if (raw.mode !== undefined && raw.mode !== null && raw.mode !== "") {
    if (typeof raw.mode !== "string" || !(MODES as string[]).includes(raw.mode)) {
      throw invalid("mode", `${JSON.stringify(raw.mode)} is not a macvlan mode`, `use one of ${MODES.join(", ")} (default bridge)`);
    }
    cfg.mode = raw.mode as PodMacvlanMode;
  }
  if (raw.mtu !== undefined && raw.mtu !== null) {
    if (typeof raw.mtu !== "number" || !Number.isInteger(raw.mtu) || (raw.mtu !== 0 && (raw.mtu < 68 || raw.mtu > 65535))) {
      throw invalid(
        "mtu",
        `${JSON.stringify(raw.mtu)} is not an MTU`,
        "use 68-65535 (at most the master's MTU), or 0 to use the master's MTU",
      );
    }
    cfg.mtu = raw.mtu;
  }
  if (raw.mac !== undefined && raw.mac !== null && raw.mac !== "") cfg.mac = unicastMac(raw.mac, "mac");
  if (raw.macFromIP !== undefined && raw.macFromIP !== null) {
    if (typeof raw.macFromIP !== "boolean")
      throw invalid("macFromIP", `${JSON.stringify(raw.macFromIP)} is not true or false`, 'use "macFromIP": true');
    cfg.macFromIP = raw.macFromIP;
  }
  if (cfg.macFromIP && !conf.ipam) {
    throw invalid("macFromIP", "needs an ipam section", "macFromIP derives the MAC from the pod's IP; add ipam or remove macFromIP");
  }
  if (raw.stateDir !== undefined && raw.stateDir !== null) {
    if (typeof raw.stateDir !== "string" || !raw.stateDir.startsWith("/")) {
      throw invalid("stateDir", "is not an absolute path", `remove it to use ${DEFAULT_STATE_DIR}`);
    }
    cfg.stateDir = raw.stateDir;
  }
  return cfg;
}

/**
 * The MAC derived from the pod's address, as ovn-kubernetes does: 0a:58 + the 4 bytes of the
 * first IPv4 address (10.1.0.5 -> 0a:58:0a:01:00:05); without IPv4, the last 4 bytes of the first
 * IPv6 address. A sticky IP that comes back brings the same MAC, so switches' and neighbours' ARP
 * caches stay right.
 */
export function macFromIp(addresses: string[]): string | undefined {
  let v4: Cidr | undefined, v6: Cidr | undefined; // loops, not find(): see docs/architecture.md, "Plugins"
  for (const a of addresses) {
    const c = parseCidr(a);
    if (c?.family === 4) v4 ??= c;
    else if (c?.family === 6) v6 ??= c;
  }
  const bytes = v4 ? ipToBytes(4, v4.address) : v6 ? ipToBytes(6, v6.address).subarray(12) : undefined;
  return bytes && `0a:58:${bufferToMac(bytes)}`;
}

type Ctx = CniContext<MacvlanConfig>;

const PICK_ANOTHER_MAC = "pick a different mac (runtimeConfig.mac, args.cni.mac, CNI_ARGS MAC or mac), or leave it out for a random one";
const MISSING_MASTER_FIX = "set master to an existing host interface (see `ip link show`); the NIC may have another name on this node";

function lookupMaster(nl: NetlinkSocket, cfg: MacvlanConfig): Link {
  const master = findLinkByName(nl, cfg.master);
  if (!master) throw invalid("master", `"${cfg.master}" does not exist in the host network namespace`, MISSING_MASTER_FIX);
  return master;
}

/** FNV-1a over `text` with a seed: a cheap stable hash (node:crypto costs every plugin start). */
function fnv1a(text: string, seed = 0x811c9dc5): string {
  let h = seed >>> 0;
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193) >>> 0; // no iterator: docs/architecture.md, "Plugins"
  return h.toString(16).padStart(8, "0");
}

/**
 * What marks the pod's macvlan as this attachment's: its alias (set with the rename), and the
 * temporary name it has until then. DEL deletes only links that carry them, so a DEL after a
 * failed ADD never takes another network's eth0, and a killed ADD's temporary link goes too.
 */
export function ownership(ctx: CniContext<unknown>): { alias: string; tmpName: string } {
  const key = attachmentKey(ctx.conf.name, ctx.containerId, ctx.ifName);
  const hash = fnv1a(key) + fnv1a(key, 0x01000193) + fnv1a(key, 0x9e3779b9) + fnv1a(key, 0x85ebca6b);
  return { alias: `berth-macvlan ${hash}`, tmpName: `bmv${hash.slice(0, 8)}` };
}

/**
 * What ADD checks on the host and in the pod before it makes a link: the master, MTU, burst and MAC
 * against it, the pod's namespace and interface name, and a temporary link a killed ADD left.
 * Returns the master, the attachment's ownership marks and the pod's namespace, opened once (its fd creates the macvlan inside, its
 * socket does all pod-side netlink work; the caller closes it).
 */
function checkHostAndPod(ctx: Ctx, host: NetlinkSocket, bandwidth: ReturnType<typeof bandwidthLimits>, requested?: string) {
  const cfg = ctx.pluginConfig;
  const master = lookupMaster(host, cfg);
  if (cfg.mtu > master.mtu) {
    throw invalid(
      "mtu",
      `${cfg.mtu} is larger than the MTU of master ${master.name} (${master.mtu})`,
      `use at most ${master.mtu}, or 0 for the master's MTU`,
    );
  }
  checkBurstFitsMtu(bandwidth, cfg.mtu || master.mtu, ctx.ifName);
  const wanted = requested ?? cfg.mac;
  if (wanted && wanted === master.mac) {
    throw new CniError(
      CniCode.InvalidConfig,
      `cannot use MAC ${wanted} for the pod: it is the MAC of master ${master.name}`,
      `a macvlan needs its own MAC; ${PICK_ANOTHER_MAC}`,
    );
  }
  const podNs = openPodNetns(ctx.netns);
  try {
    refuseExistingIfName(podNs, ctx.ifName);
    const own = ownership(ctx);
    deleteOwnLink(podNs.nl, own.tmpName, own, ctx.log); // a killed ADD of this attachment left it
    return { master, podNs, own };
  } catch (e) {
    podNs.close();
    throw e;
  }
}

async function add(ctx: Ctx): Promise<Result> {
  const cfg = ctx.pluginConfig;
  const log = ctx.log;
  const bandwidth = bandwidthLimits(ctx.conf);
  const requested = ctx.requestedMac ? unicastMac(ctx.requestedMac, "runtimeConfig.mac / CNI_ARGS MAC") : undefined;
  const host = NetlinkSocket.open();
  let pod: Netns | undefined;
  try {
    // Everything that can be refused is refused before anything changes, IPAM included: IPAM answers a
    // repeated ADD of a live attachment with its addresses, and only ipamd says so (an undo keeps them then).
    const { master, podNs, own } = checkHostAndPod(ctx, host, bandwidth, requested);
    pod = podNs;
    return await withUndo(log, async (undo) => {
      const alloc = await ipamOf(ctx)?.add(undo);
      // Loops here and below, not map(): see docs/architecture.md, "Plugins".
      const addresses: string[] = [];
      const ips: IpConfig[] = [];
      for (const ip of alloc?.result.ips ?? []) {
        addresses.push(ip.address);
        ips.push({ ...ip, interface: 0 });
      }
      if (cfg.vlan && alloc?.vlan && alloc.vlan !== cfg.vlan) {
        log.warn("the config's vlan overrides the pool's", { configVlan: cfg.vlan, poolVlan: alloc.vlan });
      }
      const vlan = cfg.vlan || alloc?.vlan || 0;
      let mac = requested ?? cfg.mac;
      if (!mac && cfg.macFromIP) {
        mac = macFromIp(addresses);
        if (!mac)
          throw invalid("macFromIP", "is set but IPAM returned no address", "configure IPAM to return an address, or remove macFromIP");
      }
      const tmpName = own.tmpName;
      const create = (parent: Link) => {
        createMacvlan(host, ctx, cfg, parent, tmpName, mac, podNs.fd);
        undo.push(`delete macvlan ${tmpName}/${ctx.ifName} in ${ctx.netns}`, () => {
          deleteOwnLink(podNs.nl, tmpName, own, log);
          deleteOwnLink(podNs.nl, ctx.ifName, own, log);
        });
      };
      if (vlan) {
        const name = vlanLinkName(master.name, vlan);
        const key = attachmentKey(ctx.conf.name, ctx.containerId, ctx.ifName);
        withVlanLock(cfg.stateDir, name, () => {
          const link = ensureVlanLink(host, master, vlan, name, log);
          // Before the record is written: a failed write still removes a sub-interface this ADD created.
          undo.push(`release VLAN sub-interface ${name}`, () => releaseVlanLink(cfg.stateDir, name, key, log));
          recordAttachment(cfg.stateDir, name, master.name, vlan, key);
          if (cfg.mtu > link.mtu) {
            throw invalid(
              "mtu",
              `${cfg.mtu} is larger than the MTU of VLAN sub-interface ${name} (${link.mtu})`,
              `use at most ${link.mtu}, or 0`,
            );
          }
          create(link);
        });
      } else {
        create(master);
      }
      const link = configurePod(podNs, ctx, tmpName, own.alias, mac, vlan ? vlanLinkName(master.name, vlan) : master.name, alloc);
      if (bandwidth) shapePodInterface(podNs, ctx.ifName, bandwidth, undo, log);
      return extendResult(ctx.conf.prevResult, {
        interfaces: [{ name: ctx.ifName, mac: link.mac, mtu: link.mtu, sandbox: ctx.netns }],
        ips,
        routes: alloc?.result.routes ?? [],
        dns: ctx.conf.dns ?? alloc?.result.dns ?? {},
      });
    });
  } catch (e) {
    throw toCniError(e, `berth-macvlan ADD ${ctx.ifName} on ${cfg.master}`);
  } finally {
    pod?.close();
    host.close();
  }
}

function createMacvlan(
  host: NetlinkSocket,
  ctx: Ctx,
  cfg: MacvlanConfig,
  parent: Link,
  tmpName: string,
  mac: string | undefined,
  netnsFd: number,
): void {
  try {
    addMacvlan(host, {
      name: tmpName,
      parentIndex: parent.index,
      mode: cfg.mode,
      netnsFd,
      ...(cfg.mtu ? { mtu: cfg.mtu } : {}),
      ...(mac ? { mac } : {}),
    });
  } catch (e) {
    if (cfg.mode === "passthru" && isNetlinkError(e, "EINVAL", "EBUSY")) {
      throw new CniError(
        CniCode.DeviceBusy,
        `cannot create a passthru macvlan on ${parent.name}: ${(e as Error).message}`,
        `passthru mode gives the whole parent to one pod and allows one macvlan only; ` +
          `${parent.name} already has one (or has other macvlans): use bridge mode or another master/vlan`,
      );
    }
    if (isNetlinkError(e, "EADDRINUSE", "EADDRNOTAVAIL") && mac) {
      throw new CniError(
        CniCode.InvalidConfig,
        `cannot use MAC ${mac} for the pod on ${parent.name}: ${(e as Error).message}`,
        "another macvlan on this parent already has that MAC; pick a different mac (runtimeConfig.mac, CNI_ARGS MAC or mac)",
      );
    }
    throw toCniError(e, `create macvlan (mode ${cfg.mode}) on ${parent.name} in ${ctx.netns}`);
  }
}

/** Inside the pod namespace: rename with the alias, arp_notify, addresses, up, DAD, routes, announcement. Returns the final link. */
function configurePod(
  pod: Netns,
  ctx: Ctx,
  tmpName: string,
  alias: string,
  mac: string | undefined,
  parent: string,
  alloc: IpamAllocation | undefined,
): Link {
  const { ifName, log } = ctx;
  const nl = pod.nl;
  const tmp = getLinkByName(nl, tmpName);
  try {
    renameLink(nl, tmp.index, ifName, alias);
  } catch (e) {
    if (isNetlinkError(e, "EEXIST")) {
      throw new CniError(
        CniCode.DeviceBusy,
        `interface "${ifName}" already exists in network namespace ${ctx.netns}`,
        "another plugin created it meanwhile; CNI_IFNAME must name a new interface in the pod",
      );
    }
    // The kernel renames before it sets the alias: renamed without it, the link no longer shows it is
    // this attachment's and the undo would leave it. It goes here.
    const now = findLinkByIndex(nl, tmp.index);
    if (now?.name === ifName && now.alias !== alias) deleteLink(nl, tmp.index);
    throw e;
  }
  try {
    return configurePodInterface(pod, tmp.index, {
      ifName,
      ips: alloc?.result.ips ?? [],
      routes: alloc?.result.routes ?? [],
      log,
      ...podNetOptions(ctx.conf),
    });
  } catch (e) {
    // The kernel refuses to bring a macvlan up whose MAC another macvlan of the parent has.
    if (mac && isNetlinkError(e, "EADDRINUSE")) {
      throw new CniError(
        CniCode.InvalidConfig,
        `cannot use MAC ${mac} for the pod: another macvlan on ${parent} (in another pod) already has it`,
        `each macvlan on a parent needs its own MAC; ${PICK_ANOTHER_MAC}`,
      );
    }
    throw e;
  }
}

/**
 * Deletes the macvlan `name` in the pod when this attachment made it: it carries the attachment's
 * alias, or it still has the temporary name, or (made before aliases) it has prevResult's MAC.
 */
function deleteOwnLink(
  nl: NetlinkSocket,
  name: string,
  own: { alias: string; tmpName: string },
  log: Logger,
  prevMac?: string,
  beforeDelete?: () => void,
): void {
  const link = findLinkByName(nl, name);
  if (!link) return;
  if (link.kind !== "macvlan") {
    log.warn("pod interface is not a macvlan; leaving it", { name, kind: link.kind });
    return;
  }
  const mine = link.alias === own.alias || (!link.alias && (name === own.tmpName || (!!prevMac && link.mac === prevMac.toLowerCase())));
  if (!mine) {
    log.warn("pod interface was not made by this attachment; leaving it", { name, alias: link.alias, mac: link.mac });
    return;
  }
  beforeDelete?.();
  try {
    deleteLink(nl, link.index);
  } catch (e) {
    if (!isNetlinkError(e, "ENODEV")) throw e;
  }
  log.info("deleted pod interface", { name });
}

/** DEL's side of the pod: its interface goes; fine when there is no namespace or it is gone. */
function deleteFromPod(ctx: Ctx): void {
  if (!ctx.netns) return;
  if (isOwnNetns(ctx.netns)) {
    ctx.log.warn("CNI_NETNS is the plugin's own (host) namespace; nothing deleted there", { netns: ctx.netns });
    return;
  }
  let pod: Netns;
  try {
    pod = Netns.open(ctx.netns);
  } catch (e) {
    // ENOENT: the namespace is gone, and its links with it. EINVAL: the path is no longer a netns.
    if (e instanceof NetnsError && (e.code === "ENOENT" || e.code === "EINVAL")) {
      ctx.log.info("pod network namespace is gone; nothing to delete", { netns: ctx.netns });
      return;
    }
    throw e;
  }
  try {
    const own = ownership(ctx);
    const prevMac = ctx.conf.prevResult ? findInterface(ctx.conf.prevResult, ctx.ifName, ctx.netns)?.iface.mac : undefined;
    deleteOwnLink(pod.nl, own.tmpName, own, ctx.log);
    // the ifb of its shaping first, and only for our own link
    deleteOwnLink(pod.nl, ctx.ifName, own, ctx.log, prevMac, () => removePodIfb(pod.nl, ctx.ifName, ctx.log));
  } finally {
    pod.close();
  }
}

async function del(ctx: Ctx): Promise<void> {
  const cfg = ctx.pluginConfig;
  // The release goes out first and runs while the kernel deletes the link (~20 ms, blocking this
  // thread): ipamd commits it meanwhile (the request is sent, its answer read afterwards), a
  // delegated IPAM plugin runs in its own process. An IPAM failure does not stop the interface
  // removal; it is reported afterwards.
  const released = releaseMeanwhile(ctx);
  try {
    deleteFromPod(ctx);
    const key = attachmentKey(ctx.conf.name, ctx.containerId, ctx.ifName);
    for (const name of recordsHolding(cfg.stateDir, key)) releaseVlanLink(cfg.stateDir, name, key, ctx.log);
  } catch (e) {
    await released; // let the release finish before the process answers and exits
    throw toCniError(e, `berth-macvlan DEL ${ctx.ifName}`);
  }
  const ipamError = await released;
  if (ipamError) throw ipamError;
}

async function check(ctx: Ctx): Promise<void> {
  const cfg = ctx.pluginConfig;
  const prev = requirePrevResult(ctx);
  const alloc = await ipamOf(ctx)?.check();
  const found = findInterface(prev, ctx.ifName, ctx.netns);
  if (!found)
    throw mismatch(`prevResult has no interface "${ctx.ifName}" in ${ctx.netns}`, "the runtime must pass the result of ADD as prevResult");
  const ips = ipsForInterface(prev, ctx.ifName, ctx.netns);
  const vlan = cfg.vlan || alloc?.vlan || 0;
  const host = NetlinkSocket.open();
  try {
    const master = findLinkByName(host, cfg.master);
    if (!master) throw mismatch(`master "${cfg.master}" no longer exists in the host network namespace`);
    const pod = usePodNetns(ctx.netns, ({ nl }) => {
      const link = findLinkByName(nl, ctx.ifName);
      if (!link) throw mismatch(`interface "${ctx.ifName}" does not exist in ${ctx.netns}`);
      if (link.kind !== "macvlan") throw mismatch(`interface "${ctx.ifName}" is a ${link.kind ?? "plain"} link, not a macvlan`);
      if (link.macvlan?.mode !== cfg.mode)
        throw mismatch(`interface "${ctx.ifName}" is in macvlan mode ${link.macvlan?.mode}, the config says ${cfg.mode}`);
      // No MTU comparison: a later plugin of the chain (tuning) may change it, and CHECK must allow that.
      checkPodShaping(nl, ctx.ifName, bandwidthLimits(ctx.conf));
      return checkPodInterface(nl, ctx.ifName, ctx.netns, prev, ips, found.iface.mac);
    });
    if (pod.parentIndex === undefined) throw mismatch(`interface "${ctx.ifName}" has no parent link`);
    const parent = findLinkByIndex(host, pod.parentIndex);
    const parentNow = parent ? `"${parent.name}"` : `ifindex ${pod.parentIndex} (gone)`;
    if (vlan) {
      const name = vlanLinkName(master.name, vlan);
      if (parent?.kind !== "vlan" || parent.vlan?.id !== vlan || parent.parentIndex !== master.index) {
        const parentVlan = parent?.vlan ? ` (VLAN ${parent.vlan.id})` : "";
        throw mismatch(
          `interface "${ctx.ifName}" is not on VLAN ${vlan} of ${master.name}: its parent is ${parentNow}${parentVlan}, expected "${name}"`,
        );
      }
    } else if (!parent || parent.index !== master.index) {
      throw mismatch(`interface "${ctx.ifName}" is not on master ${master.name}: its parent is ${parentNow}`);
    }
  } catch (e) {
    throw toCniError(e, `berth-macvlan CHECK ${ctx.ifName}`);
  } finally {
    host.close();
  }
}

/**
 * GC: IPAM's, then the VLAN records: attachments of this network the runtime no longer lists
 * are dropped (a DEL that never came), and sub-interfaces Berth created that nobody uses go.
 */
async function gc(ctx: Ctx): Promise<void> {
  await ipamOf(ctx)?.gc();
  const cfg = ctx.pluginConfig;
  const valid = new Set((ctx.conf.validAttachments ?? []).map((a) => attachmentKey(ctx.conf.name, a.containerID, a.ifname)));
  const prefix = `${ctx.conf.name}/`;
  try {
    for (const name of recordNames(cfg.stateDir)) {
      for (const key of readRecord(cfg.stateDir, name)?.attachments ?? []) {
        if (key.startsWith(prefix) && !valid.has(key)) {
          ctx.log.info("GC: dropping VLAN attachment the runtime no longer has", { subInterface: name, attachment: key });
          releaseVlanLink(cfg.stateDir, name, key, ctx.log);
        }
      }
    }
  } catch (e) {
    throw toCniError(e, "berth-macvlan GC");
  }
}

/** STATUS: ADD would fail without the master (51: pods on it have lost connectivity), or without IPAM. */
async function status(ctx: Ctx): Promise<void> {
  const cfg = ctx.pluginConfig;
  const host = NetlinkSocket.open();
  try {
    if (!findLinkByName(host, cfg.master)) {
      throw new CniError(
        CniCode.PluginNotAvailableLimitedConnectivity,
        `master "${cfg.master}" does not exist in the host network namespace`,
        `ADD cannot create macvlans and pods on it have no connectivity; ${MISSING_MASTER_FIX}`,
      );
    }
  } finally {
    host.close();
  }
  await ipamOf(ctx)?.status();
}

export const macvlanPlugin = definePlugin<MacvlanConfig>({
  name: "berth-macvlan",
  status,
  parse: (conf) => parseMacvlanConfig(conf),
  add,
  del,
  check,
  gc,
});
