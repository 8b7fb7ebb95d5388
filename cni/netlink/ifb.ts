// ifb (Intermediate Functional Block) devices: the ingress traffic of an interface is redirected
// to one and shaped on its egress. Byte for byte as `ip link add NAME [mtu M] type ifb` (iproute2 6.1).
import { IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MTU, requestNaming } from "./link";
import type { NetlinkSocket } from "./socket";
import { AF_UNSPEC, MessageBuilder, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, RTM_NEWLINK } from "./wire";

interface IfbOptions {
  name: string;
  mtu?: number;
}

/** = `ip link add NAME [mtu M] type ifb` */
export function encodeAddIfb(o: IfbOptions): MessageBuilder {
  if (!o.name || Buffer.byteLength(o.name) > 15 || /[\s/:]/.test(o.name)) {
    throw new TypeError(`invalid ifb name "${o.name}": use 1-15 characters without spaces, "/" or ":"`);
  }
  const ifinfo = Buffer.alloc(16);
  ifinfo.writeUInt8(AF_UNSPEC, 0);
  const msg = new MessageBuilder(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, ifinfo);
  if (o.mtu !== undefined) msg.u32(IFLA_MTU, o.mtu);
  return msg.strz(IFLA_IFNAME, o.name).nest(IFLA_LINKINFO, (m) => m.str(IFLA_INFO_KIND, "ifb"));
}

export const addIfb = (nl: NetlinkSocket, o: IfbOptions) => requestNaming(nl, encodeAddIfb(o), () => `RTM_NEWLINK ifb "${o.name}"`);
