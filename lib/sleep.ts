// The blocking sleep synchronous code waits with (setns, flock and non-blocking file descriptors
// must stay on the calling thread).

/** Blocks the calling thread for `ms`. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
