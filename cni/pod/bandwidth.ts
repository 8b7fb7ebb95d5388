// Per-pod bandwidth inside the pod's network namespace, for interfaces that have no host-side veth
// (macvlan, a moved host NIC): egress with a tbf on the pod interface; ingress by redirecting
// everything the interface receives (ingress qdisc + u32 match-all + mirred) to an ifb device in
// the pod's namespace, whose egress tbf shapes it. Limits are the `bandwidth` capability's (or the
// same keys in the config, which win, as with the reference bandwidth plugin): bits per second
// and bits. See docs/bandwidth.md.
import { addIfb } from "../netlink/ifb";
import { deleteLink, findLinkByName, getLinkByName, setLinkAlias, setLinkUp } from "../netlink/link";
import { type NetlinkSocket, isNetlinkError } from "../netlink/socket";
import {
  INGRESS_HANDLE,
  TBF_HANDLE,
  TCA_EGRESS_REDIR,
  TC_H_INGRESS,
  TC_H_ROOT,
  addIngressQdisc,
  addRedirectFilter,
  addTbf,
  deleteQdisc,
  listFilters,
  listQdiscs,
  type Qdisc,
} from "../netlink/tc";
import { Netns, NetnsError } from "../netns";
import type { NetConf } from "../skel/config";
import { CniError, CniCode } from "../skel/errors";
import type { Logger } from "../skel/log";
import type { UndoStack } from "../skel/undo";

/** One direction's token bucket, as given: bits per second and bits. */
interface RateLimit {
  rate: number;
  burst: number;
}

export interface BandwidthLimits {
  /** traffic the pod receives */
  ingress?: RateLimit;
  /** traffic the pod sends */
  egress?: RateLimit;
  /** where the limits came from, for error messages: "runtimeConfig.bandwidth." or "" (the config's top level) */
  source: string;
}

const KEYS = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"] as const;
const U32_MAX = 0xffffffff;
/** bits per second: 2^32-1 bytes/s, the most a tbf rate holds without 64-bit attributes */
const MAX_RATE_BITS = U32_MAX * 8;
const MAX_BURST_BITS = U32_MAX * 8;
/** The tbf queue holds what arrives in this time at the rate, plus the burst (as the reference plugin). */
const LATENCY_US = 25_000;
const ETH_HLEN = 14;

const invalid = (field: string, why: string, fix: string) =>
  new CniError(CniCode.InvalidConfig, `invalid network config: ${field} ${why}`, fix);
const mismatch = (what: string) => new CniError(CniCode.CheckMismatch, what, "delete and re-create the pod sandbox to repair it");

const toBytes = (bits: number) => Math.floor(bits / 8);
/** tbf queue limit in bytes for a limit, as tc computes it from `latency 25ms` */
const tbfLimit = (l: RateLimit) => Math.trunc((toBytes(l.rate) * LATENCY_US) / 1_000_000 + toBytes(l.burst));

/**
 * The limits of this attachment, or undefined for none. Code 7 naming the field for a rate
 * without a burst (or the reverse), values that are not non-negative integers, rates below
 * 8 bit/s or above 2^32-1 bytes/s, bursts above 2^32-1 bytes. A direction with rate and burst
 * both 0 is unlimited (runtimes send all four keys, 0 for the direction that has no annotation).
 */
export function bandwidthLimits(conf: NetConf): BandwidthLimits | undefined {
  let top = false; // a loop, not some(): see docs/architecture.md, "Plugins"
  for (const k of KEYS) if (conf.raw[k] !== undefined && conf.raw[k] !== null) top = true;
  const rc = conf.runtimeConfig.bandwidth;
  let entry: Record<string, unknown>;
  let source: string;
  if (top) {
    entry = conf.raw;
    source = "";
  } else if (rc !== undefined && rc !== null) {
    if (typeof rc !== "object" || Array.isArray(rc)) {
      throw invalid(
        "runtimeConfig.bandwidth",
        "is not an object",
        'the "bandwidth" capability is {"ingressRate": bits/s, "ingressBurst": bits, "egressRate": ..., "egressBurst": ...}',
      );
    }
    entry = rc as Record<string, unknown>;
    source = "runtimeConfig.bandwidth.";
  } else {
    return undefined;
  }
  const limits: BandwidthLimits = { source };
  for (const dir of ["ingress", "egress"] as const) {
    const l = direction(entry, dir, source);
    if (l) limits[dir] = l;
  }
  return limits.ingress || limits.egress ? limits : undefined;
}

