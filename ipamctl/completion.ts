// `ipamctl completion bash|zsh|fish`: completion scripts made from the command tree itself, so they
// never fall behind the commands and options. Words: commands, each command's options, the values
// of -o and --state, and the shells of `completion`.
import type { Command } from "commander";

export type Shell = "bash" | "zsh" | "fish";
export const SHELLS: Shell[] = ["bash", "zsh", "fish"];

interface Spec {
  name: string;
  flags: string[];
}

function flagsOf(cmd: Command): string[] {
  return cmd.options.flatMap((o) => [o.short, o.long].filter((f): f is string => Boolean(f)));
}

function specs(program: Command): { global: string[]; commands: Spec[] } {
  const commands: Spec[] = [];
  const walk = (cmd: Command, prefix: string): void => {
    for (const sub of cmd.commands) {
      const name = prefix ? `${prefix} ${sub.name()}` : sub.name();
      commands.push({ name, flags: flagsOf(sub) });
      walk(sub, name);
    }
  };
  walk(program, "");
  return { global: [...flagsOf(program), "--help"], commands };
}

const OUTPUTS = "table wide json yaml";

function bash(program: Command): string {
  const { global, commands } = specs(program);
  const top = commands
    .filter((c) => !c.name.includes(" "))
    .map((c) => c.name)
    .join(" ");
  const cases = commands
    .filter((c) => !c.name.includes(" "))
    .map((c) => {
      const subs = commands.filter((s) => s.name.startsWith(`${c.name} `)).map((s) => s.name.split(" ")[1]);
      const words = [...subs, ...c.flags, ...global].join(" ");
      return `    ${c.name}) words="${c.name === "completion" ? "bash zsh fish " : ""}${words}" ;;`;
    })
    .join("\n");
  return `# bash completion for ipamctl: source <(ipamctl completion bash)
_ipamctl() {
  local cur prev cmd="" words i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  case "$prev" in
    -o|--output) COMPREPLY=( $(compgen -W "${OUTPUTS}" -- "$cur") ); return ;;
    --state) COMPREPLY=( $(compgen -W "attached detached" -- "$cur") ); return ;;
    --socket) COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
  esac
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      -o|--output|--socket|--timeout) ((i++)) ;;
      -*) ;;
      *) cmd="\${COMP_WORDS[i]}"; break ;;
    esac
  done
  case "$cmd" in
    "") words="${top} ${global.join(" ")}" ;;
${cases}
    *) words="${global.join(" ")}" ;;
  esac
  COMPREPLY=( $(compgen -W "$words" -- "$cur") )
}
complete -F _ipamctl ipamctl
`;
}

function fish(program: Command): string {
  const { global, commands } = specs(program);
  const top = commands.filter((c) => !c.name.includes(" "));
  const opt = (f: string) => (f.startsWith("--") ? `-l ${f.slice(2)}` : `-s ${f.slice(1)}`);
  const lines = ["# fish completion for ipamctl: ipamctl completion fish | source", "complete -c ipamctl -f"];
  for (const f of global) lines.push(`complete -c ipamctl ${opt(f)}${f === "--output" || f === "-o" ? ` -xa "${OUTPUTS}"` : ""}`);
  lines.push(`complete -c ipamctl -n __fish_use_subcommand -a "${top.map((c) => c.name).join(" ")}"`);
  for (const c of top) {
    for (const f of c.flags) lines.push(`complete -c ipamctl -n "__fish_seen_subcommand_from ${c.name}" ${opt(f)}`);
  }
  lines.push('complete -c ipamctl -n "__fish_seen_subcommand_from completion" -a "bash zsh fish"');
  return `${lines.join("\n")}\n`;
}

export function completionScript(program: Command, shell: Shell): string {
  if (shell === "fish") return fish(program);
  if (shell === "zsh") {
    return `# zsh completion for ipamctl: source <(ipamctl completion zsh)\nautoload -U +X bashcompinit && bashcompinit\n${bash(program)}`;
  }
  return bash(program);
}
