// ipamctl: operator CLI for ipamd over its unix socket. Lean imports only (compiled with bun).
import Table from "cli-table3";
import { Command, CommanderError, Option } from "commander";
import { DEFAULT_SOCKET, IpamdClient, IpamdError, IpamdUnreachable } from "../api/client";
import type { PoolUsage, Reservation, StatusResponse } from "../api/types";

interface Globals { socket: string; output: "table" | "json"; timeout: string }

function bar(p: PoolUsage, width = 20): string {
  const total = Number(p.total);
  const taken = p.used + p.reserved + p.cooling;
  const frac = total > 0 ? taken / total : 0;
  const filled = taken > 0 ? Math.max(1, Math.round(frac * width)) : 0;
  const pct = frac * 100;
  const pctText = pct > 0 && pct < 0.1 ? "<0.1%" : `${pct.toFixed(1)}%`;
  return `[${"#".repeat(Math.min(width, filled))}${".".repeat(width - Math.min(width, filled))}] ${pctText}`;
}

function compactNumber(text: string): string {
  return text.length > 12 ? `${Number(text).toExponential(2)}` : text;
}

function table(head: string[], rows: (string | number)[][]): string {
  const t = new Table({ head, style: { head: [], border: [] }, chars: { mid: "", "left-mid": "", "mid-mid": "", "right-mid": "" } });
  for (const r of rows) t.push(r.map((c) => String(c)));
  return t.toString();
}

function reservationRows(list: Reservation[]): string {
  const nodes = list.some((r) => r.node !== undefined); // cluster mode: the node each is bound to
  return table(
    ["IP", "POOL", "OWNER", "STATE", "STICKY", "PINNED", "CONTAINER", "POD", ...(nodes ? ["NODE"] : [])],
    list.map((r) => [
      r.address, r.pool, r.owner, r.state, r.sticky ? "yes" : "no", r.pinned ? "yes" : "no",
      r.containerID ? `${r.containerID.slice(0, 12)}/${r.ifName}` : "-",
      r.podName ? `${r.podNamespace}/${r.podName}` : "-",
      ...(nodes ? [r.node ?? "-"] : []),
    ]),
  );
}

function clusterLines(c: NonNullable<StatusResponse["cluster"]>): string[] {
  const buffer = Object.entries(c.buffer).map(([p, n]) => `${p}=${n}`).join(", ") || "-";
  return [
    `etcd:          ${c.etcd.state} (${c.etcd.endpoints.join(", ")}; prefix ${c.etcd.prefix})${c.etcd.detail ? `: ${c.etcd.detail}` : ""}`,
    `liveness:      ${c.liveness.confirmedSecondsAgo === null ? "never confirmed" : `confirmed ${c.liveness.confirmedSecondsAgo}s ago`}` +
      `${c.liveness.fenced ? " (FENCED: buffered addresses are not handed out)" : ""}, grace ${c.liveness.graceSeconds}s`,
    `buffer:        ${buffer}`,
    `outbox:        ${c.outboxPending} pending for etcd${c.outboxConflicts ? `, ${c.outboxConflicts} conflicts (see the ipamd log)` : ""}`,
    ...(c.nodesInGrace.length ? [`nodes gone:    ${c.nodesInGrace.map((n) => `${n.node} (${n.goneSeconds}s)`).join(", ")}`] : []),
  ];
}

function intArg(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new CommanderError(2, "ipamctl.invalidArgument", `${name} must be a non-negative integer, got "${v}"`);
    return Number(v);
  };
}

function collect(v: string, prev: string[]): string[] { return [...prev, v]; }

