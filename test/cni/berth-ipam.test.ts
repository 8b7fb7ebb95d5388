// The BUILT berth-ipam executable, run the way a container runtime runs it, against a REAL ipamd
// (own socket and SQLite file) and REAL network namespaces; and the reference macvlan plugin
// using berth-ipam as its IPAM.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectCniError } from "../helpers/cni-error";
import { startIpamd, type DaemonHandle } from "../helpers/ipamd";
import { createNetns, ipJson, removeNetns, type TestNetns } from "../helpers/netns";
import { cleanupPlugins, pluginDir, pluginPath, runCni } from "../helpers/plugins";

let daemon: DaemonHandle | undefined;
let pod: TestNetns | undefined;
let hostNs: TestNetns | undefined;
let podMacvlan: TestNetns | undefined;
const tmp = mkdtempSync(join(tmpdir(), "berth-ipam-test-"));
let ipam: string;

const POOL = {
  name: "rack1-v4",
  subnet: "10.250.7.0/24",
  gateway: "10.250.7.1",
  vlan: 101,
  ranges: [{ start: "10.250.7.10", end: "10.250.7.200" }],
  routes: [{ dst: "10.250.0.0/16", gw: "10.250.7.1" }],
  dns: { nameservers: ["10.250.7.53"], search: ["svc.example.net"] },
};

function conf(extra: Record<string, unknown> = {}, ipamExtra: Record<string, unknown> = {}, version = "1.1.0") {
  return {
    cniVersion: version,
    name: "underlay",
    type: "macvlan",
    ipam: { type: "berth-ipam", socket: daemon!.socket, ...ipamExtra },
    ...extra,
  };
}

const stsArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=0b5a";

beforeAll(async () => {
  ipam = pluginPath("berth-ipam");
  daemon = await startIpamd({ config: { pools: [POOL], statefulSets: [{ namespace: "default", name: "web" }], cooldownSeconds: 0 } });
  pod = createNetns("ipam");
}, 120_000);

afterAll(async () => {
  removeNetns(pod);
  removeNetns(podMacvlan);
  removeNetns(hostNs);
  await daemon?.stop();
  if (daemon) rmSync(daemon.dir, { recursive: true, force: true });
  rmSync(tmp, { recursive: true, force: true });
  cleanupPlugins();
});

