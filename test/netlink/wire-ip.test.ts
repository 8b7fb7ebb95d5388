import { describe, expect, it } from "vitest";
import { broadcastOf, formatIP, networkOf, parsePrefix } from "../../cni/netlink/ip";
import { ipToBytes, parseIp } from "../../lib/ip";
import { MessageBuilder, attrList, parseAttrs, parseMessages, macToBuffer, bufferToMac } from "../../cni/netlink/wire";
import { errnoName } from "../../lib/ffi/libc";

describe("IP helpers", () => {
  it.each([
    ["fd00::2", "fd00::2"],
    ["FD00:0:0:0:0:0:0:2", "fd00::2"],
    ["::", "::"],
    ["::1", "::1"],
    ["2001:db8::", "2001:db8::"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["::ffff:10.1.2.3", "::ffff:10.1.2.3"],
    ["64:ff9b::10.0.0.1", "64:ff9b::a00:1"],
  ])("parses %s and formats it as %s (RFC 5952)", (input, out) => {
    const ip = parseIp(input);
    expect(ip?.family).toBe(6);
    expect(formatIP(ipToBytes(ip!.family, ip!.value))).toBe(out);
  });

  it.each(["1.2.3", "1.2.3.256", "01.2.3.4", "1:2:3:4:5:6:7:8:9", "1::2::3", "fd00::g", "", "1:2:3:4:5:6:7::8"])("rejects %s", (bad) => {
    expect(parseIp(bad)).toBeNull();
  });

  it("parses prefixes, computes network and broadcast", () => {
    const p = parsePrefix("10.1.2.3/20");
    expect(p).toMatchObject({ family: 4, prefixLen: 20 });
    expect(formatIP(networkOf(p))).toBe("10.1.0.0");
    expect(formatIP(broadcastOf(p))).toBe("10.1.15.255");
    expect(formatIP(networkOf(parsePrefix("fd00:1:2:3::5/48")))).toBe("fd00:1:2::");
    expect(parsePrefix("10.0.0.1").prefixLen).toBe(32);
    expect(() => parsePrefix("10.0.0.1/33")).toThrow(/invalid address "10.0.0.1\/33"/);
    expect(() => parsePrefix("fd00::/129")).toThrow(/prefix length/);
  });
});

describe("wire format", () => {
  it("pads attributes and sizes nests like libnetlink", () => {
    const msg = new MessageBuilder(16, 5, Buffer.alloc(16))
      .strz(3, "ab")
      .nest(18, (n) => n.str(1, "veth").u16(2, 7))
      .build(9, 0);
    expect(msg.length % 4).toBe(0);
    expect(msg.readUInt32LE(0)).toBe(msg.length);
    const [m] = parseMessages(msg);
    expect(m).toMatchObject({ type: 16, flags: 5, seq: 9 });
    const attrs = parseAttrs(m.data, 16);
    expect(attrs.get(3)!.toString()).toBe("ab\0");
    expect(msg.subarray(32, 40).toString("hex")).toBe("0700030061620000");
    const nest = attrs.get(18)!;
    expect(nest.length).toBe(16); // 8 (kind) + 8 (u16 padded)
    expect(attrList(nest).map(([t, b]) => [t, b.length])).toEqual([
      [1, 4],
      [2, 2],
    ]);
  });

  it("rejects a truncated message instead of reading past it", () => {
    const msg = new MessageBuilder(16, 1, Buffer.alloc(16)).build();
    expect(() => parseMessages(msg.subarray(0, 20))).toThrow(/malformed netlink message/);
  });

  it("MAC helpers", () => {
    expect(bufferToMac(macToBuffer("02-AB-cd-00-00-01"))).toBe("02:ab:cd:00:00:01");
    expect(() => macToBuffer("02:ab:cd:00:00")).toThrow(/invalid MAC address/);
  });

  it("errno names", () => {
    expect(errnoName(17)).toBe("EEXIST");
    expect(errnoName(95)).toBe("EOPNOTSUPP");
    expect(errnoName(3)).toBe("ESRCH");
  });
});
