// The cluster's key layout in etcd and the JSON values under it (docs/cluster.md has the table).
//   <prefix>/ip/<pool>/<ip>                                          one per owned address   -> IpOwner
//   <prefix>/sticky/<pool>/<namespace>/<statefulset>/<ordinal>/<if>  one per sticky identity -> StickyRecord
//   <prefix>/node/<name>                                             liveness, on a lease    -> NodeRecord
//   <prefix>/owners/<name>                                           "may hold address keys" -> OwnerRecord
//   <prefix>/handback/<pool>                                         "this pool runs low"    -> HandbackRecord
//   <prefix>/reaper/full-scan                                        the last backstop scan  -> FullScanRecord
//   <prefix>/join/<pool>/<ip>                                        a joined sandbox's claim   -> IpOwner (the key to be)
// A pool's owned addresses are one range (<prefix>/ip/<pool>/); a node's are found by reading that range's values
// (owner.node), which the reaper does only for a registered node whose liveness key is gone. Nothing but the liveness
// key (and a cooling address key) is ever written with a lease.

export interface StickyIdentity {
  pool: string;
  namespace: string;
  statefulset: string;
  ordinal: number;
  /** Interface name, or index, of the member's attachment. */
  iface: string;
}

export interface AttachmentRef {
  containerID: string;
  ifName: string;
  podUID?: string;
  node: string;
}

export type IpOwner =
  | { owner: "buffer"; node: string; gen: string; at: number; releasedAt?: number }
  | { owner: "attachment"; node: string; gen: string; at: number; attachment: AttachmentRef }
  | { owner: "sticky"; node: string; gen: string; at: number; identity: string }
  /** A released sticky address in its cooldown: the key's lease deletes it when the cooldown ends (then it is free). */
  | { owner: "cooling"; node: string; gen: string; at: number; identity: string; until: number };

export interface StickyRecord {
  ip: string;
  /** The node the identity is bound to (the last one that attached or reserved it). */
  node: string;
  gen: string;
  at: number;
  pinned?: boolean;
  /** Present while a sandbox uses the address (no DEL applied yet). */
  attachment?: AttachmentRef;
}

export interface NodeRecord {
  node: string;
  startedAt: number;
  labels?: Record<string, string>;
}
/** A node's registration: durable (no lease), deleted only by the reaper once the node is dead and its keys reaped. */
export interface OwnerRecord {
  node: string;
  at: number;
  /** Written by another node: the reaper for a node of a version without registrations, or a node writing an address key for it. */
  by?: string;
}
export interface FullScanRecord {
  node: string;
  at: number;
}
export interface HandbackRecord {
  node: string;
  pool: string;
  at: number;
  /** Addresses sandboxes of the requesting node already use (it joins cluster mode): returned even while cooling. */
  ips?: string[];
}

const SEGMENT = /^[^/\s]+$/;

export class KeyLayout {
  readonly prefix: string;
  constructor(prefix = "/berth") {
    this.prefix = prefix.replace(/\/+$/, "");
    if (!this.prefix.startsWith("/")) throw new Error(`cluster.etcd.prefix "${prefix}" must start with "/"`);
  }

  private seg(s: string, what: string): string {
    if (!SEGMENT.test(s)) throw new Error(`${what} "${s}" cannot be part of an etcd key (no "/" or spaces)`);
    return s;
  }

  poolIps(pool: string): string {
    return `${this.prefix}/ip/${this.seg(pool, "pool name")}/`;
  }
  ip(pool: string, ip: string): string {
    return this.poolIps(pool) + ip;
  }
  ipFromKey(key: string): string {
    return key.slice(key.lastIndexOf("/") + 1);
  }

  identityName(id: StickyIdentity): string {
    return [id.namespace, id.statefulset, String(id.ordinal), id.iface].map((s) => this.seg(s, "sticky identity part")).join("/");
  }
  poolSticky(pool: string): string {
    return `${this.prefix}/sticky/${this.seg(pool, "pool name")}/`;
  }
  sticky(id: StickyIdentity): string {
    return this.poolSticky(id.pool) + this.identityName(id);
  }
  /** The identity's key below `<prefix>/sticky/` (pool first): how the sticky watch's view names it. */
  stickyName(id: StickyIdentity): string {
    return `${this.seg(id.pool, "pool name")}/${this.identityName(id)}`;
  }
  identityFromKey(key: string): StickyIdentity {
    const [pool, namespace, statefulset, ordinal, iface] = key.slice(`${this.prefix}/sticky/`.length).split("/");
    return { pool: pool!, namespace: namespace!, statefulset: statefulset!, ordinal: Number(ordinal), iface: iface! };
  }

  nodes(): string {
    return `${this.prefix}/node/`;
  }
  node(name: string): string {
    return this.nodes() + this.seg(name, "node name");
  }

  owners(): string {
    return `${this.prefix}/owners/`;
  }
  owner(name: string): string {
    return this.owners() + this.seg(name, "node name");
  }
  joinClaims(): string {
    return `${this.prefix}/join/`;
  }
  joinClaim(pool: string, ip: string): string {
    return `${this.joinClaims()}${this.seg(pool, "pool name")}/${ip}`;
  }
  /** Written by the node that noticed etcd lost history, so a node that cannot tell by itself learns it (history.ts). */
  historyLost(): string {
    return `${this.prefix}/history-lost`;
  }
  fullScan(): string {
    return `${this.prefix}/reaper/full-scan`;
  }

  statefulSets(): string {
    return `${this.prefix}/statefulset/`;
  }
  statefulSet(namespace: string, name: string): string {
    return `${this.statefulSets()}${this.seg(namespace, "namespace")}/${this.seg(name, "StatefulSet name")}`;
  }

  handbacks(): string {
    return `${this.prefix}/handback/`;
  }
  handback(pool: string): string {
    return this.handbacks() + this.seg(pool, "pool name");
  }
}

export function parseJson<T>(text: string, key: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`etcd key ${key} holds a value that is not Berth JSON: ${text.slice(0, 120)}`);
  }
}
