// Test double for kernels without SR-IOV: the VF table is <dir>/<pf>.json ({"vfs": [VfInfo...]});
// each request is encoded exactly as it would be sent (pfIndex of the real PF link) and appended
// to <dir>/ops.jsonl instead of being sent. Only the test build of berth-sriov has it.
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { getLinkByName } from "../../cni/netlink/link";
import type { NetlinkSocket } from "../../cni/netlink/socket";
import { encodeSetVf, type VfInfo, type VfSettings } from "../../cni/netlink/sriov";
import type { PfOps } from "../../cni/plugins/sriov";

/** A VF as a PF reports it before anyone configured it (the fake tables' starting state). */
export const UNCONFIGURED_VF = {
  mac: "00:00:00:00:00:00",
  vlan: 0,
  qos: 0,
  vlanProto: "802.1Q",
  spoofChk: true,
  trust: false,
  linkState: "auto",
  minTxRate: 0,
  maxTxRate: 0,
} as const;

export class RecordingPfOps implements PfOps {
  constructor(
    private readonly dir: string,
    private readonly nl: NetlinkSocket,
  ) {}
  private table(pf: string): { vfs: VfInfo[] } {
    const file = join(this.dir, `${pf}.json`);
    return JSON.parse(readFileSync(file, "utf8")) as { vfs: VfInfo[] };
  }
  readVf(pf: string, vf: number): VfInfo {
    const info = this.table(pf).vfs.find((v) => v.vf === vf);
    if (!info) throw new RangeError(`VF ${vf} not found on "${pf}"`);
    return info;
  }
  setVf(pf: string, vf: number, s: VfSettings, what: string): void {
    const index = getLinkByName(this.nl, pf).index;
    const hex = encodeSetVf(index, vf, s).build(0, 0).toString("hex");
    appendFileSync(join(this.dir, "ops.jsonl"), JSON.stringify({ pf, vf, op: what, settings: s, hex }) + "\n");
    const t = this.table(pf);
    const v = t.vfs.find((x) => x.vf === vf)!;
    if (s.mac !== undefined) v.mac = s.mac;
    if (s.vlan !== undefined) {
      v.vlan = s.vlan;
      v.qos = s.qos ?? 0;
      v.vlanProto = s.vlanProto ?? "802.1Q";
    }
    if (s.spoofChk !== undefined) v.spoofChk = s.spoofChk;
    if (s.trust !== undefined) v.trust = s.trust;
    if (s.linkState !== undefined) v.linkState = s.linkState;
    if (s.minTxRate !== undefined) v.minTxRate = s.minTxRate;
    if (s.maxTxRate !== undefined) v.maxTxRate = s.maxTxRate;
    writeFileSync(join(this.dir, `${pf}.json`), JSON.stringify(t));
  }
}
