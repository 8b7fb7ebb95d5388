// One HTTP/1.1 exchange with ipamd over its unix socket, with blocking libc calls on this thread
// (lib/ffi: bun:ffi in the plugins). A plugin process makes one call: Bun's fetch would first
// start its HTTP client thread and event loop for it, and a raw socket lets the plugin check who
// is listening (SO_PEERCRED) before it trusts the answer. `send` returns before the answer is
// read, so DEL sends its release, deletes the link while ipamd commits, then reads the answer.
import {
  AF_UNIX,
  EAGAIN,
  EINPROGRESS,
  EINTR,
  MSG_NOSIGNAL,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  SOL_SOCKET,
  SO_RCVTIMEO,
  SO_SNDTIMEO,
  errnoName,
  lastErrno,
  libc,
  strerror,
} from "../lib/ffi/libc";
import { peerCredOf, type PeerCred } from "../lib/peercred";

const SUN_PATH_MAX = 108;

/** A failed system call or a broken answer; `code` is the errno name (ETIMEDOUT when no answer came in time). */
export class ExchangeError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = "ExchangeError";
  }
}

interface Exchange {
  status: number;
  body: string;
}

/**
 * Connects to `socketPath`, checks `trust(peer)` (it throws to refuse), sends the request with
 * `connection: close`, and returns the function that reads and parses the whole answer. Every
 * blocking call is bounded by `timeoutMs`.
 */
export function send(
  socketPath: string,
  request: { method: string; path: string; body?: string },
  timeoutMs: number,
  trust: (peer: PeerCred | null) => void,
): () => Exchange {
  const fd = connectTo(socketPath, timeoutMs);
  try {
    trust(peerCredOf(fd));
    sendAll(fd, requestBytes(request.method, request.path, request.body), timeoutMs);
  } catch (e) {
    libc.close(fd);
    throw e;
  }
  return () => {
    try {
      return receiveAnswer(fd, timeoutMs);
    } finally {
      libc.close(fd);
    }
  };
}

function fail(what: string, errno = lastErrno()): ExchangeError {
  return new ExchangeError(`${what}: ${strerror(errno)}`, errnoName(errno));
}

// A blocking call that hit SO_RCVTIMEO/SO_SNDTIMEO.
const timedOut = (errno: number): boolean => errno === EAGAIN || errno === EINPROGRESS;

function connectTo(socketPath: string, timeoutMs: number): number {
  const path = Buffer.from(socketPath);
  if (path.length >= SUN_PATH_MAX)
    throw new ExchangeError(`socket path ${socketPath} is longer than ${SUN_PATH_MAX - 1} bytes`, "ENAMETOOLONG");
  const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw fail("socket(AF_UNIX)");
  const tv = Buffer.alloc(16);
  tv.writeBigInt64LE(BigInt(Math.floor(timeoutMs / 1000)), 0);
  tv.writeBigInt64LE(BigInt((timeoutMs % 1000) * 1000), 8);
  const addr = Buffer.alloc(2 + SUN_PATH_MAX);
  addr.writeUInt16LE(AF_UNIX, 0);
  path.copy(addr, 2);
  if (libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, 16) < 0 || libc.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, tv, 16) < 0) {
    const e = fail("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
    libc.close(fd);
    throw e;
  }
  for (;;) {
    if (libc.connect(fd, addr, 2 + path.length + 1) === 0) return fd;
    const errno = lastErrno();
    if (errno === EINTR) continue;
    libc.close(fd);
    // connect on a unix socket answers EAGAIN at once when the listener's backlog is full.
    if (errno === EAGAIN)
      throw new ExchangeError("the socket's connection backlog is full (EAGAIN): the daemon is overloaded or stuck", "EAGAIN");
    throw timedOut(errno) ? new ExchangeError(`connect: no answer within ${timeoutMs} ms`, "ETIMEDOUT") : fail("connect", errno);
  }
}

function requestBytes(method: string, path: string, body?: string): Buffer {
  const payload = body === undefined ? undefined : Buffer.from(body);
  const head =
    `${method} ${path} HTTP/1.1\r\nhost: ipamd\r\naccept: application/json\r\nconnection: close\r\n` +
    (payload ? `content-type: application/json\r\ncontent-length: ${payload.length}\r\n` : "") +
    "\r\n";
  return payload ? Buffer.concat([Buffer.from(head), payload]) : Buffer.from(head);
}

