// Traffic control: qdiscs (tbf, ingress) and filters (u32 match-all with a mirred redirect),
// their requests byte for byte as iproute2 6.1's `tc` sends them (test/fixtures/iproute2/tc-*,
// scripts/capture-tc.sh), and their dumps parsed back for CHECK.
import { readTextFile } from "../../lib/fileio";
import type { NetlinkSocket } from "./socket";
import { requestNaming } from "./link";
import {
  AF_UNSPEC,
  MessageBuilder,
  NLA_F_NESTED,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  type NlMsg,
  attrList,
  attrStr,
  parseAttrs,
} from "./wire";

const RTM_NEWQDISC = 36;
const RTM_DELQDISC = 37;
const RTM_GETQDISC = 38;
const RTM_NEWTFILTER = 44;
const RTM_GETTFILTER = 46;

export const TC_H_ROOT = 0xffffffff;
export const TC_H_INGRESS = 0xfffffff1;
/** the ingress qdisc's handle, "ffff:" */
export const INGRESS_HANDLE = 0xffff0000;
/** handle "1:" of the tbf qdiscs we add */
export const TBF_HANDLE = 0x00010000;

const TCA_KIND = 1;
const TCA_OPTIONS = 2;
const TCA_TBF_PARMS = 1;
const TCA_TBF_RTAB = 2;
const TCA_TBF_PTAB = 3;
const TCA_TBF_RATE64 = 4;
const TCA_TBF_PRATE64 = 5;
const TCA_TBF_BURST = 6;
const TCA_TBF_PBURST = 7;
const TCA_U32_SEL = 5;
const TCA_U32_ACT = 7;
const TCA_ACT_KIND = 1;
const TCA_ACT_OPTIONS = 2;
const TCA_MIRRED_PARMS = 2;
const TC_U32_TERMINAL = 1;
const TC_ACT_STOLEN = 4;
const TC_LINKLAYER_ETHERNET = 1;
export const TCA_EGRESS_REDIR = 1;
const ETH_P_ALL = 0x0003;
const TIME_UNITS_PER_SEC = 1_000_000;
const U32_MAX = 0xffffffff;

/** tc's tick_in_usec from /proc/net/psched (15.625 on every kernel since 2.6.31: 64 ns ticks). */
function ticksPerUsec(): number {
  try {
    const [t2us, us2t, clockRes] = readTextFile("/proc/net/psched")
      .trim()
      .split(/\s+/)
      .map((h) => parseInt(h, 16));
    const perUsec = (clockRes === 1_000_000_000 ? us2t : t2us) / us2t;
    const factor = clockRes / TIME_UNITS_PER_SEC;
    if (Number.isFinite(perUsec * factor) && perUsec * factor > 0) return perUsec * factor;
  } catch {
    // no /proc/net/psched: the kernel's constant
  }
  return 15.625;
}
// Read on first use: a module-level read would cost every plugin start (most never shape traffic).
let ticksPerUsecCache: number | undefined;
const ticksPerUsecOnce = (): number => (ticksPerUsecCache ??= ticksPerUsec());

/** tc_calc_xmittime: psched ticks to send `size` bytes at `rate` bytes/s (saturating at 2^32-1). */
function xmitTicks(rate: number, size: number): number {
  const usec = Math.trunc(TIME_UNITS_PER_SEC * (size / rate));
  return Math.min(U32_MAX, Math.trunc(Math.min(usec, U32_MAX) * ticksPerUsecOnce()));
}

/** Microseconds of `ticks` psched ticks. */
export const ticksToUsec = (ticks: number) => ticks / ticksPerUsecOnce();

function tcmsg(index: number, handle = 0, parent = 0, info = 0): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt8(AF_UNSPEC, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(handle >>> 0, 8);
  b.writeUInt32LE(parent >>> 0, 12);
  b.writeUInt32LE(info >>> 0, 16);
  return b;
}

/** struct tc_ratespec for `rate` bytes/s (capped at 2^32-1 as tc does; the rest goes in *_RATE64). */
function ratespec(rate: number, cellLog: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(cellLog, 0);
  b.writeUInt8(TC_LINKLAYER_ETHERNET, 1);
  b.writeUInt16LE(0, 2); // overhead
  b.writeInt16LE(-1, 4); // cell_align
  b.writeUInt16LE(0, 6); // mpu
  b.writeUInt32LE(Math.min(rate, U32_MAX), 8);
  return b;
}

