// The `cluster` section of the ipamd config. Integration adds one line to ipamd/config.ts's configSchema:
//   cluster: clusterConfigSchema.optional(),
// Without it, ipamd is the single-node daemon it is today.
import { z } from "zod";

const endpoint = z.string().regex(/^https?:\/\/[^\s/]+(:\d{1,5})?\/?$/, {
  message: "expected http(s)://host:port, e.g. https://10.0.0.1:2379 (plain http only for tests)",
});

export const clusterConfigSchema = z.strictObject({
  etcd: z
    .strictObject({
      endpoints: z.array(endpoint).min(1, { message: "list at least one etcd endpoint (all members, for failover)" }),
      caFile: z.string().min(1).optional(),
      certFile: z.string().min(1).optional(),
      keyFile: z.string().min(1).optional(),
      prefix: z
        .string()
        .regex(/^\/[^\s]*[^/\s]$|^\/$/, { message: "a key prefix like /berth (leading /, no trailing /)" })
        .default("/berth"),
      requestTimeoutSeconds: z.number().min(0.1).max(60).default(2),
    })
    .refine((e) => !!e.certFile === !!e.keyFile, { message: "certFile and keyFile go together; set both or neither", path: ["certFile"] }),
  buffer: z
    .strictObject({
      low: z.number().int().min(0).max(1024).default(4),
      high: z.number().int().min(1).max(1024).default(16),
    })
    .refine((b) => b.low <= b.high, { message: "low must not exceed high", path: ["low"] })
    .default({ low: 4, high: 16 }),
  /** How long a node's liveness key must stay gone before its buffered and non-sticky addresses return to the pool. */
  nodeGraceSeconds: z.number().min(1).default(600),
  leaseTTLSeconds: z.number().int().min(2).max(300).default(10),
  handbackWaitSeconds: z.number().min(0).max(60).default(3),
});
export type ClusterConfig = z.infer<typeof clusterConfigSchema>;
