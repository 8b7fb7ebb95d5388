// Real traffic for the bandwidth tests: an iperf3 server in one namespace and a bounded transfer
// from another. The rates judge the shaping; they are not timing targets.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";

/** An iperf3 server in namespace `netns` (by name) on `port`; kill it in afterAll. */
export function iperfServer(netns: string, port: number): ChildProcess {
  return spawn("ip", ["netns", "exec", netns, "iperf3", "-s", "-p", String(port)], { stdio: "ignore" });
}

/**
 * Bits per second the receiver saw in a 4 s transfer from namespace `netns` to `server`:`port`
 * (`reverse`: the server sends, i.e. the client's ingress). Retried while the server is still
 * starting, or busy with another test file's client.
 */
export function measureBits(netns: string, server: string, port: number, reverse: boolean): number {
  const args = ["netns", "exec", netns, "iperf3", "-c", server, "-p", String(port), "-t", "4", "-O", "1", "-J", ...(reverse ? ["-R"] : [])];
  for (let attempt = 0; ; attempt++) {
    try {
      const out = execFileSync("ip", args, { encoding: "utf8", timeout: 20_000 });
      return JSON.parse(out).end.sum_received.bits_per_second as number;
    } catch (e) {
      if (attempt >= 20) throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
    }
  }
}
