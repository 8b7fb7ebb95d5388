// One node's IPAM, assembled: the store's statements, the pools this node sees, StatefulSet
// membership, the address ownership (single node unless given), the rules and the API views.
import { Allocator } from "./allocator";
import type { Config } from "./config";
import { LocalOwnership } from "./local-ownership";
import type { AddressOwnership } from "./ownership";
import { NodePools } from "./pools";
import { StatefulSets } from "./statefulsets";
import type { DB } from "./store/database";
import { Statements } from "./store/statements";
import { Views } from "./views";

export interface NodeIpam {
  store: Statements;
  pools: NodePools;
  statefulSets: StatefulSets;
  ownership: AddressOwnership;
  rules: Allocator;
  views: Views;
}

export function assembleNode(db: DB, config: Config, ownership?: (store: Statements, pools: NodePools) => AddressOwnership): NodeIpam {
  const store = new Statements(db);
  const pools = new NodePools(config.pools, { name: config.nodeName, labels: config.nodeLabels });
  const statefulSets = new StatefulSets(store, config.statefulSets);
  const owner = ownership ? ownership(store, pools) : new LocalOwnership(store, config.cooldownMs);
  const views = new Views(store, pools, config.cooldownMs);
  const rules = new Allocator(store, pools, statefulSets, owner, views, config.detachedTtlMs);
  return { store, pools, statefulSets, ownership: owner, rules, views };
}
