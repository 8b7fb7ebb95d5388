// One HTTP/1.1 exchange with ipamd over its unix socket, synchronously through libc (lib/ffi:
// bun:ffi in the plugins): a plugin makes one call per process, so blocking costs nothing, and a
// raw socket lets it check who is listening (SO_PEERCRED) before it trusts the answer.
import {
  AF_UNIX, EINTR, MSG_NOSIGNAL, SOCK_CLOEXEC, SOCK_STREAM, SOL_SOCKET, SO_RCVTIMEO, SO_SNDTIMEO, errnoName, lastErrno, libc,
} from "../lib/ffi/libc";
import { peerCredOf, type PeerCred } from "../lib/peercred";

const EAGAIN = 11;
const SUN_PATH_MAX = 108;

/** A failed exchange: `errno` names the system call's error, `timeout` when no answer came in time. */
export class ExchangeError extends Error {
  constructor(message: string, readonly code?: string, readonly peer?: PeerCred) { super(message); }
}

export interface Exchange { status: number; body: string }

/**
 * Connects to `socketPath`, checks `trust(peer)` (throws to refuse), sends the request with
 * `connection: close` and reads the whole answer, each step within `timeoutMs`.
 */
export function exchange(socketPath: string, request: { method: string; path: string; body?: string }, timeoutMs: number,
  trust: (peer: PeerCred | null) => void): Exchange {
  const pathBytes = Buffer.from(socketPath);
  if (pathBytes.length >= SUN_PATH_MAX) throw new ExchangeError(`the socket path is longer than ${SUN_PATH_MAX - 1} bytes`, "ENAMETOOLONG");
  const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw syscallError("socket");
  try {
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(BigInt(Math.floor(timeoutMs / 1000)), 0);
    tv.writeBigInt64LE(BigInt((timeoutMs % 1000) * 1000), 8);
    libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16);
    libc.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, tv, 16);
    const addr = Buffer.alloc(2 + SUN_PATH_MAX);
    addr.writeUInt16LE(AF_UNIX, 0);
    pathBytes.copy(addr, 2);
    retrying(() => libc.connect(fd, addr, 2 + pathBytes.length + 1), "connect");
    trust(peerCredOf(fd));

    const body = request.body === undefined ? undefined : Buffer.from(request.body);
    const head = `${request.method} ${request.path} HTTP/1.1\r\nhost: ipamd\r\naccept: application/json\r\nconnection: close\r\n` +
      (body ? `content-type: application/json\r\ncontent-length: ${body.length}\r\n` : "") + "\r\n";
    const out = body ? Buffer.concat([Buffer.from(head), body]) : Buffer.from(head);
    for (let off = 0; off < out.length;) {
      const chunk = out.subarray(off);
      off += retrying(() => libc.sendto(fd, chunk, chunk.length, MSG_NOSIGNAL, null, 0), "send");
    }

    const chunks: Buffer[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const buf = Buffer.alloc(64 * 1024);
      const n = retrying(() => libc.recv(fd, buf, buf.length, 0), "recv");
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      if (Date.now() > deadline) throw new ExchangeError(`no complete answer within ${timeoutMs} ms`, "ETIMEDOUT");
    }
    return parseResponse(Buffer.concat(chunks));
  } finally {
    libc.close(fd);
  }
}

function retrying(call: () => number, what: string): number {
  for (;;) {
    const r = call();
    if (r >= 0) return r;
    const errno = lastErrno();
    if (errno === EINTR) continue;
    throw syscallError(what, errno);
  }
}

function syscallError(what: string, errno = lastErrno()): ExchangeError {
  if (errno === EAGAIN) {
    const why = what === "connect" ? "its listen backlog is full (EAGAIN)" : `no answer in time (${what}: EAGAIN)`;
    return new ExchangeError(why, "ETIMEDOUT");
  }
  return new ExchangeError(`${what}: ${errnoName(errno)} (${libc.strerror(errno)})`, errnoName(errno));
}

function parseResponse(raw: Buffer): Exchange {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) throw new ExchangeError("the answer ended before its headers did", "EPROTO");
  const head = raw.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? "")?.[1]);
  if (!status) throw new ExchangeError(`not an HTTP answer: ${JSON.stringify((head[0] ?? "").slice(0, 80))}`, "EPROTO");
  const headers = new Map(head.slice(1).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as const;
  }));
  let body = raw.subarray(end + 4);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const parts: Buffer[] = [];
    for (let at = 0; ;) {
      const eol = body.indexOf("\r\n", at);
      const size = eol < 0 ? NaN : parseInt(body.subarray(at, eol).toString("latin1"), 16);
      if (Number.isNaN(size)) throw new ExchangeError("a chunked answer ended early", "EPROTO");
      if (size === 0) break;
      parts.push(body.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers.has("content-length")) {
    const len = Number(headers.get("content-length"));
    if (body.length < len) throw new ExchangeError(`the answer ended after ${body.length} of ${len} bytes`, "EPROTO");
    body = body.subarray(0, len);
  }
  return { status, body: body.toString("utf8") };
}
