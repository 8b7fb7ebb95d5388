// The ownership rules of api/API.md, one named case each: allocate (idempotent ADD, sticky
// member, hand-over, pin on ADD, attachment-owned), release (DEL), GC, reserve ahead, pin,
// release of reservations (force), the TTL of detached reservations.
//
// Every method runs inside the request's savepoint of the group commit (server.ts) with the
// ticket its ownership prepared (ownership.ts): which address is free is the ownership's call;
// what the request does with it, and the local record in SQLite, are decided here.
import type {
  AllocateRequest,
  AllocateResponse,
  AttachmentRequest,
  GcRequest,
  GcResponse,
  PinRequest,
  PinResponse,
  ReleaseReservationRequest,
  ReleaseReservationsResponse,
  ReleaseResponse,
  Reservation,
  ReserveRequest,
  ReserveResponse,
} from "../api/types";
import { ApiError, reservationsAttached } from "./errors";
import type { AddressOwnership, OwnershipTicket } from "./ownership";
import { type Located, type NodePools, parseRequested, type Pool } from "./pools";
import { type Member, member, type StatefulSets } from "./statefulsets";
import type { AttachmentColumns, Row, Statements } from "./store/statements";
import type { Views } from "./views";

/**
 * A member's sticky address is in a pool that does not select this node: the address belongs to the
 * pool's L2 domain (the nodes its selector matches), so it is kept for the member and not handed out here.
 */
export class StickyPoolOffNode extends ApiError {
  constructor(
    readonly owner: string,
    readonly ip: string,
    readonly pool: Pool,
    readonly node: string,
    labels: Record<string, string>,
  ) {
    super(
      "no_pool",
      `${owner} holds ${ip} in pool "${pool.name}", which does not select node ${node} (pool nodeSelector ` +
        `${JSON.stringify(pool.selector)}, node labels ${JSON.stringify(labels)}): a sticky address is only handed out on a node ` +
        "of its pool's L2 domain; schedule the pod onto a node the selector matches, fix the node labels, or end the reservation " +
        `(ipamctl release --ip ${ip})`,
      "pools",
    );
  }
}

/** Who a new row belongs to: a member, or an attachment (`containerID/ifName`). */
type Holder = Member | { owner: string };

export class Allocator {
  /** Called when a member's new sandbox of the same pod (same pod UID) takes its address from the old one (logged). */
  onTakeover?: (row: Row, req: AttachmentRequest) => void;

  constructor(
    private readonly store: Statements,
    private readonly pools: NodePools,
    private readonly statefulSets: StatefulSets,
    private readonly ownership: AddressOwnership,
    private readonly views: Views,
    private readonly detachedTtlMs: number,
  ) {}

  // ---------- CNI operations ----------

  /** ADD: one address per family of the usable pools, committed before the answer. */
  allocate(req: AllocateRequest, now: number, ticket: OwnershipTicket): AllocateResponse {
    const held = this.store.byAttachment(req.containerID, req.ifName, req.network);
    if (held.length > 0) return this.views.allocation(held, true); // idempotent ADD: the same addresses again

    const sts = this.statefulSets.memberOf(req.podNamespace, req.podName, req.podUID);
    const usable = this.usableFor(req, sts, ticket);
    const wanted = this.pools.requested(req.ips, usable);
    const attachment: AttachmentColumns = {
      container_id: req.containerID,
      ifname: req.ifName,
      network: req.network,
      pod_namespace: req.podNamespace ?? null,
      pod_name: req.podName ?? null,
      pod_uid: req.podUID ?? null,
    };
    const rows: Row[] = [];
    for (const family of [4, 6] as const) {
      const familyPools = usable.filter((p) => p.family === family);
      if (familyPools.length === 0) continue;
      const want = wanted.get(family);
      const existing = sts ? this.stickyIn(sts.owner, familyPools, ticket) : undefined;
      // A second interface of the same pod in the same pool cannot share the member's sticky
      // address: it gets an address owned by its attachment instead.
      const secondInterface = existing?.container_id === req.containerID && existing.ifname !== req.ifName;
      if (sts && !existing && !want) this.refuseOffNode(sts, req, family, ticket);
      if (!sts || secondInterface) rows.push(this.attachmentOwned(req, familyPools, want, attachment, now, ticket));
      else if (existing && (!want || want.ip === existing.ip)) rows.push(this.stickyAgain(existing, req, want, attachment, now, ticket));
      else if (want) rows.push(this.pinOnAdd(sts, want, existing, req, attachment, now, ticket));
      else rows.push(this.newSticky(sts, this.ownership.take(familyPools, now, ticket), attachment, now, ticket));
    }
    return this.views.allocation(rows, false);
  }