describe("berth-ipam executable", () => {
  it("VERSION answers on any config version, even without one", () => {
    for (const config of ['{"cniVersion":"0.1.0"}', '{"cniVersion":"1.1.0"}', ""]) {
      const r = runCni(ipam, { command: "VERSION", config });
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n');
    }
  });

  it("ADD returns the IPAM result shape in the config's version; DEL and ADD again are idempotent", () => {
    const call = {
      containerId: "ctr-plain-1",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx-7c5b",
    };
    const add = runCni(ipam, { command: "ADD", config: conf(), ...call });
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    const address: string = add.json.ips[0].address;
    expect(address).toMatch(/^10\.250\.7\.\d+\/24$/);
    expect(add.json).toEqual({
      cniVersion: "1.1.0",
      ips: [{ address, gateway: "10.250.7.1" }],
      routes: [{ dst: "10.250.0.0/16", gw: "10.250.7.1" }],
      dns: { nameservers: ["10.250.7.53"], search: ["svc.example.net"] },
    });
    // Same attachment again: the same address (the runtime may retry an ADD).
    const again = runCni(ipam, { command: "ADD", config: conf(), ...call });
    expect(again.json.ips[0].address).toBe(address);

    const old = runCni(ipam, { command: "ADD", config: conf({}, {}, "0.3.1"), ...call });
    expect(old.stdout).toBe(
      JSON.stringify({
        cniVersion: "0.3.1",
        ips: [{ version: "4", address, gateway: "10.250.7.1" }],
        routes: [{ dst: "10.250.0.0/16", gw: "10.250.7.1" }],
        dns: { nameservers: ["10.250.7.53"], search: ["svc.example.net"] },
      }) + "\n",
    );

    for (let i = 0; i < 2; i++) {
      const del = runCni(ipam, { command: "DEL", config: conf(), ...call });
      expect(del.code).toBe(0);
      expect(del.stdout).toBe("");
    }
  });

  it("a StatefulSet pod gets its IP back under a new container ID", async () => {
    const first = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "ctr-web0-a",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: stsArgs,
    });
    expect(first.code).toBe(0);
    const x: string = first.json.ips[0].address;
    const res = await daemon!.client.reservations({ namespace: "default", statefulset: "web" });
    expect(res.reservations.map((r) => [r.owner, r.address, r.state])).toEqual([["default/web/0", x, "attached"]]);

    const del = runCni(ipam, {
      command: "DEL",
      config: conf(),
      containerId: "ctr-web0-a",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: stsArgs,
    });
    expect(del.code).toBe(0);
    const detached = await daemon!.client.reservations({ namespace: "default", statefulset: "web" });
    expect(detached.reservations.map((r) => [r.address, r.state])).toEqual([[x, "detached"]]);

    // Another pod meanwhile must not get X.
    const other = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "ctr-other",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=api-5d9f",
    });
    expect(other.json.ips[0].address).not.toBe(x);

    const second = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "ctr-web0-b",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: stsArgs,
    });
    expect(second.code).toBe(0);
    expect(second.json.ips[0].address).toBe(x);
  });

  it("a re-created StatefulSet pod whose old sandbox is still attached gets code 11 naming that sandbox", async () => {
    const args = (uid: string) => `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-3;K8S_POD_UID=${uid}`;
    const old = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "web3-old",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: args("u-old"),
    });
    expect(old.code).toBe(0);
    const again = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "web3-new",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: args("u-new"),
    });
    expect(again.code).toBe(1);
    expect(again.json.code).toBe(11);
    expect(again.json.msg).toContain("still attached to the previous sandbox web3-old");
    expect(runCni(ipam, { command: "DEL", config: conf(), containerId: "web3-old", netns: pod!.path, ifName: "net1" }).code).toBe(0);
    const retried = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "web3-new",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: args("u-new"),
    });
    expect(retried.code).toBe(0);
    expect(retried.json.ips).toEqual(old.json.ips);
    expect(runCni(ipam, { command: "DEL", config: conf(), containerId: "web3-new", netns: pod!.path, ifName: "net1" }).code).toBe(0);
  });

  it("honours a requested IP from runtimeConfig.ips, and names a taken one", () => {
    const want = "10.250.7.150/24";
    const add = runCni(ipam, {
      command: "ADD",
      config: conf({ runtimeConfig: { ips: [want] } }),
      containerId: "ctr-pinned",
      netns: pod!.path,
      ifName: "net1",
    });
    expect(add.code).toBe(0);
    expect(add.json.ips[0].address).toBe(want);
    const clash = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "ctr-clash",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: "IP=10.250.7.150",
    });
    expect(clash.code).toBe(1);
    expect(clash.json.code).toBe(104);
    expect(clash.json.msg).toContain("10.250.7.150");
  });

  it("an unknown pool in ipam.pools is code 102 with the daemon's explanation", () => {
    const r = runCni(ipam, {
      command: "ADD",
      config: conf({}, { pools: ["rack9-v4"] }),
      containerId: "ctr-nopool",
      netns: pod!.path,
      ifName: "net1",
    });
    expect(r.code).toBe(1);
    expect(Object.keys(r.json)).toEqual(["cniVersion", "code", "msg", "details"]);
    expect(r.json.code).toBe(102);
    expect(r.json.msg).toContain("rack9-v4");
  });

  it("CHECK compares ipamd's allocation with prevResult", () => {
    const call = { containerId: "ctr-check", netns: pod!.path, ifName: "net1" };
    const add = runCni(ipam, { command: "ADD", config: conf(), ...call });
    expect(add.code).toBe(0);
    const ok = runCni(ipam, { command: "CHECK", config: conf({ prevResult: add.json }), ...call });
    expect(ok.stdout).toBe("");
    expect(ok.code).toBe(0);
    const wrong = { ...add.json, ips: [{ address: "10.250.7.3/24" }] };
    const bad = runCni(ipam, { command: "CHECK", config: conf({ prevResult: wrong }), ...call });
    expect(bad.json.code).toBe(120);
    expect(bad.json.msg).toContain(add.json.ips[0].address);
    const unknown = runCni(ipam, { command: "CHECK", config: conf({ prevResult: add.json }), ...call, containerId: "ctr-never-added" });
    expect(unknown.json.code).toBe(107);
    const old = runCni(ipam, { command: "CHECK", config: conf({ prevResult: add.json }, {}, "0.3.1"), ...call });
    expect(old.json).toEqual({
      cniVersion: "0.3.1",
      code: 1,
      msg: "config version does not allow CHECK",
      details: expect.stringContaining("0.4.0"),
    });
  });

  it("STATUS is silent when ipamd serves pools; GC releases what the runtime no longer lists", async () => {
    const status = runCni(ipam, { command: "STATUS", config: conf() });
    expect(status.code).toBe(0);
    expect(status.stdout).toBe("");
    const network = "gc-net";
    for (const id of ["gc-keep", "gc-drop"]) {
      const r = runCni(ipam, { command: "ADD", config: conf({ name: network }), containerId: id, netns: pod!.path, ifName: "net1" });
      expect(r.code).toBe(0);
    }
    const gc = runCni(ipam, {
      command: "GC",
      config: conf({ name: network, "cni.dev/valid-attachments": [{ containerID: "gc-keep", ifname: "net1" }] }),
    });
    expect(gc.code).toBe(0);
    const left = await daemon!.client.reservations({});
    const ids = left.reservations.filter((r) => r.network === network).map((r) => r.containerID);
    expect(ids).toEqual(["gc-keep"]);
    const old = runCni(ipam, { command: "GC", config: conf({ "cni.dev/valid-attachments": [] }, {}, "1.0.0") });
    expect(old.json.code).toBe(1);
    expect(old.json.msg).toBe("config version does not allow GC");
  });

  it("refuses bad input before touching anything", () => {
    const unknownArg = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "ctr-args",
      netns: pod!.path,
      ifName: "net1",
      cniArgs: "K8S_POD_NAME=web-0;FOO=bar",
    });
    expect(unknownArg.code).toBe(1);
    expect(unknownArg.json).toEqual({
      cniVersion: "1.1.0",
      code: 2,
      msg: 'CNI_ARGS: unknown args ["FOO=bar"]',
      details: expect.stringContaining("IgnoreUnknown"),
    });
    const badIf = runCni(ipam, { command: "ADD", config: conf(), containerId: "ctr-args", netns: pod!.path, ifName: "net1:x" });
    expect(badIf.json.code).toBe(4);
    const noNs = runCni(ipam, {
      command: "ADD",
      config: conf(),
      containerId: "ctr-args",
      netns: "/run/netns/berth-does-not-exist",
      ifName: "net1",
    });
    expect(noNs.json.code).toBe(3);
    const version = runCni(ipam, {
      command: "ADD",
      config: conf({}, {}, "0.2.0"),
      containerId: "ctr-args",
      netns: pod!.path,
      ifName: "net1",
    });
    expect(version.json.code).toBe(1);
    const wrongType = runCni(ipam, {
      command: "ADD",
      config: { ...conf(), ipam: { type: "host-local" } },
      containerId: "ctr-args",
      netns: pod!.path,
      ifName: "net1",
    });
    expect(wrongType.json.code).toBe(7);
    const decode = runCni(ipam, { command: "ADD", config: "{not json", containerId: "ctr-args", netns: pod!.path, ifName: "net1" });
    expect(decode.json.code).toBe(6);
  });

  it("logs JSON lines to logFile, never to stdout", () => {
    const logFile = join(tmp, "cni.log");
    const add = runCni(ipam, {
      command: "ADD",
      config: conf({ logFile, logLevel: "debug" }),
      containerId: "ctr-log",
      netns: pod!.path,
      ifName: "net1",
    });
    expect(add.code).toBe(0);
    expect(add.stdout.trim().split("\n")).toHaveLength(1);
    const lines = readFileSync(logFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.some((l) => l.msg === "ipamd allocated" && l.containerID === "ctr-log" && l.plugin === "berth-ipam")).toBe(true);
  });
});

