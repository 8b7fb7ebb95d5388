// Single-node ownership (the embedded default): this node alone owns its pools' addresses. Free
// addresses come from a per-pool cursor over the usable ranges, then from the cooldown table;
// nothing to prepare and nothing to do after the commit.
import { ApiError } from "./errors";
import { parseIp, formatIp } from "../lib/ip";
import type { AddressOwnership, OwnershipOp, OwnershipTicket } from "./ownership";
import { firstUsableAtOrAfter, isUsable, type Located, type Pool } from "./pools";
import type { Row, Statements } from "./store/statements";

export class LocalOwnership implements AddressOwnership {
  constructor(
    private readonly store: Statements,
    private readonly cooldownMs: number,
  ) {}

  prepare(op: OwnershipOp): Promise<OwnershipTicket> {
    return Promise.resolve({ op });
  }

  take(pools: readonly Pool[], now: number): Located {
    for (const pool of pools) {
      const ip = this.takeFree(pool, now);
      if (ip) return { pool, ip };
    }
    const detail = pools
      .map((p) => {
        const cooling = this.store.coolingCount(p.name, now - this.cooldownMs);
        return `${p.name} (${p.size} addresses${cooling ? `, ${cooling} released less than ${this.cooldownMs / 1000}s ago` : ""})`;
      })
      .join(", ");
    throw new ApiError(
      "pool_exhausted",
      `no free IPv${pools[0]!.family} address in ${detail}; ` +
        "release unused reservations (ipamctl reservations / release) or add a range to the pool",
    );
  }

  claim(address: Located): void {
    this.store.dropReleased(address.ip); // an explicit request skips the cooldown
  }

  giveBack(ip: string, pool: string, now: number): void {
    this.store.addReleased(ip, pool, now);
  }

  findSticky(owner: string): Row[] {
    return this.store.stickyByOwner(owner);
  }

  bindSticky(): void {
    /* the row is the binding */
  }
  endSticky(): void {
    /* the row's removal or hand-over is the end */
  }
  committed(): void {
    /* nothing outside SQLite */
  }
  abandoned(): void {
    /* nothing was claimed outside SQLite */
  }

  /**
   * Never-used addresses first (a cursor over the usable ranges; cost independent of how many
   * are taken), then the least recently released address whose cooldown has passed.
   */
  private takeFree(pool: Pool, now: number): string | null {
    const saved = this.store.cursor(pool.name);
    let next: bigint | null =
      saved && saved.fingerprint === pool.fingerprint ? (saved.next === "" ? null : BigInt(saved.next)) : pool.segments[0]!.first;
    while (next !== null) {
      const candidate = firstUsableAtOrAfter(pool, next);
      if (candidate === null) {
        next = null;
        break;
      }
      next = candidate + 1n;
      const text = formatIp(pool.family, candidate);
      if (this.store.ipTaken(text)) continue; // pinned ahead of the cursor, or cooling
      this.store.saveCursor(pool.name, next.toString(), pool.fingerprint);
      return text;
    }
    this.store.saveCursor(pool.name, "", pool.fingerprint);
    for (;;) {
      const ip = this.store.oldestReleased(pool.name, now - this.cooldownMs);
      if (ip === undefined) return null;
      this.store.dropReleased(ip);
      const parsed = parseIp(ip)!;
      // The config may have shrunk the pool since the address was released.
      if (isUsable(pool, parsed.family, parsed.value) && this.store.byIp(ip) === undefined) return ip;
    }
  }
}
