// How ipamctl prints: -o table (default), wide (more columns), json, yaml; colour only on a terminal
// and never with NO_COLOR (https://no-color.org); FORCE_COLOR forces it where NO_COLOR is unset.
import Table from "cli-table3";

export type Format = "table" | "wide" | "json" | "yaml";
export const FORMATS: Format[] = ["table", "wide", "json", "yaml"];

export function colourEnabled(env: NodeJS.ProcessEnv = process.env, isTty = Boolean(process.stdout.isTTY)): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== "") return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== "" && env.FORCE_COLOR !== "0") return true;
  return isTty;
}

const CODES = { green: 32, yellow: 33, red: 31, bold: 1 } as const;
export function paint(colour: keyof typeof CODES, text: string): string {
  return colourEnabled() ? `\x1b[${CODES[colour]}m${text}\x1b[0m` : text;
}

export function table(head: string[], rows: (string | number)[][]): string {
  const t = new Table({ head, style: { head: [], border: [] }, chars: { mid: "", "left-mid": "", "mid-mid": "", "right-mid": "" } });
  for (const r of rows) t.push(r.map((c) => String(c)));
  return t.toString();
}

/** Machine-readable text of `value` for json and yaml; undefined for the human formats. */
export async function structured(format: Format, value: unknown): Promise<string | undefined> {
  if (format === "json") return JSON.stringify(value, null, 2);
  if (format === "yaml") {
    const { stringify } = await import("yaml"); // loaded only for -o yaml
    return stringify(value);
  }
  return undefined;
}

/** "3d4h", "5m12s", "40s": how long ago `iso` was, as kubectl's AGE column shows it. */
export function age(iso: string | undefined, now = Date.now()): string {
  if (!iso) return "-";
  let s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d > 0) return `${d}d${h ? `${h}h` : ""}`;
  if (h > 0) return `${h}h${m ? `${m}m` : ""}`;
  if (m > 0) return `${m}m${s ? `${s}s` : ""}`;
  return `${s}s`;
}
