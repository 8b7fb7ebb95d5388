// The API socket under attack and abuse: only the socket this daemon created is unlinked, a link
// at its path is named, a listener that is not root is not trusted by the clients (Node and the
// built executables), CONNECT and deep JSON are answered, a slow body is cut at 30 s.
import { spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { IpamdClient, IpamdUntrusted } from "../../api/client";
import { cleanupIpamdTest, makeTempDir, runIpamctl, runIpamdExpectingFailure, startIpamd } from "../helpers/ipamd";
import { pluginPath, runCni } from "../helpers/plugins";

const config = { pools: [{ name: "p", subnet: "10.160.0.0/24" }] };

function raw(socket: string, payload: string): Promise<{ text: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const s = connect(socket);
    let text = "";
    s.on("data", (c) => {
      text += c.toString();
    });
    s.on("error", (e: NodeJS.ErrnoException) => (e.code === "ECONNRESET" ? s.destroy() : reject(e)));
    s.on("close", () => resolve({ text, ms: performance.now() - started }));
    s.write(payload);
  });
}

describe("the socket path", () => {
  it("a stopping daemon leaves alone the socket a newer daemon created at its path", async () => {
    const old = await startIpamd({ config });
    const { unlinkSync } = await import("node:fs");
    unlinkSync(old.socket); // as a new daemon starting while the old one is still stopping does
    const fresh = await startIpamd({ config, socket: old.socket });
    expect(await old.stop()).toBe(0);
    expect(existsSync(old.socket)).toBe(true);
    expect((await fresh.client.status()).status).toBe("ok");
    expect(await fresh.stop()).toBe(0);
    expect(existsSync(old.socket)).toBe(false); // its own socket it does remove
  });

  it("names a dangling symbolic link at the socket path instead of EADDRINUSE", async () => {
    const dir = makeTempDir();
    writeFileSync(join(dir, "c.json"), JSON.stringify({ node: { name: "n" }, ...config }));
    mkdirSync(join(dir, "run"));
    const socket = join(dir, "run", "ipamd.sock");
    symlinkSync("/nonexistent/target.sock", socket);
    const r = await runIpamdExpectingFailure(["--config", join(dir, "c.json"), "--socket", socket, "--db", join(dir, "lib", "db")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${socket} is a symbolic link (to /nonexistent/target.sock) and ipamd does not follow links`);
    expect(r.stderr).not.toContain("EADDRINUSE");
  });
});

describe("clients trust only a root listener", () => {
  it("Node client, ipamctl and berth-ipam refuse a fake ipamd run by another user", async () => {
    const dir = makeTempDir();
    chmodSync(dir, 0o755);
    const fakeDir = join(dir, "fake");
    mkdirSync(fakeDir);
    chownSync(fakeDir, 65534, 65534);
    const socket = join(fakeDir, "ipamd.sock");
    const body = JSON.stringify({ status: "ok", pools: 1, owner: "x", sticky: false, ips: [], routes: [], dns: {} });
    const script =
      `require("node:http").createServer((q, s) => { s.writeHead(200, {"content-type": "application/json"}); ` +
      `s.end(${JSON.stringify(body)}); }).listen(process.argv[1], () => console.log("up"));`;
    const fake = spawn(process.execPath, ["-e", script, socket], { uid: 65534, gid: 65534, stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve) => fake.stdout!.once("data", () => resolve()));
      const err = await new IpamdClient(socket).status().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(IpamdUntrusted);
      expect((err as Error).message).toContain("runs as uid 65534, not root, so it is not ipamd");

      const ctl = await runIpamctl(["--socket", socket, "status"]);
      expect(ctl.code).toBe(3);
      expect(ctl.stderr).toContain("runs as uid 65534, not root");

      const net = { cniVersion: "1.0.0", name: "n", type: "macvlan", ipam: { type: "berth-ipam", socket, spoolDir: join(dir, "spool") } };
      const add = runCni(pluginPath("berth-ipam"), {
        command: "ADD",
        config: net,
        containerId: "c1",
        netns: "/proc/self/ns/net",
        ifName: "eth0",
      });
      expect(add.code).toBe(1);
      expect(add.json).toMatchObject({ code: 11 });
      expect(add.json.msg).toContain("runs as uid 65534, not root");
    } finally {
      fake.kill();
    }
  });
});

describe("abuse of the HTTP API", () => {
  it("answers CONNECT with 405 and keeps serving", async () => {
    const d = await startIpamd({ config });
    const r = await raw(d.socket, "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n");
    expect(r.text).toMatch(/^HTTP\/1\.1 405 /);
    expect(r.text).toContain('"code":"method_not_allowed"');
    expect((await d.client.status()).status).toBe("ok");
    await d.stop();
  });

  it("refuses JSON nested deeper than 32 levels before parsing it", async () => {
    const d = await startIpamd({ config });
    const body = "[".repeat(100_000);
    const r = await raw(
      d.socket,
      `POST /v1/gc HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n` +
        `content-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`,
    );
    expect(r.text).toMatch(/^HTTP\/1\.1 400 /);
    expect(r.text).toContain("nests JSON deeper than 32 levels");
    await d.stop();
  });

  it("cuts a request whose body is still incomplete after the documented 30 s", async () => {
    const d = await startIpamd({ config });
    const r = await raw(d.socket, "POST /v1/gc HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{");
    expect(r.text).toMatch(/^HTTP\/1\.1 408 /);
    expect(r.ms).toBeGreaterThan(29_000);
    expect(r.ms).toBeLessThan(33_000);
    await d.stop();
  }, 60_000);
});

afterAll(cleanupIpamdTest);
