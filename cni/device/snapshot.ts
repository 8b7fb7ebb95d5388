// The host-side state of a device that DEL restores: what an operator or a cloud agent set.
import { listAddresses } from "../netlink/addr";
import type { Scope } from "../netlink/addr";
import type { Link } from "../netlink/link";
import { listRoutes } from "../netlink/route";
import type { NetlinkSocket } from "../netlink/socket";
import type { DeviceSnapshot } from "./state";

function isLinkLocal6(cidr: string): boolean {
  return /^fe[89ab][0-9a-f]:/i.test(cidr);
}

/** The device's current host state: what DEL restores. */
export function snapshotDevice(nl: NetlinkSocket, link: Link): DeviceSnapshot {
  // The kernel regenerates IPv6 link-local addresses and the prefix/local/multicast routes of
  // addresses; only what an operator or a cloud agent configured is saved.
  const addresses = listAddresses(nl, { index: link.index })
    .filter((a) => !(a.family === 6 && isLinkLocal6(a.cidr)) && (a.permanent || a.family === 4))
    .map((a) => ({ cidr: a.cidr, ...(a.broadcast ? { broadcast: a.broadcast } : {}) }));
  const routes = listRoutes(nl, { table: "all", index: link.index })
    .filter(
      (r) =>
        r.protocol !== 2 /* kernel */ &&
        r.table !== 255 &&
        r.type === 1 /* unicast */ &&
        !r.multipath &&
        !(r.family === 6 && (isLinkLocal6(r.dst) || /^ff/i.test(r.dst))),
    )
    .map((r) => ({
      dst: r.dst,
      table: r.table,
      scope: (typeof r.scope === "string" && !/^\d+$/.test(r.scope) ? r.scope : "global") as Scope,
      onLink: r.onLink,
      ...(r.gateway ? { gateway: r.gateway } : {}),
      ...(r.metric !== undefined ? { metric: r.metric } : {}),
    }));
  return {
    name: link.name,
    mac: link.mac,
    mtu: link.mtu,
    up: link.up,
    altNames: link.altNames,
    addresses,
    routes,
    ...(link.permAddress ? { permAddress: link.permAddress } : {}),
    ...(link.alias ? { alias: link.alias } : {}),
    ...(link.kind ? { kind: link.kind } : {}),
  };
}
