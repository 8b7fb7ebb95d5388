// ipamctl: operator CLI for ipamd over its unix socket. Lean imports only (compiled with bun).
// kubectl's conventions: -o table|wide|json|yaml, -n/--namespace, --version, `completion`, NO_COLOR.
// Exit codes: 0 done; 1 ipamd refused the request or nothing matched; 2 usage error; 3 ipamd not reachable.
import { writeSync } from "node:fs";
import { Command, CommanderError, Option } from "commander";
import { DEFAULT_SOCKET, IpamdClient, IpamdError, IpamdUnreachable } from "../api/client";
import type { OrphanedPool, PoolUsage, Reservation, ReservationsResponse, StatusResponse, WatchLine } from "../api/types";
import { sleepSync } from "../lib/files";
import { completionScript, SHELLS, type Shell } from "./completion";
import { describePod, podStoryText } from "./describe";
import { FORMATS, age, paint, structured, table, type Format } from "./output";

declare const __BERTH_VERSION__: string | undefined;
declare const __BERTH_COMMIT__: string | undefined;
const VERSION = typeof __BERTH_VERSION__ === "string" ? __BERTH_VERSION__ : "0.0.0-dev";
const COMMIT = typeof __BERTH_COMMIT__ === "string" ? __BERTH_COMMIT__ : "unknown";

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

interface Globals {
  socket: string;
  output: Format;
  timeout: string;
}

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

/** "db/redis-1", "redis-1" (no namespace recorded), or "-". */
function podOf(r: Reservation): string {
  if (!r.podName) return "-";
  return r.podNamespace ? `${r.podNamespace}/${r.podName}` : r.podName;
}

/** When the reservation last changed state: attached, detached, or made. */
function since(r: Reservation): string | undefined {
  return r.state === "attached" ? (r.attachedAt ?? r.createdAt) : (r.detachedAt ?? r.createdAt);
}

function reservationRows(list: Reservation[], wide: boolean): string {
  const nodes = list.some((r) => r.node !== undefined); // cluster mode: the node each is bound to
  const head = ["IP", "POOL", "OWNER", "STATE", "STICKY", "PINNED", "POD", ...(nodes ? ["NODE"] : []), "AGE"];
  const rows = list.map((r) => [
    r.address,
    r.pool,
    r.owner,
    paint(r.state === "attached" ? "green" : "yellow", r.state),
    r.sticky ? "yes" : "no",
    r.pinned ? "yes" : "no",
    podOf(r),
    ...(nodes ? [r.node ?? "-"] : []),
    age(since(r)),
    ...(wide ? [r.containerID ? `${r.containerID.slice(0, 12)}/${r.ifName}` : "-", r.network ?? "-", since(r) ?? "-", r.createdAt] : []),
  ]);
  return table(wide ? [...head, "CONTAINER", "NETWORK", "SINCE", "CREATED"] : head, rows);
}

function clusterLines(c: NonNullable<StatusResponse["cluster"]>): string[] {
  const buffer =
    Object.entries(c.buffer)
      .map(([p, n]) => `${p}=${n}`)
      .join(", ") || "-";
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
    if (!/^\d+$/.test(v))
      throw new CommanderError(EXIT.usage, "ipamctl.invalidArgument", `${name} must be a non-negative integer, got "${v}"`);
    return Number(v);
  };
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/**
 * Writes all of `text` to `fd` before returning. The executable exits right after the command,
 * and an asynchronous stream write to a pipe still pending then is lost (output cut at 128 KiB):
 * so every line leaves through here, synchronously, waiting while a non-blocking pipe is full.
 * A reader that went away (`| head`) ends the output quietly.
 */
export function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text);
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EAGAIN" || code === "EINTR") {
        sleepSync(1);
        continue;
      }
      if (code === "EPIPE") return;
      throw e;
    }
  }
}

function orphanLines(orphans: OrphanedPool[]): string[] {
  return orphans.map(
    (o) =>
      `  ${o.name}: ${o.held} address(es) held (${o.attached} attached) under a pool no longer in the config` +
      (o.insidePools.length ? `; they lie in ${o.insidePools.join(", ")} now` : "; no configured pool contains them"),
  );
}

