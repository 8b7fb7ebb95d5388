// Kubernetes Events (events.k8s.io/v1) on the pod, for what its owner must act on, so that
// `kubectl describe pod` says why it sits in ContainerCreating. eventTime is a MicroTime (6 fraction
// digits; a plain Date is refused with 400). The kubelet retries a failed ADD every few seconds:
// one Event per pod and reason per interval, never one per retry.
// On a StatefulSet (an annotation ipamd cannot use, addresses it cannot reserve), for `kubectl describe
// statefulset`: every node may find the same problem, so the Event's name is made of the object's UID,
// the reason and the note. The first node creates it; the others' create is 409 AlreadyExists.
import { createHash } from "node:crypto";
import { V1MicroTime } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type KubeConnection, statusOf, withDeadline } from "./connection";

export type EventReason =
  | "NoPoolForNode"
  | "StickyPoolNotOnNode"
  | "PoolExhausted"
  | "InvalidAnnotation"
  | "AddressTakeover"
  | "PreviousSandboxAttached"
  | "ReserveFailed";

export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
}

/** The object an Event is about (events.k8s.io/v1 `regarding`). */
interface ObjectRef extends PodRef {
  apiVersion: string;
  kind: string;
}

const REPEAT_AFTER_MS = 5 * 60_000;
const NOTE_MAX_BYTES = 1024;

export class EventRecorder {
  private readonly lastSent = new Map<string, number>();
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly kube: KubeConnection,
    private readonly node: string,
    private readonly log: Logger,
    private readonly timeoutMs: number,
  ) {}

  /** Sends (in the background) a Warning Event regarding the pod, unless one with this reason was sent lately. */
  warn(pod: PodRef, reason: EventReason, action: string, note: string | Promise<string>): void {
    const key = `${pod.namespace}/${pod.name}/${pod.uid ?? ""}/${reason}`;
    const now = Date.now();
    if ((this.lastSent.get(key) ?? 0) > now - REPEAT_AFTER_MS) return;
    this.lastSent.set(key, now);
    if (this.lastSent.size > 10_000) this.lastSent.clear();
    this.track(this.send({ apiVersion: "v1", kind: "Pod", ...pod }, { generateName: `${pod.name}.berth.` }, reason, action, note));
  }

  /**
   * Sends (in the background) a Warning Event regarding a StatefulSet, once for the cluster: nodes reporting
   * the same reason and note for the same object create one Event of one name.
   */
  warnStatefulSet(sts: PodRef, reason: EventReason, action: string, note: string): void {
    const digest = createHash("sha256")
      .update(`${sts.uid ?? ""}\n${reason}\n${note}`)
      .digest("hex")
      .slice(0, 16);
    // A DNS subdomain: the cut name must not end in "-" or "." before the suffix.
    const name = `${sts.name.slice(0, 200).replace(/[-.]+$/, "")}.berth.${digest}`;
    this.track(this.send({ apiVersion: "apps/v1", kind: "StatefulSet", ...sts }, { name }, reason, action, note));
  }

  private track(sending: Promise<void>): void {
    const p = sending.finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** Waits for Events in flight (shutdown). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  private async send(
    about: ObjectRef,
    metadata: { name: string } | { generateName: string },
    reason: EventReason,
    action: string,
    noteOrPromise: string | Promise<string>,
  ): Promise<void> {
    const { apiVersion, kind, namespace, name, uid } = about;
    const what = `${kind.toLowerCase()} ${namespace}/${name}`;
    try {
      const note = truncate(await noteOrPromise);
      await withDeadline(
        this.kube.events.createNamespacedEvent({
          namespace,
          body: {
            metadata,
            eventTime: new V1MicroTime(),
            reportingController: "berth.dev/ipamd",
            reportingInstance: `ipamd-${this.node}`,
            action,
            reason,
            type: "Warning",
            note,
            regarding: { apiVersion, kind, namespace, name, ...(uid ? { uid } : {}) },
          },
        }),
        this.timeoutMs,
        "create Event",
      );
      this.log.info({ regarding: what, reason }, "Event sent");
    } catch (e) {
      if (statusOf(e) === 409) this.log.debug({ regarding: what, reason }, "Event already sent (by another node)");
      else this.log.warn({ regarding: what, reason, err: (e as Error).message }, "cannot send the Event");
    }
  }
}

function truncate(note: string): string {
  if (Buffer.byteLength(note) <= NOTE_MAX_BYTES) return note;
  let out = note.slice(0, NOTE_MAX_BYTES - 3);
  while (Buffer.byteLength(out) > NOTE_MAX_BYTES - 3) out = out.slice(0, -1);
  return `${out}...`;
}
