// `ipamctl describe POD`: what address a pod has, why, and since when, from what ipamd records:
// its reservations (by StatefulSet membership and by the pod's attachments), their pools (subnet,
// VLAN, gateway), the node, the ownership rule that holds each, and the times ipamd keeps
// (reserved, last attached, last detached).
import type { IpamdClient } from "../api/client";
import type { PoolUsage, Reservation, StatefulSetsResponse, StatusResponse } from "../api/types";

export interface AddressStory {
  ip: string;
  address: string;
  pool: { name: string; subnet?: string; vlan?: number; gateway?: string; selectedHere?: boolean };
  owner: string;
  rule: string;
  state: Reservation["state"];
  container?: { id: string; ifName?: string; network?: string };
  history: { at: string; event: string }[];
  reservation: Reservation;
}

export interface PodStory {
  pod: { namespace: string; name: string };
  node: string;
  statefulSetMember?: { namespace: string; statefulset: string; ordinal: number; source: "config" | "api" };
  addresses: AddressStory[];
}

/** The StatefulSet (known to ipamd) that `name` is a member of, by ipamd's rule (ipamd/statefulsets.ts). */
function memberOf(namespace: string, name: string, sets: StatefulSetsResponse["statefulsets"]) {
  const dash = name.lastIndexOf("-");
  if (dash <= 0 || !/^(0|[1-9][0-9]{0,6})$/.test(name.slice(dash + 1))) return undefined;
  const set = sets.find((s) => s.namespace === namespace && s.name === name.slice(0, dash));
  return set ? { namespace, statefulset: set.name, ordinal: Number(name.slice(dash + 1)), source: set.source } : undefined;
}

function ruleOf(r: Reservation, member: PodStory["statefulSetMember"], cooldownSeconds: number): string {
  if (r.kind === "statefulset") {
    const who = `member ${r.ordinal} of StatefulSet ${r.namespace}/${r.statefulset}`;
    const known =
      member && member.statefulset === r.statefulset
        ? member.source === "config"
          ? "listed in ipamd's config (statefulSets)"
          : "registered through the API (reserve, pin or register)"
        : "no longer known to ipamd: the reservation stays until released (ipamctl release)";
    if (r.pinned) return `pinned: ${who} gets exactly this IP (ipamctl pin); StatefulSet ${known}`;
    return (
      `sticky: ${who} keeps this IP when its pod is deleted and gets it back on any node whose labels select pool ${r.pool}; ` +
      `StatefulSet ${known}`
    );
  }
  return (
    `attachment: not a StatefulSet member known to ipamd, so the IP belongs to container ${r.containerID ?? "?"}/${r.ifName ?? "?"} ` +
    `and is released at its CNI DEL (reusable after the ${cooldownSeconds}s cooldown)`
  );
}

function historyOf(r: Reservation): AddressStory["history"] {
  const h: AddressStory["history"] = [
    { at: r.createdAt, event: r.kind === "statefulset" ? "reserved for the member" : "allocated to the container" },
  ];
  if (r.attachedAt) {
    h.push({
      at: r.attachedAt,
      event:
        `last attached: container ${r.containerID ?? "(since detached)"}${r.ifName ? `/${r.ifName}` : ""}` +
        `${r.network ? ` on network ${r.network}` : ""}`,
    });
  }
  if (r.detachedAt) h.push({ at: r.detachedAt, event: "last detached (the pod's CNI DEL; the sticky reservation was kept)" });
  return h.sort((a, b) => a.at.localeCompare(b.at));
}

export async function describePod(c: IpamdClient, namespace: string, name: string): Promise<PodStory> {
  const [status, sets, pools, all] = (await Promise.all([c.status(), c.statefulSets(), c.pools(), c.allReservations()])) as [
    StatusResponse,
    StatefulSetsResponse,
    { pools: PoolUsage[] },
    { reservations: Reservation[] },
  ];
  const member = memberOf(namespace, name, sets.statefulsets);
  const mine = all.reservations.filter(
    (r) =>
      (r.podNamespace === namespace && r.podName === name) ||
      (member &&
        r.kind === "statefulset" &&
        r.namespace === namespace &&
        r.statefulset === member.statefulset &&
        r.ordinal === member.ordinal),
  );
  const poolByName = new Map(pools.pools.map((p) => [p.name, p]));
  return {
    pod: { namespace, name },
    node: status.node.name,
    ...(member ? { statefulSetMember: member } : {}),
    addresses: mine.map((r) => {
      const p = poolByName.get(r.pool);
      return {
        ip: r.ip,
        address: r.address,
        pool: {
          name: r.pool,
          ...(p ? { subnet: p.subnet, selectedHere: p.selected } : {}),
          ...(p?.vlan !== undefined ? { vlan: p.vlan } : {}),
          ...(p?.gateway ? { gateway: p.gateway } : {}),
        },
        owner: r.owner,
        rule: ruleOf(r, member, status.cooldownSeconds),
        state: r.state,
        ...(r.containerID ? { container: { id: r.containerID, ifName: r.ifName, network: r.network } } : {}),
        history: historyOf(r),
        reservation: r,
      };
    }),
  };
}

export function podStoryText(s: PodStory): string {
  const lines = [`pod:     ${s.pod.namespace}/${s.pod.name}`, `node:    ${s.node} (the ipamd asked)`];
  if (s.statefulSetMember) {
    const m = s.statefulSetMember;
    lines.push(
      `member:  ordinal ${m.ordinal} of StatefulSet ${m.namespace}/${m.statefulset} ` +
        `(known from ${m.source === "config" ? "the config" : "the API"})`,
    );
  }
  for (const a of s.addresses) {
    const p = a.pool;
    lines.push(
      "",
      `${a.address}  ${a.state}`,
      `  pool:    ${p.name}${p.subnet ? ` (${p.subnet}` : ""}${p.vlan !== undefined ? `, VLAN ${p.vlan}` : ", untagged"}` +
        `${p.gateway ? `, gateway ${p.gateway}` : ""}${p.subnet ? ")" : ""}`,
      `  owner:   ${a.owner}`,
      `  why:     ${a.rule}`,
      ...(a.container
        ? [
            `  in use:  container ${a.container.id}/${a.container.ifName ?? "?"}` +
              (a.container.network ? ` on network ${a.container.network}` : ""),
          ]
        : []),
      "  since:",
      ...a.history.map((h) => `    ${h.at}  ${h.event}`),
    );
  }
  return lines.join("\n");
}