/** The Kubernetes lines of `ipamctl status`: the connection and one line per watch. */
function kubeLines(k: StatusResponse["kubernetes"] | undefined): string[] {
  if (!k || k.mode === "off") return ["kubernetes:    off (node labels and StatefulSets from the config)"];
  const lines = [`kubernetes:    ${k.mode} ${k.server ?? ""}${k.releaseLeader ? ", acts on cluster-wide releases" : ""}`];
  for (const w of k.watches ?? []) {
    const error = w.lastError ? `; last error: ${w.lastError}` : "";
    const retry = w.retryAt ? `, retry at ${w.retryAt}` : "";
    lines.push(
      `  watch ${w.resource.padEnd(13)} ${w.state} since ${w.since}, ${w.objects} objects, ${w.restarts} restarts${retry}${error}`,
    );
  }
  return lines;
}

export async function main(argv: string[]): Promise<number> {
  const out = (s: string): void => {
    writeAll(1, s.endsWith("\n") ? s : `${s}\n`);
  };
  const err = (s: string): void => {
    writeAll(2, s.endsWith("\n") ? s : `${s}\n`);
  };
  const program = new Command("ipamctl")
    .description("Inspect and manage Berth IP pools and reservations through ipamd")
    .version(`ipamctl ${VERSION} (commit ${COMMIT})`, "--version", "print the version and exit")
    .addOption(new Option("--socket <path>", "ipamd socket").default(process.env.BERTH_IPAMD_SOCKET || DEFAULT_SOCKET))
    .addOption(new Option("-o, --output <format>", "output format").choices(FORMATS).default("table"))
    .option("--timeout <ms>", "request timeout in milliseconds", "10000")
    .addHelpText(
      "after",
      "\nExit codes: 0 done, 1 ipamd refused the request or nothing matched, 2 usage error, 3 ipamd not reachable.\n" +
        "NO_COLOR=1 turns colour off (it is only used on a terminal).",
    )
    .exitOverride()
    .showHelpAfterError("(run ipamctl --help for usage)");
  program.configureOutput({ writeOut: (s) => writeAll(1, s), writeErr: (s) => writeAll(2, s), outputError: (text, write) => write(text) });

  const client = (): { c: IpamdClient; g: Globals } => {
    const g = program.opts<Globals>();
    return { c: new IpamdClient(g.socket, { timeoutMs: Number(g.timeout) || 10_000 }), g };
  };
  const emit = async (g: Globals, json: unknown, human: (wide: boolean) => string): Promise<void> => {
    out((await structured(g.output, json)) ?? human(g.output === "wide"));
  };

  let exitCode: number = EXIT.ok;
  program
    .command("status")
    .description(
      "daemon status, node identity and pools selected for this node; exits 1 when ipamd cannot allocate " +
        "(a commit fails, or allocation is held): the readiness probe",
    )
    .option("--liveness", "exit 0 whenever ipamd answers, degraded or not (the liveness probe: a restart does not fix a full disk)")
    .action(async (o: { liveness?: boolean }) => {
      const { c, g } = client();
      const s = await c.status();
      if (s.status !== "ok" && !o.liveness) exitCode = EXIT.failed;
      await emit(g, s, () =>
        [
          `ipamd ${s.version}: ${s.status}, up ${s.uptimeSeconds}s`,
          ...(s.commit && !s.commit.ok ? [`commits:       FAILING since ${s.commit.since}: ${s.commit.error}`] : []),
          ...(s.hold
            ? [
                `allocation:    HELD: ${s.hold.reasons.join("; ")}`,
                "               once no pod holds an address ipamd does not know: ipamctl database accept",
              ]
            : []),
          ...(s.orphanedPools?.length ? ["orphaned pools:", ...orphanLines(s.orphanedPools)] : []),
          `node:          ${s.node.name} ${Object.entries(s.node.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(",")}`,
          `pools:         ${s.pools} configured, selected here: ${s.poolsSelected.join(", ") || "none"}`,
          `reservations:  ${s.reservations}`,
          `cooldown:      ${s.cooldownSeconds}s, detached TTL: ${s.detachedTTLSeconds ? `${s.detachedTTLSeconds}s` : "never"}`,
          `database:      ${s.database}`,
          ...kubeLines(s.kubernetes),
          ...(s.cluster ? clusterLines(s.cluster) : []),
        ].join("\n"),
      );
    });

  program
    .command("pools")
    .description("pools with used/reserved/free counts and a usage bar")
    .action(async () => {
      const { c, g } = client();
      const { pools, orphaned = [] } = await c.pools();
      await emit(
        g,
        { pools, orphaned },
        (wide) =>
          table(
            [
              "POOL",
              "SUBNET",
              "VLAN",
              "NODE",
              "TOTAL",
              "USED",
              "RESERVED",
              "COOLING",
              "FREE",
              "USAGE",
              ...(wide ? ["GATEWAY", "NETWORKS"] : []),
            ],
            pools.map((p) => [
              p.name,
              p.subnet,
              p.vlan ?? "-",
              p.selected ? "selected" : "-",
              compactNumber(p.total),
              p.used,
              p.reserved + (p.orphaned ?? 0),
              p.cooling,
              compactNumber(p.free),
              bar(p),
              ...(wide ? [p.gateway ?? "-", p.networks?.join(",") ?? "any"] : []),
            ]),
          ) +
          (orphaned.length
            ? `\norphaned pools (addresses held under pools no longer in the config):\n${orphanLines(orphaned).join("\n")}`
            : ""),
      );
    });

  program
    .command("pool")
    .description("pool details")
    .command("show <name>")
    .description("show one pool")
    .action(async (name: string) => {
      const { c, g } = client();
      const { pool: p } = await c.pool(name);
      await emit(g, { pool: p }, () =>
        [
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
        ].join("\n"),
      );
    });

  program
    .command("reservations")
    .description("list reservations (-n and --statefulset: StatefulSet members; --pod: a pod's addresses)")
    .option("-n, --namespace <ns>", "StatefulSet or pod namespace")
    .option("--statefulset <name>")
    .option("--pool <name>")
    .option("--pod <name>", "only this pod's addresses (its StatefulSet reservations and its attachments); with -n")
    .option("--owner <owner>")
    .option("--ip <ip>")
    .addOption(new Option("--state <state>").choices(["attached", "detached"]))
    .option("--limit <n>", "at most this many (default: all)", intArg("--limit"))
    .option("-w, --watch", "follow the changes (reserved, attached, detached, released) as they happen; reconnects where it left off")
    .option("--since <seq>", "with --watch: start after this event sequence number (default: from now)", intArg("--since"))
    .action(
      async (o: {
        namespace?: string;
        statefulset?: string;
        pool?: string;
        pod?: string;
        owner?: string;
        ip?: string;
        state?: "attached" | "detached";
        limit?: number;
        watch?: boolean;
        since?: number;
      }) => {
        const { c, g } = client();
        if (o.watch) return watchReservations(c, g.output, o, out, err);
        if (o.since !== undefined) throw new CommanderError(EXIT.usage, "ipamctl.usage", "--since needs --watch");
        const { watch: _w, since: _s, pod, ...filter } = o;
        let r: ReservationsResponse;
        if (pod) {
          const { namespace, name } = podRef(pod, o.namespace);
          const story = await describePod(c, namespace, name);
          const list = story.addresses
            .map((a) => a.reservation)
            .filter((x) => (!o.pool || x.pool === o.pool) && (!o.state || x.state === o.state) && (!o.ip || x.ip === o.ip));
          r = { reservations: list, truncated: false };
        } else r = await c.allReservations(filter); // the daemon answers in pages: all of them, up to --limit
        await emit(
          g,
          r,
          (wide) =>
            (r.reservations.length === 0 ? "no reservations match" : reservationRows(r.reservations, wide)) +
            (r.truncated ? `\n(truncated at --limit ${o.limit})` : "") +
            (r.cluster?.source === "cache" ? `\n(sticky reservations from this node's cache: ${r.cluster.detail})` : ""),
        );
      },
    );

  program
    .command("describe")
    .alias("explain")
    .description('what IP a pod has, why and since when: "ipamctl describe db/redis-1" (pool, VLAN, node, owner rule, history)')
    .argument("<pod>", "namespace/name, or name with -n (default namespace: default)")
    .option("-n, --namespace <ns>", "the pod's namespace")
    .action(async (podArg: string, o: { namespace?: string }) => {
      const { c, g } = client();
      const { namespace, name } = podRef(podArg, o.namespace);
      const story = await describePod(c, namespace, name);
      if (story.addresses.length === 0) {
        throw new NothingFound(
          `ipamd on ${story.node} holds no address for pod ${namespace}/${name}` +
            (story.statefulSetMember ? "" : " (and it is no member of a StatefulSet ipamd knows: ipamctl statefulsets)"),
        );
      }
      await emit(g, story, () => podStoryText(story));
    });

  program
    .command("completion")
    .description("print a shell completion script: source <(ipamctl completion bash)")
    .argument("<shell>", SHELLS.join(" | "))
    .action((shell: string) => {
      if (!(SHELLS as string[]).includes(shell)) {
        throw new CommanderError(EXIT.usage, "ipamctl.usage", `completion: unknown shell "${shell}"; use one of ${SHELLS.join(", ")}`);
      }
      out(completionScript(program, shell as Shell));
    });

  program
    .command("reserve")
    .description("lock addresses for StatefulSet ordinals 0..replicas-1 before the pods exist")
    .requiredOption("-n, --namespace <ns>")
    .requiredOption("--statefulset <name>")
    .requiredOption("--replicas <n>", "number of ordinals", intArg("--replicas"))
    .option("--pool <name>", "only this pool (repeatable)", collect, [])
    .option("--network <name>", "only pools open to this CNI network")
    .action(async (o: { namespace: string; statefulset: string; replicas: number; pool: string[]; network?: string }) => {
      const { c, g } = client();
      const r = await c.reserve({
        namespace: o.namespace,
        statefulset: o.statefulset,
        replicas: o.replicas,
        ...(o.pool.length ? { pools: o.pool } : {}),
        ...(o.network ? { network: o.network } : {}),
      });
      const nodes = r.reservations.some((x) => x.node !== undefined);
      await emit(g, r, () =>
        table(
          ["ORDINAL", "OWNER", "POOL", "IP", "STATE", ...(nodes ? ["NODE"] : [])],
          r.reservations.map((x) => [x.ordinal ?? "-", x.owner, x.pool, x.address, x.state, ...(nodes ? [x.node ?? "-"] : [])]),
        ),
      );
    });

  program
    .command("pin")
    .description(
      "pin an exact IP to a StatefulSet member (replaces its previous address of that family on the same network(s); " +
        "addresses in pools serving other networks are kept)",
    )
    .requiredOption("-n, --namespace <ns>")
    .requiredOption("--statefulset <name>")
    .requiredOption("--ordinal <n>", "member ordinal", intArg("--ordinal"))
    .requiredOption("--ip <ip>")
    .option(
      "--force",
      "move the pin even if the member is running: its running container keeps the old address " +
        "(held by that container, not reusable) until the container's CNI DEL or GC frees it; the member's next pod gets the pinned IP",
    )
    .action(async (o: { namespace: string; statefulset: string; ordinal: number; ip: string; force?: boolean }) => {
      const { c, g } = client();
      const r = await c.pin({
        namespace: o.namespace,
        statefulset: o.statefulset,
        ordinal: o.ordinal,
        ip: o.ip,
        ...(o.force ? { force: true } : {}),
      });
      const freed = r.released.filter((ip) => !r.heldByContainer.includes(ip));
      await emit(
        g,
        r,
        () =>
          `pinned ${r.reservation.address} (pool ${r.reservation.pool}) to ${r.reservation.owner}` +
          (freed.length ? `; released ${freed.join(", ")}` : "") +
          (r.heldByContainer.length
            ? `; still in use by the running container (freed at its CNI DEL or GC): ${r.heldByContainer.join(", ")}`
            : ""),
      );
    });

  program
    .command("release")
    .description("release reservations: by --ip, or by StatefulSet (all ordinals, one --ordinal, or one --pool)")
    .option("--ip <ip>")
    .option("-n, --namespace <ns>")
    .option("--statefulset <name>")
    .option("--ordinal <n>", "member ordinal", intArg("--ordinal"))
    .option("--pool <name>")
    .option(
      "--force",
      "also end reservations whose address a running container uses: the address stays held by that " +
        "container (not reusable) until the container's CNI DEL or GC frees it",
    )
    .action(async (o: { ip?: string; namespace?: string; statefulset?: string; ordinal?: number; pool?: string; force?: boolean }) => {
      const { c, g } = client();
      if (!o.ip && !(o.namespace && o.statefulset)) {
        throw new CommanderError(EXIT.usage, "ipamctl.usage", "release needs --ip, or --namespace and --statefulset");
      }
      const r = await c.releaseReservations({ ...o });
      await emit(
        g,
        r,
        () =>
          (r.released.length === 0 ? "nothing to release" : `released ${r.released.length}:\n${reservationRows(r.released, false)}`) +
          (r.heldByContainer.length === 0
            ? ""
            : `\nstill in use by running containers, freed at their CNI DEL or GC ` +
              `(${r.heldByContainer.length}):\n${reservationRows(r.heldByContainer, false)}`),
      );
    });

  program
    .command("gc")
    .description("CNI-style GC: release non-sticky addresses on a network except the listed attachments")
    .requiredOption("--network <name>")
    .option("--valid <containerID/ifName>", "an attachment that is still alive (repeatable)", collect, [])
    .option("--all", "confirm releasing every non-sticky attachment on the network when no --valid is given")
    .action(async (o: { network: string; valid: string[]; all?: boolean }) => {
      const { c, g } = client();
      if (o.valid.length === 0 && !o.all) {
        throw new CommanderError(
          EXIT.usage,
          "ipamctl.usage",
          `gc without --valid would release every non-sticky address on network ${o.network}; pass --all to confirm`,
        );
      }
      const valid = o.valid.map((v) => {
        const i = v.lastIndexOf("/");
        if (i <= 0) throw new CommanderError(EXIT.usage, "ipamctl.usage", `--valid ${v}: expected containerID/ifName`);
        return { containerID: v.slice(0, i), ifName: v.slice(i + 1) };
      });
      const r = await c.gc(o.network, valid);
      await emit(
        g,
        r,
        () =>
          `released ${r.released.length}: ${r.released.join(", ") || "-"}\n` +
          `detached (sticky, kept) ${r.detached.length}: ${r.detached.join(", ") || "-"}`,
      );
    });

  program
    .command("statefulsets")
    .description("StatefulSets whose pods get sticky addresses")
    .action(async () => {
      const { c, g } = client();
      const r = await c.statefulSets();
      await emit(g, r, () =>
        table(
          ["NAMESPACE", "NAME", "SOURCE"],
          r.statefulsets.map((s) => [s.namespace, s.name, s.source]),
        ),
      );
    });
  program
    .command("register")
    .description("register a StatefulSet so its pods get sticky addresses")
    .requiredOption("-n, --namespace <ns>")
    .requiredOption("--statefulset <name>")
    .action(async (o: { namespace: string; statefulset: string }) => {
      const { c, g } = client();
      const r = await c.registerStatefulSet(o.namespace, o.statefulset);
      await emit(g, r, () => `registered ${o.namespace}/${o.statefulset}`);
    });
  program
    .command("unregister")
    .description(
      "stop treating new pods of a StatefulSet as members (registered through the API); existing reservations " +
        "stay until released (ipamctl release --namespace --statefulset)",
    )
    .requiredOption("-n, --namespace <ns>")
    .requiredOption("--statefulset <name>")
    .action(async (o: { namespace: string; statefulset: string }) => {
      const { c, g } = client();
      const r = await c.unregisterStatefulSet(o.namespace, o.statefulset);
      const name = `${o.namespace}/${o.statefulset}`;
      await emit(g, r, () =>
        [
          r.unregistered ? `unregistered ${name}` : `${name} was not registered through the API; nothing changed`,
          ...(r.configured
            ? [`${name} is listed in the ipamd config (statefulSets): its pods stay members until it is removed there`]
            : []),
        ].join("\n"),
      );
    });

  program
    .command("database")
    .description("the ipamd database")
    .command("accept")
    .description(
      "resume allocation held since start-up found the database missing, empty or replaced while this node had " +
        "attachments; first make sure no running pod holds an address ipamd does not list (or delete those pods)",
    )
    .action(async () => {
      const { c, g } = client();
      const r = await c.call<{ accepted: boolean; reasons: string[] }>("POST", "/v1/database/accept", {});
      await emit(g, r, () => (r.accepted ? `accepted; allocation resumes (it was held: ${r.reasons.join("; ")})` : "nothing was held"));
    });

  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return EXIT.ok;
      if (e.code.startsWith("ipamctl.")) err(`ipamctl: ${e.message}`);
      return EXIT.usage; // every usage error, commander's or ours, exits with one code
    }
    if (e instanceof NothingFound) {
      err(`ipamctl: ${e.message}`);
      return EXIT.failed;
    }
    if (e instanceof IpamdUnreachable) {
      err(`ipamctl: ${e.message}`);
      return EXIT.unreachable;
    }
    if (e instanceof IpamdError) {
      err(`ipamctl: ${e.message} [${e.code}${e.field ? `, field ${e.field}` : ""}]`);
      return EXIT.failed;
    }
    err(`ipamctl: ${(e as Error).message}`);
    return EXIT.failed;
  }
  return exitCode;
}

