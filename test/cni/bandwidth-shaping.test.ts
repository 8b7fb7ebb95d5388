// cni/pod/bandwidth.ts on real namespaces with real traffic: a "pod" and a "peer" namespace joined
// by a veth, iperf3 between them. The measured rates judge the shaping (they are not timing
// targets): limited to 10 Mbit/s they are within 20% of it, unlimited several times higher.
import { execFileSync, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Netns } from "../../cni/netns";
import {
  bandwidthLimits,
  checkPodShaping,
  ifbName,
  removePodShaping,
  shapePodInterface,
  type BandwidthLimits,
} from "../../cni/pod/bandwidth";
import { parseConfig } from "../../cni/skel/config";
import { CniError } from "../../cni/skel/errors";
import { nullLogger } from "../../cni/skel/log";
import { UndoStack } from "../../cni/skel/undo";
import { cniErrorOf } from "../helpers/cni-error";
import { createNetns, ipIn, removeNetns, type TestNetns } from "../helpers/netns";
import { iperfServer, measureBits } from "../helpers/iperf";

const LIMIT = 10_000_000; // bit/s
const BURST = 100_000; // bits: 10 ms at the rate
let pod: TestNetns, peer: TestNetns;
let server: ChildProcess | undefined;
const PORT = 5201 + (process.pid % 1000);

const limits = (l: Partial<Record<"ingressRate" | "ingressBurst" | "egressRate" | "egressBurst", number>>): BandwidthLimits =>
  bandwidthLimits(parseConfig({ cniVersion: "1.0.0", name: "n", type: "berth-macvlan", runtimeConfig: { bandwidth: l } }, "ADD"))!;

function shape(l: BandwidthLimits): void {
  const ns = Netns.open(pod.path);
  try {
    shapePodInterface(ns, "eth0", l, new UndoStack(), nullLogger);
  } finally {
    ns.close();
  }
}

/** bits per second the receiver saw; `reverse`: the peer sends to the pod (the pod's ingress) */
function measure(reverse: boolean): number {
  return measureBits(pod.name, "10.88.0.2", PORT, reverse);
}

function withPod<T>(fn: (nl: Netns["nl"]) => T): T {
  const ns = Netns.open(pod.path);
  try {
    return fn(ns.nl);
  } finally {
    ns.close();
  }
}

const measured: Record<string, number> = {};

