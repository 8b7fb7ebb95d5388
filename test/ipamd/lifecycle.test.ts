// Start-up flags, schema version, graceful shutdown, metrics on TCP, log file, restart persistence.
import { DatabaseSync } from "node:sqlite";
import { existsSync, readFileSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MIGRATIONS } from "../../ipamd/store/schema";
import { cleanupIpamdTest, makeTempDir, startIpamd } from "../helpers/ipamd";

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode!, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("daemon lifecycle", () => {
  it("serves metrics on TCP, logs JSON to a file, shuts down cleanly on SIGTERM and keeps state across restarts", async () => {
    const dir = makeTempDir();
    const port = 20000 + (process.pid % 20000);
    const logFile = join(dir, "log", "ipamd.log");
    const config = { statefulSets: [{ namespace: "default", name: "web" }], pools: [{ name: "p", subnet: "10.140.0.0/24" }] };
    const d = await startIpamd({
      dir,
      config,
      args: ["--metrics-address", `127.0.0.1:${port}`, "--log-file", logFile, "--node-name", "flag-node"],
    });
    expect((await d.client.status()).node.name).toBe("flag-node");
    const web = await d.client.allocate({ containerID: "w0", ifName: "eth0", network: "n", podNamespace: "default", podName: "web-0" });
    await d.client.release({ containerID: "w0", ifName: "eth0", network: "n" });

    const m = await httpGet(port, "/metrics");
    expect(m.status).toBe(200);
    expect(m.body).toContain('berth_ipamd_pool_reserved_addresses{pool="p"} 1');
    expect((await httpGet(port, "/v1/status")).status).toBe(404); // only metrics on TCP

    expect(await d.stop()).toBe(0);
    expect(existsSync(d.socket)).toBe(false);
    const lines = readFileSync(logFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { msg: string });
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(["ipamd serving", "shutting down", "stopped"]));

    const db = new DatabaseSync(d.db, { readOnly: true });
    try {
      expect(db.prepare("PRAGMA user_version").get()).toEqual({ user_version: MIGRATIONS.length });
      expect(db.prepare("SELECT owner, container_id FROM reservations").all()).toEqual([{ owner: "default/web/0", container_id: null }]);
    } finally {
      db.close();
    }

    const again = await d.restart([]);
    try {
      const back = await again.client.allocate({
        containerID: "w0-new",
        ifName: "eth0",
        network: "n",
        podNamespace: "default",
        podName: "web-0",
      });
      expect(back.ips).toEqual(web.ips);
    } finally {
      await again.stop();
    }
  });
});

afterAll(cleanupIpamdTest);
