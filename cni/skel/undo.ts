// Undo stack: each step that changes the host or the pod registers how to revert itself; when a
// later step fails, everything done so far is reverted in reverse order, so a failed ADD leaves
// no interface behind and no address allocated.
import type { Logger } from "./log";

interface UndoStep {
  what: string;
  run: () => unknown | Promise<unknown>;
}

export class UndoStack {
  private steps: UndoStep[] = [];
  constructor(private readonly log?: Logger) {}

  /** Registers how to revert the step that just succeeded. */
  push(what: string, run: () => unknown | Promise<unknown>): void {
    this.steps.push({ what, run });
  }

  get size(): number {
    return this.steps.length;
  }

  /** Forget every step: the operation succeeded. */
  commit(): void {
    this.steps = [];
  }

  /**
   * Reverts all registered steps, last first. A failing step is logged and does not stop the
   * others. Returns the failures so a caller can mention them.
   */
  async unwind(): Promise<{ what: string; error: string }[]> {
    const failures: { what: string; error: string }[] = [];
    while (this.steps.length) {
      const step = this.steps.pop()!;
      try {
        await step.run();
        this.log?.debug("undo step done", { step: step.what });
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        failures.push({ what: step.what, error });
        this.log?.error("undo step failed", { step: step.what, error });
      }
    }
    return failures;
  }
}

/**
 * Runs `body` with a fresh undo stack. If it throws, the stack is unwound and the original error
 * rethrown; if it returns, the stack is committed.
 */
export async function withUndo<T>(log: Logger | undefined, body: (undo: UndoStack) => Promise<T>): Promise<T> {
  const undo = new UndoStack(log);
  try {
    const out = await body(undo);
    undo.commit();
    return out;
  } catch (e) {
    await undo.unwind();
    throw e;
  }
}