describe("STATUS asks ipamd whether ADD could allocate for this network on this node", () => {
  let small: DaemonHandle | undefined;
  beforeAll(async () => {
    small = await startIpamd({
      config: {
        cooldownSeconds: 0,
        pools: [{ name: "one-v4", subnet: "10.251.0.0/24", networks: ["tiny"], ranges: [{ start: "10.251.0.10", end: "10.251.0.10" }] }],
      },
    });
  }, 120_000);
  afterAll(async () => {
    await small?.stop();
    if (small) rmSync(small.dir, { recursive: true, force: true });
  });
  const tiny = (extra: Record<string, unknown> = {}, ipamExtra: Record<string, unknown> = {}) => ({
    cniVersion: "1.1.0",
    name: "tiny",
    type: "macvlan",
    ipam: { type: "berth-ipam", socket: small!.socket, ...ipamExtra },
    ...extra,
  });

  it("50 when ipam.pools names an undefined pool or no pool serves the network here; 50 when the pools are exhausted; 0 otherwise", () => {
    expect(runCni(ipam, { command: "STATUS", config: tiny() }).code).toBe(0);
    expectCniError(runCni(ipam, { command: "STATUS", config: tiny({}, { pools: ["nope"] }) }), 50, 'pool "nope" is not defined');
    expectCniError(runCni(ipam, { command: "STATUS", config: tiny({ name: "elsewhere" }) }), 50, 'no pool serves network "elsewhere"');
    const add = runCni(ipam, { command: "ADD", config: tiny(), containerId: "ctr-last", netns: pod!.path, ifName: "net1" });
    expect(add.code, add.stdout).toBe(0);
    const full = expectCniError(runCni(ipam, { command: "STATUS", config: tiny() }), 50, "no free IPv4 address");
    expect(full.details).toContain("add a range");
    // and ADD agrees with STATUS
    expectCniError(runCni(ipam, { command: "ADD", config: tiny(), containerId: "ctr-more", netns: pod!.path, ifName: "net1" }), 103);
    expect(runCni(ipam, { command: "DEL", config: tiny(), containerId: "ctr-last", netns: pod!.path, ifName: "net1" }).code).toBe(0);
    expect(runCni(ipam, { command: "STATUS", config: tiny() }).code).toBe(0);
  });

  it("requested IPs from several sources: runtimeConfig.ips wins, as for the MAC (no schema error)", () => {
    const config = tiny({ runtimeConfig: { ips: ["10.251.0.10/24"] }, args: { cni: { ips: ["10.251.0.11/24"] } } });
    const call = { containerId: "ctr-sources", netns: pod!.path, ifName: "net1" };
    const add = runCni(ipam, { command: "ADD", config, ...call, cniArgs: "IP=10.251.0.12" });
    expect(add.code, add.stdout).toBe(0);
    expect(add.json.ips[0].address).toBe("10.251.0.10/24");
    expect(runCni(ipam, { command: "DEL", config, containerId: "ctr-sources", netns: pod!.path, ifName: "net1" }).code).toBe(0);
  });

  it("one rule for names on both sides: a container ID over 256 characters is 4 at ADD; ipamd refuses what the plugin does", async () => {
    const long = "c".repeat(257);
    const tooLong = runCni(ipam, { command: "ADD", config: tiny(), containerId: long, netns: pod!.path, ifName: "net1" });
    expectCniError(tooLong, 4, "CNI_CONTAINERID is too long");
    const refused = [{ ifName: "." }, { ifName: ".." }, { ifName: "a\0b" }, { network: "a/b" }, { network: "a\0b" }, { containerID: long }];
    for (const bad of refused) {
      const req = { containerID: "ctr-names", ifName: "net1", network: "tiny", ...bad };
      await expect(small!.client.allocate(req)).rejects.toMatchObject({ code: "invalid_request" });
    }
  });
});

