// A synchronous NETLINK_ROUTE socket: one request at a time, answers matched by
// sequence number, multi-part dumps collected until NLMSG_DONE, errors from
// NLMSG_ERROR raised as NetlinkError with the kernel's extended-ack text.
import {
  AF_NETLINK,
  EINTR,
  MSG_PEEK,
  MSG_TRUNC,
  NETLINK_EXT_ACK,
  NETLINK_ROUTE,
  SOCK_CLOEXEC,
  SOCK_RAW,
  SOL_NETLINK,
  SOL_SOCKET,
  SO_RCVBUF,
  SO_RCVTIMEO,
  SO_SNDBUF,
  check,
  errnoName,
  lastErrno,
  libc,
  strerror,
} from "../../lib/ffi/libc";
import {
  type MessageBuilder,
  NLMSGERR_ATTR_MSG,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NLM_F_ACK,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  type NlMsg,
  attrStr,
  parseAttrs,
  parseMessages,
} from "./wire";
import { OsError } from "../../lib/oserror";

/** A request the kernel refused (or a socket call that failed). */
export class NetlinkError extends OsError {
  /** positive errno, e.g. 17 */
  readonly errno: number;
  /** the kernel's extended-ack message, when it sent one */
  readonly kernelMessage?: string;
  /** `operation` names what was attempted, e.g. `RTM_NEWLINK macvlan "eth0" on "bond0.101"`; `object` the link it concerns */
  constructor(operation: string, errno: number, kernelMessage?: string, object?: string) {
    super(
      `${operation}: ${errnoName(errno)} (${strerror(errno)})${kernelMessage ? `: ${kernelMessage}` : ""}`,
      "netlink",
      errnoName(errno),
      operation,
      object,
    );
    this.name = "NetlinkError";
    this.errno = errno;
    this.kernelMessage = kernelMessage;
  }
}

/** True when `err` is a NetlinkError with one of the given errno names. */
export function isNetlinkError(err: unknown, ...codes: string[]): err is NetlinkError {
  return err instanceof NetlinkError && (codes.length === 0 || codes.includes(err.code));
}

const RECV_TIMEOUT_S = 30;
const MAX_DUMP_RETRIES = 5;

export class NetlinkSocket {
  private seq: number;
  private buf = Buffer.alloc(64 * 1024);
  private closed = false;

  private constructor(
    readonly fd: number,
    readonly portId: number,
  ) {
    this.seq = Math.floor(Date.now() / 1000) >>> 0;
  }

