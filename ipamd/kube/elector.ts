// Who acts on cluster-wide releases (a StatefulSet deleted or scaled down, a retention TTL, reserve
// at creation): exactly one node at a time. Single-node mode: every node is the only one that holds
// its own addresses, so it always acts (SoleNode). Cluster mode (shared reservations in etcd) plugs
// in LeaseElector, a coordination.k8s.io/v1 Lease in kube-system, or its own elector over etcd.
// Either way the rules re-check before each release (ipamd/kube/lifecycle.ts): leadership only
// avoids doing the work N times, it is never what keeps an address from being freed twice.
import { type CoordinationV1Api, V1MicroTime, type V1Lease } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { statusOf, withDeadline } from "./connection";

export interface ReleaseElector {
  /** True while this node may act on cluster-wide releases; asked again before each release. */
  isLeader(): boolean;
  start(): void;
  /** Stops campaigning (and, when leading, gives the lease up so another node takes over at once). */
  stop(): Promise<void>;
}

/** Single-node mode: this node alone holds its addresses, so it alone acts on them. */
export class SoleNode implements ReleaseElector {
  isLeader(): boolean {
    return true;
  }
  start(): void {
    /* nothing to campaign for */
  }
  async stop(): Promise<void> {
    /* nothing held */
  }
}

export interface LeaseOptions {
  namespace: string;
  name: string;
  /** This node's identity in spec.holderIdentity (its node name). */
  identity: string;
  leaseDurationMs: number;
  /** How often the holder renews and the others look (well below leaseDurationMs). */
  retryMs: number;
  timeoutMs: number;
}

/**
 * The usual Lease election (as client-go's leaderelection): acquire when absent or when its holder
 * has not renewed for leaseDuration as measured on this node's clock (no trust in other clocks),
 * renew with the lease's resourceVersion (a conflict means someone else won), MicroTime times.
 */
export class LeaseElector implements ReleaseElector {
  private leaderUntil = 0;
  private observed?: { record: string; at: number };
  private timer?: NodeJS.Timeout;
  private stopped = true;
  /** Told when this node gains or loses the lead (logs, tests). */
  onChange?: (leader: boolean) => void;

  constructor(
    private readonly leases: CoordinationV1Api,
    private readonly o: LeaseOptions,
    private readonly log: Logger,
  ) {}

  isLeader(): boolean {
    return Date.now() < this.leaderUntil;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.isLeader()) return;
    this.leaderUntil = 0;
    this.setLeader(false);
    try {
      // release: an empty holder lets the next candidate acquire without waiting for expiry
      const lease = await this.get();
      if (lease?.spec?.holderIdentity === this.o.identity) {
        await this.call(
          this.leases.replaceNamespacedLease({
            namespace: this.o.namespace,
            name: this.o.name,
            body: { ...lease, spec: { ...lease.spec, holderIdentity: "", renewTime: new V1MicroTime() } },
          }),
          "release the Lease",
        );
      }
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, "cannot release the release-leader Lease");
    }
  }

  /** One round: acquire or renew; returns whether this node leads after it. */
  async tick(): Promise<boolean> {
    if (this.timer) clearTimeout(this.timer);
    let leading = false;
    try {
      leading = await this.tryAcquireOrRenew();
    } catch (e) {
      this.log.warn({ err: (e as Error).message, lease: `${this.o.namespace}/${this.o.name}` }, "release-leader election round failed");
    }
    if (leading) this.leaderUntil = Date.now() + this.o.leaseDurationMs - this.o.retryMs;
    this.setLeader(leading && this.isLeader());
    if (!this.stopped) {
      this.timer = setTimeout(() => void this.tick(), this.o.retryMs);
      this.timer.unref();
    }
    return this.isLeader();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new V1MicroTime();
    const durationSeconds = Math.ceil(this.o.leaseDurationMs / 1000);
    const lease = await this.get();
    if (!lease) {
      try {
        await this.call(
          this.leases.createNamespacedLease({
            namespace: this.o.namespace,
            body: {
              metadata: { name: this.o.name, namespace: this.o.namespace },
              spec: {
                holderIdentity: this.o.identity,
                leaseDurationSeconds: durationSeconds,
                acquireTime: now,
                renewTime: now,
                leaseTransitions: 0,
              },
            },
          }),
          "create the Lease",
        );
        return true;
      } catch (e) {
        if (statusOf(e) === 409) return false; // another node created it first
        throw e;
      }
    }
    const spec = lease.spec ?? {};
    const record = `${spec.holderIdentity ?? ""}/${String(spec.renewTime ?? "")}/${lease.metadata?.resourceVersion ?? ""}`;
    if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
    const mine = spec.holderIdentity === this.o.identity;
    const durationMs = (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
    const expired = !spec.holderIdentity || this.observed.at + durationMs < Date.now();
    if (!mine && !expired) return false;
    const next: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: this.o.identity,
        leaseDurationSeconds: durationSeconds,
        renewTime: now,
        ...(mine ? {} : { acquireTime: now, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
      },
    };
    try {
      await this.call(
        this.leases.replaceNamespacedLease({ namespace: this.o.namespace, name: this.o.name, body: next }),
        mine ? "renew the Lease" : "acquire the Lease",
      );
      return true;
    } catch (e) {
      if (statusOf(e) === 409) return false; // changed meanwhile: someone else renewed or took it
      throw e;
    }
  }

  private async get(): Promise<V1Lease | undefined> {
    try {
      return await this.call(this.leases.readNamespacedLease({ namespace: this.o.namespace, name: this.o.name }), "read the Lease");
    } catch (e) {
      if (statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  private call<T>(p: Promise<T>, what: string): Promise<T> {
    return withDeadline(p, this.o.timeoutMs, what);
  }

  private setLeader(leader: boolean): void {
    const was = this.wasLeader;
    this.wasLeader = leader;
    if (was !== leader) {
      this.log.info({ lease: `${this.o.namespace}/${this.o.name}`, leader }, leader ? "leading cluster-wide releases" : "not leading");
      this.onChange?.(leader);
    }
  }

  private wasLeader = false;
}
