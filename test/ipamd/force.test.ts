// `force` on release/pin never frees an address a running container uses; pins replace addresses
// only on the same network(s). Cooldown 0: an address freed too early would be handed out at once.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupIpamdTest, type DaemonHandle, runIpamctl, startIpamd, errorOf, ipOf } from "../helpers/ipamd";

let d: DaemonHandle;
const ctl = (...args: string[]) => runIpamctl(["--socket", d.socket, ...args]);

beforeAll(async () => {
  d = await startIpamd({
    config: {
      cooldownSeconds: 0,
      statefulSets: [{ namespace: "default", name: "web" }],
      pools: [
        // Six addresses each, so tests can exhaust a pool.
        { name: "rel", subnet: "10.150.0.0/24", ranges: [{ start: "10.150.0.10", end: "10.150.0.15" }], networks: ["n-rel"] },
        { name: "pin", subnet: "10.151.0.0/24", ranges: [{ start: "10.151.0.10", end: "10.151.0.15" }], networks: ["n-pin"] },
        { name: "ctl", subnet: "10.152.0.0/24", ranges: [{ start: "10.152.0.10", end: "10.152.0.15" }], networks: ["n-ctl"] },
        { name: "a", subnet: "10.153.0.0/24", networks: ["net-a"] },
        { name: "b", subnet: "10.154.0.0/24", networks: ["net-b"] },
        { name: "open", subnet: "10.155.0.0/24" },
      ],
    },
  });
});
afterAll(async () => {
  await d?.stop();
});

const member = (containerID: string, network: string, podName: string, extra: Record<string, unknown> = {}) => ({
  containerID,
  ifName: "eth0",
  network,
  podNamespace: "default",
  podName,
  ...extra,
});

/** Allocates plain pods on `network` until the pool is exhausted; returns the addresses handed out. */
async function drain(network: string, prefix: string): Promise<string[]> {
  const got: string[] = [];
  for (let i = 0; i < 10; i++) {
    try {
      got.push(ipOf((await d.client.allocate({ containerID: `${prefix}-${i}`, ifName: "eth0", network })).ips[0]!.address));
    } catch (e) {
      expect(e).toMatchObject({ code: "pool_exhausted" });
      return got;
    }
  }
  throw new Error(`pool of ${network} never ran out`);
}

async function undrain(network: string, prefix: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await d.client.release({ containerID: `${prefix}-${i}`, ifName: "eth0", network });
}

describe("force release of an attached sticky address", () => {
  it("ends the reservation but keeps the address held by the running container until its CNI DEL", async () => {
    const first = await d.client.allocate(member("rel-a", "n-rel", "web-0"));
    expect(first.sticky).toBe(true);
    const ip = ipOf(first.ips[0]!.address);

    const refused = await errorOf(d.client.releaseReservations({ namespace: "default", statefulset: "web", ordinal: 0, pool: "rel" }));
    expect(refused).toMatchObject({ code: "reservation_attached", httpStatus: 409 });
    expect((refused as Error).message).toContain("CNI DEL");

    const r = await d.client.releaseReservations({ namespace: "default", statefulset: "web", ordinal: 0, pool: "rel", force: true });
    expect(r.released).toEqual([expect.objectContaining({ ip, owner: "default/web/0", sticky: true })]);
    expect(r.heldByContainer).toEqual([
      expect.objectContaining({
        ip,
        owner: "rel-a/eth0",
        kind: "attachment",
        sticky: false,
        pinned: false,
        state: "attached",
        containerID: "rel-a",
        network: "n-rel",
      }),
    ]);
    const listed = (await d.client.reservations({ ip })).reservations;
    expect(listed).toEqual([expect.objectContaining({ owner: "rel-a/eth0", sticky: false, state: "attached", containerID: "rel-a" })]);
    expect(listed[0]!.statefulset).toBeUndefined();
    expect(await d.client.check({ containerID: "rel-a", ifName: "eth0", network: "n-rel" })).toMatchObject({
      owner: "rel-a/eth0",
      sticky: false,
      ips: [expect.objectContaining({ address: first.ips[0]!.address })],
    });

    // Not allocatable, although the cooldown is 0: not on request, not to the member's next pod, not to anyone.
    const asked = await errorOf(d.client.allocate({ containerID: "rel-want", ifName: "eth0", network: "n-rel", ips: [ip] }));
    expect(asked).toMatchObject({ code: "ip_unavailable", field: "ips" });
    expect((asked as Error).message).toContain("in use by container rel-a");
    expect(await errorOf(d.client.pin({ namespace: "default", statefulset: "web", ordinal: 5, ip }))).toMatchObject({
      code: "ip_unavailable",
      field: "ip",
    });
    const next = await d.client.allocate(member("rel-b", "n-rel", "web-0"));
    expect(next).toMatchObject({ owner: "default/web/0", sticky: true });
    expect(ipOf(next.ips[0]!.address)).not.toBe(ip);
    const others = await drain("n-rel", "rel-fill");
    expect(others).toHaveLength(4); // 6 addresses: rel-a's and web-0's are taken
    expect(others).not.toContain(ip);

    // The container's own CNI DEL frees it (not sticky any more: released, not kept).
    expect(await d.client.release({ containerID: "rel-a", ifName: "eth0", network: "n-rel" })).toEqual({ released: [ip], kept: [] });
    expect((await d.client.reservations({ ip })).reservations).toEqual([]);
    const reused = await d.client.allocate({ containerID: "rel-after", ifName: "eth0", network: "n-rel" });
    expect(ipOf(reused.ips[0]!.address)).toBe(ip);
    await undrain("n-rel", "rel-fill", others.length);
  });
});

