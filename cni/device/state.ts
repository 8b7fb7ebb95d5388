// Per-attachment state files of berth-hostdev and berth-sriov: the device's host state as ADD
// found it, recorded before the first change (<stateDir>/<containerID>@<ifName>.json, 0600,
// written to a temp file, fsync-ed, renamed, directory fsync-ed).
import { exists, makeDirs, readDir } from "../../lib/fileio";
import { readJsonFile, writeFileAtomic } from "../../lib/files";
import { join } from "../../lib/paths";
import type { Scope } from "../netlink/addr";
import { CniError, CniCode } from "../skel/errors";
import type { CniContext } from "../skel/plugin";

interface SavedAddress {
  cidr: string;
  broadcast?: string;
}
interface SavedRoute {
  dst: string;
  gateway?: string;
  metric?: number;
  table: number;
  scope: Scope;
  onLink: boolean;
}

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

/** The fields that name a record: the plugin, and the network, container, interface and netns of the attachment. */
export function attachmentHeader(ctx: CniContext<unknown>, plugin: string) {
  return { version: 1, plugin, network: ctx.conf.name, containerId: ctx.containerId, ifName: ctx.ifName, netns: ctx.netns } as const;
}

/** `original` of a device with no kernel netdev (bound to a userspace driver): nothing to give back. */
export const noNetdev = (): DeviceSnapshot => ({ name: "", mac: "", mtu: 0, up: false, altNames: [], addresses: [], routes: [] });

/** Creates a plugin's stateDir (0700); the error says what `plugin` records there (`records`). */
export function ensureStateDir(dir: string, plugin: string, records = "each device's original state there before moving it"): void {
  try {
    makeDirs(dir, 0o700);
  } catch (e) {
    throw new CniError(
      CniCode.IOFailure,
      `cannot create the state directory ${dir}: ${(e as Error).message}`,
      `${plugin} records ${records}; make it writable for root or set stateDir`,
    );
  }
}

/**
 * <containerID>@<ifName>.json: a container ID never has '@' (CNI_CONTAINERID is letters, digits,
 * '_', '.', '-'), so no two attachments share a name ("a" + "x-eth0" and "a-x" + "eth0" did).
 */
function stateFileName(containerId: string, ifName: string): string {
  return `${containerId}@${ifName}.json`;
}

/** The record is this attachment's (its file name alone could be an older, ambiguous one). */
export function isOwnRecord(st: AttachmentState, a: { network: string; containerId: string; ifName: string }): boolean {
  return st.containerId === a.containerId && st.ifName === a.ifName && st.network === a.network;
}

/**
 * The state file of an attachment: the current name, else the name Berth used before
 * (<containerID>-<ifName>.json) when that file holds this attachment's record.
 */
export function attachmentStatePath(dir: string, a: { network: string; containerId: string; ifName: string }): string {
  const path = join(dir, stateFileName(a.containerId, a.ifName));
  if (exists(path)) return path;
  const legacy = join(dir, `${a.containerId}-${a.ifName}.json`);
  try {
    const st = exists(legacy) ? readJson<AttachmentState>(legacy) : undefined;
    if (st && isOwnRecord(st, a)) return legacy;
  } catch {
    // a damaged legacy file is not this attachment's to judge
  }
  return path;
}

/** Writes `data` as JSON durably (0600, fsync, rename, directory fsync): before the first change to a device. */
export function writeDurable(path: string, data: unknown): void {
  writeFileAtomic(path, JSON.stringify(data, null, 1) + "\n");
}

/** A state file; undefined when there is none (DEL twice); code 5 when it is damaged. */
export function readJson<T>(path: string): T | undefined {
  return readJsonFile<T>(path, "the file is damaged; restore the device by hand (see the file) and remove it");
}

export function listStateFiles(dir: string): string[] {
  try {
    return readDir(dir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => join(dir, f));
  } catch {
    return [];
  }
}
