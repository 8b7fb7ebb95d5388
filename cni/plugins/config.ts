// Config keys the Berth main plugins share, each refused with code 7 naming the field and the fix.
import { normalizeMac } from "../../lib/ip";
import { PCI_ADDRESS } from "../device/sysfs";
import { CniError, CniCode } from "../skel/errors";

/** Code 7 naming the config field, what is wrong with it and the fix. */
export function invalid(field: string, why: string, fix: string): CniError {
  return new CniError(CniCode.InvalidConfig, `invalid network config: ${field} ${why}`, fix);
}

/** A pod's MAC in lower-case colon form; code 7 for malformed, multicast or all-zero MACs. */
export function unicastMac(value: unknown, field: string): string {
  const mac = normalizeMac(value);
  if (!mac) {
    throw invalid(field, `"${String(value)}" is not a MAC address`, "use the form 0a:58:0a:01:00:05");
  }
  if (parseInt(mac.slice(0, 2), 16) & 1) {
    throw invalid(
      field,
      `${mac} is a multicast MAC address`,
      "a pod needs a unicast MAC: the lowest bit of the first byte must be 0 (e.g. 0a:...)",
    );
  }
  if (mac === "00:00:00:00:00:00") throw invalid(field, "is all zeros", "use a unicast MAC such as 0a:58:0a:01:00:05");
  return mac;
}

export function sysfsRootFrom(raw: Record<string, unknown>): string {
  if (raw.sysfsRoot !== undefined && raw.sysfsRoot !== null) {
    if (typeof raw.sysfsRoot !== "string" || !raw.sysfsRoot.startsWith("/")) {
      throw invalid("sysfsRoot", "is not an absolute path", 'remove it to use "/sys"');
    }
    return raw.sysfsRoot;
  }
  return "/sys";
}

export function stateDirFrom(raw: Record<string, unknown>, dflt: string): string {
  if (raw.stateDir === undefined || raw.stateDir === null) return dflt;
  if (typeof raw.stateDir !== "string" || !raw.stateDir.startsWith("/"))
    throw invalid("stateDir", "is not an absolute path", `remove it to use ${dflt}`);
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
  if (!PCI_ADDRESS.test(full))
    throw invalid(field, `"${value}" is not a PCI address`, 'use the form "0000:3b:02.0" (domain:bus:device.function)');
  return full;
}