function direction(entry: Record<string, unknown>, dir: "ingress" | "egress", source: string): RateLimit | undefined {
  const rateKey = `${source}${dir}Rate`,
    burstKey = `${source}${dir}Burst`;
  const num = (v: unknown, field: string): number => {
    if (v === undefined || v === null) return 0;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      throw invalid(
        field,
        `${JSON.stringify(v)} is not a non-negative integer`,
        `give ${field.endsWith("Rate") ? "the rate in bits per second, e.g. 10000000 for 10 Mbit/s" : "the burst in bits, e.g. 1000000"}`,
      );
    }
    return v;
  };
  const rate = num(entry[`${dir}Rate`], rateKey);
  const burst = num(entry[`${dir}Burst`], burstKey);
  if (rate === 0 && burst === 0) return undefined;
  if (rate === 0) {
    throw invalid(
      rateKey,
      `is ${entry[`${dir}Rate`] === undefined ? "missing" : "0"} but ${burstKey} is ${burst}: a burst needs a rate`,
      `set ${rateKey} to the limit in bits per second (> 0), ` +
        `or leave out both ${rateKey} and ${burstKey} (or set both to 0) for no ${dir} limit`,
    );
  }
  if (burst === 0) {
    throw invalid(
      burstKey,
      `is ${entry[`${dir}Burst`] === undefined ? "missing" : "0"} but ${rateKey} is ${rate}: a rate needs a burst`,
      `set ${burstKey} in bits, at least one full packet (MTU + 14 bytes, 12112 bits for MTU 1500); rate x 10 ms keeps TCP near the rate`,
    );
  }
  if (rate < 8) throw invalid(rateKey, `${rate} bit/s is less than one byte per second`, "use at least 8 bit/s (the kernel counts bytes)");
  if (rate > MAX_RATE_BITS) {
    throw invalid(rateKey, `${rate} bit/s is over 2^32-1 bytes/s`, `use at most ${MAX_RATE_BITS} bit/s (34 Gbit/s), or no limit`);
  }
  if (burst > MAX_BURST_BITS) {
    throw invalid(burstKey, `${burst} bits is over 2^32-1 bytes (4 GiB)`, `use at most ${MAX_BURST_BITS} bits`);
  }
  const l = { rate, burst };
  if (tbfLimit(l) > U32_MAX) {
    throw invalid(
      burstKey,
      `${burst} bits plus 25 ms of ${rate} bit/s overflow the 4 GiB queue of a tbf`,
      `lower ${burstKey} or ${rateKey}`,
    );
  }
  return l;
}

/** Code 7 when a burst cannot hold one full-size packet of an interface with this MTU (tbf would drop it). */
export function checkBurstFitsMtu(limits: BandwidthLimits | undefined, mtu: number, ifName: string): void {
  if (!limits) return;
  const min = mtu + ETH_HLEN;
  for (const dir of ["ingress", "egress"] as const) {
    const l = limits[dir];
    if (!l || toBytes(l.burst) >= min) continue;
    throw invalid(
      `${limits.source}${dir}Burst`,
      `${l.burst} bits (${toBytes(l.burst)} bytes) is smaller than one full-size packet ` +
        `on ${ifName} (MTU ${mtu} + ${ETH_HLEN} bytes Ethernet header = ${min} bytes)`,
      `use at least ${min * 8} bits; rate x 10 ms or more keeps TCP near the rate`,
    );
  }
}

/** The ifb that takes the ingress traffic of `ifName`, in the pod's namespace. */
export function ifbName(ifName: string): string {
  const plain = `ifb-${ifName}`;
  if (plain.length <= 15) return plain;
  // node:crypto is loaded only here (long interface names): it costs every plugin start ~1.5 ms.
  const { createHash } = process.getBuiltinModule("node:crypto");
  return `ifb-${createHash("sha256").update(ifName).digest("hex").slice(0, 11)}`;
}

const tbfOf = (index: number, l: RateLimit) => ({ index, rate: toBytes(l.rate), burst: toBytes(l.burst), latencyUs: LATENCY_US });

/** Shapes `ifName` in the pod; every step is undone (on `undo`) when a later one fails. */
export function shapePodInterface(pod: Netns, ifName: string, limits: BandwidthLimits, undo: UndoStack, log: Logger): void {
  const nl = pod.nl;
  const link = getLinkByName(nl, ifName);
  checkBurstFitsMtu(limits, link.mtu, ifName);
  if (limits.egress) {
    addTbf(nl, tbfOf(link.index, limits.egress));
    undo.push(`remove the egress tbf of ${ifName}`, () => ignoreGone(() => deleteQdisc(nl, link.index, "root")));
  }
  if (limits.ingress) {
    const name = ifbName(ifName);
    addIfb(nl, { name, mtu: link.mtu });
    undo.push(`delete ifb ${name}`, () => deleteIfbOf(nl, ifName, log));
    const ifb = getLinkByName(nl, name);
    setLinkAlias(nl, ifb.index, `berth: ingress of ${ifName}`);
    setLinkUp(nl, ifb.index);
    addTbf(nl, tbfOf(ifb.index, limits.ingress));
    addIngressQdisc(nl, link.index);
    undo.push(`remove the ingress qdisc of ${ifName}`, () => ignoreGone(() => deleteQdisc(nl, link.index, "ingress")));
    addRedirectFilter(nl, { index: link.index, ifbIndex: ifb.index });
  }
  log.info("pod interface shaped", { ifName, ingress: limits.ingress, egress: limits.egress });
}

