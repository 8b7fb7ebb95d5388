// ipamctl: operator CLI for ipamd over its unix socket. Lean imports only (compiled with bun).
import { writeSync } from "node:fs";
import Table from "cli-table3";
import { Command, CommanderError, Option } from "commander";
import { DEFAULT_SOCKET, IpamdClient, IpamdError, IpamdUnreachable } from "../api/client";
import type { OrphanedPool, PoolUsage, Reservation, ReservationFilter, ReservationsResponse, StatusResponse } from "../api/types";
import { sleepSync } from "../lib/files";

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
  return table(
    ["IP", "POOL", "OWNER", "STATE", "STICKY", "PINNED", "CONTAINER", "POD"],
    list.map((r) => [
      r.address, r.pool, r.owner, r.state, r.sticky ? "yes" : "no", r.pinned ? "yes" : "no",
      r.containerID ? `${r.containerID.slice(0, 12)}/${r.ifName}` : "-",
      r.podName ? `${r.podNamespace}/${r.podName}` : "-",
    ]),
  );
}

function intArg(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new CommanderError(2, "ipamctl.invalidArgument", `${name} must be a non-negative integer, got "${v}"`);
    return Number(v);
  };
}

function collect(v: string, prev: string[]): string[] { return [...prev, v]; }

/**
 * Writes all of `text` to `fd` before returning. The executable exits right after the command,
 * and an asynchronous stream write to a pipe still pending then is lost (output cut at 128 KiB):
 * so every line leaves through here, synchronously, waiting while a non-blocking pipe is full.
 * A reader that went away (`| head`) ends the output quietly.
 */
export function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length;) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EAGAIN" || code === "EINTR") { sleepSync(1); continue; }
      if (code === "EPIPE") return;
      throw e;
    }
  }
}

function orphanLines(orphans: OrphanedPool[]): string[] {
  return orphans.map((o) => `  ${o.name}: ${o.held} address(es) held (${o.attached} attached) under a pool no longer in the config` +
    (o.insidePools.length ? `; they lie in ${o.insidePools.join(", ")} now` : "; no configured pool contains them"));
}

