// VLAN sub-interfaces (master.vlan) that berth-macvlan puts its macvlans on: naming, find-or-create,
// and removal of the ones Berth created once their last pod is gone.
//
// Who uses a sub-interface? A pod's macvlan lives in the pod's namespace, so a host-side link
// dump cannot see it. Berth keeps a host-side record per sub-interface instead:
//   <stateDir>/<subif>.json   {"master", "vlan", "attachments": ["network/containerID/ifName", ...]}
//   <stateDir>/<subif>.lock   flock(2)-ed while a record and the link are read or changed
// (a record is removed with its last attachment; lock files stay: unlinking a lock file races)
// ADD holds the lock from "find or create the sub-interface" until its macvlan exists and the
// record lists it; DEL holds it from "drop my entry" to "delete the sub-interface if unused". So
// an ADD never finds its parent deleted under it, and two ADDs never both create it. flock is
// released by the kernel when a plugin dies, so a crash never leaves a stale lock.
// Before deleting, the record's "nobody left" is double-checked against the kernel: no link in
// the host namespace and no macvlan/ipvlan in any namespace (/run/netns/*, /proc/*/ns/net) may
// still have the sub-interface as its parent. A lost or stale record therefore never removes a
// sub-interface that is in use; at worst an unused one stays until the next DEL on that VLAN.
// Only sub-interfaces carrying the alias "berth:created" are ever deleted: one that existed
// before Berth (an operator's eth0.101) is reused and never touched.
import { addVlan, deleteLink, findLinkByName, getLinkByName, listLinks, setLinkAlias, setLinkUp, type Link } from "../netlink/link";
import { NetlinkSocket, isNetlinkError } from "../netlink/socket";
import { readDir, readTextFile, statPath } from "../../lib/fileio";
import { removeFile, writeFileAtomic } from "../../lib/files";
import { withFileLock } from "../../lib/lock";
import { join } from "../../lib/paths";
import { Netns, currentNetnsInode } from "../netns";
import { CniError, CniCode } from "../skel/errors";
import { ensureStateDir } from "../device/state";
import type { Logger } from "../skel/log";

const BERTH_CREATED_ALIAS = "berth:created";
export const DEFAULT_STATE_DIR = "/run/berth/macvlan";

/**
 * Name of the sub-interface for VLAN `vlan` on `master`: "master.vlan" when that fits the
 * kernel's 15 bytes; otherwise the master name is cut and 4 hex digits of its SHA-1 are added so
 * that two long masters sharing a prefix still get different names: enp175s0f0np0 + 101 ->
 * "enp175s" + "3f2a" + ".101". The name is checked on reuse (kind vlan, parent, id), so a
 * collision is reported, never silently shared.
 */
export function vlanLinkName(master: string, vlan: number): string {
  const plain = `${master}.${vlan}`;
  if (Buffer.byteLength(plain) <= 15) return plain;
  const suffix = `.${vlan}`;
  // node:crypto is loaded only here (long master names): it costs every plugin start ~1.5 ms.
  const { createHash } = process.getBuiltinModule("node:crypto");
  const hash = createHash("sha1").update(master).digest("hex").slice(0, 4);
  const keep = 15 - suffix.length - hash.length;
  return `${Buffer.from(master).subarray(0, keep).toString("latin1")}${hash}${suffix}`;
}

// ---- lock

/** Runs `fn` holding the lock of sub-interface `name` (<stateDir>/<name>.lock). */
export function withVlanLock<T>(stateDir: string, name: string, fn: () => T): T {
  ensureStateDir(stateDir, "berth-macvlan", "which pods use each VLAN sub-interface there");
  return withFileLock(join(stateDir, `${name}.lock`), `VLAN sub-interface ${name}`, fn);
}

// ---- records

interface VlanRecord {
  master: string;
  vlan: number;
  attachments: string[];
}

export function attachmentKey(network: string, containerId: string, ifName: string): string {
  return `${network}/${containerId}/${ifName}`;
}

function recordPath(stateDir: string, name: string): string {
  return join(stateDir, `${name}.json`);
}

export function readRecord(stateDir: string, name: string): VlanRecord | undefined {
  try {
    const r = JSON.parse(readTextFile(recordPath(stateDir, name))) as VlanRecord;
    if (!Array.isArray(r.attachments)) return undefined;
    return r;
  } catch {
    return undefined;
  }
}

function writeRecord(stateDir: string, name: string, record: VlanRecord): void {
  writeFileAtomic(recordPath(stateDir, name), JSON.stringify(record) + "\n");
}

/** Sub-interface names that have a record. */
export function recordNames(stateDir: string): string[] {
  // Loops, not filter/map, here and below: every DEL runs this (see docs/architecture.md, "Plugins").
  const names: string[] = [];
  try {
    for (const f of readDir(stateDir)) if (f.endsWith(".json")) names.push(f.slice(0, -5));
  } catch {
    // no state dir yet: no records
  }
  return names;
}

/** Sub-interface names whose record lists `key` (DEL finds its VLAN without IPAM or the netns). */
export function recordsHolding(stateDir: string, key: string): string[] {
  const holding: string[] = [];
  for (const name of recordNames(stateDir)) if (readRecord(stateDir, name)?.attachments.includes(key)) holding.push(name);
  return holding;
}

/** Adds `key` to the record (call with the lock held). */
export function recordAttachment(stateDir: string, name: string, master: string, vlan: number, key: string): void {
  const r = readRecord(stateDir, name) ?? { master, vlan, attachments: [] };
  if (!r.attachments.includes(key)) r.attachments.push(key);
  writeRecord(stateDir, name, { ...r, master, vlan });
}

// ---- find or create

