// Core allocate/release/check/sticky behaviour against a real daemon, socket and SQLite file.
import { DatabaseSync } from "node:sqlite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IpamdError } from "../../api/client";
import { cleanupIpamdTest, type DaemonHandle, startIpamd } from "../helpers/ipamd";

let d: DaemonHandle;
const net = "net1";
const at = (containerID: string, extra: Record<string, unknown> = {}) => ({ containerID, ifName: "eth0", network: net, ...extra });

beforeAll(async () => {
  d = await startIpamd({
    config: {
      statefulSets: [{ namespace: "default", name: "web" }],
      pools: [
        {
          name: "p4",
          subnet: "10.99.0.0/24",
          ranges: [{ start: "10.99.0.10", end: "10.99.0.60" }],
          gateway: "10.99.0.1",
          vlan: 101,
          networks: [net],
          routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16", gw: "10.99.0.254" }],
          dns: { nameservers: ["10.99.0.2"], search: ["svc.local"] },
        },
      ],
    },
  });
});
afterAll(async () => {
  await d?.stop();
});

describe("allocate / release / sticky", () => {
  it("returns address, gateway, vlan, routes and dns of the pool", async () => {
    const r = await d.client.allocate(at("plain-1", { podNamespace: "default", podName: "api-5d8f7c9b6-x2x7q" }));
    expect(r.sticky).toBe(false);
    expect(r.owner).toBe("plain-1/eth0");
    expect(r.ips).toEqual([{ pool: "p4", family: 4, address: "10.99.0.10/24", gateway: "10.99.0.1", vlan: 101 }]);
    expect(r.routes).toEqual([
      { dst: "0.0.0.0/0", gw: "10.99.0.1" },
      { dst: "192.168.0.0/16", gw: "10.99.0.254" },
    ]);
    expect(r.dns).toEqual({ nameservers: ["10.99.0.2"], search: ["svc.local"] });
  });

  it("gives a StatefulSet pod the same IP after delete and re-create with a new container ID", async () => {
    const first = await d.client.allocate(at("web0-a", { podNamespace: "default", podName: "web-0" }));
    expect(first.sticky).toBe(true);
    expect(first.owner).toBe("default/web/0");
    const ip = first.ips[0]!.address;

    const rel = await d.client.release(at("web0-a"));
    expect(rel).toEqual({ released: [], kept: [ip.split("/")[0]] });

    // Other pods allocate meanwhile; none of them may get web-0's address.
    const others = await Promise.all([1, 2, 3, 4, 5].map((i) => d.client.allocate(at(`filler-${i}`))));
    for (const o of others) expect(o.ips[0]!.address).not.toBe(ip);

    const again = await d.client.allocate(at("web0-b", { podNamespace: "default", podName: "web-0" }));
    expect(again.ips[0]!.address).toBe(ip);
    expect(again.owner).toBe("default/web/0");

    const listed = await d.client.reservations({ owner: "default/web/0" });
    expect(listed.reservations).toHaveLength(1);
    expect(listed.reservations[0]).toMatchObject({ state: "attached", containerID: "web0-b", sticky: true });
  });

  it("does not treat an unknown name-ordinal pod as a StatefulSet member", async () => {
    // A Deployment pod whose random suffix happens to be all digits.
    const r = await d.client.allocate(at("dep-1", { podNamespace: "default", podName: "cache-12345" }));
    expect(r.sticky).toBe(false);
    await d.client.release(at("dep-1"));
    const again = await d.client.allocate(at("dep-2", { podNamespace: "default", podName: "cache-12345" }));
    expect(again.ips[0]!.address).not.toBe(r.ips[0]!.address); // released, in cooldown, not reused
    // Same name in another namespace is not the configured StatefulSet either.
    const other = await d.client.allocate(at("web-other-ns", { podNamespace: "prod", podName: "web-0" }));
    expect(other.sticky).toBe(false);
  });

  it("is idempotent: ADD twice returns the same IPs, DEL of unknown or twice succeeds", async () => {
    const a = await d.client.allocate(at("idem-1"));
    const b = await d.client.allocate(at("idem-1"));
    expect(a.existing).toBe(false);
    expect(b).toEqual({ ...a, existing: true });
    const ip = a.ips[0]!.address.split("/")[0];
    expect(await d.client.release(at("idem-1"))).toEqual({ released: [ip], kept: [] });
    expect(await d.client.release(at("idem-1"))).toEqual({ released: [], kept: [] });
    expect(await d.client.release(at("never-seen"))).toEqual({ released: [], kept: [] });
  });

  it("CHECK returns the attachment's IPs or 404 not_found", async () => {
    const a = await d.client.allocate(at("check-1"));
    expect(await d.client.check(at("check-1"))).toEqual({ ...a, existing: true });
    const err = await d.client.check(at("check-missing")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IpamdError);
    expect(err).toMatchObject({ code: "not_found", httpStatus: 404 });
  });

  it("an attachment is keyed by container ID, interface and network", async () => {
    const a = await d.client.allocate(at("multi-if"));
    const b = await d.client.allocate({ ...at("multi-if"), ifName: "net1" });
    expect(b.ips[0]!.address).not.toBe(a.ips[0]!.address);
  });

  it("a second interface of a StatefulSet pod does not steal the member's sticky address", async () => {
    const eth0 = await d.client.allocate(at("web1-c", { podNamespace: "default", podName: "web-1" }));
    const net1 = await d.client.allocate({ ...at("web1-c", { podNamespace: "default", podName: "web-1" }), ifName: "net1" });
    expect(eth0.sticky).toBe(true);
    expect(net1.sticky).toBe(false);
    expect(net1.ips[0]!.address).not.toBe(eth0.ips[0]!.address);
    expect(await d.client.check(at("web1-c"))).toEqual({ ...eth0, existing: true });
  });

  it("records every allocation in the SQLite file", async () => {
    const a = await d.client.allocate(at("disk-1"));
    const db = new DatabaseSync(d.db, { readOnly: true });
    try {
      const row = db.prepare("SELECT ip, pool, owner, container_id FROM reservations WHERE container_id = ?").get("disk-1");
      expect(row).toEqual({ ip: a.ips[0]!.address.split("/")[0], pool: "p4", owner: "disk-1/eth0", container_id: "disk-1" });
      expect(db.prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    } finally {
      db.close();
    }
  });
});

afterAll(cleanupIpamdTest);