function ignoreGone(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    // ENOENT/EINVAL: no such qdisc; ENODEV: the device went
    if (!isNetlinkError(e, "ENOENT", "EINVAL", "ENODEV")) throw e;
  }
}

/** Deletes the ifb of `ifName`'s ingress shaping, when there is one. */
function deleteIfbOf(nl: NetlinkSocket, ifName: string, log: Logger): void {
  const ifb = findLinkByName(nl, ifbName(ifName));
  if (ifb?.kind !== "ifb") return;
  ignoreGone(() => deleteLink(nl, ifb.index));
  log.info("deleted ifb", { name: ifb.name });
}

/**
 * DEL of a pod interface that is deleted next (its qdiscs and filters go with it): only the ifb of
 * its ingress shaping is a device of its own, in the pod's namespace (`nl`).
 */
export function removePodIfb(nl: NetlinkSocket, ifName: string, log: Logger): void {
  try {
    deleteIfbOf(nl, ifName, log);
  } catch (e) {
    throw new CniError(
      CniCode.NetlinkFailure,
      `remove the ingress shaping device of ${ifName}: ${(e as Error).message}`,
      "the plugin log (logFile) has the details",
    );
  }
}

/**
 * DEL: the ifb first, then the ingress qdisc (when it redirected to that ifb) and our tbf on
 * `ifName`. Nothing to do, and no error, when there is no namespace or it is gone.
 */
export function removePodShaping(netns: string, ifName: string, log: Logger): void {
  if (!netns) return;
  let ns: Netns;
  try {
    ns = Netns.open(netns);
  } catch (e) {
    if (e instanceof NetnsError && (e.code === "ENOENT" || e.code === "EINVAL")) return; // gone, and its ifb with it
    throw new CniError(
      CniCode.NetnsFailure,
      `remove the bandwidth shaping of ${ifName}: ${(e as Error).message}`,
      "check CNI_NETNS: it must be the pod's network namespace",
    );
  }
  const nl = ns.nl;
  try {
    const link = findLinkByName(nl, ifName);
    const ifbIndex = findLinkByName(nl, ifbName(ifName))?.index;
    const redirects =
      link &&
      ifbIndex !== undefined &&
      listFilters(nl, link.index, INGRESS_HANDLE).some((f) => f.actions.some((a) => a.mirred?.ifindex === ifbIndex));
    deleteIfbOf(nl, ifName, log);
    if (!link) return;
    if (redirects) ignoreGone(() => deleteQdisc(nl, link.index, "ingress"));
    const root = listQdiscs(nl, link.index).find((q) => q.parent === TC_H_ROOT);
    if (root?.kind === "tbf" && root.handle === TBF_HANDLE) ignoreGone(() => deleteQdisc(nl, link.index, "root"));
  } catch (e) {
    if (e instanceof CniError) throw e;
    throw new CniError(
      CniCode.NetlinkFailure,
      `remove the bandwidth shaping of ${ifName} in ${netns}: ${(e as Error).message}`,
      "the plugin log (logFile) has the details",
    );
  } finally {
    ns.close();
  }
}

function checkTbf(q: Qdisc | undefined, l: RateLimit, dev: string, what: string): void {
  if (q?.kind !== "tbf" || !q.tbf) throw mismatch(`${what}: ${dev} has ${q ? `a ${q.kind} root qdisc` : "no root qdisc"}, expected tbf`);
  const want = { rate: toBytes(l.rate), limit: tbfLimit(l) };
  if (q.tbf.rate !== want.rate) throw mismatch(`${what}: tbf on ${dev} has rate ${q.tbf.rate * 8} bit/s, the config says ${l.rate} bit/s`);
  // The queue limit is rate x 25 ms + burst: with the rate equal, it says whether the burst is.
  if (q.tbf.limit !== want.limit) {
    throw mismatch(
      `${what}: tbf on ${dev} has burst ${(q.tbf.limit - want.limit + toBytes(l.burst)) * 8} bits, the config says ${l.burst} bits`,
    );
  }
}