describe("pin --force of a running member", () => {
  it("gives the member the pinned address; the old one stays held by the running container until GC frees it", async () => {
    const first = await d.client.allocate(member("pin-a", "n-pin", "web-1"));
    const old = ipOf(first.ips[0]!.address);

    const refused = await errorOf(d.client.pin({ namespace: "default", statefulset: "web", ordinal: 1, ip: "10.151.0.15" }));
    expect(refused).toMatchObject({ code: "reservation_attached" });
    const pinned = await d.client.pin({ namespace: "default", statefulset: "web", ordinal: 1, ip: "10.151.0.15", force: true });
    expect(pinned.reservation).toMatchObject({ ip: "10.151.0.15", owner: "default/web/1", pinned: true, state: "detached" });
    expect(pinned.released).toEqual([old]);
    expect(pinned.heldByContainer).toEqual([old]);
    expect((await d.client.reservations({ ip: old })).reservations).toEqual([
      expect.objectContaining({ owner: "pin-a/eth0", sticky: false, state: "attached", containerID: "pin-a" }),
    ]);

    expect(await errorOf(d.client.allocate({ containerID: "pin-want", ifName: "eth0", network: "n-pin", ips: [old] }))).toMatchObject({
      code: "ip_unavailable",
    });
    const others = await drain("n-pin", "pin-fill");
    expect(others).toHaveLength(4); // the old address and the pinned one are taken
    expect(others).not.toContain(old);
    expect(others).not.toContain("10.151.0.15");
    await undrain("n-pin", "pin-fill", others.length);

    const next = await d.client.allocate(member("pin-b", "n-pin", "web-1"));
    expect(next.ips[0]!.address).toBe("10.151.0.15/24");

    // The old container died without a DEL: GC frees its address, and only then can it be reused.
    expect(await d.client.gc("n-pin", [{ containerID: "pin-b", ifName: "eth0" }])).toEqual({ released: [old], detached: [] });
    const reused = await d.client.allocate({ containerID: "pin-after", ifName: "eth0", network: "n-pin", ips: [old] });
    expect(reused.ips[0]!.address).toBe(`${old}/24`);
  });

  it("ipamctl release/pin --force say the address stays with the running container", async () => {
    const a = await d.client.allocate(member("ctl-a", "n-ctl", "web-2"));
    const old = ipOf(a.ips[0]!.address);
    const pin = await ctl("pin", "--namespace", "default", "--statefulset", "web", "--ordinal", "2", "--ip", "10.152.0.14", "--force");
    expect(pin.code).toBe(0);
    expect(pin.stdout).toContain(
      `pinned 10.152.0.14/24 (pool ctl) to default/web/2; still in use by the running container (freed at its CNI DEL or GC): ${old}`,
    );
    await d.client.allocate(member("ctl-b", "n-ctl", "web-2"));
    const rel = await ctl("release", "--ip", "10.152.0.14", "--force");
    expect(rel.code).toBe(0);
    expect(rel.stdout).toContain("released 1:");
    expect(rel.stdout).toMatch(
      /still in use by running containers, freed at their CNI DEL or GC \(1\):[\s\S]*10\.152\.0\.14\/24.*ctl-b\/eth0.*attached/,
    );
    const help = await ctl("release", "--help");
    expect(help.stdout.replace(/\s+/g, " ")).toContain(
      "the address stays held by that container (not reusable) until the container's CNI DEL or GC frees it",
    );
  });
});