/** tc_calc_rtable: the legacy 256-slot rate table the kernel still validates. */
function rateTable(rate: number, mtu: number): { table: Buffer; cellLog: number } {
  const m = mtu || 2047;
  let cellLog = 0;
  while (m >> cellLog > 255) cellLog++;
  const table = Buffer.alloc(1024);
  const r = Math.min(rate, U32_MAX);
  for (let i = 0; i < 256; i++) table.writeUInt32LE(xmitTicks(r, (i + 1) << cellLog), i * 4);
  return { table, cellLog };
}

interface TbfOptions {
  /** ifindex of the device */
  index: number;
  /** bytes per second */
  rate: number;
  /** bucket size in bytes */
  burst: number;
  /** queue limit in bytes; or give latencyUs and it is rate * latency + burst, as tc computes it */
  limit?: number;
  latencyUs?: number;
  /** bytes per second; needs mtu */
  peakRate?: number;
  /** bytes: the peak bucket (minburst) */
  mtu?: number;
}

function checkU32(v: number | undefined, what: string, min = 0): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < min || v > U32_MAX) throw new RangeError(`tbf ${what} ${v}: use an integer ${min}-${U32_MAX}`);
}

/** = `tc qdisc add dev X root handle 1: tbf rate R burst B (latency L | limit N) [peakrate P mtu M]` */
export function encodeAddTbf(o: TbfOptions): MessageBuilder {
  if (!Number.isSafeInteger(o.rate) || o.rate < 1) throw new RangeError(`tbf rate ${o.rate} bytes/s: use a positive integer`);
  checkU32(o.burst, "burst (bytes)", 1);
  checkU32(o.mtu, "mtu (bytes)", 1);
  if ((o.limit === undefined) === (o.latencyUs === undefined)) throw new TypeError("tbf: give either limit or latencyUs");
  if (o.peakRate !== undefined && (!Number.isSafeInteger(o.peakRate) || o.peakRate < 1 || !o.mtu)) {
    throw new RangeError(`tbf peak rate ${o.peakRate}: use a positive integer, with mtu`);
  }
  const mtu = o.mtu ?? 0;
  let limit = o.limit;
  if (limit === undefined) {
    let lim = (o.rate * o.latencyUs!) / TIME_UNITS_PER_SEC + o.burst;
    if (o.peakRate) lim = Math.min(lim, (o.peakRate * o.latencyUs!) / TIME_UNITS_PER_SEC + mtu);
    limit = Math.trunc(lim);
  }
  checkU32(limit, "limit (bytes)", 1);
  const rtab = rateTable(o.rate, mtu);
  const ptab = o.peakRate ? rateTable(o.peakRate, mtu) : undefined;
  const parms = Buffer.alloc(36);
  ratespec(o.rate, rtab.cellLog).copy(parms, 0);
  if (o.peakRate) ratespec(o.peakRate, ptab!.cellLog).copy(parms, 12);
  parms.writeUInt32LE(limit, 24);
  parms.writeUInt32LE(xmitTicks(Math.min(o.rate, U32_MAX), o.burst), 28);
  parms.writeUInt32LE(o.peakRate ? xmitTicks(Math.min(o.peakRate, U32_MAX), mtu) : 0, 32);
  const u64 = (v: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    return b;
  };
  const msg = new MessageBuilder(
    RTM_NEWQDISC,
    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    tcmsg(o.index, TBF_HANDLE, TC_H_ROOT),
  );
  msg.strz(TCA_KIND, "tbf");
  return msg.nest(TCA_OPTIONS, (m) => {
    m.attr(TCA_TBF_PARMS, parms).u32(TCA_TBF_BURST, o.burst);
    if (o.rate > U32_MAX) m.attr(TCA_TBF_RATE64, u64(o.rate));
    m.attr(TCA_TBF_RTAB, rtab.table);
    if (o.peakRate) {
      if (o.peakRate > U32_MAX) m.attr(TCA_TBF_PRATE64, u64(o.peakRate));
      m.u32(TCA_TBF_PBURST, mtu).attr(TCA_TBF_PTAB, ptab!.table);
    }
  });
}