/**
 * The VLAN sub-interface `name` for `vlan` on `master`, created (alias berth:created) when
 * missing, brought up. Call with the lock held. A link of that name that is not this VLAN on
 * this master is an error naming it.
 */
export function ensureVlanLink(nl: NetlinkSocket, master: Link, vlan: number, name: string, log: Logger): Link {
  const found = findLinkByName(nl, name);
  if (found) return checkedAndUp(nl, found, master, vlan, log);
  try {
    addVlan(nl, { name, parentIndex: master.index, id: vlan });
  } catch (e) {
    if (isNetlinkError(e, "EOPNOTSUPP")) {
      throw new CniError(
        CniCode.NetlinkFailure,
        `cannot create VLAN sub-interface ${name} (VLAN ${vlan} on ${master.name}): ` +
          `the kernel has no 802.1Q support (module 8021q not loaded)`,
        "load it with `modprobe 8021q` (and add 8021q to /etc/modules-load.d), or set vlan to 0 to attach pods untagged",
      );
    }
    // Another ADD (or an operator) created it between our look-up and create: reuse after checking it.
    if (!isNetlinkError(e, "EEXIST")) throw e;
    return checkedAndUp(nl, getLinkByName(nl, name), master, vlan, log);
  }
  const created = getLinkByName(nl, name);
  try {
    setLinkAlias(nl, created.index, BERTH_CREATED_ALIAS);
    log.info("created VLAN sub-interface", { name, vlan, master: master.name });
    return checkedAndUp(nl, created, master, vlan, log);
  } catch (e) {
    // Not yet recorded (and maybe without its alias): no DEL would remove it, so this ADD does.
    try {
      deleteLink(nl, created.index);
    } catch (cleanup) {
      log.warn("could not delete the VLAN sub-interface this ADD created", { name, error: (cleanup as Error).message });
    }
    throw e;
  }
}

function checkedAndUp(nl: NetlinkSocket, link: Link, master: Link, vlan: number, log: Logger): Link {
  if (link.kind !== "vlan" || link.vlan?.id !== vlan || link.parentIndex !== master.index) {
    const what = link.kind !== "vlan" ? `a ${link.kind ?? "plain"} link` : `VLAN ${link.vlan?.id} on ifindex ${link.parentIndex}`;
    throw new CniError(
      CniCode.InvalidConfig,
      `interface "${link.name}" exists but is ${what}, not VLAN ${vlan} on "${master.name}" (ifindex ${master.index})`,
      `berth-macvlan uses "${link.name}" as the sub-interface for master ${master.name} vlan ${vlan}; ` +
        `rename or delete the other interface, or change master/vlan`,
    );
  }
  if (!link.up) {
    setLinkUp(nl, link.index);
    log.info("brought VLAN sub-interface up", { name: link.name });
  }
  return link;
}

/**
 * Drops `key` from the record of `name` and deletes the sub-interface when Berth created it and
 * nothing uses it any more. Takes the lock itself.
 */
export function releaseVlanLink(stateDir: string, name: string, key: string, log: Logger): void {
  withVlanLock(stateDir, name, () => {
    const record = readRecord(stateDir, name);
    if (record) {
      record.attachments = record.attachments.filter((k) => k !== key);
      if (record.attachments.length > 0) return writeRecord(stateDir, name, record);
      removeFile(recordPath(stateDir, name));
    }
    const nl = NetlinkSocket.open();
    try {
      const link = findLinkByName(nl, name);
      if (link?.kind !== "vlan") return;
      if (link.alias !== BERTH_CREATED_ALIAS) {
        log.debug("VLAN sub-interface was not created by Berth; keeping it", { name });
        return;
      }
      const users = linkUsers(nl, link.index);
      if (users.length) {
        log.warn("VLAN sub-interface still has upper links although no Berth pod is recorded; keeping it", { name, users });
        return;
      }
      try {
        deleteLink(nl, link.index);
        log.info("deleted VLAN sub-interface (last pod gone)", { name });
      } catch (e) {
        if (!isNetlinkError(e, "ENODEV")) throw e;
      }
    } finally {
      nl.close();
    }
  });
}

/** Links whose parent is host ifindex `index`: in the host namespace, and in every other one. */
function linkUsers(nl: NetlinkSocket, index: number): string[] {
  const users = listLinks(nl)
    .filter((l) => l.parentIndex === index && l.linkNetnsId === undefined)
    .map((l) => l.name);
  const self = currentNetnsInode();
  const seen = new Set<number>([self]);
  for (const path of namespacePaths()) {
    let ino: number;
    try {
      ino = statPath(path).ino;
    } catch {
      continue;
    }
    if (seen.has(ino)) continue;
    seen.add(ino);
    try {
      Netns.use(path, (ns) => {
        for (const l of listLinks(ns.nl)) {
          // Seen from another namespace, a parent in ours has a link-netnsid. An index match in a
          // third namespace is a false positive that only keeps the sub-interface: the safe side.
          if (
            l.linkNetnsId !== undefined &&
            l.parentIndex === index &&
            (l.kind === "macvlan" || l.kind === "macvtap" || l.kind === "ipvlan")
          ) {
            users.push(`${l.name} in ${path}`);
          }
        }
      });
    } catch {
      // the namespace went away while we looked
    }
  }
  return users;
}

function namespacePaths(): string[] {
  const out: string[] = [];
  for (const dir of ["/run/netns", "/var/run/netns"]) {
    try {
      for (const f of readDir(dir)) out.push(join(dir, f));
    } catch {
      // no such directory
    }
  }
  try {
    for (const pid of readDir("/proc")) if (/^\d+$/.test(pid)) out.push(`/proc/${pid}/ns/net`);
  } catch {
    // no /proc
  }
  return out;
}
