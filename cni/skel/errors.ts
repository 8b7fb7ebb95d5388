// CNI error codes. 1-99 are the spec's (CNI 1.1.0 "Error" section); >= 100 are Berth's own,
// documented with cause and fix in docs/ERRORS.md. (ipamd's API has its own error names, strings
// such as "no_pool"; cni/ipam/ipamd.ts maps those onto these numbers.)
import { OsError } from "../../lib/oserror";

export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  ContainerUnknown: 3,
  InvalidEnv: 4,
  IOFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  PluginNotAvailableLimitedConnectivity: 51,

  // Berth: IPAM (100-119)
  IpamPluginNotFound: 100,
  IpamPluginFailed: 101,
  IpamNoPool: 102,
  IpamPoolExhausted: 103,
  IpamIpUnavailable: 104,
  IpamForbidden: 105,
  IpamRejected: 106,
  IpamAllocationMissing: 107,
  IpamBadResult: 108,
  // Berth: CHECK and prevResult (120-139)
  CheckMismatch: 120,
  PrevResultMissing: 121,
  // Berth: devices and the kernel (140-179), used by the main plugins
  NetlinkFailure: 140,
  DeviceNotFound: 141,
  DeviceBusy: 142,
  NetnsFailure: 143,
  Internal: 999,
} as const;

/**
 * An error the plugin reports to the runtime. `msg` says what is wrong; `details` adds the
 * context and the fix (runtimes print "msg; details").
 */
export class CniError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, msg: string, details = "") {
    super(msg);
    this.name = "CniError";
    this.code = code;
    this.details = details;
  }

  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details: string } {
    return { cniVersion, code: this.code, msg: this.message, details: this.details };
  }
}

const BUG = "this is a bug in Berth; please report it with the plugin log (logFile in the network config)";
const DEVICE_GONE = new Set(["ENODEV", "ENXIO", "ENOENT"]);
const DEVICE_BUSY = new Set(["EBUSY", "EEXIST", "EADDRINUSE"]);

/** The CNI code of a machine failure: the one place that decides it. */
function osErrorCode(e: OsError): number {
  if (e.kind === "netns") return CniCode.NetnsFailure;
  if (e.kind === "file") return e.code === "ETIMEDOUT" ? CniCode.TryAgainLater : CniCode.IOFailure;
  if (DEVICE_GONE.has(e.code)) return CniCode.DeviceNotFound;
  if (DEVICE_BUSY.has(e.code)) return CniCode.DeviceBusy;
  return CniCode.NetlinkFailure;
}

function osErrorFix(e: OsError): string {
  if (e.fix) return e.fix;
  if (e.kind === "netns") return "check CNI_NETNS: the container's network namespace must exist";
  const on = e.object ? ` ${e.object}` : "";
  if (DEVICE_GONE.has(e.code))
    return (
      `the device${on} is gone or was never there: check the node (ip link show) and the config; ` +
      `the plugin log (logFile) has the details`
    );
  if (DEVICE_BUSY.has(e.code))
    return `the device${on} is in use or in a state that does not allow this; free it and retry; the plugin log (logFile) has the details`;
  return "see the kernel's reason above; the plugin log (logFile) has the details";
}

/**
 * Turns anything thrown into a CniError. `doing` (what the plugin was doing) prefixes the message
 * of a machine failure (OsError: kernel, namespace, file) mapped to its CNI code; anything else
 * unexpected becomes code 999.
 */
export function toCniError(e: unknown, doing?: string): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof OsError) return new CniError(osErrorCode(e), doing ? `${doing}: ${e.message}` : e.message, osErrorFix(e));
  return new CniError(CniCode.Internal, `internal error: ${e instanceof Error ? e.message : String(e)}`, BUG);
}
