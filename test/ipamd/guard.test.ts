// The database under fault and attack: modes and owners of the state, one daemon per database, a
// 0-byte or missing database, lost acknowledged commits (WAL damaged or deleted), a dropped
// unique index. Real daemon, real SQLite file.
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, type DaemonHandle, makeTempDir, runIpamctl, runIpamdExpectingFailure, startIpamd } from "../helpers/ipamd";

const config = { statefulSets: [{ namespace: "db", name: "web" }], pools: [{ name: "p", subnet: "10.150.0.0/24" }] };
const at = (containerID: string, extra: Record<string, unknown> = {}) => ({ containerID, ifName: "eth0", network: "n", ...extra });

/** Runs ipamd on `dir` (as startIpamd lays it out) expecting a refusal. */
async function refused(dir: string, extra: string[] = []): Promise<{ code: number | null; stderr: string }> {
  writeFileSync(join(dir, "ipamd.json"), JSON.stringify({ node: { name: "test-node" }, ...config }));
  return runIpamdExpectingFailure([
    "--config",
    join(dir, "ipamd.json"),
    "--socket",
    join(dir, "run", "ipamd.sock"),
    "--db",
    join(dir, "lib", "ipamd.db"),
    ...extra,
  ]);
}

describe("state directory and files", () => {
  it("makes the state dir 0700 and the database files 0600 whoever created them", async () => {
    const dir = makeTempDir();
    mkdirSync(join(dir, "lib"), { mode: 0o755 });
    chmodSync(join(dir, "lib"), 0o755); // as kubelet's DirectoryOrCreate hostPath
    const d = await startIpamd({ dir, config });
    await d.client.allocate(at("a"));
    expect(statSync(join(dir, "lib")).mode & 0o777).toBe(0o700);
    for (const f of ["ipamd.db", "ipamd.db-wal", "ipamd.db-shm", "ipamd.db.seq", "ipamd.db.lock"]) {
      expect(statSync(join(dir, "lib", f)).mode & 0o777, f).toBe(0o600);
    }
    expect(await d.stop()).toBe(0);
    chmodSync(d.db, 0o644); // as an older ipamd left it
    const again = await d.restart();
    expect(statSync(d.db).mode & 0o777).toBe(0o600);
    await again.stop();
  });

  it.each([
    [
      "a state dir others may write",
      (lib: string) => chmodSync(lib, 0o777),
      /state directory .*lib is writable by every user \(mode 0777\)/,
    ],
    [
      "a state dir not owned by root",
      (lib: string) => chownSync(lib, 65534, 65534),
      /state directory .*lib is owned by uid 65534, not root/,
    ],
    [
      "a database not owned by root",
      (lib: string) => chownSync(join(lib, "ipamd.db"), 65534, 0),
      /ipamd\.db is owned by uid 65534, not root/,
    ],
    [
      "a WAL others may write",
      (lib: string) => chmodSync(join(lib, "ipamd.db-wal"), 0o666),
      /ipamd\.db-wal is writable by others \(mode 0666\)/,
    ],
  ])("refuses %s", async (_name, spoil, message) => {
    const dir = makeTempDir();
    const d = await startIpamd({ dir, config });
    await d.client.allocate(at("a"));
    await d.kill9(); // keeps the -wal
    spoil(join(dir, "lib"));
    const r = await refused(dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
  });
});

describe("one daemon per database", () => {
  it("refuses a second ipamd on the same database, naming the first one's PID", async () => {
    const d = await startIpamd({ config });
    const r = await runIpamdExpectingFailure(["--config", d.configPath, "--socket", join(d.dir, "other", "ipamd.sock"), "--db", d.db]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`another ipamd (pid ${d.proc.pid}) is using the database ${d.db}`);
    expect((await d.client.allocate(at("still"))).ips).toHaveLength(1);
    await d.stop();
  });
});

describe("a database that is empty or missing", () => {
  it("refuses a 0-byte database file", async () => {
    const dir = makeTempDir();
    mkdirSync(join(dir, "lib"), { mode: 0o700 });
    writeFileSync(join(dir, "lib", "ipamd.db"), "");
    const r = await refused(dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("is an empty file (0 bytes), not a database");
  });

  it("holds allocation when the database is gone while this node has attachments, until an operator accepts", async () => {
    const d = await startIpamd({ config });
    const held = await d.client.allocate(at("running"));
    await new Promise((r) => setTimeout(r, 1500)); // the node marker is refreshed every second
    expect(await d.stop()).toBe(0);
    for (const f of ["", "-wal", "-shm", ".seq"]) if (existsSync(d.db + f)) unlinkSync(d.db + f);
    const e = await d.restart();
    const status = await e.client.status();
    expect(status.status).toBe("degraded");
    expect(status.hold!.reasons.join()).toMatch(/this node had 1 attachment\(s\).*was missing \(created empty now\)/);
    const err = await e.client.allocate(at("new")).catch((x: unknown) => x);
    expect(err).toMatchObject({ code: "database_unverified", httpStatus: 503 });
    expect((err as Error).message).toContain("ipamctl database accept");
    const probe = await runIpamctl(["--socket", e.socket, "status"]);
    expect(probe.code).toBe(1); // the readiness probe fails
    expect(probe.stdout).toContain("allocation:    HELD");
    expect((await runIpamctl(["--socket", e.socket, "status", "--liveness"])).code).toBe(0);
    expect(await e.stop()).toBe(0);

    const kept = await d.restart(); // the hold survives a restart (it is in the new database)
    expect((await kept.client.status()).hold).toBeDefined();
    const ok = await runIpamctl(["--socket", kept.socket, "database", "accept"]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("allocation resumes");
    expect((await kept.client.status()).status).toBe("ok");
    expect((await kept.client.allocate(at("new"))).ips[0]!.address).toBe(held.ips[0]!.address); // what the operator accepted
    await kept.stop();
  });

  it("lifts the hold when a GC of every network the node had lists no live attachment", async () => {
    const d = await startIpamd({ config });
    await d.client.allocate(at("running"));
    await new Promise((r) => setTimeout(r, 1500));
    await d.stop();
    unlinkSync(d.db);
    const e = await d.restart();
    expect((await e.client.status()).hold!.networks).toEqual(["n"]);
    await e.client.gc("n", [{ containerID: "still-there", ifName: "eth0" }]);
    expect((await e.client.status()).hold).toBeDefined(); // a live attachment with an address nobody knows
    await e.client.gc("n", []);
    expect((await e.client.status()).status).toBe("ok");
    await e.stop();
  });
});

describe("acknowledged commits that the database lost", () => {
  async function withAcknowledged(n: number): Promise<DaemonHandle> {
    const d = await startIpamd({ config });
    for (let i = 0; i < n; i++) await d.client.allocate(at(`c${i}`));
    await d.kill9(); // the commits are in the -wal only
    return d;
  }

  it("refuses to start when the -wal was deleted, and starts with --accept-data-loss", async () => {
    const d = await withAcknowledged(40);
    unlinkSync(`${d.db}-wal`);
    const r = await refused(d.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/lost acknowledged commits: commit \d+ .*was acknowledged \(recorded in .*ipamd\.db\.seq\) but/);
    expect(r.stderr).toContain("--accept-data-loss");
    const e = await d.restart(["--accept-data-loss"]);
    expect((await e.client.status()).status).toBe("ok");
    await e.stop();
  });

  it("records the last commit once none follows: one ADD, killed as soon as it is answered, -wal deleted: refused", async () => {
    // The record of a batch is written with the next batch's commit, or after its replies when no batch follows.
    const d = await withAcknowledged(1);
    unlinkSync(`${d.db}-wal`);
    const r = await refused(d.dir);
    expect(r.code).toBe(1);
    // The database's identity was in the -wal too: the record names commit 1 of the database that is gone.
    expect(r.stderr).toMatch(/lost acknowledged commits: commit 1 of database \w+ was acknowledged \(recorded in .*ipamd\.db\.seq\)/);
  });

  it("refuses to start when a byte of the -wal is flipped", async () => {
    const d = await withAcknowledged(40);
    const wal = readFileSync(`${d.db}-wal`);
    wal[Math.floor(wal.length / 2)] ^= 0xff;
    writeFileSync(`${d.db}-wal`, wal);
    const r = await refused(d.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("lost acknowledged commits");
  });
});

describe("unique indexes", () => {
  it("re-creates a dropped reservations_ip index, and refuses when an address is already held twice", async () => {
    const d = await startIpamd({ config });
    await d.client.allocate(at("a"));
    await d.stop();
    const db = new DatabaseSync(d.db);
    db.exec("DROP INDEX reservations_ip");
    db.close();
    const e = await d.restart();
    expect(e.stderr()).toContain("lacked its unique index reservations_ip; re-created it");
    await e.stop();
    const db2 = new DatabaseSync(d.db);
    expect(db2.prepare("SELECT name FROM sqlite_master WHERE name = 'reservations_ip'").get()).toEqual({ name: "reservations_ip" });
    db2.exec("DROP INDEX reservations_ip");
    db2.exec(`INSERT INTO reservations (ip, pool, family, owner, kind, sticky, created_at)
      SELECT ip, pool, family, 'intruder/eth0', 'attachment', 0, created_at FROM reservations`);
    db2.close();
    const r = await refused(d.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/lacks its unique index reservations_ip and it cannot be re-created .*: addresses held twice: 10\.150\.0\.1/);
  });
});

afterAll(cleanupIpamdTest);
