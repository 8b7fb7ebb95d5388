// berth-ipam: a CNI IPAM plugin for third-party main plugins (the reference macvlan, ipvlan,
// bridge...). It answers the IPAM result shape (ips, routes, dns; no interfaces) from ipamd,
// with the same owner rules as the Berth main plugins.
import { CniError, ErrorCode } from "../skel/errors";
import { BERTH_IPAM, berthIpamConf, ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus } from "../skel/ipam";
import { definePlugin } from "../skel/plugin";

export const ipamPlugin = definePlugin({
  name: BERTH_IPAM,
  parse(conf) {
    if (conf.ipam?.type !== BERTH_IPAM) {
      throw new CniError(ErrorCode.InvalidConfig,
        `invalid network config: ipam.type is "${conf.ipam?.type ?? "(missing)"}", but this is the ${BERTH_IPAM} plugin`,
        `the runtime runs the plugin named by ipam.type; set "ipam": {"type": "${BERTH_IPAM}"}`);
    }
    return undefined;
  },
  async add(ctx) {
    berthIpamConf(ctx); // refuse a bad ipam section before asking the daemon
    const allocation = await ipamAdd(ctx);
    return allocation.result;
  },
  async del(ctx) {
    await ipamDel(ctx);
  },
  async check(ctx) {
    await ipamCheck(ctx);
  },
  async status(ctx) {
    await ipamStatus(ctx);
  },
  async gc(ctx) {
    await ipamGc(ctx);
  },
});
