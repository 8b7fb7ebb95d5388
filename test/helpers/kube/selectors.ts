// Label selectors (the apiserver's full grammar) and the few field selectors the test API server knows.
export type Matcher = (obj: Record<string, unknown>) => boolean;

export class SelectorError extends Error {}

const KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

/** `a=b,c!=d,e in (x,y),f notin (z),g,!h` as the apiserver parses it. */
export function parseLabelSelector(text: string): Matcher {
  const terms: ((labels: Record<string, string>) => boolean)[] = [];
  for (const raw of splitTerms(text)) {
    const term = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^(\S+?)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term))) {
      const [, key, op, list] = m;
      const values = list!.split(",").map((v) => v.trim());
      checkKey(key!);
      values.forEach(checkValue);
      terms.push(op === "in" ? (l) => key! in l && values.includes(l[key!]!) : (l) => !(key! in l) || !values.includes(l[key!]!));
    } else if ((m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(term))) {
      const [, key, op, value] = m;
      checkKey(key!);
      checkValue(value!);
      terms.push(op === "!=" ? (l) => l[key!] !== value : (l) => l[key!] === value);
    } else if ((m = /^!\s*(\S+)$/.exec(term))) {
      const key = m[1]!;
      checkKey(key);
      terms.push((l) => !(key in l));
    } else {
      checkKey(term);
      terms.push((l) => term in l);
    }
  }
  return (obj) => {
    const labels = (obj.metadata as { labels?: Record<string, string> } | undefined)?.labels ?? {};
    return terms.every((t) => t(labels));
  };
}

/** Field selectors: only `field=value` / `field==value` on the fields each resource allows; anything else is refused. */
export function parseFieldSelector(text: string, allowed: readonly string[], resource: string): Matcher {
  const terms = text
    .split(",")
    .filter((t) => t !== "")
    .map((term) => {
      const m = /^([A-Za-z.]+)(==|=)(.*)$/.exec(term);
      if (!m || !allowed.includes(m[1]!)) {
        const label = m?.[1] ?? term;
        throw new SelectorError(
          `field label not supported: ${label} (this test API server serves only ${allowed.join(", ") || "no"} ` +
            `field selectors on ${resource}, with =)`,
        );
      }
      const path = m[1]!.split(".");
      const value = m[3]!;
      const read = (obj: Record<string, unknown>): unknown =>
        path.reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], obj);
      return (obj: Record<string, unknown>) => String(read(obj) ?? "") === value;
    });
  return (obj) => terms.every((t) => t(obj));
}

function splitTerms(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of text) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  if (cur.trim() !== "" || out.length > 0) out.push(cur);
  return out.filter((t) => t.trim() !== "");
}

function checkKey(key: string): void {
  if (!KEY.test(key) || key.length > 316) throw new SelectorError(`unable to parse requirement: invalid label key "${key}"`);
}

function checkValue(value: string): void {
  if (!VALUE.test(value) || value.length > 63) throw new SelectorError(`unable to parse requirement: invalid label value "${value}"`);
}