beforeAll(() => {
  pod = createNetns("bwp");
  peer = createNetns("bwq");
  ipIn(pod, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", peer.name);
  ipIn(pod, "addr", "add", "10.88.0.1/24", "dev", "eth0");
  ipIn(peer, "addr", "add", "10.88.0.2/24", "dev", "peer0");
  ipIn(pod, "link", "set", "eth0", "up");
  ipIn(peer, "link", "set", "peer0", "up");
  server = iperfServer(peer.name, PORT);
});

afterAll(() => {
  server?.kill();
  removeNetns(pod);
  removeNetns(peer);
  console.log("measured bit/s:", JSON.stringify(measured));
});

describe("pod bandwidth shaping with real traffic", () => {
  it("unshaped: both directions run several times faster than the limit", () => {
    measured.egressUnlimited = measure(false);
    measured.ingressUnlimited = measure(true);
    expect(measured.egressUnlimited).toBeGreaterThan(4 * LIMIT);
    expect(measured.ingressUnlimited).toBeGreaterThan(4 * LIMIT);
  }, 60_000);

  it("egress 10 Mbit/s: a tbf on eth0; what the pod sends arrives at 10 Mbit/s +-20%; ingress stays fast", () => {
    const l = limits({ egressRate: LIMIT, egressBurst: BURST });
    shape(l);
    expect(execFileSync("tc", ["-n", pod.name, "qdisc", "show", "dev", "eth0"], { encoding: "utf8" })).toMatch(/tbf 1: root .*rate 10Mbit/);
    withPod((nl) => checkPodShaping(nl, "eth0", l));
    measured.egressLimited = measure(false);
    measured.ingressWithEgressLimit = measure(true);
    expect(measured.egressLimited).toBeGreaterThan(0.8 * LIMIT);
    expect(measured.egressLimited).toBeLessThan(1.2 * LIMIT);
    expect(measured.ingressWithEgressLimit).toBeGreaterThan(4 * LIMIT);
    removePodShaping(pod.path, "eth0", nullLogger);
    expect(execFileSync("tc", ["-n", pod.name, "qdisc", "show", "dev", "eth0"], { encoding: "utf8" })).not.toContain("tbf");
  }, 60_000);

  it("ingress 10 Mbit/s: an ifb in the pod with a tbf, eth0's ingress redirected to it; " +
    "what the pod receives arrives at 10 Mbit/s +-20%", () => {
    const l = limits({ ingressRate: LIMIT, ingressBurst: BURST });
    shape(l);
    const ifb = ifbName("eth0");
    expect(ifb).toBe("ifb-eth0");
    expect(ipIn(pod, "-d", "link", "show", ifb)).toContain("ifb");
    expect(execFileSync("tc", ["-n", pod.name, "filter", "show", "dev", "eth0", "ingress"], { encoding: "utf8" })).toContain(
      `mirred (Egress Redirect to device ${ifb}) stolen`,
    );
    withPod((nl) => checkPodShaping(nl, "eth0", l));
    measured.ingressLimited = measure(true);
    measured.egressWithIngressLimit = measure(false);
    expect(measured.ingressLimited).toBeGreaterThan(0.8 * LIMIT);
    expect(measured.ingressLimited).toBeLessThan(1.2 * LIMIT);
    expect(measured.egressWithIngressLimit).toBeGreaterThan(4 * LIMIT);
  }, 60_000);

  it("CHECK tells a different rate, burst, or a missing ifb/filter apart (code 120)", () => {
    const l = limits({ ingressRate: LIMIT, ingressBurst: BURST });
    const err = (want: BandwidthLimits | undefined) => cniErrorOf(() => withPod((nl) => checkPodShaping(nl, "eth0", want)));
    expect(err(limits({ ingressRate: 2 * LIMIT, ingressBurst: BURST })).message).toContain("rate 10000000 bit/s, the config says 20000000");
    expect(err(limits({ ingressRate: LIMIT, ingressBurst: 2 * BURST })).message).toContain("burst 100000 bits, the config says 200000");
    expect(err(undefined).message).toContain("config asks for no ingress limit");
    expect(err(limits({ egressRate: LIMIT, egressBurst: BURST })).message).toContain("eth0 has a noqueue root qdisc, expected tbf");
    execFileSync("tc", ["-n", pod.name, "filter", "del", "dev", "eth0", "ingress"]);
    expect(err(l).code).toBe(120);
    expect(err(l).message).toContain("no filter on eth0's ingress redirects to ifb ifb-eth0");
  });

  it("remove: the ifb first, then the ingress qdisc; a second remove and a vanished namespace are no errors", () => {
    // the CHECK test above left an ingress qdisc without its filter (so not ours any more): start clean
    removePodShaping(pod.path, "eth0", nullLogger);
    execFileSync("tc", ["-n", pod.name, "qdisc", "del", "dev", "eth0", "ingress"]);
    shape(limits({ egressRate: LIMIT, egressBurst: BURST, ingressRate: LIMIT, ingressBurst: BURST }));
    expect(ipIn(pod, "link", "show")).toContain("ifb-eth0");
    removePodShaping(pod.path, "eth0", nullLogger);
    expect(ipIn(pod, "link", "show")).not.toContain("ifb-eth0");
    const tc = execFileSync("tc", ["-n", pod.name, "qdisc", "show", "dev", "eth0"], { encoding: "utf8" });
    expect(tc).not.toContain("tbf");
    expect(tc).not.toContain("ingress");
    removePodShaping(pod.path, "eth0", nullLogger);
    removePodShaping("/run/netns/berth-no-such-namespace", "eth0", nullLogger);
    removePodShaping("", "eth0", nullLogger);
  });

  it("a burst smaller than one packet is refused with code 7 before anything is made", () => {
    const e = cniErrorOf(() => shape(limits({ ingressRate: LIMIT, ingressBurst: 8000 })));
    expect(e).toBeInstanceOf(CniError);
    expect(e.code).toBe(7);
    expect(e.message).toContain(
      "runtimeConfig.bandwidth.ingressBurst 8000 bits (1000 bytes) is smaller than one full-size packet on eth0 (MTU 1500",
    );
    expect(e.details).toContain("at least 12112 bits");
    expect(ipIn(pod, "link", "show")).not.toContain("ifb-eth0");
  });
});
