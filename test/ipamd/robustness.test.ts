// Access control, malformed input, start-up refusals, socket permissions, metrics.
import { spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, type DaemonHandle, makeTempDir, runIpamdExpectingFailure, startIpamd } from "../helpers/ipamd";

let d: DaemonHandle;
beforeAll(async () => {
  d = await startIpamd({ config: { pools: [{ name: "p", subnet: "10.110.0.0/24" }] } });
});
afterAll(async () => {
  await d?.stop();
});

/** Sends raw bytes on a fresh connection and returns what comes back until the server closes or answers. */
function rawExchange(socket: string, payload: string | Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    let text = "";
    s.on("data", (c) => {
      text += c.toString();
      const head = text.indexOf("\r\n\r\n");
      const len = /content-length: (\d+)/i.exec(text);
      if (head >= 0 && len && text.length >= head + 4 + Number(len[1])) s.end();
    });
    s.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "EPIPE" || e.code === "ECONNRESET") s.destroy();
      else reject(e);
    });
    s.on("close", () => {
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf("\r\n\r\n") + 4) });
    });
    s.write(payload);
  });
}

const post = (path: string, body: string, extraHeaders = "") =>
  `POST ${path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ` +
  `${Buffer.byteLength(body)}\r\nconnection: close\r\n${extraHeaders}\r\n${body}`;

describe("malformed requests get a 4xx and the daemon keeps serving", () => {
  it.each([
    ["bad JSON", post("/v1/allocate", "{not json"), 400, "invalid_request", /not valid JSON/],
    ["empty body", post("/v1/allocate", ""), 400, "invalid_request", /empty/],
    [
      "wrong type",
      post("/v1/allocate", JSON.stringify({ containerID: 42, ifName: "eth0", network: "n" })),
      400,
      "invalid_request",
      /^containerID: /,
    ],
    ["missing field", post("/v1/release", JSON.stringify({ containerID: "c", network: "n" })), 400, "invalid_request", /^ifName: /],
    ["array body", post("/v1/check", "[1,2,3]"), 400, "invalid_request", /body/],
    [
      "bad ifName",
      post("/v1/allocate", JSON.stringify({ containerID: "c", ifName: "a/b", network: "n" })),
      400,
      "invalid_request",
      /ifName/,
    ],
    [
      "bad ip",
      post("/v1/allocate", JSON.stringify({ containerID: "c", ifName: "eth0", network: "n", ips: ["1.2.3"] })),
      400,
      "invalid_request",
      /ips\[0\]/,
    ],
    ["unknown path", "GET /v1/nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", 404, "not_found", /no such API path/],
    ["unversioned path", "GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", 404, "not_found", /\/v1\//],
    ["wrong method", "GET /v1/allocate HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", 405, "method_not_allowed", /use POST/],
    [
      "huge declared body",
      `POST /v1/gc HTTP/1.1\r\nhost: x\r\ncontent-length: 50000000\r\nconnection: close\r\n\r\n{`,
      413,
      "payload_too_large",
      /limit/,
    ],
    ["garbage instead of HTTP", "\x00\x01hello\r\n\r\n", 400, "invalid_request", /malformed HTTP/],
  ])("%s", async (_name, payload, status, code, message) => {
    const r = await rawExchange(d.socket, payload as string);
    expect(r.status).toBe(status);
    const body = JSON.parse(r.body) as { error: { code: string; message: string; field?: string } };
    expect(body.error.code).toBe(code);
    expect(body.error.message).toMatch(message as RegExp);
    expect((await d.client.status()).status).toBe("ok");
  });

  it("names the field in the error body", async () => {
    const r = await rawExchange(
      d.socket,
      post("/v1/reservations/reserve", JSON.stringify({ namespace: "db", statefulset: "x", replicas: -1 })),
    );
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error.field).toBe("replicas");
  });

  it("rejects a streamed body over the limit without a content-length", async () => {
    const chunk = "x".repeat(1024 * 1024);
    let payload = "POST /v1/gc HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    for (let i = 0; i < 6; i++) payload += `${chunk.length.toString(16)}\r\n${chunk}\r\n`;
    payload += "0\r\n\r\n";
    const r = await rawExchange(d.socket, payload);
    expect(r.status).toBe(413);
    expect((await d.client.status()).status).toBe("ok");
  });

  it("survives many concurrent bad requests and still allocates", async () => {
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => rawExchange(d.socket, post("/v1/allocate", i % 2 ? "{" : '{"containerID":[]}'))),
    );
    const r = await d.client.allocate({ containerID: "after-storm", ifName: "eth0", network: "n" });
    expect(r.ips).toHaveLength(1);
  });
});

