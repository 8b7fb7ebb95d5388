// The `cluster` config section: defaults, and errors that name the field.
import { describe, expect, it } from "vitest";
import { clusterConfigSchema } from "../../ipamd/cluster/config";

describe("cluster config section", () => {
  it("fills defaults", () => {
    expect(clusterConfigSchema.parse({ etcd: { endpoints: ["https://10.0.0.1:2379"] } })).toEqual({
      etcd: { endpoints: ["https://10.0.0.1:2379"], prefix: "/berth", requestTimeoutSeconds: 2 },
      buffer: { low: 4, high: 16 },
      nodeGraceSeconds: 600,
      leaseTTLSeconds: 10,
      handbackWaitSeconds: 3,
    });
  });
  it("rejects what would break at run time, naming the field", () => {
    const issues = (v: unknown) => clusterConfigSchema.safeParse(v).error?.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    expect(issues({ etcd: { endpoints: [] } })).toEqual(["etcd.endpoints: list at least one etcd endpoint (all members, for failover)"]);
    expect(issues({ etcd: { endpoints: ["10.0.0.1:2379"] } })![0]).toMatch(/^etcd.endpoints.0: expected http\(s\):\/\/host:port/);
    expect(issues({ etcd: { endpoints: ["http://a:1"], certFile: "/c" } })).toEqual([
      "etcd.certFile: certFile and keyFile go together; set both or neither",
    ]);
    expect(issues({ etcd: { endpoints: ["http://a:1"], prefix: "berth/" } })![0]).toMatch(/^etcd.prefix: a key prefix like \/berth/);
    expect(issues({ etcd: { endpoints: ["http://a:1"] }, buffer: { low: 9, high: 4 } })).toEqual(["buffer.low: low must not exceed high"]);
  });
});