  /** Opens a socket in the calling thread's current network namespace. */
  static open(): NetlinkSocket {
    const fd = check(libc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), "socket(AF_NETLINK, NETLINK_ROUTE)");
    try {
      setInt(fd, SOL_SOCKET, SO_SNDBUF, 32768, "SO_SNDBUF");
      setInt(fd, SOL_SOCKET, SO_RCVBUF, 1024 * 1024, "SO_RCVBUF");
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(BigInt(RECV_TIMEOUT_S), 0);
      check(libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16), "setsockopt(SO_RCVTIMEO)");
      // Extended acks carry the kernel's reason ("Unknown device type"); old kernels lack it, so ignore failure.
      const one = Buffer.alloc(4);
      one.writeInt32LE(1);
      libc.setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
      const addr = Buffer.alloc(12);
      addr.writeUInt16LE(AF_NETLINK, 0);
      check(libc.bind(fd, addr, 12), "bind(AF_NETLINK)");
      const len = Buffer.alloc(4);
      len.writeUInt32LE(12);
      check(libc.getsockname(fd, addr, len), "getsockname(AF_NETLINK)");
      return new NetlinkSocket(fd, addr.readUInt32LE(4));
    } catch (e) {
      libc.close(fd);
      throw e;
    }
  }

  /**
   * Sends a request with NLM_F_ACK and waits for the kernel's acknowledgement.
   * Returns the messages that came before the ack (e.g. the answer to a GET).
   */
  request(msg: MessageBuilder, what: string): NlMsg[] {
    msg.flags |= NLM_F_REQUEST | NLM_F_ACK;
    const seq = this.send(msg, what);
    const replies: NlMsg[] = [];
    for (;;) {
      for (const m of this.receive(what)) {
        if (m.seq !== seq || (m.pid !== 0 && m.pid !== this.portId)) continue;
        if (m.type === NLMSG_ERROR) {
          const { errno, kernelMessage } = parseError(m);
          if (errno !== 0) throw new NetlinkError(what, errno, kernelMessage);
          return replies;
        }
        if (m.type === NLMSG_NOOP) continue;
        replies.push(m);
      }
    }
  }

  /** Sends a dump request (NLM_F_DUMP) and returns every message of the answer. */
  dump(msg: MessageBuilder, what: string): NlMsg[] {
    msg.flags |= NLM_F_REQUEST | NLM_F_DUMP;
    for (let attempt = 1; ; attempt++) {
      const seq = this.send(msg, what);
      const out: NlMsg[] = [];
      let interrupted = false;
      let done = false;
      while (!done) {
        for (const m of this.receive(what)) {
          if (m.seq !== seq || (m.pid !== 0 && m.pid !== this.portId)) continue;
          if (m.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (m.type === NLMSG_DONE) {
            const err = m.data.length >= 4 ? m.data.readInt32LE(0) : 0;
            if (err < 0) throw new NetlinkError(what, -err);
            done = true;
            break;
          }
          if (m.type === NLMSG_ERROR) {
            const { errno, kernelMessage } = parseError(m);
            if (errno !== 0) throw new NetlinkError(what, errno, kernelMessage);
            continue;
          }
          if (m.type === NLMSG_NOOP || m.type === NLMSG_OVERRUN) continue;
          out.push(m);
        }
      }
      // The table changed while it was being dumped: the answer may be inconsistent, ask again.
      if (!interrupted) return out;
      if (attempt >= MAX_DUMP_RETRIES) throw new NetlinkError(`${what} (dump interrupted ${attempt} times)`, EINTR);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }

  private send(msg: MessageBuilder, what: string): number {
    if (this.closed) throw new Error(`${what}: netlink socket is closed`);
    this.seq = (this.seq + 1) >>> 0;
    const bytes = msg.build(this.seq, 0);
    for (;;) {
      const n = Number(libc.sendto(this.fd, bytes, bytes.length, 0, null, 0));
      if (n >= 0) return this.seq;
      const errno = lastErrno();
      if (errno !== EINTR) throw new NetlinkError(`${what} (sendto)`, errno);
    }
  }

  /** Receives one datagram, growing the buffer when a message would not fit. */
  private receive(what: string): NlMsg[] {
    for (;;) {
      const peek = Number(libc.recv(this.fd, this.buf, this.buf.length, MSG_PEEK | MSG_TRUNC));
      if (peek < 0) {
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (errnoName(errno) === "EAGAIN") throw new NetlinkError(`${what}: no answer from the kernel within ${RECV_TIMEOUT_S} s`, errno);
        throw new NetlinkError(`${what} (recv)`, errno);
      }
      if (peek > this.buf.length) {
        this.buf = Buffer.alloc(peek);
        continue;
      }
      const n = Number(libc.recv(this.fd, this.buf, this.buf.length, 0));
      if (n < 0) {
        if (lastErrno() === EINTR) continue;
        throw new NetlinkError(`${what} (recv)`, lastErrno());
      }
      // Copy: the parsed messages outlive the next receive into the shared buffer.
      return parseMessages(Buffer.from(this.buf.subarray(0, n)));
    }
  }
}

function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  const b = Buffer.alloc(4);
  b.writeInt32LE(value);
  check(libc.setsockopt(fd, level, name, b, 4), `setsockopt(${what})`);
}

function parseError(m: NlMsg): { errno: number; kernelMessage?: string } {
  if (m.data.length < 4) throw new Error(`malformed NLMSG_ERROR from the kernel: ${m.data.length} bytes, expected at least 4`);
  const errno = -m.data.readInt32LE(0);
  let kernelMessage: string | undefined;
  // struct nlmsgerr is the errno and the request's 16-byte header; extended-ack TLVs follow.
  if (m.flags & NLM_F_ACK_TLVS && m.data.length >= 4 + NLMSG_HDRLEN) {
    const origLen = m.data.readUInt32LE(4);
    const tlvOffset = 4 + (m.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : origLen);
    kernelMessage = attrStr(parseAttrs(m.data, tlvOffset), NLMSGERR_ATTR_MSG);
  }
  return { errno, kernelMessage };
}