  /**
   * DEL: sticky addresses are detached and kept for their member, others freed into the cooldown.
   * `deletedAt` (a DEL recorded in the spool while ipamd was unreachable): only what was attached
   * by then (an ADD of the same attachment after that DEL keeps its addresses).
   */
  release(req: AttachmentRequest, now: number, ticket: OwnershipTicket, deletedAt?: number): ReleaseResponse {
    const out: ReleaseResponse = { released: [], kept: [] };
    for (const row of this.store.byAttachment(req.containerID, req.ifName, req.network)) {
      if (deletedAt !== undefined && (row.attached_at ?? 0) > deletedAt) continue;
      (this.letGo(row, now, ticket) ? out.kept : out.released).push(row.ip);
    }
    return out;
  }

  /** CHECK: the attachment's addresses, or not_found. */
  check(req: AttachmentRequest): AllocateResponse {
    const rows = this.store.byAttachment(req.containerID, req.ifName, req.network);
    if (rows.length === 0) {
      throw new ApiError(
        "not_found",
        `no addresses are allocated to container ${req.containerID} interface ${req.ifName} on network ${req.network}`,
      );
    }
    return this.views.allocation(rows, true);
  }

  /**
   * CNI GC: attachments on `network` not listed and attached before the GC began lose their
   * addresses. "Before" is by commit sequence (`startedSeq`: the last commit when the GC arrived),
   * never by the wall clock, which may step.
   */
  gc(req: GcRequest, startedSeq: number, now: number, ticket: OwnershipTicket): GcResponse {
    const valid = new Set(req.validAttachments.map((a) => `${a.containerID}\0${a.ifName}`));
    const out: GcResponse = { released: [], detached: [] };
    for (const row of this.store.attachedOnNetwork(req.network, startedSeq)) {
      if (!valid.has(`${row.container_id}\0${row.ifname}`)) (this.letGo(row, now, ticket) ? out.detached : out.released).push(row.ip);
    }
    return out;
  }

  // ---------- operator operations ----------

  /** Reserve ahead: an address per family for ordinals 0..replicas-1 now; existing reservations are kept. */
  reserve(req: ReserveRequest, now: number, ticket: OwnershipTicket): ReserveResponse {
    const usable = this.pools.usable(req.network, req.pools);
    this.statefulSets.register(req.namespace, req.statefulset, now);
    const rows: Row[] = [];
    const start = req.ordinalStart ?? 0;
    for (let ordinal = start; ordinal < start + req.replicas; ordinal++) {
      const owner = member(req.namespace, req.statefulset, ordinal);
      const held = this.ownership.findSticky(owner.owner, ticket);
      for (const family of [4, 6] as const) {
        const familyPools = usable.filter((p) => p.family === family);
        if (familyPools.length === 0) continue;
        const existing = held.find((r) => familyPools.some((p) => p.name === r.pool));
        rows.push(existing ?? this.newSticky(owner, this.ownership.take(familyPools, now, ticket), null, now, ticket));
      }
    }
    return { statefulset: { namespace: req.namespace, name: req.statefulset }, reservations: rows.map((r) => this.views.reservation(r)) };
  }

