// The protobuf subset of etcd's v3 KV service (etcdserverpb rpc.proto, mvccpb kv.proto) the client sends over gRPC:
// RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest (Compare, RequestOp) and their responses. Field numbers
// are etcd's, common to 3.4 and 3.5. Only what the client uses is encoded; unknown fields in answers are skipped.

/** Writes one message into a growing buffer (no allocation per field: a claim's txn has hundreds of them). */
export class ProtoWriter {
  private buf = Buffer.allocUnsafe(256);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  private varint(n: number | bigint): void {
    this.ensure(10);
    if (typeof n === "bigint") {
      let v = BigInt.asUintN(64, n);
      while (v > 127n) {
        this.buf[this.length++] = Number(v & 127n) | 128;
        v >>= 7n;
      }
      this.buf[this.length++] = Number(v);
      return;
    }
    let v = n;
    while (v > 127) {
      this.buf[this.length++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    this.buf[this.length++] = v;
  }

  /** A varint field; `always` writes a zero too (a oneof member is present even when 0). */
  int(field: number, n: number | bigint, always = false): this {
    if (!always && (n === 0 || n === 0n)) return this;
    this.varint(field * 8);
    this.varint(n);
    return this;
  }

  bool(field: number, b: boolean | undefined): this {
    return b ? this.int(field, 1) : this;
  }

  bytes(field: number, s: string | Buffer): this {
    const len = typeof s === "string" ? Buffer.byteLength(s, "utf8") : s.length;
    this.varint(field * 8 + 2);
    this.varint(len);
    this.ensure(len);
    if (typeof s === "string") this.buf.write(s, this.length, len, "utf8");
    else s.copy(this.buf, this.length);
    this.length += len;
    return this;
  }

  message(field: number, m: ProtoWriter): this {
    this.varint(field * 8 + 2);
    this.varint(m.length);
    this.ensure(m.length);
    m.buf.copy(this.buf, this.length, 0, m.length);
    this.length += m.length;
    return this;
  }

  /** The message in gRPC's length-prefixed framing (uncompressed). */
  frame(): Buffer {
    const out = Buffer.allocUnsafe(5 + this.length);
    out[0] = 0;
    out.writeUInt32BE(this.length, 1);
    this.buf.copy(out, 5, 0, this.length);
    return out;
  }
}

/** Reads the message in buf[pos, end): fields() calls back per field; what the callback does not read is skipped. */
export class ProtoReader {
  constructor(
    readonly buf: Buffer,
    public pos = 0,
    readonly end = buf.length,
  ) {}

  varint(): number {
    let result = 0;
    let mul = 1;
    for (;;) {
      const b = this.buf[this.pos++];
      if (b === undefined) throw new Error("etcd answer: truncated protobuf varint");
      result += (b & 127) * mul;
      if (b < 128) return result;
      mul *= 128;
    }
  }

  /** An int64 exactly, as a decimal string (lease IDs exceed 2^53). */
  varintString(): string {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const b = this.buf[this.pos++];
      if (b === undefined) throw new Error("etcd answer: truncated protobuf varint");
      result |= BigInt(b & 127) << shift;
      if (b < 128) return BigInt.asIntN(64, result).toString();
      shift += 7n;
    }
  }

  /** A length-delimited field: its [start, end). */
  sub(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    this.pos += len;
    if (this.pos > this.end) throw new Error("etcd answer: truncated protobuf field");
    return [start, this.pos];
  }

  fields(each: (field: number, wire: number) => void): void {
    while (this.pos < this.end) {
      const tag = this.varint();
      const field = Math.floor(tag / 8);
      const wire = tag & 7;
      const at = this.pos;
      each(field, wire);
      if (this.pos === at) this.skip(wire);
    }
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 2) this.sub();
    else if (wire === 1) this.pos += 8;
    else if (wire === 5) this.pos += 4;
    else throw new Error(`etcd answer: unsupported protobuf wire type ${wire}`);
  }
}

/** A key as etcd answers it (mvccpb.KeyValue); the client hands these out as they are decoded. */
export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  version: number;
  lease?: string;
}

/** mvccpb.KeyValue: key 1, create_revision 2, mod_revision 3, version 4, value 5, lease 6. */
export function readKeyValue(buf: Buffer, start: number, end: number): KeyValue {
  const kv: KeyValue = { key: "", value: "", createRevision: 0, modRevision: 0, version: 0 };
  const r = new ProtoReader(buf, start, end);
  r.fields((f, w) => {
    if (w === 2 && (f === 1 || f === 5)) {
      const [s, e] = r.sub();
      if (f === 1) kv.key = buf.toString("utf8", s, e);
      else kv.value = buf.toString("utf8", s, e);
    } else if (w === 0 && f === 2) kv.createRevision = r.varint();
    else if (w === 0 && f === 3) kv.modRevision = r.varint();
    else if (w === 0 && f === 4) kv.version = r.varint();
    else if (w === 0 && f === 6) {
      const lease = r.varintString();
      if (lease !== "0") kv.lease = lease;
    }
  });
  return kv;
}

/** ResponseHeader.revision (field 3) of the header message at [start, end). */
export function readHeaderRevision(buf: Buffer, start: number, end: number): number {
  let revision = 0;
  const r = new ProtoReader(buf, start, end);
  r.fields((f, w) => {
    if (f === 3 && w === 0) revision = r.varint();
  });
  return revision;
}

/**
 * ResponseHeader.member_id (field 2 of the header, which is field 1 of every response): the member that answered, as
 * the unsigned decimal etcd's JSON gateway prints.
 */
