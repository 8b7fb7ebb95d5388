// Multi-call entry of the `berth` executable. A CNI runtime runs a plugin by its file name, so
// dist/bin/berth-ipam etc. are links to this one binary and the name it was started under picks
// the plugin. Under `bun build --compile`, process.argv[0] is "bun" and process.argv[1] a
// virtual "/$bunfs/root/..." path; process.argv0 is the name as invoked (symlink or hardlink
// name), process.execPath is /proc/self/exe (a symlink resolved, a hardlink kept). So: argv0
// first, execPath second, else `berth <plugin>`.
// No node:fs or node:path here: loading Bun's node:fs costs a start ~1 ms, and VERSION needs neither.
import type { CniPlugin } from "./skel/plugin";
import { versionInfo } from "./skel/version";

declare const __BERTH_VERSION__: string | undefined;
declare const __BERTH_COMMIT__: string | undefined;
const VERSION = typeof __BERTH_VERSION__ === "string" ? __BERTH_VERSION__ : "0.0.0-dev";
const COMMIT = typeof __BERTH_COMMIT__ === "string" ? __BERTH_COMMIT__ : "unknown";

type Entry = (argv: string[]) => Promise<number>;

// Each entry imports its module only when chosen, and a plugin's own modules only once the verb
// needs them (VERSION never loads netlink or the ipamd client), so start-up stays short.
// VERSION is answered here: its answer depends on nothing the runtime passes (stdin holds only the
// runtime's cniVersion), so it loads no other module and leaves stdin unread.
const cniPlugin =
  <P>(load: () => Promise<CniPlugin<P>>): Entry =>
  async () => {
    if (process.env.CNI_COMMAND === "VERSION") {
      // Drain stdin (the runtime's cniVersion) before answering: a runtime still writing it must not get EPIPE.
      await drainStdin();
      write(1, JSON.stringify(versionInfo()) + "\n");
      return 0;
    }
    return (await import("./skel/dispatch")).pluginMain(load);
  };

const ENTRIES: Record<string, Entry> = {
  "berth-ipam": cniPlugin(async () => (await import("./plugins/berth-ipam")).ipamPlugin),
  "berth-macvlan": cniPlugin(async () => (await import("./plugins/macvlan")).macvlanPlugin),
  "berth-hostdev": cniPlugin(async () => (await import("./plugins/hostdev")).hostdevPlugin),
  "berth-sriov": cniPlugin(async () => (await import("./plugins/sriov")).sriovPlugin),
  ipamctl: async (argv) => (await import("../ipamctl/cli")).main(argv),
  // Installed only where the node has no loopback plugin (containerd runs it for every sandbox).
  loopback: cniPlugin(async () => (await import("./plugins/loopback")).loopbackPlugin),
};

/** console.log and console.error write synchronously under Bun, and need no module. */
function write(fd: 1 | 2, text: string): void {
  (fd === 1 ? console.log : console.error)(text.endsWith("\n") ? text.slice(0, -1) : text);
}

declare const Bun: { stdin: { text(): Promise<string> } } | undefined;

/** Reads stdin to its end with Bun's own reader (no node:fs); nothing to do without Bun or stdin. */
async function drainStdin(): Promise<void> {
  if (typeof Bun === "undefined") return;
  await Bun.stdin.text().catch(() => "");
}

const basename = (path: string): string => path.slice(path.lastIndexOf("/") + 1);

function usage(): string {
  return [
    `berth ${VERSION} (commit ${COMMIT})`,
    "",
    "Usage: berth <command> [args]     (or run through a link named after the command)",
    "",
    "Commands:",
    ...Object.keys(ENTRIES).map((name) => `  ${name}`),
    "  --version                 print version and commit",
    "",
    "The berth-* plugins are CNI plugins: the container runtime runs them with CNI_COMMAND and",
    "the other CNI_* variables set and the network config on stdin.",
    "",
  ].join("\n");
}

async function main(): Promise<number> {
  const invoked = basename(process.argv0 || "");
  const exe = basename(process.execPath || "");
  const byName = ENTRIES[invoked] ?? ENTRIES[exe];
  const argv = process.argv.slice(2);
  if (byName) return byName(argv);

  const [sub, ...rest] = argv;
  if (sub === "--version" || sub === "version") {
    write(1, `berth ${VERSION} (commit ${COMMIT})\n`);
    return 0;
  }
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    write(sub === undefined ? 2 : 1, usage());
    return sub === undefined ? 2 : 0;
  }
  const entry = ENTRIES[sub];
  if (!entry) {
    write(2, `berth: unknown command "${sub}"\n\n${usage()}`);
    return 2;
  }
  return entry(rest);
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    // Only reached if loading a module failed: still answer as a CNI plugin would.
    const msg = e instanceof Error ? e.message : String(e);
    write(
      1,
      JSON.stringify({
        cniVersion: "1.1.0",
        code: 999,
        msg: `internal error: ${msg}`,
        details: "this is a bug in Berth; please report it",
      }) + "\n",
    );
    process.exit(1);
  },
);