function sendAll(fd: number, data: Buffer, timeoutMs: number): void {
  for (let off = 0; off < data.length; ) {
    const n = libc.sendto(fd, off ? data.subarray(off) : data, data.length - off, MSG_NOSIGNAL, null, 0);
    if (n >= 0) {
      off += n;
      continue;
    }
    const errno = lastErrno();
    if (errno === EINTR) continue;
    throw timedOut(errno) ? new ExchangeError(`send: no answer within ${timeoutMs} ms`, "ETIMEDOUT") : fail("send", errno);
  }
}

/**
 * Reads the answer until its body is complete (content-length, or the last chunk of a chunked
 * body): the plugin need not wait for the daemon to close the connection. Without either it reads
 * until the close (the request said `connection: close`). One receive buffer, reused for each recv.
 */
function receiveAnswer(fd: number, timeoutMs: number): Exchange {
  const buf = Buffer.allocUnsafe(65536);
  let raw = Buffer.alloc(0);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = libc.recv(fd, buf, buf.length, 0);
    if (n > 0) {
      raw = Buffer.concat([raw, buf.subarray(0, n)]);
      const answer = completeAnswer(raw);
      if (answer) return answer;
      // SO_RCVTIMEO bounds each recv; this bounds a daemon that trickles its answer.
      if (Date.now() > deadline) throw new ExchangeError(`no complete answer within ${timeoutMs} ms`, "ETIMEDOUT");
      continue;
    }
    if (n === 0) return completeAnswer(raw, true)!;
    const errno = lastErrno();
    if (errno === EINTR) continue;
    throw timedOut(errno) ? new ExchangeError(`no answer within ${timeoutMs} ms`, "ETIMEDOUT") : fail("recv", errno);
  }
}

/**
 * Status and body of an HTTP/1.1 answer (content-length or chunked); undefined while more is to
 * come. At the connection's end (`closed`) an answer cut short is an error.
 */
function completeAnswer(raw: Buffer, closed = false): Exchange | undefined {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) {
    if (closed) throw new ExchangeError(`the answer ended after ${raw.length} bytes, inside its headers`, "EPROTO");
    return undefined;
  }
  // Plain loops, no map or rest destructuring: each plugin call runs this once (see docs/architecture.md, "Plugins").
  const lines = raw.subarray(0, end).toString("latin1").split("\r\n");
  const statusLine = lines[0]!;
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1];
  if (!status)
    throw new ExchangeError(`the answer does not start with an HTTP status line: ${JSON.stringify(statusLine.slice(0, 60))}`, "EPROTO");
  const headers = new Map<string, string>();
  for (let n = 1; n < lines.length; n++) {
    const l = lines[n]!;
    const i = l.indexOf(":");
    headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
  }
  let body = raw.subarray(end + 4);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const whole = dechunk(body, closed);
    if (!whole) return undefined;
    body = whole;
  } else if (headers.has("content-length")) {
    const length = Number(headers.get("content-length"));
    if (body.length < length) {
      if (closed) throw new ExchangeError(`the answer ended after ${body.length} of ${length} body bytes`, "EPROTO");
      return undefined;
    }
    body = body.subarray(0, length);
  } else if (!closed) {
    return undefined;
  }
  return { status: Number(status), body: body.toString("utf8") };
}

/** The body of chunked `data`; undefined when its last chunk has not come yet (an error once `closed`). */
function dechunk(data: Buffer, closed: boolean): Buffer | undefined {
  const parts: Buffer[] = [];
  for (let off = 0; ; ) {
    const eol = data.indexOf("\r\n", off);
    const size = eol < 0 ? NaN : parseInt(data.subarray(off, eol).toString("latin1"), 16);
    const cut = eol < 0 || (Number.isFinite(size) && data.length < eol + 2 + size + 2);
    if (cut && !closed) return undefined;
    if (!Number.isFinite(size) || cut) throw new ExchangeError("the answer's chunked body is cut short or malformed", "EPROTO");
    if (size === 0) return Buffer.concat(parts);
    parts.push(data.subarray(eol + 2, eol + 2 + size));
    off = eol + 2 + size + 2;
  }
}