/** = `tc qdisc add dev X handle ffff: ingress` */
export const encodeAddIngressQdisc = (index: number) =>
  new MessageBuilder(RTM_NEWQDISC, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, tcmsg(index, INGRESS_HANDLE, TC_H_INGRESS)).strz(
    TCA_KIND,
    "ingress",
  );

interface RedirectFilterOptions {
  /** the device whose ingress qdisc gets the filter */
  index: number;
  /** where its packets go: the ifb */
  ifbIndex: number;
  prio?: number;
}

/**
 * = `tc filter add dev X parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev IFB`:
 * every packet X receives is handed to the ifb's egress, where a tbf shapes it.
 */
export function encodeAddRedirectFilter(o: RedirectFilterOptions): MessageBuilder {
  const prio = o.prio ?? 1;
  const info = ((prio << 16) | ((ETH_P_ALL << 8) & 0xff00) | (ETH_P_ALL >> 8)) >>> 0; // TC_H_MAKE(prio << 16, htons(ETH_P_ALL))
  const mirred = Buffer.alloc(28); // struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex
  mirred.writeInt32LE(TC_ACT_STOLEN, 8);
  mirred.writeInt32LE(TCA_EGRESS_REDIR, 20);
  mirred.writeUInt32LE(o.ifbIndex, 24);
  const sel = Buffer.alloc(32); // struct tc_u32_sel with one key: mask 0, value 0 at offset 0 (matches everything)
  sel.writeUInt8(TC_U32_TERMINAL, 0);
  sel.writeUInt8(1, 2); // nkeys
  const msg = new MessageBuilder(
    RTM_NEWTFILTER,
    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    tcmsg(o.index, 0, INGRESS_HANDLE, info),
  );
  msg.strz(TCA_KIND, "u32");
  return msg.nest(TCA_OPTIONS, (m) =>
    m
      .nest(TCA_U32_ACT, (acts) =>
        acts.nest(1, (a) =>
          a.strz(TCA_ACT_KIND, "mirred").nest(TCA_ACT_OPTIONS | NLA_F_NESTED, (opt) => opt.attr(TCA_MIRRED_PARMS, mirred)),
        ),
      )
      .attr(TCA_U32_SEL, sel),
  );
}

type QdiscSlot = "root" | "ingress";

/** = `tc qdisc del dev X root` / `tc qdisc del dev X ingress` */
export function encodeDeleteQdisc(index: number, slot: QdiscSlot): MessageBuilder {
  if (slot === "root") return new MessageBuilder(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, tcmsg(index, 0, TC_H_ROOT));
  return new MessageBuilder(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, tcmsg(index, INGRESS_HANDLE, TC_H_INGRESS)).strz(TCA_KIND, "ingress");
}

/** = `tc qdisc show dev X` */
export const encodeListQdiscs = (index: number) => new MessageBuilder(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, tcmsg(index));
/** = `tc filter show dev X parent P` */
export const encodeListFilters = (index: number, parent: number) =>
  new MessageBuilder(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, tcmsg(index, 0, parent));

// ---- parsing dumps

interface Tbf {
  /** bytes per second (TCA_TBF_RATE64 when it does not fit 32 bits) */
  rate: number;
  peakRate: number;
  limit: number;
  /** the bucket in psched ticks of the rate (the kernel keeps the bucket as time) */
  bufferTicks: number;
  mtuTicks: number;
}

export interface Qdisc {
  index: number;
  handle: number;
  parent: number;
  kind: string;
  tbf?: Tbf;
}

function parseQdisc(m: NlMsg): Qdisc {
  const d = m.data;
  const a = parseAttrs(d, 20);
  const q: Qdisc = { index: d.readInt32LE(4), handle: d.readUInt32LE(8), parent: d.readUInt32LE(12), kind: attrStr(a, TCA_KIND) ?? "" };
  const opts = a.get(TCA_OPTIONS);
  if (q.kind === "tbf" && opts) {
    const o = parseAttrs(opts);
    const p = o.get(TCA_TBF_PARMS);
    if (p && p.length >= 36) {
      const rate64 = o.get(TCA_TBF_RATE64);
      const prate64 = o.get(TCA_TBF_PRATE64);
      q.tbf = {
        rate: rate64 ? Number(rate64.readBigUInt64LE(0)) : p.readUInt32LE(8),
        peakRate: prate64 ? Number(prate64.readBigUInt64LE(0)) : p.readUInt32LE(20),
        limit: p.readUInt32LE(24),
        bufferTicks: p.readUInt32LE(28),
        mtuTicks: p.readUInt32LE(32),
      };
    }
  }
  return q;
}

