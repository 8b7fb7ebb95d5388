// The FULL scrape of a real ipamd (its own metrics and prom-client's Node.js process metrics), after
// allocations, releases, an error and a reserve, passes `promtool check metrics` (Debian's
// prometheus package); the build-info gauge names this build; request latency is a histogram in
// seconds by route. Scraped over the TCP metrics address (as Prometheus does) and the socket.
import { spawnSync } from "node:child_process";
import { request } from "node:http";
import { createServer } from "node:net";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { ROOT } from "../helpers/plugins";

let d: DaemonHandle;
let port: number;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

function scrape(): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path: "/metrics" }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode!, type: String(res.headers["content-type"]), body }));
    });
    req.on("error", reject);
    req.end();
  });
}

function promtool(text: string): { code: number | null; out: string } {
  const r = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  return { code: r.status, out: r.stdout + r.stderr };
}

beforeAll(async () => {
  port = await freePort();
  d = await startIpamd({
    config: {
      statefulSets: [{ namespace: "db", name: "redis" }],
      pools: [
        { name: "p4", subnet: "10.150.0.0/24" },
        { name: "p6", subnet: "fd00:150::/64" },
      ],
    },
    args: ["--metrics-address", `127.0.0.1:${port}`],
  });
  for (let i = 0; i < 5; i++) await d.client.allocate({ containerID: `m${i}`, ifName: "eth0", network: "n" });
  await d.client.release({ containerID: "m0", ifName: "eth0", network: "n" });
  await d.client.reserve({ namespace: "db", statefulset: "redis", replicas: 2 });
  await d.client.allocate({ containerID: "bad", ifName: "eth0", network: "n", ips: ["192.0.2.1"] }).catch(() => undefined);
}, 60_000);

afterAll(cleanupIpamdTest);

describe("the metrics scrape", () => {
  it("passes promtool check metrics, whole", async () => {
    const m = await scrape();
    expect(m.status).toBe(200);
    expect(m.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(m.body).toContain("berth_ipamd_process_cpu_seconds_total"); // the Node.js process metrics are in it
    expect(m.body).toContain("berth_ipamd_nodejs_active_handles{");
    expect(promtool(m.body)).toEqual({ code: 0, out: "" });
    expect(promtool(await d.client.metrics())).toEqual({ code: 0, out: "" });
  });

  it("promtool does fail on what prom-client's defaults alone would add (the check is real)", () => {
    const bad = "# HELP x_active_handles_total Number of active handles.\n# TYPE x_active_handles_total gauge\nx_active_handles_total 3\n";
    const r = promtool(bad);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain('non-counter metrics should not have "_total" suffix');
  });

  it("has a build-info gauge with this build's version and Node.js", async () => {
    const { body } = await scrape();
    const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
    const line = body.split("\n").find((l) => l.startsWith("berth_ipamd_build_info{"));
    expect(line).toMatch(
      new RegExp(
        `^berth_ipamd_build_info\\{version="${version.replace(/\./g, "\\.")}",commit="(?:[0-9a-f]{12}(?:-dirty)?|unknown)",nodejs="24\\.`,
      ),
    );
    expect(line).toMatch(/ 1$/);
  });

  it("has request latency histograms in seconds by route and status", async () => {
    const { body } = await scrape();
    expect(body).toContain("# TYPE berth_ipamd_request_duration_seconds histogram");
    expect(body).toMatch(/berth_ipamd_request_duration_seconds_count\{route="allocate",status="200"\} 5\n/);
    expect(body).toMatch(/berth_ipamd_request_duration_seconds_count\{route="release",status="200"\} 1\n/);
    expect(body).toMatch(/berth_ipamd_request_duration_seconds_count\{route="reserve",status="200"\} 1\n/);
    expect(body).toMatch(/berth_ipamd_request_duration_seconds_count\{route="allocate",status="409"\} 1\n/);
    expect(body).toMatch(/berth_ipamd_request_duration_seconds_bucket\{le="\+Inf",route="allocate",status="200"\} 5\n/);
    const sum = Number(/berth_ipamd_request_duration_seconds_sum\{route="allocate",status="200"\} (\S+)/.exec(body)![1]);
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThan(30); // seconds, not milliseconds
  });
});
