// Every CNI error code the tests see, recorded for test/ship/errors-doc.test.ts, which holds
// them together with docs/ERRORS.md. vitest.config.ts gives each test process the directory
// ($BERTH_CNI_CODES_DIR); each process appends to its own file, so files in parallel never
// share one. Outside vitest's host suite (lab, benchmarks) nothing is recorded.
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";

const CODES_DIR_ENV = "BERTH_CNI_CODES_DIR";

interface SeenCode {
  code: number;
  file: string;
  test: string;
}

function dir(): string | undefined {
  return process.env[CODES_DIR_ENV];
}

/** Records a CNI error code a plugin (built or in-process) answered with. */
export function recordCniCode(code: unknown): void {
  const d = dir();
  if (!d || typeof code !== "number") return;
  let file = "",
    test = "";
  try {
    const state = expect.getState();
    file = state.testPath ?? "";
    test = state.currentTestName ?? "";
  } catch {
    // outside a test
  }
  appendFileSync(join(d, `codes-${process.pid}.jsonl`), JSON.stringify({ code, file, test } satisfies SeenCode) + "\n");
}

/** Marks a test file as finished (the setup file's afterAll). */
export function markFileDone(file: string): void {
  const d = dir();
  if (!d || !file) return;
  mkdirSync(join(d, "done"), { recursive: true });
  writeFileSync(join(d, "done", encodeURIComponent(file)), "");
}

export function doneFiles(): Set<string> {
  const d = dir();
  if (!d || !existsSync(join(d, "done"))) return new Set();
  return new Set(readdirSync(join(d, "done")).map(decodeURIComponent));
}

/** The test files of this run, as the sequencer wrote them. */
export function runFiles(): string[] {
  const d = dir();
  const path = d ? join(d, "files.json") : "";
  return path && existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as string[]) : [];
}

export function seenCodes(): SeenCode[] {
  const d = dir();
  if (!d || !existsSync(d)) return [];
  return readdirSync(d)
    .filter((f) => f.startsWith("codes-"))
    .flatMap((f) =>
      readFileSync(join(d, f), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as SeenCode),
    );
}