/** CHECK: the pod's shaping is what `limits` asks for (code 120 otherwise). */
export function checkPodShaping(nl: NetlinkSocket, ifName: string, limits: BandwidthLimits | undefined): void {
  const link = findLinkByName(nl, ifName);
  if (!link) throw mismatch(`interface "${ifName}" does not exist in the pod`);
  const root = listQdiscs(nl, link.index).find((q) => q.parent === TC_H_ROOT);
  if (limits?.egress) checkTbf(root, limits.egress, ifName, "egress limit");
  else if (root?.kind === "tbf" && root.handle === TBF_HANDLE)
    throw mismatch(`${ifName} has an egress tbf, but the config asks for no egress limit`);
  const name = ifbName(ifName);
  const ifb = findLinkByName(nl, name);
  if (!limits?.ingress) {
    if (ifb?.kind === "ifb")
      throw mismatch(`the pod has ifb ${name} shaping ${ifName}'s ingress, but the config asks for no ingress limit`);
    return;
  }
  if (ifb?.kind !== "ifb") throw mismatch(`ingress limit: ifb ${name} does not exist in the pod`);
  if (!ifb.up) throw mismatch(`ingress limit: ifb ${name} is down, so redirected traffic is dropped`);
  checkTbf(
    listQdiscs(nl, ifb.index).find((q) => q.parent === TC_H_ROOT),
    limits.ingress,
    name,
    "ingress limit",
  );
  if (!listQdiscs(nl, link.index).some((q) => q.parent === TC_H_INGRESS && q.kind === "ingress")) {
    throw mismatch(`ingress limit: ${ifName} has no ingress qdisc`);
  }
  const redirect = listFilters(nl, link.index, INGRESS_HANDLE).some((f) =>
    f.actions.some((a) => a.mirred?.eaction === TCA_EGRESS_REDIR && a.mirred.ifindex === ifb.index),
  );
  if (!redirect) throw mismatch(`ingress limit: no filter on ${ifName}'s ingress redirects to ifb ${name}`);
}

/** CHECK from outside the namespace: opens it, compares, and reports kernel failures as code 140. */
export function checkPodShapingIn(netns: string, ifName: string, limits: BandwidthLimits | undefined): void {
  let ns: Netns | undefined;
  try {
    ns = Netns.open(netns);
    checkPodShaping(ns.nl, ifName, limits);
  } catch (e) {
    if (e instanceof CniError) throw e;
    throw new CniError(
      CniCode.NetlinkFailure,
      `CHECK bandwidth of ${ifName} in ${netns}: ${(e as Error).message}`,
      "the pod's network namespace must exist",
    );
  } finally {
    ns?.close();
  }
}

/**
 * berth-sriov: a VF cannot shape what it receives, and shapes what it sends in hardware: the
 * capability's egressRate becomes the VF's max_tx_rate (whole Mbit/s, rounded down; the burst is
 * the NIC's); an ingress limit is refused (code 2). Rates set in the config (minTxRate/maxTxRate)
 * win: the capability is then ignored.
 */
export function vfRateFromBandwidth(
  conf: NetConf,
  cfgRates: { minTxRate?: number; maxTxRate?: number },
  log: Logger,
): { maxTxRate?: number } {
  const limits = bandwidthLimits(conf);
  if (!limits) return {};
  if (cfgRates.minTxRate !== undefined || cfgRates.maxTxRate !== undefined) {
    log.warn("the config sets the VF's rates: the bandwidth capability is ignored", { limits, ...cfgRates });
    return {};
  }
  if (limits.ingress) {
    throw new CniError(
      CniCode.UnsupportedField,
      `${limits.source}ingressRate ${limits.ingress.rate} is not supported by berth-sriov: a VF cannot shape the traffic it receives`,
      "remove the ingress limit (the kubernetes.io/ingress-bandwidth annotation) for pods on SR-IOV networks, " +
        "or police ingress on the switch; egressRate maps to the VF's max_tx_rate",
    );
  }
  const mbit = Math.floor(limits.egress!.rate / 1_000_000);
  if (mbit < 1) {
    throw invalid(
      `${limits.source}egressRate`,
      `${limits.egress!.rate} bit/s is below 1 Mbit/s, the smallest VF max_tx_rate`,
      "use at least 1000000 (1 Mbit/s)",
    );
  }
  if (mbit * 1_000_000 !== limits.egress!.rate)
    log.warn("egressRate rounded down to whole Mbit/s for the VF's max_tx_rate", { egressRate: limits.egress!.rate, maxTxRate: mbit });
  return { maxTxRate: mbit };
}
