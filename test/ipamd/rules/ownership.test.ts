// The ownership seam (ipamd/ownership.ts) as cluster mode will rely on it: every change is
// prepared, then committed or abandoned exactly once, and the rules ask the ownership for every
// free address, give back every freed one, and report every sticky identity bound or ended.
import { describe, expect, it } from "vitest";
import type { AddressOwnership, OwnershipTicket } from "../../../ipamd/ownership";
import { pool, rulesOn, webPod } from "./harness";

/** The real single-node ownership, with a log of the calls the rules make. */
function watched(log: string[]) {
  return (local: AddressOwnership): AddressOwnership => ({
    prepare: async (op) => {
      log.push(`prepare ${op.kind}`);
      return local.prepare(op);
    },
    take: (pools, now, t) => {
      const got = local.take(pools, now, t);
      log.push(`take ${got.ip}`);
      return got;
    },
    claim: (address, now, t) => {
      log.push(`claim ${address.ip}`);
      local.claim(address, now, t);
    },
    giveBack: (ip, p, now, t) => {
      log.push(`giveBack ${ip}`);
      local.giveBack(ip, p, now, t);
    },
    findSticky: (owner, t) => local.findSticky(owner, t),
    bindSticky: (row, t) => {
      log.push(`bind ${row.owner} ${row.ip}`);
      local.bindSticky(row, t);
    },
    endSticky: (row, t) => {
      log.push(`end ${row.owner} ${row.ip}`);
      local.endSticky(row, t);
    },
    committed: (t: OwnershipTicket) => {
      log.push(`committed ${t.op.kind}`);
      local.committed(t);
    },
    abandoned: (t: OwnershipTicket, e) => {
      log.push(`abandoned ${t.op.kind} ${(e as { code?: string }).code}`);
      local.abandoned(t, e);
    },
  });
}

describe("ownership seam", () => {
  it("prepares every change, then commits it, and takes and gives back addresses through the ownership", async () => {
    const log: string[] = [];
    const r = rulesOn({ pools: [pool()] }, { ownership: watched(log) });
    await r.add("a");
    await r.del("a");
    expect(log).toEqual([
      "prepare allocate",
      "take 10.0.0.10",
      "committed allocate",
      "prepare release",
      "giveBack 10.0.0.10",
      "committed release",
    ]);
  });

  it("reports sticky identities bound, and ended by a pin elsewhere", async () => {
    const log: string[] = [];
    const r = rulesOn({ pools: [pool()] }, { ownership: watched(log) });
    await r.add("a", webPod(0));
    await r.del("a");
    await r.add("b", webPod(0));
    await r.del("b");
    log.length = 0;
    await r.pin({ statefulset: "web", ordinal: 0, ip: "10.0.0.20" });
    expect(log).toEqual([
      "prepare pin",
      "claim 10.0.0.20",
      "end default/web/0 10.0.0.10",
      "giveBack 10.0.0.10",
      "bind default/web/0 10.0.0.20",
      "committed pin",
    ]);
  });

  it("abandons a change whose rule fails, and nothing of it is kept", async () => {
    const log: string[] = [];
    const r = rulesOn({ pools: [pool("p4", 2)] }, { ownership: watched(log) });
    await r.add("a");
    log.length = 0;
    await expect(r.reserve({ statefulset: "web", replicas: 2 })).rejects.toMatchObject({ code: "pool_exhausted" });
    expect(log).toEqual(["prepare reserve", "take 10.0.0.11", "bind default/web/0 10.0.0.11", "abandoned reserve pool_exhausted"]);
    expect(r.reservations().map((x) => x.ip)).toEqual(["10.0.0.10"]);
    expect(r.ips(await r.add("b"))).toEqual(["10.0.0.11"]); // the rolled-back take is free again
  });
});