export function readMemberId(buf: Buffer, start: number, end: number): string | undefined {
  let id: string | undefined;
  const r = new ProtoReader(buf, start, end);
  r.fields((f, w) => {
    if (f !== 1 || w !== 2) return;
    const h = new ProtoReader(buf, ...r.sub());
    h.fields((hf, hw) => {
      if (hf === 2 && hw === 0) id = BigInt.asUintN(64, BigInt(h.varintString())).toString();
    });
  });
  return id;
}

export interface ProtoRange {
  revision: number;
  kvs: KeyValue[];
  more: boolean;
  count: number;
}

/** RangeResponse: header 1, kvs 2, more 3, count 4. */
export function readRange(buf: Buffer, start: number, end: number): ProtoRange {
  const out: ProtoRange = { revision: 0, kvs: [], more: false, count: 0 };
  const r = new ProtoReader(buf, start, end);
  r.fields((f, w) => {
    if (f === 1 && w === 2) out.revision = readHeaderRevision(buf, ...r.sub());
    else if (f === 2 && w === 2) out.kvs.push(readKeyValue(buf, ...r.sub()));
    else if (f === 3 && w === 0) out.more = r.varint() !== 0;
    else if (f === 4 && w === 0) out.count = r.varint();
  });
  return out;
}

/** The header revision of a response message, and its varint field `numberField` (DeleteRangeResponse.deleted: 2). */
export function readRevisionAnd(buf: Buffer, start: number, end: number, numberField = 0): { revision: number; n: number } {
  const out = { revision: 0, n: 0 };
  const r = new ProtoReader(buf, start, end);
  r.fields((f, w) => {
    if (f === 1 && w === 2) out.revision = readHeaderRevision(buf, ...r.sub());
    else if (numberField && f === numberField && w === 0) out.n = r.varint();
  });
  return out;
}

export type TxnOpResult = { kind: "get"; kvs: KeyValue[] } | { kind: "put" } | { kind: "del"; deleted: number };

/** TxnResponse: header 1, succeeded 2, responses 3 (ResponseOp: response_range 1, response_put 2, response_delete_range 3). */
export function readTxn(buf: Buffer, start: number, end: number): { revision: number; succeeded: boolean; responses: TxnOpResult[] } {
  const out = { revision: 0, succeeded: false, responses: [] as TxnOpResult[] };
  const r = new ProtoReader(buf, start, end);
  r.fields((f, w) => {
    if (f === 1 && w === 2) out.revision = readHeaderRevision(buf, ...r.sub());
    else if (f === 2 && w === 0) out.succeeded = r.varint() !== 0;
    else if (f === 3 && w === 2) {
      const [s, e] = r.sub();
      const op = new ProtoReader(buf, s, e);
      let result: TxnOpResult = { kind: "put" };
      op.fields((of, ow) => {
        if (ow !== 2) return;
        const [os, oe] = op.sub();
        if (of === 1) result = { kind: "get", kvs: readRange(buf, os, oe).kvs };
        else if (of === 2) result = { kind: "put" };
        else if (of === 3) result = { kind: "del", deleted: readRevisionAnd(buf, os, oe, 2).n };
      });
      out.responses.push(result);
    }
  });
  return out;
}

/** The first gRPC message of a unary answer (length-prefixed, uncompressed): its [start, end) in `buf`. */
export function unframe(buf: Buffer): [number, number] {
  if (buf.length < 5) throw new Error(`etcd answer: ${buf.length} bytes, no gRPC message`);
  if (buf[0] !== 0) throw new Error("etcd answer: compressed gRPC message (not requested)");
  const len = buf.readUInt32BE(1);
  if (buf.length < 5 + len) throw new Error("etcd answer: truncated gRPC message");
  return [5, 5 + len];
}

export interface ProtoWatchResponse {
  revision: number;
  created: boolean;
  canceled: boolean;
  compactRevision: number;
  cancelReason: string;
  events: { type: "put" | "delete"; kv: KeyValue }[];
}

/**
 * WatchResponse: header 1, watch_id 2, created 3, canceled 4, compact_revision 5, cancel_reason 6, events 11
 * (mvccpb.Event: type 1 (PUT 0, DELETE 1), kv 2).
 */
export function readWatchResponse(buf: Buffer, start: number, end: number): ProtoWatchResponse {
  const out: ProtoWatchResponse = { revision: 0, created: false, canceled: false, compactRevision: 0, cancelReason: "", events: [] };
  const r = new ProtoReader(buf, start, end);
  r.fields((f, w) => {
    if (f === 1 && w === 2) out.revision = readHeaderRevision(buf, ...r.sub());
    else if (f === 3 && w === 0) out.created = r.varint() !== 0;
    else if (f === 4 && w === 0) out.canceled = r.varint() !== 0;
    else if (f === 5 && w === 0) out.compactRevision = r.varint();
    else if (f === 6 && w === 2) out.cancelReason = buf.toString("utf8", ...r.sub());
    else if (f === 11 && w === 2) {
      const e = new ProtoReader(buf, ...r.sub());
      let type: "put" | "delete" = "put";
      let kv: KeyValue | undefined;
      e.fields((ef, ew) => {
        if (ef === 1 && ew === 0) type = e.varint() === 1 ? "delete" : "put";
        else if (ef === 2 && ew === 2) kv = readKeyValue(buf, ...e.sub());
      });
      if (kv) out.events.push({ type, kv });
    }
  });
  return out;
}