export async function main(argv: string[]): Promise<number> {
  const out = (s: string): void => { writeAll(1, s.endsWith("\n") ? s : `${s}\n`); };
  const err = (s: string): void => { writeAll(2, s.endsWith("\n") ? s : `${s}\n`); };
  const program = new Command("ipamctl")
    .description("Inspect and manage Berth IP pools and reservations through ipamd")
    .addOption(new Option("--socket <path>", "ipamd socket").default(process.env.BERTH_IPAMD_SOCKET || DEFAULT_SOCKET))
    .addOption(new Option("-o, --output <format>", "output format").choices(["table", "json"]).default("table"))
    .option("--timeout <ms>", "request timeout in milliseconds", "10000")
    .exitOverride()
    .configureOutput({ writeOut: (s) => writeAll(1, s), writeErr: (s) => writeAll(2, s) })
    .showHelpAfterError("(run ipamctl --help for usage)");

  const client = (): { c: IpamdClient; g: Globals } => {
    const g = program.opts<Globals>();
    return { c: new IpamdClient(g.socket, { timeoutMs: Number(g.timeout) || 10_000 }), g };
  };
  const emit = (g: Globals, json: unknown, human: () => string): void => {
    out(g.output === "json" ? JSON.stringify(json, null, 2) : human());
  };

  let exitCode = 0;
  program.command("status")
    .description("daemon status, node identity and pools selected for this node; exits 1 when ipamd cannot allocate " +
      "(a commit fails, or allocation is held): the readiness probe")
    .option("--liveness", "exit 0 whenever ipamd answers, degraded or not (the liveness probe: a restart does not fix a full disk)")
    .action(async (o: { liveness?: boolean }) => {
      const { c, g } = client();
      const s = await c.status();
      if (s.status !== "ok" && !o.liveness) exitCode = 1;
      emit(g, s, () => [
        `ipamd ${s.version}: ${s.status}, up ${s.uptimeSeconds}s`,
        ...(s.commit && !s.commit.ok ? [`commits:       FAILING since ${s.commit.since}: ${s.commit.error}`] : []),
        ...(s.hold ? [`allocation:    HELD: ${s.hold.reasons.join("; ")}`,
          "               once no pod holds an address ipamd does not know: ipamctl database accept"] : []),
        ...(s.orphanedPools?.length ? ["orphaned pools:", ...orphanLines(s.orphanedPools)] : []),
        `node:          ${s.node.name} ${Object.entries(s.node.labels).map(([k, v]) => `${k}=${v}`).join(",")}`,
        `pools:         ${s.pools} configured, selected here: ${s.poolsSelected.join(", ") || "none"}`,
        `reservations:  ${s.reservations}`,
        `cooldown:      ${s.cooldownSeconds}s, detached TTL: ${s.detachedTTLSeconds ? `${s.detachedTTLSeconds}s` : "never"}`,
        `database:      ${s.database}`,
        ...kubeLines(s.kubernetes),
      ].join("\n"));
    });

  program.command("pools").description("pools with used/reserved/free counts and a usage bar")
    .action(async () => {
      const { c, g } = client();
      const { pools, orphaned = [] } = await c.pools();
      emit(g, { pools, orphaned }, () => table(
        ["POOL", "SUBNET", "VLAN", "NODE", "TOTAL", "USED", "RESERVED", "COOLING", "FREE", "USAGE"],
        pools.map((p) => [p.name, p.subnet, p.vlan ?? "-", p.selected ? "selected" : "-", compactNumber(p.total),
          p.used, p.reserved + (p.orphaned ?? 0), p.cooling, compactNumber(p.free), bar(p)]),
      ) + (orphaned.length ? `\norphaned pools (addresses held under pools no longer in the config):\n${orphanLines(orphaned).join("\n")}` : ""));
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
    .option("--limit <n>", "at most this many (default: all)", intArg("--limit"))
    .action(async (o: ReservationFilter) => {
      const { c, g } = client();
      // The daemon answers in pages (api/API.md): follow the cursor until the list or --limit ends.
      const all: Reservation[] = [];
      let page: ReservationsResponse | undefined;
      do {
        const want = o.limit === undefined ? undefined : o.limit - all.length;
        page = await c.reservations({ ...o, limit: want, ...(page?.next ? { after: page.next } : {}) });
        all.push(...page.reservations);
      } while (page.next && (o.limit === undefined || all.length < o.limit));
      const truncated = page.truncated;
      emit(g, { reservations: all, truncated }, () => (all.length === 0 ? "no reservations match" : reservationRows(all)) +
        (truncated ? `\n(truncated at --limit ${o.limit})` : ""));
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
      emit(g, r, () => table(["ORDINAL", "OWNER", "POOL", "IP", "STATE"],
        r.reservations.map((x) => [x.ordinal ?? "-", x.owner, x.pool, x.address, x.state])));
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

  program.command("database").description("the ipamd database").command("accept")
    .description("resume allocation held since start-up found the database missing, empty or replaced while this node had " +
      "attachments; first make sure no running pod holds an address ipamd does not list (or delete those pods)")
    .action(async () => {
      const { c, g } = client();
      const r = await c.call<{ accepted: boolean; reasons: string[] }>("POST", "/v1/database/accept", {});
      emit(g, r, () => (r.accepted ? `accepted; allocation resumes (it was held: ${r.reasons.join("; ")})` : "nothing was held"));
    });

  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      if (e.code.startsWith("ipamctl.")) err(`ipamctl: ${e.message}`);
      return e.exitCode || 2;
    }
    if (e instanceof IpamdUnreachable) { err(`ipamctl: ${e.message}`); return 3; }
    if (e instanceof IpamdError) {
      err(`ipamctl: ${e.message} [${e.code}${e.field ? `, field ${e.field}` : ""}]`);
      return 1;
    }
    err(`ipamctl: ${(e as Error).message}`);
    return 1;
  }
  return exitCode;
}

/** The Kubernetes lines of `ipamctl status`: the connection and one line per watch. */
function kubeLines(k: StatusResponse["kubernetes"] | undefined): string[] {
  if (!k || k.mode === "off") return ["kubernetes:    off (node labels and StatefulSets from the config)"];
  const lines = [`kubernetes:    ${k.mode} ${k.server ?? ""}${k.releaseLeader ? ", acts on cluster-wide releases" : ""}`];
  for (const w of k.watches ?? []) {
    const error = w.lastError ? `; last error: ${w.lastError}` : "";
    const retry = w.retryAt ? `, retry at ${w.retryAt}` : "";
    lines.push(`  watch ${w.resource.padEnd(13)} ${w.state} since ${w.since}, ${w.objects} objects, ${w.restarts} restarts${retry}${error}`);
  }
  return lines;
}
