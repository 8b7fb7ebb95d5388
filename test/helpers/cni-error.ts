import { expect } from "vitest";
import { CniError } from "../../cni/skel/errors";

/** Runs fn, which must throw a CniError, and returns that error for assertions. */
export function cniErrorOf(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CniError);
    return e as CniError;
  }
  throw new Error("expected a CniError");
}
