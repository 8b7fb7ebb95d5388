// What libcni does with a conflist before any plugin runs: pick the list's version, then hand
// each plugin its own entry with the list's name and that version injected (buildOneConfig).
// libcni 1.1.x (containerd 1.6/1.7, podman 4) knows only "cniVersion"; libcni >= 1.2
// (containerd 2.x, CRI-O 1.31) takes the highest of "cniVersions" + "cniVersion" it implements.
import { compareVersions } from "../../cni/skel/version";

export type Libcni = "1.1" | "1.2";
const IMPLEMENTS: Record<Libcni, string> = { "1.1": "1.0.0", "1.2": "1.1.0" };

export interface ConfList {
  cniVersion?: string;
  cniVersions?: string[];
  name: string;
  plugins: Record<string, unknown>[];
}

export function pickVersion(list: ConfList, libcni: Libcni): string {
  if (libcni === "1.1" || !list.cniVersions) return list.cniVersion ?? "";
  const candidates = [...list.cniVersions, ...(list.cniVersion ? [list.cniVersion] : [])]
    .filter((v) => compareVersions(v, IMPLEMENTS[libcni]) <= 0)
    .sort(compareVersions);
  return candidates.at(-1) ?? list.cniVersion ?? "";
}

/** The config on stdin of each plugin of the list, as libcni builds it (no prevResult). */
export function pluginConfigs(list: ConfList, libcni: Libcni): Record<string, unknown>[] {
  const cniVersion = pickVersion(list, libcni);
  return list.plugins.map((p) => ({ ...p, name: list.name, cniVersion }));
}
