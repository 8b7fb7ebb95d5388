import { CniError, CniCode } from "./errors";

export const CURRENT_VERSION = "1.1.0";
const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];

const SEMVER = /^(\d+)\.(\d+)\.(\d+)$/;

/** Compares two "x.y.z" versions; throws code 6 on a malformed one. */
export function compareVersions(a: string, b: string): number {
  const pa = parseSemver(a);
  const pb = parseSemver(b);
  for (let i = 0; i < 3; i++) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return 0;
}

function parseSemver(v: string): [number, number, number] {
  const m = SEMVER.exec(v);
  if (!m) {
    throw new CniError(
      CniCode.DecodeFailure,
      `invalid cniVersion "${v}"`,
      `cniVersion must look like "1.1.0"; supported: ${SUPPORTED_VERSIONS.join(", ")}`,
    );
  }
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

export function isSupportedVersion(v: string): v is CniVersion {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

export function atLeast(v: string, min: string): boolean {
  return compareVersions(v, min) >= 0;
}

/** Error for a config whose cniVersion this plugin cannot speak (same text as libcni). */
export function incompatibleVersion(configVersion: string): CniError {
  return new CniError(
    CniCode.IncompatibleVersion,
    "incompatible CNI versions",
    `config is "${configVersion}", plugin supports [${SUPPORTED_VERSIONS.map((v) => `"${v}"`).join(" ")}]; ` +
      `set "cniVersion" in the network config to one of them`,
  );
}

export function versionInfo(): { cniVersion: string; supportedVersions: string[] } {
  return { cniVersion: CURRENT_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] };
}