export async function main(argv: string[]): Promise<number> {
  const out = (s: string): void => { process.stdout.write(s.endsWith("\n") ? s : `${s}\n`); };
  const program = new Command("ipamctl")
    .description("Inspect and manage Berth IP pools and reservations through ipamd")
    .addOption(new Option("--socket <path>", "ipamd socket").default(process.env.BERTH_IPAMD_SOCKET || DEFAULT_SOCKET))
    .addOption(new Option("-o, --output <format>", "output format").choices(["table", "json"]).default("table"))
    .option("--timeout <ms>", "request timeout in milliseconds", "10000")
    .exitOverride()
    .showHelpAfterError("(run ipamctl --help for usage)");

  const client = (): { c: IpamdClient; g: Globals } => {
    const g = program.opts<Globals>();
    return { c: new IpamdClient(g.socket, { timeoutMs: Number(g.timeout) || 10_000 }), g };
  };
  const emit = (g: Globals, json: unknown, human: () => string): void => {
    out(g.output === "json" ? JSON.stringify(json, null, 2) : human());
  };

  program.command("status").description("daemon status, node identity and pools selected for this node")
    .action(async () => {
      const { c, g } = client();
      const s = await c.status();
      emit(g, s, () => [
        `ipamd ${s.version}: ${s.status}, up ${s.uptimeSeconds}s`,
        `node:          ${s.node.name} ${Object.entries(s.node.labels).map(([k, v]) => `${k}=${v}`).join(",")}`,
        `pools:         ${s.pools} configured, selected here: ${s.poolsSelected.join(", ") || "none"}`,
        `reservations:  ${s.reservations}`,
        `cooldown:      ${s.cooldownSeconds}s, detached TTL: ${s.detachedTTLSeconds ? `${s.detachedTTLSeconds}s` : "never"}`,
        `database:      ${s.database}`,
        ...(s.cluster ? clusterLines(s.cluster) : []),
      ].join("\n"));
    });

  program.command("pools").description("pools with used/reserved/free counts and a usage bar")
    .action(async () => {
      const { c, g } = client();
      const { pools } = await c.pools();
      emit(g, { pools }, () => table(
        ["POOL", "SUBNET", "VLAN", "NODE", "TOTAL", "USED", "RESERVED", "COOLING", "FREE", "USAGE"],
        pools.map((p) => [p.name, p.subnet, p.vlan ?? "-", p.selected ? "selected" : "-", compactNumber(p.total),
          p.used, p.reserved, p.cooling, compactNumber(p.free), bar(p)]),
      ));
    });

  program.command("pool").description("pool details").command("show <name>").description("show one pool")
    .action(async (name: string) => {
      const { c, g } = client();
      const { pool: p } = await c.pool(name);
      emit(g, { pool: p }, () => [
        `name:       ${p.name}`,
        `subnet:     ${p.subnet} (IPv${p.family})`,
        `gateway:    ${p.gateway ?? "-"}`,
        `vlan:       ${p.vlan ?? "-"}`,
        `networks:   ${p.networks?.join(", ") ?? "any"}`,
        `selector:   ${JSON.stringify(p.nodeSelector)} (${p.selected ? "selects this node" : "does not select this node"})`,
        `ranges:     ${p.ranges.map((r) => (r.start === r.end ? r.start : `${r.start}-${r.end}`)).join(", ")}`,
        `routes:     ${p.routes.map((r) => `${r.dst}${r.gw ? ` via ${r.gw}` : ""}`).join(", ") || "-"}`,
        `dns:        ${JSON.stringify(p.dns)}`,
        `usage:      ${bar(p, 30)}`,
        `total ${p.total}, used ${p.used}, reserved ${p.reserved}, cooling ${p.cooling}, free ${p.free}`,
      ].join("\n"));
    });

  program.command("reservations").description("list reservations")
    .option("--namespace <ns>").option("--statefulset <name>").option("--pool <name>")
    .option("--owner <owner>").option("--ip <ip>")
    .addOption(new Option("--state <state>").choices(["attached", "detached"]))
    .option("--limit <n>", "at most this many", intArg("--limit"))
    .action(async (o: { namespace?: string; statefulset?: string; pool?: string; owner?: string; ip?: string; state?: "attached" | "detached"; limit?: number }) => {
      const { c, g } = client();
      const r = await c.reservations(o);
      emit(g, r, () => (r.reservations.length === 0 ? "no reservations match" : reservationRows(r.reservations)) +
        (r.truncated ? `\n(truncated; raise --limit)` : "") +
        (r.cluster?.source === "cache" ? `\n(sticky reservations from this node's cache: ${r.cluster.detail})` : ""));
    });

  program.command("reserve").description("lock addresses for StatefulSet ordinals 0..replicas-1 before the pods exist")
    .requiredOption("--namespace <ns>").requiredOption("--statefulset <name>")
    .requiredOption("--replicas <n>", "number of ordinals", intArg("--replicas"))
    .option("--pool <name>", "only this pool (repeatable)", collect, [])
    .option("--network <name>", "only pools open to this CNI network")
    .action(async (o: { namespace: string; statefulset: string; replicas: number; pool: string[]; network?: string }) => {
      const { c, g } = client();
      const r = await c.reserve({ namespace: o.namespace, statefulset: o.statefulset, replicas: o.replicas,
        ...(o.pool.length ? { pools: o.pool } : {}), ...(o.network ? { network: o.network } : {}) });
      const nodes = r.reservations.some((x) => x.node !== undefined);
      emit(g, r, () => table(["ORDINAL", "OWNER", "POOL", "IP", "STATE", ...(nodes ? ["NODE"] : [])],
        r.reservations.map((x) => [x.ordinal ?? "-", x.owner, x.pool, x.address, x.state, ...(nodes ? [x.node ?? "-"] : [])])));
    });

  program.command("pin")
    .description("pin an exact IP to a StatefulSet member (replaces its previous address of that family on the same network(s); " +
      "addresses in pools serving other networks are kept)")
    .requiredOption("--namespace <ns>").requiredOption("--statefulset <name>")
    .requiredOption("--ordinal <n>", "member ordinal", intArg("--ordinal"))
    .requiredOption("--ip <ip>")
    .option("--force", "move the pin even if the member is running: its running container keeps the old address " +
      "(held by that container, not reusable) until the container's CNI DEL or GC frees it; the member's next pod gets the pinned IP")
    .action(async (o: { namespace: string; statefulset: string; ordinal: number; ip: string; force?: boolean }) => {
      const { c, g } = client();
      const r = await c.pin({ namespace: o.namespace, statefulset: o.statefulset, ordinal: o.ordinal, ip: o.ip, ...(o.force ? { force: true } : {}) });
      const freed = r.released.filter((ip) => !r.heldByContainer.includes(ip));
      emit(g, r, () => `pinned ${r.reservation.address} (pool ${r.reservation.pool}) to ${r.reservation.owner}` +
        (freed.length ? `; released ${freed.join(", ")}` : "") +
        (r.heldByContainer.length ? `; still in use by the running container (freed at its CNI DEL or GC): ${r.heldByContainer.join(", ")}` : ""));
    });

  program.command("release").description("release reservations: by --ip, or by StatefulSet (all ordinals, one --ordinal, or one --pool)")
    .option("--ip <ip>").option("--namespace <ns>").option("--statefulset <name>")
    .option("--ordinal <n>", "member ordinal", intArg("--ordinal")).option("--pool <name>")
    .option("--force", "also end reservations whose address a running container uses: the address stays held by that " +
      "container (not reusable) until the container's CNI DEL or GC frees it")
    .action(async (o: { ip?: string; namespace?: string; statefulset?: string; ordinal?: number; pool?: string; force?: boolean }) => {
      const { c, g } = client();
      if (!o.ip && !(o.namespace && o.statefulset)) {
        throw new CommanderError(2, "ipamctl.usage", "release needs --ip, or --namespace and --statefulset");
      }
      const r = await c.releaseReservations({ ...o });
      emit(g, r, () => (r.released.length === 0 ? "nothing to release"
        : `released ${r.released.length}:\n${reservationRows(r.released)}`) +
        (r.heldByContainer.length === 0 ? "" : `\nstill in use by running containers, freed at their CNI DEL or GC ` +
          `(${r.heldByContainer.length}):\n${reservationRows(r.heldByContainer)}`));
    });

  program.command("gc").description("CNI-style GC: release non-sticky addresses on a network except the listed attachments")
    .requiredOption("--network <name>")
    .option("--valid <containerID/ifName>", "an attachment that is still alive (repeatable)", collect, [])
    .option("--all", "confirm releasing every non-sticky attachment on the network when no --valid is given")
    .action(async (o: { network: string; valid: string[]; all?: boolean }) => {
      const { c, g } = client();
      if (o.valid.length === 0 && !o.all) {
        throw new CommanderError(2, "ipamctl.usage", `gc without --valid would release every non-sticky address on network ${o.network}; pass --all to confirm`);
      }
      const valid = o.valid.map((v) => {
        const i = v.lastIndexOf("/");
        if (i <= 0) throw new CommanderError(2, "ipamctl.usage", `--valid ${v}: expected containerID/ifName`);
        return { containerID: v.slice(0, i), ifName: v.slice(i + 1) };
      });
      const r = await c.gc(o.network, valid);
      emit(g, r, () => `released ${r.released.length}: ${r.released.join(", ") || "-"}\ndetached (sticky, kept) ${r.detached.length}: ${r.detached.join(", ") || "-"}`);
    });

  program.command("statefulsets").description("StatefulSets whose pods get sticky addresses")
    .action(async () => {
      const { c, g } = client();
      const r = await c.statefulSets();
      emit(g, r, () => table(["NAMESPACE", "NAME", "SOURCE"], r.statefulsets.map((s) => [s.namespace, s.name, s.source])));
    });
  program.command("register").description("register a StatefulSet so its pods get sticky addresses")
    .requiredOption("--namespace <ns>").requiredOption("--statefulset <name>")
    .action(async (o: { namespace: string; statefulset: string }) => {
      const { c, g } = client();
      const r = await c.registerStatefulSet(o.namespace, o.statefulset);
      emit(g, r, () => `registered ${o.namespace}/${o.statefulset}`);
    });
  program.command("unregister")
    .description("stop treating new pods of a StatefulSet as members (registered through the API); existing reservations " +
      "stay until released (ipamctl release --namespace --statefulset)")
    .requiredOption("--namespace <ns>").requiredOption("--statefulset <name>")
    .action(async (o: { namespace: string; statefulset: string }) => {
      const { c, g } = client();
      const r = await c.unregisterStatefulSet(o.namespace, o.statefulset);
      const name = `${o.namespace}/${o.statefulset}`;
      emit(g, r, () => [
        r.unregistered ? `unregistered ${name}` : `${name} was not registered through the API; nothing changed`,
        ...(r.configured ? [`${name} is listed in the ipamd config (statefulSets): its pods stay members until it is removed there`] : []),
      ].join("\n"));
    });

  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      if (e.code.startsWith("ipamctl.")) process.stderr.write(`ipamctl: ${e.message}\n`);
      return e.exitCode || 2;
    }
    if (e instanceof IpamdUnreachable) { process.stderr.write(`ipamctl: ${e.message}\n`); return 3; }
    if (e instanceof IpamdError) {
      process.stderr.write(`ipamctl: ${e.message} [${e.code}${e.field ? `, field ${e.field}` : ""}]\n`);
      return 1;
    }
    process.stderr.write(`ipamctl: ${(e as Error).message}\n`);
    return 1;
  }
  return 0;
}
