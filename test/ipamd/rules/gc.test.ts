// CNI GC (api/API.md, POST /v1/gc) and DEL of unknown attachments.
import { describe, expect, it } from "vitest";
import { pool, rulesOn, webPod } from "./harness";

describe("gc", () => {
  it("releases unlisted ordinary attachments, detaches unlisted members, keeps listed ones", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("keep");
    await r.add("gone");
    await r.add("member", webPod(0));
    r.now += 1;
    expect(await r.gc(["keep"])).toEqual({ released: ["10.0.0.11"], detached: ["10.0.0.12"] });
    expect(r.reservations().map((x) => [x.ip, x.state])).toEqual([
      ["10.0.0.10", "attached"],
      ["10.0.0.12", "detached"],
    ]);
  });

  it("never touches attachments made after the GC began, nor other networks", async () => {
    const r = rulesOn({ pools: [pool()] });
    const began = r.node.store.committedSeq;
    r.now += 5;
    await r.add("late");
    await r.add("elsewhere", { network: "other" });
    r.now += 5;
    expect(await r.gc([], { startedSeq: began })).toEqual({ released: [], detached: [] });
    expect(await r.gc([])).toEqual({ released: ["10.0.0.10"], detached: [] });
    expect(r.reservations({ state: "attached" }).map((x) => x.containerID)).toEqual(["elsewhere"]);
  });

  it("orders by commit sequence, not the wall clock: a clock stepped back does not hide older attachments", async () => {
    const r = rulesOn({ pools: [pool()] });
    await r.add("before-step");
    r.now -= 3_600_000; // the clock steps back an hour
    expect(await r.gc([])).toEqual({ released: ["10.0.0.10"], detached: [] });
  });

  it("treats DEL of an unknown attachment as success", async () => {
    const r = rulesOn({ pools: [pool()] });
    expect(await r.del("never-added")).toEqual({ released: [], kept: [] });
  });
});
