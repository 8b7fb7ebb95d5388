// Health that tells the truth: status, ipamctl status (the readiness probe) and CNI STATUS follow
// whether a commit can succeed (a lock held on the database, a full disk); repeated errors are
// rate-limited in the log; SIGTERM on a full disk exits 0 with the data intact; memory stays
// under the DaemonSet's limit whatever the requests.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { cleanupIpamdTest, makeTempDir, runIpamctl, startIpamd } from "../helpers/ipamd";
import { pluginPath, runCni } from "../helpers/plugins";

const at = (containerID: string) => ({ containerID, ifName: "eth0", network: "n" });

describe("status follows whether a commit can succeed", () => {
  it("goes degraded while another process holds the database's write lock, and back", async () => {
    const d = await startIpamd({ config: { pools: [{ name: "p", subnet: "10.170.0.0/24" }] } });
    const other = new DatabaseSync(d.db);
    other.exec("BEGIN IMMEDIATE");
    try {
      const s = await d.client.status();
      expect(s.status).toBe("degraded");
      expect(s.commit).toMatchObject({ ok: false });
      expect(s.commit.error).toContain("database is locked");
      const probe = await runIpamctl(["--socket", d.socket, "status"]);
      expect(probe.code).toBe(1);
      expect(probe.stdout).toContain("commits:       FAILING");
      const cni = runCni(pluginPath("berth-ipam"), {
        command: "STATUS",
        config: { cniVersion: "1.1.0", name: "n", type: "macvlan", ipam: { type: "berth-ipam", socket: d.socket } },
      });
      expect(cni.json).toMatchObject({ code: 50 });
      expect(cni.json.msg).toContain("database is locked");
    } finally {
      other.exec("ROLLBACK");
      other.close();
    }
    expect((await d.client.status()).status).toBe("ok");
    expect((await runIpamctl(["--socket", d.socket, "status"])).code).toBe(0);
    await d.stop();
  });

  it("on a full disk: ADD fails with 500, status degraded, errors rate-limited, SIGTERM exits 0, nothing acknowledged lost", async () => {
    const dir = makeTempDir();
    const lib = join(dir, "lib");
    mkdirSync(lib);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", lib]);
    try {
      const logFile = join(dir, "ipamd.log");
      const d = await startIpamd({ dir, config: { pools: [{ name: "p", subnet: "10.171.0.0/16" }] }, args: ["--log-file", logFile] });
      const acked: string[] = [];
      for (let i = 0; i < 20; i++) acked.push((await d.client.allocate(at(`ok-${i}`))).ips[0]!.address);
      try {
        writeFileSync(join(lib, "filler"), Buffer.alloc(4 << 20));
      } catch {
        /* filled to the last byte */
      }
      let failed = 0;
      for (let i = 0; i < 300; i++) {
        await d.client.allocate(at(`full-${i}`)).then(
          (r) => acked.push(r.ips[0]!.address),
          (e: { code?: string; httpStatus?: number }) => {
            expect(e).toMatchObject({ code: "internal", httpStatus: 500 });
            failed++;
          },
        );
      }
      expect(failed).toBeGreaterThan(250);
      const s = await d.client.status();
      expect(s.status).toBe("degraded");
      expect(s.commit.error).toMatch(/full/);
      const lines = readFileSync(logFile, "utf8").trim().split("\n");
      expect(lines.length).toBeLessThan(40); // not one stack per failed request
      expect(lines.join("\n")).toContain("group commit failed");

      expect(await d.stop()).toBe(0);
      rmSync(join(lib, "filler"));
      const again = await d.restart();
      const listed = (await again.client.reservations({ limit: 5000 })).reservations.map((r) => r.address);
      for (const a of acked) expect(listed).toContain(a);
      expect((await again.client.status()).status).toBe("ok");
      await again.stop();
    } finally {
      execFileSync("umount", ["-l", lib]);
    }
  }, 120_000);
});

describe("memory per request", () => {
  it("pages the reservations and stays under the DaemonSet's 256Mi with its heap limit, under the attack's requests", async () => {
    const ds = parse(readFileSync(resolve(import.meta.dirname, "../../conf/kubernetes/daemonset.yaml"), "utf8"));
    const container = ds.spec.template.spec.containers.find((c: { name: string }) => c.name === "ipamd");
    const nodeArgs = (container.command as string[]).filter((a) => a.startsWith("--max-"));
    expect(nodeArgs.length).toBeGreaterThan(0);
    expect(container.resources.limits.memory).toBe("256Mi");
    const d = await startIpamd({ config: { pools: [{ name: "big", subnet: "10.172.0.0/16" }] } });
    await d.stop();
    const db = new DatabaseSync(d.db);
    db.exec("BEGIN");
    const ins = db.prepare(`INSERT INTO reservations (ip, pool, family, owner, kind, sticky, container_id, ifname, network,
      pod_namespace, pod_name, created_at, attached_at) VALUES (?, 'big', 4, ?, 'attachment', 0, ?, 'eth0', 'n', 'ns', ?, 0, 0)`);
    for (let i = 0; i < 50_000; i++) ins.run(`10.172.${i >> 8}.${i & 255}`, `c${i}/eth0`, `c${i}`, `pod-${i}`);
    db.exec("COMMIT");
    db.close();
    const e = await startIpamd({ dir: d.dir, config: { pools: [{ name: "big", subnet: "10.172.0.0/16" }] }, nodeArgs });
    const page = await e.client.reservations({ limit: 1_000_000 });
    expect(page.reservations).toHaveLength(5000);
    expect(page.truncated).toBe(true);
    const next = await e.client.reservations({ limit: 1_000_000, after: page.next! });
    expect(next.reservations[0]!.ip).not.toBe(page.reservations[4999]!.ip);
    const nested = "[".repeat(4 * 1024 * 1024 - 16);
    for (let round = 0; round < 5; round++) {
      await Promise.all([
        ...[1, 2, 3].map(() => e.client.reservations({ limit: 1_000_000 })),
        ...[1, 2].map(() => e.client.call("POST", "/v1/gc", undefined).catch(() => undefined)),
        ...[1, 2].map(() => e.client.raw("POST", "/v1/gc", nested).catch(() => undefined)),
      ]);
    }
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${e.proc.pid}/status`, "utf8"))![1]) * 1024;
    expect(hwm).toBeLessThan(256 * 1024 * 1024);
    await e.stop();
  }, 120_000);
});

afterAll(cleanupIpamdTest);
