// Rate limit for repeated log lines: a failing disk must not turn into tens of thousands of stack
// traces. The first line of a kind in a window is logged in full; repeats are counted and the
// count goes out with the next line of that kind after the window.
import type { Logger } from "pino";

const WINDOW_MS = 10_000;

export class ThrottledLog {
  private readonly seen = new Map<string, { until: number; suppressed: number }>();

  constructor(
    readonly log: Logger,
    private readonly windowMs = WINDOW_MS,
  ) {}

  error(obj: Record<string, unknown>, msg: string): void {
    this.emit("error", obj, msg);
  }

  warn(obj: Record<string, unknown>, msg: string): void {
    this.emit("warn", obj, msg);
  }

  private emit(level: "error" | "warn", obj: Record<string, unknown>, msg: string): void {
    const err = obj.err as Error | undefined;
    const key = `${level}\0${msg}\0${err?.message ?? ""}\0${String(obj.code ?? "")}`;
    const now = performance.now();
    const entry = this.seen.get(key);
    if (entry && now < entry.until) {
      entry.suppressed++;
      return;
    }
    const suppressed = entry?.suppressed ?? 0;
    this.seen.set(key, { until: now + this.windowMs, suppressed: 0 });
    if (this.seen.size > 1000) this.seen.clear(); // many distinct messages: start over rather than grow
    this.log[level](
      { ...obj, ...(suppressed ? { suppressedRepeats: suppressed } : {}) },
      suppressed ? `${msg} (and ${suppressed} more like it in the last ${this.windowMs / 1000} s)` : msg,
    );
  }
}
