// zod schemas of every request body the daemon accepts; each checks against its type in api/types.ts.
import { z } from "zod";
import type {
  AllocateRequest,
  AttachmentRequest,
  GcRequest,
  NetworkStatusRequest,
  PinRequest,
  ReleaseReservationRequest,
  ReservationFilter,
  ReserveRequest,
  StatefulSetRequest,
} from "../api/types";
import { parseCidr, parseIp } from "../lib/ip";
import { containerIdProblem, ifNameProblem, networkNameProblem } from "../lib/names";

const dnsLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dnsSubdomain = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

const namespaceField = z.string().max(63).regex(dnsLabel, {
  message: "must be a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)",
});
const statefulSetField = z.string().max(253).regex(dnsSubdomain, {
  message: "must be a Kubernetes object name (lowercase letters, digits, '-' and '.')",
});
// The plugins' own rules (lib/names.ts): a name the plugin passes, ipamd accepts, and back.
const named = (problem: (s: string) => string | undefined) =>
  z.string().superRefine((s, ctx) => {
    const why = problem(s);
    if (why) ctx.addIssue({ code: "custom", message: why });
  });
const containerID = named(containerIdProblem);
const ifName = named(ifNameProblem);
const network = named(networkNameProblem);
const poolName = z.string().min(1).max(63);
const ipOrCidr = z.string().refine((s) => parseIp(s) !== null || parseCidr(s) !== null, {
  message: "must be an IP address, optionally with /prefix (e.g. 10.99.0.7 or 10.99.0.7/24)",
});

export const attachmentSchema = z.object({ containerID, ifName, network }) satisfies z.ZodType<AttachmentRequest>;

export const allocateSchema = attachmentSchema.extend({
  podNamespace: z.string().max(253).optional(),
  podName: z.string().max(253).optional(),
  podUID: z.string().max(64).optional(),
  pools: z.array(poolName).max(16).optional(),
  ips: z.array(ipOrCidr).max(2).optional(),
}) satisfies z.ZodType<AllocateRequest>;

export const networkStatusSchema = z.object({
  network,
  pools: z.array(poolName).max(16).optional(),
}) satisfies z.ZodType<NetworkStatusRequest>;

export const gcSchema = z.object({
  network,
  validAttachments: z.array(z.object({ containerID, ifName })).max(100_000),
}) satisfies z.ZodType<GcRequest>;

export const reserveSchema = z.strictObject({
  namespace: namespaceField,
  statefulset: statefulSetField,
  replicas: z.number().int().min(0).max(10_000),
  ordinalStart: z.number().int().min(0).max(1_000_000).optional(),
  pools: z.array(poolName).max(16).optional(),
  network: network.optional(),
}) satisfies z.ZodType<ReserveRequest>;

export const pinSchema = z.strictObject({
  namespace: namespaceField,
  statefulset: statefulSetField,
  ordinal: z.number().int().min(0).max(1_000_000),
  ip: ipOrCidr,
  force: z.boolean().optional(),
}) satisfies z.ZodType<PinRequest>;

export const releaseReservationSchema = z
  .strictObject({
    ip: ipOrCidr.optional(),
    namespace: namespaceField.optional(),
    statefulset: statefulSetField.optional(),
    ordinal: z.number().int().min(0).optional(),
    pool: poolName.optional(),
    force: z.boolean().optional(),
  })
  .superRefine((r, ctx) => {
    if (!r.ip && !(r.namespace && r.statefulset)) {
      ctx.addIssue({ code: "custom", path: ["ip"], message: "give either ip, or namespace and statefulset (optionally ordinal and pool)" });
    }
    if (r.ordinal !== undefined && !r.statefulset) {
      ctx.addIssue({ code: "custom", path: ["statefulset"], message: "ordinal needs namespace and statefulset" });
    }
  }) satisfies z.ZodType<ReleaseReservationRequest>;

export const statefulSetSchema = z.strictObject({
  namespace: namespaceField,
  statefulset: statefulSetField,
}) satisfies z.ZodType<StatefulSetRequest>;

export const reservationsQuerySchema = z.strictObject({
  namespace: z.string().optional(),
  statefulset: z.string().optional(),
  pool: z.string().optional(),
  owner: z.string().optional(),
  ip: z.string().optional(),
  state: z.enum(["attached", "detached"]).optional(),
  limit: z.coerce.number().int().min(1).max(1_000_000).optional(),
  after: z.string().max(2000).optional(),
}) satisfies z.ZodType<ReservationFilter>;
