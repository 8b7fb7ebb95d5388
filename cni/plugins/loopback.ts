// loopback: containerd's CRI plugin runs `loopback` from the CNI bin dir for every pod sandbox,
// before any other network. Where no reference loopback plugin is installed, the `berth`
// binary answers under that name: ADD brings lo up in the pod, CHECK verifies it is up, DEL does
// nothing (the namespace goes with the sandbox; taking lo down under a still-running container
// would break it), STATUS is ready and GC has nothing to collect.
import { listAddresses } from "../netlink/addr";
import { getLinkByName, setLinkUp } from "../netlink/link";
import { Netns } from "../netns";
import { mismatch } from "../skel/chain";
import { toCniError } from "../skel/errors";
import { definePlugin } from "../skel/plugin";
import type { IpConfig, Result } from "../skel/result";

const LO = "lo";

function inPod<T>(netns: string, doing: string, fn: (pod: Netns) => T): T {
  let pod: Netns | undefined;
  try {
    pod = Netns.open(netns);
    return fn(pod);
  } catch (e) {
    throw toCniError(e, doing);
  } finally {
    pod?.close();
  }
}

export const loopbackPlugin = definePlugin({
  name: "loopback",
  async add(ctx) {
    // Like the reference plugin: the interface is always lo, whatever CNI_IFNAME says.
    const ips = inPod(ctx.netns, `bring ${LO} up in ${ctx.netns}`, (pod) => {
      const lo = getLinkByName(pod.nl, LO);
      setLinkUp(pod.nl, lo.index);
      const addrs = listAddresses(pod.nl, { index: lo.index });
      const found: IpConfig[] = [];
      for (const family of [4, 6] as const) {
        const first = addrs.find((a) => a.family === family);
        if (first) found.push({ interface: 0, address: first.cidr });
      }
      return found;
    });
    // A chained loopback passes the earlier plugins' result on unchanged.
    if (ctx.conf.prevResult) return ctx.conf.prevResult;
    const result: Result = { interfaces: [{ name: LO, mac: "00:00:00:00:00:00", sandbox: ctx.netns }], ips };
    return result;
  },
  async del() {
    // Nothing was allocated; the pod's namespace (and its lo) disappears with the sandbox.
  },
  async check(ctx) {
    const up = inPod(ctx.netns, `read ${LO} in ${ctx.netns}`, (pod) => getLinkByName(pod.nl, LO).up);
    if (!up) throw mismatch(`${LO} is down in ${ctx.netns}`, "ADD brings it up; something in the pod took it down since");
  },
});