describe("daemon down", () => {
  const gone = () => join(tmp, "no-daemon", "ipamd.sock");
  const call = () => ({ containerId: "ctr-down", netns: pod!.path, ifName: "net1" });

  it("ADD fails fast with code 11 naming the socket", () => {
    const started = Date.now();
    const r = runCni(ipam, { command: "ADD", config: conf({}, { socket: gone() }), ...call() });
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(11);
    expect(r.json.msg).toBe(`ipamd is not reachable at ${gone()}: the socket does not exist`); // said once, no client hints
    expect(Date.now() - started).toBeLessThan(5000);
  });
  it("ADD answers 11 too when the socket file is stale (nobody listening)", () => {
    const stale = join(tmp, "stale.sock");
    execFileSync("python3", ["-c", `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(stale)})`]);
    const r = runCni(ipam, { command: "ADD", config: conf({}, { socket: stale }), ...call() });
    expect(r.json.code).toBe(11);
    expect(r.json.msg).toContain(stale);
    expect(r.json.msg).toContain("connection refused");
    expect(runCni(ipam, { command: "DEL", config: conf({}, { socket: stale, spoolDir: join(tmp, "spool") }), ...call() }).code).toBe(0);
  });
  it("ADD answers 11 naming a full backlog (EAGAIN), without the HTTP client's own guesses", async () => {
    const sock = join(tmp, "backlog.sock");
    // A listener that never accepts, its backlog filled: the next connect(2) fails with EAGAIN.
    const server = spawn(
      "python3",
      [
        "-c",
        [
          "import socket,sys,time",
          "s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(0)",
          "c=socket.socket(socket.AF_UNIX); c.setblocking(False)",
          "try: c.connect(sys.argv[1])\nexcept BlockingIOError: pass",
          "print('ready', flush=True); time.sleep(60)",
        ].join("\n"),
        sock,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await new Promise((resolve) => server.stdout!.once("data", resolve));
      const r = runCni(ipam, { command: "ADD", config: conf({}, { socket: sock, timeoutMs: 500 }), ...call() });
      expectCniError(r, 11, `ipamd is not reachable at ${sock}: the socket's connection backlog is full (EAGAIN)`);
      expect(r.json.msg).not.toMatch(/typo/i);
      expect(r.json.msg.match(/not reachable/g)).toHaveLength(1);
    } finally {
      server.kill();
    }
  });
  it("reads an answer as soon as it is complete; an answer cut short is 11 naming what came", async () => {
    const sock = join(tmp, "answers.sock");
    // A daemon that answers each connection with the next scripted bytes; "hold" keeps it open.
    const answers = [
      { bytes: `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{"released":[],"kept":[]}  `, hold: true },
      {
        bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\n" + '{"released":[],"' + '\r\n9\r\nkept":[]}\r\n0\r\n\r\n',
        hold: true,
      },
      { bytes: 'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"ips":', hold: false },
    ];
    const server = spawn(
      "python3",
      [
        "-c",
        [
          "import json,socket,sys,time",
          "s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)",
          "held=[]",
          "print('ready', flush=True)",
          "for a in json.loads(sys.argv[2]):",
          "  c,_=s.accept(); data=b''",
          "  while b'\\r\\n\\r\\n' not in data: data+=c.recv(65536)",
          "  c.sendall(a['bytes'].encode())",
          "  held.append(c) if a['hold'] else c.close()",
          "time.sleep(60)",
        ].join("\n"),
        sock,
        JSON.stringify(answers),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await new Promise((resolve) => server.stdout!.once("data", resolve));
      const spoolDir = join(tmp, "answers-spool");
      // The connection stays open: waiting for its end would time out and spool the release.
      for (const n of [1, 2]) {
        const del = runCni(ipam, { command: "DEL", config: conf({}, { socket: sock, spoolDir, timeoutMs: 3000 }), ...call() });
        expect(del.code, `answer ${n}: ${del.stdout}`).toBe(0);
        expect(existsSync(spoolDir), `answer ${n} was spooled`).toBe(false);
      }
      const add = runCni(ipam, { command: "ADD", config: conf({}, { socket: sock, timeoutMs: 3000 }), ...call() });
      expectCniError(add, 11, `ipamd is not reachable at ${sock}: the answer ended after 7 of 100 body bytes`);
    } finally {
      server.kill();
    }
  });
  it("DEL still succeeds, and records the release in the spool for ipamd", () => {
    const spoolDir = join(tmp, "spool");
    const r = runCni(ipam, { command: "DEL", config: conf({}, { socket: gone(), spoolDir }), ...call() });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("");
    expect(JSON.parse(readFileSync(join(spoolDir, "ctr-down_net1_underlay.json"), "utf8"))).toMatchObject({
      version: 1,
      containerID: "ctr-down",
      ifName: "net1",
      network: "underlay",
    });
  });
  it("STATUS answers 50 naming the socket", () => {
    const r = runCni(ipam, { command: "STATUS", config: conf({}, { socket: gone() }) });
    expect(r.code).toBe(1);
    expect(r.json.code).toBe(50);
    expect(r.json.msg).toContain(gone());
  });
});

describe("reference macvlan with ipam.type berth-ipam", () => {
  it("gets a real address from ipamd in the pod, and DEL gives it back", async () => {
    hostNs = createNetns("host");
    podMacvlan = createNetns("mvpod");
    execFileSync("ip", ["-n", hostNs.name, "link", "add", "bmaster0", "type", "veth", "peer", "name", "bpeer0"]);
    execFileSync("ip", ["-n", hostNs.name, "link", "set", "bmaster0", "up"]);
    execFileSync("ip", ["-n", hostNs.name, "link", "set", "bpeer0", "up"]);
    const config = {
      cniVersion: "1.0.0",
      name: "underlay",
      type: "macvlan",
      master: "bmaster0",
      mode: "bridge",
      ipam: { type: "berth-ipam", socket: daemon!.socket },
    };
    const call = {
      config,
      containerId: "ctr-macvlan",
      netns: podMacvlan.path,
      ifName: "eth0",
      cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1",
      path: [pluginDir(), "/usr/lib/cni"],
      via: ["ip", "netns", "exec", hostNs.name],
    };
    const add = runCni("/usr/lib/cni/macvlan", { command: "ADD", ...call });
    expect(add.stderr).toBe("");
    expect(add.code).toBe(0);
    const address: string = add.json.ips[0].address;
    expect(address).toMatch(/^10\.250\.7\.\d+\/24$/);
    expect(add.json.interfaces[0].name).toBe("eth0");

    const [ip, prefix] = address.split("/");
    const addrs = ipJson<{ ifname: string; addr_info: { family: string; local: string; prefixlen: number }[] }[]>(
      podMacvlan,
      "addr",
      "show",
      "dev",
      "eth0",
    );
    expect(addrs[0]!.addr_info.filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`)).toEqual([`${ip}/${prefix}`]);
    const routes = ipJson<{ dst: string; gateway?: string }[]>(podMacvlan, "route", "show");
    expect(routes).toContainEqual(expect.objectContaining({ dst: "10.250.0.0/16", gateway: "10.250.7.1" }));
    const res = await daemon!.client.reservations({ namespace: "default", statefulset: "web" });
    expect(res.reservations.find((r) => r.ordinal === 1)?.address).toBe(address);

    const check = runCni("/usr/lib/cni/macvlan", { command: "CHECK", ...call, config: { ...config, prevResult: add.json } });
    expect(check.stdout + check.stderr).toBe("");
    expect(check.code).toBe(0);

    const del = runCni("/usr/lib/cni/macvlan", { command: "DEL", ...call });
    expect(del.code).toBe(0);
    expect(ipJson<{ ifname: string }[]>(podMacvlan, "link", "show").map((l) => l.ifname)).toEqual(["lo"]);
    const after = await daemon!.client.reservations({ namespace: "default", statefulset: "web" });
    expect(after.reservations.find((r) => r.ordinal === 1)?.state).toBe("detached");
  });
});
