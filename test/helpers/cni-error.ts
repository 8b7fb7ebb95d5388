// The one way plugin tests expect a CNI error: in-process (cniErrorOf) or from a built plugin run
// (expectCniError). Both record the code for the ERRORS.md check (cni-codes.ts).
import { expect } from "vitest";
import { CniError } from "../../cni/skel/errors";
import { recordCniCode } from "./cni-codes";
import type { PluginRun } from "./plugins";

/** Runs fn, which must throw a CniError, and returns that error for assertions. */
export function cniErrorOf(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CniError);
    recordCniCode((e as CniError).code);
    return e as CniError;
  }
  throw new Error("expected a CniError");
}

/** The same for a promise, which must reject with a CniError. */
export async function cniRejectionOf(promise: Promise<unknown>): Promise<CniError> {
  return promise.then(
    () => {
      throw new Error("expected a CniError");
    },
    (e: unknown) =>
      cniErrorOf(() => {
        throw e;
      }),
  );
}

/**
 * A built plugin's run must have failed with CNI error `code` (exit 1, one JSON error document on
 * stdout) and, when given, a message matching `msg`. Returns the error document.
 */
export function expectCniError(run: PluginRun, code: number, msg?: string | RegExp): { code: number; msg: string; details: string } {
  expect(run.json, `stdout: ${run.stdout}\nstderr: ${run.stderr}`).toMatchObject({ code });
  expect(run.code).toBe(1);
  expect(typeof run.json.msg).toBe("string");
  if (typeof msg === "string") expect(run.json.msg).toContain(msg);
  else if (msg) expect(run.json.msg).toMatch(msg);
  return run.json;
}