describe("pins replace addresses only on the same network(s)", () => {
  const owner = "default/web/3";
  const rows = async () => (await d.client.reservations({ owner })).reservations.map((r) => ({ pool: r.pool, ip: r.ip, state: r.state }));

  it("pin in one network's pool keeps the member's addresses on other networks", async () => {
    const onA = await d.client.allocate(member("m3", "net-a", "web-3"));
    const onB = await d.client.allocate(member("m3", "net-b", "web-3", { ifName: "net1" }));
    const onOpen = await d.client.allocate(member("m3", "net-o", "web-3", { ifName: "net2" })); // no pool names net-o
    expect([onA, onB, onOpen].map((r) => r.ips[0]!.pool)).toEqual(["a", "b", "open"]);
    expect([onA, onB, onOpen].every((r) => r.owner === owner && r.sticky)).toBe(true);

    const pinA = await d.client.pin({ namespace: "default", statefulset: "web", ordinal: 3, ip: "10.153.0.200", force: true });
    expect(pinA.released).toEqual([ipOf(onA.ips[0]!.address)]);
    expect(await rows()).toEqual(
      expect.arrayContaining([
        { pool: "a", ip: "10.153.0.200", state: "detached" },
        { pool: "b", ip: ipOf(onB.ips[0]!.address), state: "attached" },
        { pool: "open", ip: ipOf(onOpen.ips[0]!.address), state: "attached" },
      ]),
    );
    expect(await rows()).toHaveLength(3);

    // A pin in the open pool replaces only the address there; no force needed while the member
    // runs on other networks only.
    await d.client.release({ containerID: "m3", ifName: "net2", network: "net-o" });
    const pinOpen = await d.client.pin({ namespace: "default", statefulset: "web", ordinal: 3, ip: "10.155.0.200" });
    expect(pinOpen).toMatchObject({ released: [ipOf(onOpen.ips[0]!.address)], heldByContainer: [] });
    expect((await rows()).map((r) => r.pool).sort()).toEqual(["a", "b", "open"]);
  });

  it("allocate with ips for a member uses the same rule", async () => {
    const onA = await d.client.allocate(member("m4", "net-a", "web-4"));
    const onB = await d.client.allocate(member("m4", "net-b", "web-4", { ifName: "net1" }));
    // A new pod of the member asks for an exact address on net-b while the old container still runs.
    const want = await d.client.allocate(member("m4-new", "net-b", "web-4", { ifName: "net1", ips: ["10.154.0.201"] }));
    expect(want).toMatchObject({ owner: "default/web/4", sticky: true, ips: [expect.objectContaining({ address: "10.154.0.201/24" })] });
    const mine = (await d.client.reservations({ owner: "default/web/4" })).reservations;
    expect(mine.map((r) => [r.pool, r.ip, r.containerID]).sort()).toEqual([
      ["a", ipOf(onA.ips[0]!.address), "m4"],
      ["b", "10.154.0.201", "m4-new"],
    ]);
    // The old net-b address is held by the old container, not freed.
    expect((await d.client.reservations({ ip: ipOf(onB.ips[0]!.address) })).reservations).toEqual([
      expect.objectContaining({ owner: "m4/net1", state: "attached", sticky: false }),
    ]);
  });
});

describe("ipamctl unregister", () => {
  it("unregisters an API-registered StatefulSet, says when nothing changed, and names config-listed ones", async () => {
    expect((await ctl("register", "--namespace", "db", "--statefulset", "kafka")).code).toBe(0);
    const r = await ctl("unregister", "--namespace", "db", "--statefulset", "kafka");
    expect(r).toMatchObject({ code: 0, stdout: "unregistered db/kafka\n" });
    const list = JSON.parse((await ctl("-o", "json", "statefulsets")).stdout) as { statefulsets: { name: string }[] };
    expect(list.statefulsets.map((s) => s.name)).not.toContain("kafka");
    // kafka-0 is no longer a member: its address is owned by its attachment.
    expect(await d.client.allocate(member("kafka-c", "net-a", "kafka-0", { podNamespace: "db" }))).toMatchObject({
      owner: "kafka-c/eth0",
      sticky: false,
    });

    const again = await ctl("-o", "json", "unregister", "--namespace", "db", "--statefulset", "kafka");
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ unregistered: false, configured: false });
    expect((await ctl("unregister", "--namespace", "db", "--statefulset", "kafka")).stdout).toContain(
      "was not registered through the API; nothing changed",
    );

    const configured = await ctl("unregister", "--namespace", "default", "--statefulset", "web");
    expect(configured.code).toBe(0);
    expect(configured.stdout).toContain("default/web is listed in the ipamd config (statefulSets)");
    const missing = await ctl("unregister", "--namespace", "db");
    expect(missing.code).toBe(2); // a usage error: one exit code for all of them (ipamctl --help)
    expect(missing.stderr).toContain("--statefulset");
  });
});

afterAll(cleanupIpamdTest);