describe("access control by peer credentials", () => {
  it("creates the socket 0660 in a 0750 directory", () => {
    expect(statSync(d.socket).mode & 0o777).toBe(0o660);
    expect(statSync(dirname(d.socket)).mode & 0o777).toBe(0o750);
    expect(statSync(d.socket).uid).toBe(0);
  });

  it("lets a non-root peer read but answers 403 forbidden on changes", async () => {
    // Open the path for uid 65534 just for this test (the daemon's own modes keep it out).
    for (let p = dirname(d.socket); p !== "/" && p.startsWith(dirname(d.dir)); p = dirname(p)) chmodSync(p, 0o755);
    chmodSync(d.socket, 0o666);
    const script = `
      const http = require("node:http");
      const call = (method, path, body) => new Promise((res, rej) => {
        const r = http.request({ socketPath: process.argv[1], method, path, headers: { "content-type": "application/json" } }, (m) => {
          let t = ""; m.on("data", (c) => t += c); m.on("end", () => res({ status: m.statusCode, body: JSON.parse(t) }));
        });
        r.on("error", rej); if (body) r.write(JSON.stringify(body)); r.end();
      });
      (async () => {
        const get = await call("GET", "/v1/status");
        const pools = await call("GET", "/v1/pools");
        const post = await call("POST", "/v1/allocate", { containerID: "nobody", ifName: "eth0", network: "n" });
        const rel = await call("POST", "/v1/reservations/release", { ip: "10.110.0.1" });
        console.log(JSON.stringify({ uid: process.getuid(), get, pools: pools.status, post, rel: rel.status }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, ["-e", script, d.socket], { uid: 65534, gid: 65534, stdio: ["ignore", "pipe", "pipe"] });
      let o = "";
      let e = "";
      p.stdout.on("data", (c: Buffer) => {
        o += c;
      });
      p.stderr.on("data", (c: Buffer) => {
        e += c;
      });
      p.on("close", (code) => (code === 0 ? resolve(o) : reject(new Error(`client failed (${code}): ${e}`))));
    });
    const r = JSON.parse(out);
    expect(r.uid).toBe(65534);
    expect(r.get.status).toBe(200);
    expect(r.get.body.status).toBe("ok");
    expect(r.pools).toBe(200);
    expect(r.post.status).toBe(403);
    expect(r.post.body.error.code).toBe("forbidden");
    expect(r.post.body.error.message).toContain("uid 65534");
    expect(r.rel).toBe(403);
    expect((await d.client.reservations({ owner: "nobody/eth0" })).reservations).toEqual([]);
  });
});

describe("metrics", () => {
  it("serves Prometheus text with latency histogram, pool gauges and error counts", async () => {
    await d.client.allocate({ containerID: "m1", ifName: "eth0", network: "n" });
    const text = await d.client.metrics();
    expect(text).toMatch(/berth_ipamd_allocation_duration_seconds_bucket\{le="0\.005"\} \d+/);
    expect(text).toMatch(/berth_ipamd_pool_used_addresses\{pool="p"\} [1-9]/);
    expect(text).toMatch(/berth_ipamd_pool_free_addresses\{pool="p"\} \d+/);
    expect(text).toMatch(/berth_ipamd_errors_total\{code="invalid_request"\} [1-9]/);
    expect(text).toMatch(/berth_ipamd_commit_batch_size_count [1-9]/);
  });
});

describe("a burst of CNI calls, a connection each", () => {
  // Node accepts one waiting connection per turn of its event loop: without the commit delay each commit (and its
  // fsync) held about one request of plugins that keep coming, and they waited for one fsync each in a row.
  it("shares commits: 16 plugins at a time, 64 ADDs each on a new connection, take at most 32 commits", async () => {
    const commits = async () => {
      const text = await d.client.metrics();
      const num = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
      return { count: num("berth_ipamd_commit_batch_size_count"), sum: num("berth_ipamd_commit_batch_size_sum") };
    };
    const before = await commits();
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 16 }, async (_, w) => {
        for (let k = 0; k < 4; k++) {
          const body = JSON.stringify({ containerID: `burst-${w * 4 + k}`, ifName: "eth0", network: "n" });
          statuses.push((await rawExchange(d.socket, post("/v1/allocate", body))).status);
        }
      }),
    );
    expect(statuses).toEqual(Array(64).fill(200));
    const after = await commits();
    expect(after.sum - before.sum).toBe(64);
    expect(after.count - before.count).toBeLessThanOrEqual(32);
    for (let i = 0; i < 64; i++) await d.client.release({ containerID: `burst-${i}`, ifName: "eth0", network: "n" });
  });
});

describe("refuses to start", () => {
  it("on an invalid config, naming the JSON path of each bad field", async () => {
    const dir = makeTempDir();
    const cfg = join(dir, "bad.json");
    writeFileSync(
      cfg,
      JSON.stringify({
        node: { name: "n" },
        pools: [
          { name: "ok", subnet: "10.1.0.0/24" },
          { name: "bad", subnet: "10.2.0.5/24" },
          { name: "x", subnet: "10.3.0.0/24", vlan: 5000, nodeSelector: { matchExpressions: [{ key: "a", operator: "In" }] } },
        ],
      }),
    );
    const r = await runIpamdExpectingFailure(["--config", cfg, "--socket", join(dir, "s.sock"), "--db", join(dir, "db")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("pools[2].vlan");
    expect(r.stderr).toContain("pools[2].nodeSelector.matchExpressions[0].values");
  });

  it("on semantic config errors (host bits, overlap)", async () => {
    const dir = makeTempDir();
    const cfg = join(dir, "bad.json");
    writeFileSync(
      cfg,
      JSON.stringify({
        node: { name: "n" },
        pools: [
          { name: "a", subnet: "10.2.0.5/24" },
          { name: "b", subnet: "10.9.0.0/24" },
          { name: "c", subnet: "10.9.0.0/25" },
        ],
      }),
    );
    const r = await runIpamdExpectingFailure(["--config", cfg, "--socket", join(dir, "s.sock"), "--db", join(dir, "db")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("pools[0].subnet: 10.2.0.5/24 has host bits set; did you mean 10.2.0.0/24?");
    expect(r.stderr).toMatch(/pools\[2\]: usable addresses of pool "c" overlap pool "b"/);
  });

  it("on a corrupt database", async () => {
    const dir = makeTempDir();
    const cfg = join(dir, "ipamd.json");
    writeFileSync(cfg, JSON.stringify({ node: { name: "n" }, pools: [{ name: "p", subnet: "10.1.0.0/24" }] }));
    mkdirSync(join(dir, "lib"));
    writeFileSync(join(dir, "lib", "ipamd.db"), Buffer.concat([Buffer.from("this is not an SQLite file"), Buffer.alloc(8192, 7)]));
    const r = await runIpamdExpectingFailure(["--config", cfg, "--socket", join(dir, "s.sock"), "--db", join(dir, "lib", "ipamd.db")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/database .*ipamd\.db/);
    expect(r.stderr).toMatch(/corrupt|not a database/);
  });

  it.each([
    [0o1777, 0, "is writable by every user (mode 01777)"],
    [0o775, 0, "is writable by its group (mode 0775)"],
    [0o755, 65534, "is owned by uid 65534, not root"],
  ])("when the socket's directory (mode %o, uid %d) is not root's alone, leaving its mode alone", async (mode, uid, why) => {
    const dir = makeTempDir();
    const cfg = join(dir, "ipamd.json");
    writeFileSync(cfg, JSON.stringify({ node: { name: "n" }, pools: [{ name: "p", subnet: "10.1.0.0/24" }] }));
    const sockDir = join(dir, "shared");
    mkdirSync(sockDir);
    chmodSync(sockDir, mode);
    chownSync(sockDir, uid, 0);
    const socket = join(sockDir, "ipamd.sock");
    const r = await runIpamdExpectingFailure(["--config", cfg, "--socket", socket, "--db", join(dir, "lib", "db")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`the socket directory ${sockDir} of ${socket} ${why}`);
    expect(r.stderr).toContain("e.g. --socket /run/berth/ipamd.sock");
    expect(statSync(sockDir).mode & 0o7777).toBe(mode);
    expect(existsSync(socket)).toBe(false);
  });

  it("serves in a root-owned directory others may read (like /run or /etc) without changing its mode", async () => {
    const dir = makeTempDir();
    const sockDir = join(dir, "etc-like");
    mkdirSync(sockDir, { mode: 0o755 });
    chmodSync(sockDir, 0o755);
    const socket = join(sockDir, "ipamd.sock");
    const e = await startIpamd({ dir, config: { pools: [{ name: "p", subnet: "10.1.0.0/24" }] }, socket });
    try {
      expect(statSync(sockDir).mode & 0o7777).toBe(0o755);
      expect(statSync(socket).mode & 0o777).toBe(0o660);
    } finally {
      await e.stop();
    }
  });

  it("when another daemon already serves the socket", async () => {
    const r = await runIpamdExpectingFailure(["--config", d.configPath, "--socket", d.socket, "--db", join(d.dir, "other.db")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("another ipamd is already serving");
    expect((await d.client.status()).status).toBe("ok");
  });
});

afterAll(cleanupIpamdTest);
