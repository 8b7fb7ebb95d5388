// Kubernetes Events (events.k8s.io/v1) on the pod, for what its owner must act on, so that
// `kubectl describe pod` says why it sits in ContainerCreating. eventTime is a MicroTime (6 fraction
// digits; a plain Date is refused with 400). The kubelet retries a failed ADD every few seconds:
// one Event per pod and reason per interval, never one per retry.
import { V1MicroTime } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type KubeConnection, withDeadline } from "./connection";

export type EventReason =
  | "NoPoolForNode"
  | "StickyPoolNotOnNode"
  | "PoolExhausted"
  | "InvalidAnnotation"
  | "AddressTakeover"
  | "PreviousSandboxAttached";

export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
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
    const p = this.send(pod, reason, action, note).finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** Waits for Events in flight (shutdown). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  private async send(pod: PodRef, reason: EventReason, action: string, noteOrPromise: string | Promise<string>): Promise<void> {
    try {
      const note = truncate(await noteOrPromise);
      await withDeadline(
        this.kube.events.createNamespacedEvent({
          namespace: pod.namespace,
          body: {
            metadata: { generateName: `${pod.name}.berth.` },
            eventTime: new V1MicroTime(),
            reportingController: "berth.dev/ipamd",
            reportingInstance: `ipamd-${this.node}`,
            action,
            reason,
            type: "Warning",
            note,
            regarding: { apiVersion: "v1", kind: "Pod", namespace: pod.namespace, name: pod.name, ...(pod.uid ? { uid: pod.uid } : {}) },
          },
        }),
        this.timeoutMs,
        "create Event",
      );
      this.log.info({ pod: `${pod.namespace}/${pod.name}`, reason }, "Event sent");
    } catch (e) {
      this.log.warn({ pod: `${pod.namespace}/${pod.name}`, reason, err: (e as Error).message }, "cannot send the Event");
    }
  }
}

function truncate(note: string): string {
  if (Buffer.byteLength(note) <= NOTE_MAX_BYTES) return note;
  let out = note.slice(0, NOTE_MAX_BYTES - 3);
  while (Buffer.byteLength(out) > NOTE_MAX_BYTES - 3) out = out.slice(0, -1);
  return `${out}...`;
}
