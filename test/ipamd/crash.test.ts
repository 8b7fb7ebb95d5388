// kill -9 in the middle of a storm of concurrent allocations: every acknowledged IP survives,
// and no IP is ever held by two owners.
import { DatabaseSync } from "node:sqlite";
import { afterAll, describe, expect, it } from "vitest";
import { IpamdClient } from "../../api/client";
import { cleanupIpamdTest, type DaemonHandle, startIpamd } from "../helpers/ipamd";

let d: DaemonHandle | undefined;
afterAll(async () => {
  await d?.stop();
});

describe("crash during an allocation storm", () => {
  it("keeps every acknowledged allocation after kill -9 and restart", async () => {
    d = await startIpamd({
      config: {
        statefulSets: [{ namespace: "db", name: "storm" }],
        pools: [
          { name: "big", subnet: "10.120.0.0/16" },
          { name: "big6", subnet: "fd00:120::/64" },
        ],
      },
    });
    // containerID -> what a 200 told the client: addresses, owner, and whether a DEL detached them.
    const acked = new Map<string, { ips: string[]; owner: string; detached: boolean }>();
    const ambiguous = new Set<string>(); // a DEL was sent but its answer was lost in the crash
    let failures = 0;
    let stop = false;
    const worker = async (w: number): Promise<void> => {
      const client = new IpamdClient(d!.socket, { timeoutMs: 3000, keepAlive: true });
      for (let i = 0; !stop; i++) {
        const containerID = `storm-${w}-${i}`;
        // Every 4th pod is a StatefulSet member, so sticky rows are exercised too.
        const sts = i % 4 === 0 ? { podNamespace: "db", podName: `storm-${w * 100000 + i}` } : {};
        try {
          const r = await client.allocate({ containerID, ifName: "eth0", network: "n", ...sts });
          acked.set(containerID, { ips: r.ips.map((x) => x.address.split("/")[0]!), owner: r.owner, detached: false });
          if (i % 5 === 0) {
            ambiguous.add(containerID);
            const rel = await client.release({ containerID, ifName: "eth0", network: "n" });
            ambiguous.delete(containerID);
            if (rel.kept.length) acked.get(containerID)!.detached = true;
            else acked.delete(containerID);
          }
        } catch {
          failures++;
          break;
        }
      }
      client.close();
    };
    const workers = Array.from({ length: 32 }, (_, w) => worker(w));
    await new Promise((r) => setTimeout(r, 1500));
    const before = acked.size;
    await d.kill9();
    stop = true;
    await Promise.all(workers);
    expect(before).toBeGreaterThan(200);
    expect(failures).toBeGreaterThan(0); // the kill really hit in-flight requests

    d = await d.restart();
    const db = new DatabaseSync(d.db, { readOnly: true });
    try {
      const rows = db.prepare("SELECT ip, container_id, owner FROM reservations").all() as {
        ip: string;
        container_id: string | null;
        owner: string;
      }[];
      const byIp = new Map(rows.map((r) => [r.ip, r]));
      expect(byIp.size).toBe(rows.length); // no IP twice
      let checked = 0;
      for (const [containerID, a] of acked) {
        if (ambiguous.has(containerID)) continue;
        for (const ip of a.ips) {
          const row = byIp.get(ip);
          expect(row, `${ip} acknowledged to ${containerID}`).toBeDefined();
          expect(row!.owner).toBe(a.owner);
          expect(row!.container_id).toBe(a.detached ? null : containerID);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(400);
      // Acknowledged addresses were also never given to two clients.
      const all = [...acked.values()].flatMap((a) => a.ips);
      expect(new Set(all).size).toBe(all.length);
      expect(db.prepare("PRAGMA integrity_check").get()).toEqual({ integrity_check: "ok" });
    } finally {
      db.close();
    }

    // The restarted daemon answers the same attachments idempotently and keeps allocating fresh IPs.
    const [someId, some] = [...acked.entries()].find(([id, a]) => !a.detached && !ambiguous.has(id))!;
    const again = await d.client.allocate({ containerID: someId, ifName: "eth0", network: "n" });
    expect(again.ips.map((x) => x.address.split("/")[0])).toEqual(some.ips);
    const fresh = await d.client.allocate({ containerID: "after-crash", ifName: "eth0", network: "n" });
    const all = new Set([...acked.values()].flatMap((a) => a.ips));
    for (const x of fresh.ips) expect(all.has(x.address.split("/")[0]!)).toBe(false);
  });
});

afterAll(cleanupIpamdTest);
