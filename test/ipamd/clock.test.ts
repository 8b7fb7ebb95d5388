// Wall-clock steps under a real daemon, with libfaketime (Debian's faketime) moving only the wall
// clock (the monotonic clock stays real): a step back neither freezes released addresses nor
// hides attachments from GC; a step forward does not release every detached reservation at once;
// timestamps ahead of the clock at start are clamped.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, makeTempDir, startIpamd } from "../helpers/ipamd";

const LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const at = (containerID: string, extra: Record<string, unknown> = {}) => ({ containerID, ifName: "eth0", network: "n", ...extra });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A clock file libfaketime reads on every call: write an offset ("-1h", "+0") to step the daemon's wall clock. */
function fakeClock(): { env: Record<string, string>; set(offset: string): void } {
  const file = join(makeTempDir(), "faketime");
  writeFileSync(file, "+0\n");
  return {
    env: { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: file, FAKETIME_NO_CACHE: "1", FAKETIME_DONT_FAKE_MONOTONIC: "1" },
    set: (offset) => writeFileSync(file, `${offset}\n`),
  };
}

const small = {
  cooldownSeconds: 1,
  pools: [{ name: "p", subnet: "10.180.0.0/24", ranges: [{ start: "10.180.0.10", end: "10.180.0.12" }] }],
};

describe("clock steps", () => {
  it("a step back: released addresses come back after the cooldown, GC still sees older attachments", async () => {
    const clock = fakeClock();
    const d = await startIpamd({ config: small, env: clock.env });
    for (const c of ["a", "b"]) await d.client.allocate(at(c));
    await d.client.release(at("a"));
    await d.client.release(at("b"));
    const old = await d.client.allocate(at("old"));
    clock.set("-1h");
    await sleep(2500); // the step is seen within a second; then the 1 s cooldown
    const again = await Promise.all([d.client.allocate(at("x")), d.client.allocate(at("y"))]);
    expect(again.map((r) => r.ips[0]!.address).sort()).toEqual(["10.180.0.10/24", "10.180.0.11/24"]);
    expect(
      await d.client.gc("n", [
        { containerID: "x", ifName: "eth0" },
        { containerID: "y", ifName: "eth0" },
      ]),
    ).toEqual({ released: [old.ips[0]!.address.split("/")[0]], detached: [] });
    const createdAt = Date.parse((await d.client.reservations({ owner: "x/eth0" })).reservations[0]!.createdAt);
    expect(Date.now() - createdAt).toBeGreaterThan(3_500_000); // the daemon's wall clock did step back an hour
    await d.stop();
  });

  it("a step back while ipamd was down: timestamps ahead of the clock are clamped at start", async () => {
    const clock = fakeClock();
    const d = await startIpamd({ config: small, env: clock.env });
    for (const c of ["a", "b", "c"]) await d.client.allocate(at(c));
    for (const c of ["a", "b", "c"]) await d.client.release(at(c));
    await d.stop();
    clock.set("-1h");
    const e = await d.restart();
    await sleep(1500);
    expect((await e.client.allocate(at("after"))).ips).toHaveLength(1);
    await e.stop();
  });

  it("a step forward does not release detached sticky reservations before a TTL of real time", async () => {
    const clock = fakeClock();
    const d = await startIpamd({
      config: { ...small, detachedTTLSeconds: 8, statefulSets: [{ namespace: "db", name: "web" }] },
      env: clock.env,
    });
    await d.client.allocate(at("w0", { podNamespace: "db", podName: "web-0" }));
    await d.client.release(at("w0"));
    clock.set("+1h");
    await sleep(4500); // two reaper rounds (every 2 s) after the step
    expect((await d.client.reservations({ owner: "db/web/0" })).reservations).toHaveLength(1);
    await d.client.allocate(at("probe"));
    const createdAt = Date.parse((await d.client.reservations({ owner: "probe/eth0" })).reservations[0]!.createdAt);
    expect(createdAt - Date.now()).toBeGreaterThan(3_500_000); // the daemon's wall clock did step forward an hour
    await d.stop();
  });
});

afterAll(cleanupIpamdTest);