  /**
   * Pin: an exact address for a member, replacing its previous address of that family on the same
   * network(s). A previous address a running container uses needs force, and stays with that container.
   */
  pin(req: PinRequest, now: number, ticket: OwnershipTicket): PinResponse {
    const owner = member(req.namespace, req.statefulset, req.ordinal);
    const target = this.pools.locate(req.ip, this.pools.selected, "ip");
    this.statefulSets.register(req.namespace, req.statefulset, now);
    const holder = this.store.byIp(target.ip);
    if (holder && holder.owner === owner.owner && holder.sticky) {
      // already the member's: pin it where it is
      this.store.setPinned(holder.id);
      return { reservation: this.views.reservation(this.store.byId(holder.id)), released: [], heldByContainer: [] };
    }
    this.claimFree(target, owner.owner, null, "ip", now, ticket);
    const previous = this.previousAddresses(owner.owner, target.pool, ticket);
    const running = previous.find((r) => r.container_id);
    if (running && !req.force) {
      throw new ApiError(
        "reservation_attached",
        `${owner.owner} is running with ${running.ip} (container ${running.container_id}); ` +
          "delete the pod first, or pass force to move the pin now (the running container keeps the old address until its " +
          "CNI DEL or GC frees it; the next pod of the member gets the pinned one)",
      );
    }
    const released: string[] = [];
    const heldByContainer: string[] = [];
    for (const old of previous) {
      released.push(old.ip);
      if (this.endReservation(old, now, ticket)) heldByContainer.push(old.ip);
    }
    const row = this.insert(target, owner, { sticky: true, pinned: true }, null, now, ticket);
    return { reservation: this.views.reservation(row), released, heldByContainer };
  }

  /**
   * Release reservations by ip, or by StatefulSet (ordinal, pool). Ones a running container uses
   * need force, and their address stays with that container. A whole StatefulSet is unregistered.
   */
  releaseReservations(req: ReleaseReservationRequest, now: number, ticket: OwnershipTicket): ReleaseReservationsResponse {
    let rows: Row[];
    if (req.ip) {
      const ip = parseRequested(req.ip, "ip").canonical;
      const row = this.store.byIp(ip);
      if (!row) throw new ApiError("not_found", `no reservation holds ${ip}`, "ip");
      rows = [row];
    } else {
      rows = this.store.byStatefulSet(req.namespace!, req.statefulset!, req.ordinal, req.pool);
      if (req.ordinal === undefined && !req.pool) this.statefulSets.unregister(req.namespace!, req.statefulset!);
    }
    const attached = rows.filter((r) => r.container_id);
    if (attached.length > 0 && !req.force) {
      throw reservationsAttached(attached.map((r) => `${r.ip} (${r.owner}, container ${r.container_id})`));
    }
    const heldByContainer: Reservation[] = [];
    for (const row of rows) {
      if (this.endReservation(row, now, ticket)) heldByContainer.push(this.views.reservation(this.store.byId(row.id)));
    }
    return { released: rows.map((r) => this.views.reservation(r)), heldByContainer };
  }

  /** TTL: sticky reservations detached for longer than detachedTTLSeconds are released (pins are kept). */
  reapExpired(now: number, ticket: OwnershipTicket): string[] {
    if (this.detachedTtlMs <= 0) return [];
    const rows = this.store.detachedBefore(now - this.detachedTtlMs);
    for (const row of rows) this.endReservation(row, now, ticket);
    return rows.map((r) => r.ip);
  }

  // ---------- the L2-domain rule ----------

  /** The pools of the request; a member whose sticky pool no longer selects this node gets the L2-domain error instead of no_pool. */
  private usableFor(req: AllocateRequest, sts: Member | null, ticket: OwnershipTicket): Pool[] {
    try {
      return this.pools.usable(req.network, req.pools);
    } catch (e) {
      if (sts && e instanceof ApiError && e.code === "no_pool") this.refuseOffNode(sts, req, undefined, ticket);
      throw e;
    }
  }

  /**
   * A member without a sticky address in the usable pools (of `family`), but with one in a pool that
   * serves this request and no longer selects this node: its reservation is kept for it, and not used here.
   */
  private refuseOffNode(sts: Member, req: AllocateRequest, family: 4 | 6 | undefined, ticket: OwnershipTicket): void {
    for (const row of this.ownership.findSticky(sts.owner, ticket)) {
      const pool = this.pools.get(row.pool);
      if (!pool || this.pools.selected.includes(pool) || (family !== undefined && row.family !== family)) continue;
      if (req.pools?.length && !req.pools.includes(pool.name)) continue;
      if (pool.networks && !pool.networks.includes(req.network)) continue;
      throw new StickyPoolOffNode(sts.owner, row.ip, pool, this.pools.nodeName, this.pools.labels);
    }
  }

