// DEL without the daemon: the built berth-ipam records the release in the spool directory when
// ipamd is unreachable (and DEL exits 0); ipamd applies it at start and as soon as a record
// appears, idempotently, and only to what was attached before that DEL.
import { chownSync, existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { spoolRelease } from "../../api/spool";
import { cleanupIpamdTest, startIpamd } from "../helpers/ipamd";
import { pluginPath, runCni } from "../helpers/plugins";

const config = { cooldownSeconds: 0, pools: [{ name: "p", subnet: "10.190.0.0/24" }] };
const at = (containerID: string) => ({ containerID, ifName: "eth0", network: "n" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("the release spool", () => {
  it("a DEL while ipamd is down is recorded, exits 0, and is applied when ipamd starts", async () => {
    const d = await startIpamd({ config });
    const spool = join(d.dir, "lib", "spool");
    const net = { cniVersion: "1.0.0", name: "n", type: "macvlan", ipam: { type: "berth-ipam", socket: d.socket, spoolDir: spool } };
    const add = runCni(pluginPath("berth-ipam"), {
      command: "ADD",
      config: net,
      containerId: "c-down",
      netns: "/proc/self/ns/net",
      ifName: "eth0",
    });
    expect(add.code).toBe(0);
    await d.stop();
    const del = runCni(pluginPath("berth-ipam"), {
      command: "DEL",
      config: net,
      containerId: "c-down",
      netns: "/proc/self/ns/net",
      ifName: "eth0",
    });
    expect(del.code).toBe(0);
    expect(del.stdout).toBe("");
    expect(readdirSync(spool)).toEqual(["c-down_eth0_n.json"]);
    const e = await d.restart();
    expect((await e.client.reservations({ owner: "c-down/eth0" })).reservations).toEqual([]);
    expect(readdirSync(spool)).toEqual([]);
    await e.stop();
  });

  it("applies a record as soon as it appears, only to what was attached before it, and ignores files not root's", async () => {
    const d = await startIpamd({ config });
    const spool = join(d.dir, "lib", "spool");
    await d.client.allocate(at("gone"));
    spoolRelease(spool, { version: 1, ...at("gone"), at: Date.now() });
    for (let i = 0; i < 40 && existsSync(join(spool, "gone_eth0_n.json")); i++) await sleep(50);
    expect((await d.client.reservations({ owner: "gone/eth0" })).reservations).toEqual([]);

    const stale = Date.now() - 60_000; // a DEL older than the attachment now on that key
    await d.client.allocate(at("again"));
    spoolRelease(spool, { version: 1, ...at("again"), at: stale });
    for (let i = 0; i < 40 && existsSync(join(spool, "again_eth0_n.json")); i++) await sleep(50);
    expect((await d.client.reservations({ owner: "again/eth0" })).reservations).toHaveLength(1);

    await d.client.allocate(at("victim"));
    const planted = join(spool, "victim_eth0_n.json.tmp");
    writeFileSync(planted, JSON.stringify({ version: 1, ...at("victim"), at: Date.now() }));
    chownSync(planted, 65534, 65534);
    const { renameSync } = await import("node:fs");
    renameSync(planted, join(spool, "victim_eth0_n.json"));
    for (let i = 0; i < 40 && !existsSync(join(spool, "victim_eth0_n.json.refused")); i++) await sleep(50);
    expect(existsSync(join(spool, "victim_eth0_n.json.refused"))).toBe(true);
    expect((await d.client.reservations({ owner: "victim/eth0" })).reservations).toHaveLength(1);
    await d.stop();
  });
});

afterAll(cleanupIpamdTest);
