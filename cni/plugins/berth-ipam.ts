// berth-ipam: a CNI IPAM plugin for third-party main plugins (the reference macvlan, ipvlan,
// bridge...). It answers the IPAM result shape (ips, routes, dns; no interfaces) from ipamd,
// with the same owner rules as the Berth main plugins.
import { IpamdIpam, BERTH_IPAM, berthIpamConf } from "../ipam/ipamd";
import { CniError, CniCode } from "../skel/errors";
import { definePlugin } from "../skel/plugin";

export const ipamPlugin = definePlugin({
  name: BERTH_IPAM,
  parse(conf) {
    if (conf.ipam?.type !== BERTH_IPAM) {
      throw new CniError(
        CniCode.InvalidConfig,
        `invalid network config: ipam.type is "${conf.ipam?.type ?? "(missing)"}", but this is the ${BERTH_IPAM} plugin`,
        `the runtime runs the plugin named by ipam.type; set "ipam": {"type": "${BERTH_IPAM}"}`,
      );
    }
    return undefined;
  },
  async add(ctx) {
    berthIpamConf(ctx); // refuse a bad ipam section before asking the daemon
    return (await new IpamdIpam(ctx).add()).result;
  },
  async del(ctx) {
    await new IpamdIpam(ctx).del();
  },
  async check(ctx) {
    await new IpamdIpam(ctx).check();
  },
  async status(ctx) {
    await new IpamdIpam(ctx).status();
  },
  async gc(ctx) {
    await new IpamdIpam(ctx).gc();
  },
});
