// The wall clock as ipamd uses it (timestamps of cooldowns, TTLs and the API), with its steps seen
// against the monotonic clock: NTP stepping the time, a VM resumed, an operator's `date -s`.
// Ordering never depends on it (the commit sequence does that); what a step would break is
// handled by the daemon: a backward step clamps the future timestamps it leaves behind, a
// forward step holds the TTL reaper for one TTL so that nothing is released early.

/** A difference between wall and monotonic time above this is a step, not drift. */
const STEP_MS = 5_000;

export class WallClock {
  private lastWall = Date.now();
  private lastMono = performance.now();
  private steppedAt = -Infinity; // monotonic ms of the last step
  /** Called on a step: `deltaMs` < 0 when the clock went back. */
  onStep?: (deltaMs: number, now: number) => void;

  now(): number {
    const wall = Date.now();
    const mono = performance.now();
    const drift = wall - this.lastWall - (mono - this.lastMono);
    this.lastWall = wall;
    this.lastMono = mono;
    if (Math.abs(drift) >= STEP_MS) {
      this.steppedAt = mono;
      this.onStep?.(drift, wall);
    }
    return wall;
  }

  /** Monotonic milliseconds since the last step seen (Infinity when none). */
  sinceStep(): number {
    this.now();
    return performance.now() - this.steppedAt;
  }
}