  // ---------- the cases of allocate ----------

  /** A non-member (or a member's second interface): the attachment owns its address, requested or free. */
  private attachmentOwned(
    req: AttachmentRequest,
    pools: Pool[],
    want: Located | undefined,
    attachment: AttachmentColumns,
    now: number,
    ticket: OwnershipTicket,
  ): Row {
    const owner = { owner: `${req.containerID}/${req.ifName}` };
    if (!want) {
      return this.insert(this.ownership.take(pools, now, ticket), owner, { sticky: false, pinned: false }, attachment, now, ticket);
    }
    this.claimFree(want, owner.owner, req, "ips", now, ticket);
    return this.insert(want, owner, { sticky: false, pinned: true }, attachment, now, ticket);
  }

  /**
   * A member comes back (or is reserved ahead): it gets its sticky address again. While the
   * previous sandbox of another pod (another pod UID: the pod was deleted and re-created, its DEL
   * has not come yet) still holds it, the ADD is refused with a retryable error naming that
   * sandbox; its DEL or a GC hands the address over. A new sandbox of the same pod takes it.
   */
  private stickyAgain(
    existing: Row,
    req: AllocateRequest,
    want: Located | undefined,
    attachment: AttachmentColumns,
    now: number,
    ticket: OwnershipTicket,
  ): Row {
    if (existing.container_id && existing.container_id !== req.containerID) {
      const samePod = existing.pod_uid !== null && req.podUID !== undefined && existing.pod_uid === req.podUID;
      if (!samePod) throw previousSandbox(existing);
      this.onTakeover?.(existing, req);
    }
    this.store.attach(existing.id, attachment, now);
    if (want) this.store.setPinned(existing.id);
    const row = this.store.byId(existing.id);
    this.ownership.bindSticky(row, ticket);
    return row;
  }

  /**
   * A member's ADD with `ips`: pins the address, replacing the member's previous address of that
   * family on the same network(s) atomically (one a running container uses stays with it).
   */
  private pinOnAdd(
    sts: Member,
    want: Located,
    existing: Row | undefined,
    req: AttachmentRequest,
    attachment: AttachmentColumns,
    now: number,
    ticket: OwnershipTicket,
  ): Row {
    this.claimFree(want, sts.owner, req, "ips", now, ticket);
    const previous = this.previousAddresses(sts.owner, want.pool, ticket);
    if (existing && !previous.some((r) => r.id === existing.id)) previous.push(existing);
    for (const old of previous) this.endReservation(old, now, ticket);
    return this.insert(want, sts, { sticky: true, pinned: true }, attachment, now, ticket);
  }

  /** A member's first address in a pool: sticky from now on. */
  private newSticky(sts: Member, address: Located, attachment: AttachmentColumns | null, now: number, ticket: OwnershipTicket): Row {
    return this.insert(address, sts, { sticky: true, pinned: false }, attachment, now, ticket);
  }

  // ---------- shared steps ----------

  /** The member's sticky address in one of `pools`. */
  private stickyIn(owner: string, pools: Pool[], ticket: OwnershipTicket): Row | undefined {
    return this.ownership.findSticky(owner, ticket).find((r) => pools.some((p) => p.name === r.pool));
  }

  /**
   * A requested address must not be held by another owner, nor used by another container; the
   * requester's own detached record of it is replaced. Then the ownership makes it ours.
   */
  private claimFree(
    address: Located,
    owner: string,
    attachment: AttachmentRequest | null,
    field: string,
    now: number,
    ticket: OwnershipTicket,
  ): void {
    const { ip } = address;
    const holder = this.store.byIp(ip);
    const runningElsewhere =
      holder?.container_id &&
      !(
        attachment &&
        holder.container_id === attachment.containerID &&
        holder.ifname === attachment.ifName &&
        holder.network === attachment.network
      );
    if (holder && (holder.owner !== owner || runningElsewhere)) {
      const use = holder.container_id
        ? `in use by container ${holder.container_id} interface ${holder.ifname} on network ${holder.network}`
        : "reserved";
      throw new ApiError(
        "ip_unavailable",
        `${ip} is already held by ${holder.owner} (${use}); ` +
          (holder.container_id
            ? "it is freed when that container is deleted (CNI DEL or GC); request another address"
            : "release it with ipamctl release --ip first, or request another address"),
        field,
      );
    }
    if (holder) this.store.remove(holder.id); // same owner: a detached record (or this attachment's own)
    this.ownership.claim(address, now, ticket);
  }

