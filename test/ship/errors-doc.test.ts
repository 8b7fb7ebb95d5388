// docs/ERRORS.md and the plugins agree: every code in it has its cause and fix and is one of the
// plugins' codes (cni/skel/errors.ts), every code a test saw a plugin answer with is in it, and
// (when the whole host suite runs) every code in it was produced by at least one test.
//
// The codes are recorded by the test helpers (test/helpers/cni-codes.ts) in each test process;
// the sequencer (vitest.config.ts) runs this file last, and it waits until every other file of
// the run has finished, so the order files run in and their parallelism do not matter.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { CniCode } from "../../cni/skel/errors";
import { doneFiles, runFiles, seenCodes } from "../helpers/cni-codes";
import { ROOT } from "../helpers/plugins";

interface DocRow {
  code: number;
  when: string;
  fix: string;
}

function documented(): DocRow[] {
  const rows: DocRow[] = [];
  for (const line of readFileSync(join(ROOT, "docs/ERRORS.md"), "utf8").split("\n")) {
    const m = /^\| (\d+) \| (.*) \| (.*) \|$/.exec(line);
    if (m) rows.push({ code: Number(m[1]), when: m[2]!.trim(), fix: m[3]!.trim() });
  }
  return rows;
}

/** Every host-suite test file (what vitest.config.ts includes). */
function hostSuiteFiles(dir = join(ROOT, "test")): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return relative(ROOT, path) === "test/lab" ? [] : hostSuiteFiles(path);
    return e.name.endsWith(".test.ts") ? [path] : [];
  });
}

async function othersFinished(self: string): Promise<string[]> {
  const others = runFiles().filter((f) => f !== self);
  for (;;) {
    const done = doneFiles();
    if (others.every((f) => done.has(f))) return others;
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe("docs/ERRORS.md", () => {
  it("lists each code once, with its cause and fix, and exactly the codes the plugins define", () => {
    const rows = documented();
    const codes = rows.map((r) => r.code);
    expect(new Set(codes).size).toBe(codes.length);
    for (const r of rows) {
      expect(r.when, `code ${r.code}: cause`).not.toBe("");
      expect(r.fix, `code ${r.code}: fix`).not.toBe("");
    }
    expect([...codes].sort((a, b) => a - b)).toEqual([...new Set(Object.values(CniCode))].sort((a, b) => a - b));
  });

  it(
    "agrees with what the tests saw the plugins answer",
    async () => {
      const self = expect.getState().testPath!;
      const others = await othersFinished(self);
      const docs = new Set(documented().map((r) => r.code));
      const seen = seenCodes();
      const undocumented = seen.filter((s) => !docs.has(s.code));
      expect(
        undocumented.map((s) => `${s.code} (${relative(ROOT, s.file)} > ${s.test})`),
        "codes seen by tests but not in ERRORS.md",
      ).toEqual([]);
      const ran = new Set(others);
      const all = hostSuiteFiles().filter((f) => f !== self);
      if (!all.every((f) => ran.has(f))) return; // a partial run: not every test that produces a code ran
      const seenSet = new Set(seen.map((s) => s.code));
      expect(
        [...docs].filter((c) => !seenSet.has(c)),
        "codes in ERRORS.md that no test produced",
      ).toEqual([]);
    },
    30 * 60_000,
  );
});