interface MirredAction {
  /** TCA_EGRESS_REDIR (1), TCA_EGRESS_MIRROR (2), TCA_INGRESS_REDIR (3), TCA_INGRESS_MIRROR (4) */
  eaction: number;
  ifindex: number;
}

interface Filter {
  index: number;
  kind: string;
  parent: number;
  prio: number;
  /** host byte order, e.g. 0x0003 for ETH_P_ALL */
  protocol: number;
  handle: number;
  /** u32: the selector's keys as [mask, value] pairs; absent on a hash-table node */
  u32Keys?: [number, number][];
  actions: { kind: string; mirred?: MirredAction }[];
}

function parseFilter(m: NlMsg): Filter {
  const d = m.data;
  const a = parseAttrs(d, 20);
  const info = d.readUInt32LE(16);
  const f: Filter = {
    index: d.readInt32LE(4),
    handle: d.readUInt32LE(8),
    parent: d.readUInt32LE(12),
    kind: attrStr(a, TCA_KIND) ?? "",
    prio: info >>> 16,
    protocol: ((info & 0xff) << 8) | ((info >> 8) & 0xff),
    actions: [],
  };
  const opts = a.get(TCA_OPTIONS);
  if (!opts) return f;
  const o = parseAttrs(opts);
  const sel = o.get(TCA_U32_SEL);
  if (f.kind === "u32" && sel && sel.length >= 16) {
    const nkeys = sel.readUInt8(2);
    f.u32Keys = [];
    for (let i = 0; i < nkeys && 16 + i * 16 + 8 <= sel.length; i++)
      f.u32Keys.push([sel.readUInt32BE(16 + i * 16), sel.readUInt32BE(20 + i * 16)]);
  }
  const acts = o.get(TCA_U32_ACT);
  if (acts) {
    for (const [, act] of attrList(acts)) {
      const aa = parseAttrs(act);
      const kind = attrStr(aa, TCA_ACT_KIND) ?? "";
      const entry: Filter["actions"][number] = { kind };
      const parms = kind === "mirred" ? aa.get(TCA_ACT_OPTIONS) && parseAttrs(aa.get(TCA_ACT_OPTIONS)!).get(TCA_MIRRED_PARMS) : undefined;
      if (parms && parms.length >= 28) entry.mirred = { eaction: parms.readInt32LE(20), ifindex: parms.readUInt32LE(24) };
      f.actions.push(entry);
    }
  }
  return f;
}

// ---- requests

export function listQdiscs(nl: NetlinkSocket, index: number): Qdisc[] {
  // The kernel ignores tcm_ifindex in a qdisc dump on some versions: filter here too.
  return nl
    .dump(encodeListQdiscs(index), `RTM_GETQDISC ifindex ${index}`)
    .filter((m) => m.type === RTM_NEWQDISC)
    .map(parseQdisc)
    .filter((q) => q.index === index);
}

export function listFilters(nl: NetlinkSocket, index: number, parent: number): Filter[] {
  return nl
    .dump(encodeListFilters(index, parent), `RTM_GETTFILTER ifindex ${index}`)
    .filter((m) => m.type === RTM_NEWTFILTER)
    .map(parseFilter);
}

export const addTbf = (nl: NetlinkSocket, o: TbfOptions) =>
  requestNaming(nl, encodeAddTbf(o), () => `RTM_NEWQDISC tbf rate ${o.rate * 8} bit/s burst ${o.burst} bytes on ifindex ${o.index}`);
export const addIngressQdisc = (nl: NetlinkSocket, index: number) =>
  requestNaming(nl, encodeAddIngressQdisc(index), () => `RTM_NEWQDISC ingress on ifindex ${index}`);
export const addRedirectFilter = (nl: NetlinkSocket, o: RedirectFilterOptions) =>
  requestNaming(nl, encodeAddRedirectFilter(o), () => `RTM_NEWTFILTER u32 redirect ifindex ${o.index} -> ifindex ${o.ifbIndex}`);
export const deleteQdisc = (nl: NetlinkSocket, index: number, slot: QdiscSlot) =>
  requestNaming(nl, encodeDeleteQdisc(index, slot), () => `RTM_DELQDISC ${slot} on ifindex ${index}`);
