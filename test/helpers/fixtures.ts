// The iproute2 fixtures (test/fixtures/iproute2/, made by scripts/capture-iproute2.sh and capture-tc.sh)
// and the one comparison every encoder test makes against them.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import type { MessageBuilder } from "../../cni/netlink/wire";

export interface Fixture {
  name: string;
  command: string;
  inputs: any;
  hex: string;
  exit?: number;
}

export type Encoders = [RegExp, (inputs: Fixture["inputs"]) => MessageBuilder][];

const ROOT = join(import.meta.dirname, "../fixtures/iproute2");

/** The fixtures of `sub` (a folder under test/fixtures/iproute2; "" for the top one), sorted by file name. */
export function loadFixtures(sub = ""): Fixture[] {
  const dir = join(ROOT, sub);
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")));
}

/** hex with nlmsg_seq and nlmsg_pid (bytes 8-15) zeroed: they differ per run. */
const normalize = (hex: string) => hex.slice(0, 16) + "0".repeat(16) + hex.slice(32);

/** One test per fixture: the encoder its name maps to builds the same bytes iproute2 sent. */
export function itEncodesEachFixture(fixtures: Fixture[], encoders: Encoders): void {
  for (const f of fixtures) {
    it(`${f.name}: ${f.command}`, () => {
      const enc = encoders.find(([re]) => re.test(f.name));
      expect(enc, `no encoder mapped for fixture ${f.name}`).toBeDefined();
      const ours = enc![1](f.inputs).build(0x11223344, 0x55667788).toString("hex");
      expect(normalize(ours)).toBe(normalize(f.hex));
    });
  }
}
