// CNI error codes. 1-99 are the spec's (CNI 1.1.0 "Error" section); >= 100 are Berth's own,
// documented with cause and fix in cni/skel/ERRORS.md.
export const ErrorCode = {
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

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

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

export function isCniError(e: unknown): e is CniError {
  return e instanceof CniError;
}

/** Turns anything thrown into a CniError; unexpected exceptions become code 999. */
export function toCniError(e: unknown): CniError {
  if (e instanceof CniError) return e;
  if (e instanceof Error) {
    return new CniError(ErrorCode.Internal, `internal error: ${e.message}`,
      "this is a bug in Berth; please report it with the plugin log (logFile in the network config)");
  }
  return new CniError(ErrorCode.Internal, `internal error: ${String(e)}`,
    "this is a bug in Berth; please report it with the plugin log (logFile in the network config)");
}