class NothingFound extends Error {}

/**
 * Follows the reservation stream: one line per event (a table row, or one JSON document per line
 * with -o json), reconnecting after the last sequence seen when the daemon goes away.
 */
async function watchReservations(
  c: IpamdClient,
  format: Format,
  o: { namespace?: string; statefulset?: string; pool?: string; owner?: string; ip?: string; pod?: string; since?: number },
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<void> {
  const matches = (r: Reservation): boolean =>
    (!o.namespace || r.namespace === o.namespace || r.podNamespace === o.namespace) &&
    (!o.statefulset || r.statefulset === o.statefulset) &&
    (!o.pool || r.pool === o.pool) &&
    (!o.owner || r.owner === o.owner) &&
    (!o.ip || r.ip === o.ip) &&
    (!o.pod || r.podName === o.pod);
  let last = o.since;
  let header = false;
  const show = (line: WatchLine): void => {
    if (line.type === "bookmark") {
      last = line.seq;
      return;
    }
    if (line.type === "error") {
      err(`ipamctl: ${line.message}`);
      return;
    }
    last = line.seq;
    if (!matches(line.reservation)) return;
    if (format === "json") out(JSON.stringify(line));
    else if (format === "yaml")
      out(
        `---\n${Object.entries(line)
          .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
          .join("\n")}`,
      );
    else {
      const r = line.reservation;
      if (!header) {
        out(["SEQ", "EVENT", "IP", "POOL", "OWNER", "POD", "NODE", "REASON", "AT"].join("\t"));
        header = true;
      }
      out(
        [
          line.seq,
          line.type,
          r.ip,
          r.pool,
          r.owner,
          r.podName ? `${r.podNamespace ?? ""}/${r.podName}` : "-",
          line.node,
          line.reason,
          line.at,
        ].join("\t"),
      );
    }
  };
  for (let delay = 250; ; ) {
    try {
      await c.watchReservations(last, show);
      delay = 250; // the stream ended (ipamd restarted): resume at once
      err(`ipamctl: the stream ended; reconnecting after ${last ?? "now"}`);
    } catch (e) {
      if (!(e instanceof IpamdUnreachable)) throw e;
      err(`ipamctl: ${e.message}; retrying in ${delay} ms`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
}

/** "ns/name" or "name" (+ -n, else the default namespace) as namespace and name. */
function podRef(text: string, namespace: string | undefined): { namespace: string; name: string } {
  const parts = text.split("/");
  if (parts.length === 2 && parts[0] && parts[1]) {
    if (namespace && namespace !== parts[0]) {
      throw new CommanderError(EXIT.usage, "ipamctl.usage", `pod ${text} and -n ${namespace} name different namespaces; give one`);
    }
    return { namespace: parts[0], name: parts[1] };
  }
  if (parts.length !== 1 || !text) throw new CommanderError(EXIT.usage, "ipamctl.usage", `pod "${text}": expected namespace/name or name`);
  return { namespace: namespace ?? "default", name: text };
}