  private insert(
    address: Located,
    holder: Holder,
    flags: { sticky: boolean; pinned: boolean },
    attachment: AttachmentColumns | null,
    now: number,
    ticket: OwnershipTicket,
  ): Row {
    const sts = "statefulset" in holder ? holder : undefined;
    const row = this.store.insert({
      ip: address.ip,
      pool: address.pool.name,
      family: address.pool.family,
      owner: holder.owner,
      kind: sts ? "statefulset" : "attachment",
      sticky: flags.sticky ? 1 : 0,
      pinned: flags.pinned ? 1 : 0,
      namespace: sts?.namespace ?? null,
      statefulset: sts?.statefulset ?? null,
      ordinal: sts?.ordinal ?? null,
      container_id: attachment?.container_id ?? null,
      ifname: attachment?.ifname ?? null,
      network: attachment?.network ?? null,
      pod_namespace: attachment?.pod_namespace ?? null,
      pod_name: attachment?.pod_name ?? null,
      pod_uid: attachment?.pod_uid ?? null,
      created_at: now,
      attached_at: attachment ? now : null,
      detached_at: attachment ? null : now,
    });
    if (flags.sticky) this.ownership.bindSticky(row, ticket);
    return row;
  }

  /** CNI DEL / GC of one address: sticky ones are detached and kept (true), others freed. */
  private letGo(row: Row, now: number, ticket: OwnershipTicket): boolean {
    if (!row.sticky) {
      this.free(row, now, ticket);
      return false;
    }
    this.store.detach(row.id, now);
    return true;
  }

  /**
   * Ends a reservation (operator release, pin, or a member's new pinned address, TTL). An address
   * a running container uses is never freed here: it stays held by that attachment, owned by
   * containerID/ifName and not sticky, until the container's CNI DEL or GC frees it into the
   * cooldown. True when still held.
   */
  private endReservation(row: Row, now: number, ticket: OwnershipTicket): boolean {
    if (row.sticky) this.ownership.endSticky(row, ticket);
    if (!row.container_id) {
      this.free(row, now, ticket);
      return false;
    }
    if (row.sticky || row.kind === "statefulset") this.store.handToAttachment(row.id, `${row.container_id}/${row.ifname}`);
    return true;
  }

  /**
   * The member's addresses that a pin in `pool` replaces: same family, in pools serving a network
   * in common with `pool` (addresses for other networks are kept).
   */
  private previousAddresses(owner: string, pool: Pool, ticket: OwnershipTicket): Row[] {
    return this.ownership.findSticky(owner, ticket).filter((r) => {
      const other = this.pools.get(r.pool);
      return r.family === pool.family && other !== undefined && this.pools.shareNetwork(pool, other);
    });
  }

  private free(row: Row, now: number, ticket: OwnershipTicket): void {
    this.store.remove(row.id);
    this.ownership.giveBack(row.ip, row.pool, now, ticket);
  }
}

/** The refusal of a member's ADD while its previous sandbox still holds the address (retryable). */
function previousSandbox(row: Row): ApiError {
  const pod = row.pod_name ? `pod ${row.pod_namespace}/${row.pod_name}${row.pod_uid ? ` (uid ${row.pod_uid})` : ""}` : "an unnamed pod";
  const since = row.attached_at !== null ? `, attached ${new Date(row.attached_at).toISOString()}` : "";
  return new ApiError(
    "previous_sandbox_attached",
    `${row.ip} of ${row.owner} is still attached to the previous sandbox ${row.container_id} (interface ${row.ifname}, ` +
      `network ${row.network}, ${pod}${since}); it is handed over when that sandbox's CNI DEL or a CNI GC releases it. ` +
      "Retry (the runtime does); if that sandbox is gone for good, run ipamctl gc for the network",
  );
}
