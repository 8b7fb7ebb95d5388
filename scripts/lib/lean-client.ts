// The benchmarks' load generator: one keep-alive unix-socket connection per client, the request written by hand and
// the answer read to its content-length. An IpamdClient over Bun's node:http costs several times more CPU per
// request on the same cores (against a server that does no work it stopped near 5,000/s with p99 10-14 ms at 16
// clients), so the figures would measure the client.
import { connect, type Socket } from "node:net";

/** One keep-alive connection to a unix socket, one allocate request at a time. */
export class LeanConnection {
  private readonly socket: Socket;
  private pending: { resolve: (answer: string) => void; reject: (e: Error) => void } | null = null;
  private buf: Buffer = Buffer.alloc(0);

  /** Resolves once connected: callers wait for it before they time anything (256 connects at once take a while). */
  readonly ready: Promise<void>;

  constructor(path: string) {
    this.socket = connect(path);
    this.ready = new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
    this.socket.on("data", (d: Buffer) => this.received(d));
    this.socket.on("error", (e) => this.settle(e));
    this.socket.on("close", () => this.settle(new Error("connection closed")));
  }

  /** POST /v1/allocate; resolves to the answer's body (a 200), rejects with the status line and body otherwise. */
  allocate(body: object): Promise<string> {
    const text = JSON.stringify(body);
    return this.send(
      `POST /v1/allocate HTTP/1.1\r\nhost: ipamd\r\ncontent-type: application/json\r\n` +
        `content-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
    );
  }

  /** GET `path` (no body); answered as allocate is. */
  get(path: string): Promise<string> {
    return this.send(`GET ${path} HTTP/1.1\r\nhost: ipamd\r\n\r\n`);
  }

  private send(request: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.socket.write(request);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private received(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    const end = this.buf.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = this.buf.toString("latin1", 0, end);
    const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.buf.length < end + 4 + length) return;
    const answer = this.buf.toString("utf8", end + 4, end + 4 + length);
    this.buf = this.buf.subarray(end + 4 + length);
    if (head.startsWith("HTTP/1.1 200")) this.settle(undefined, answer);
    else this.settle(new Error(`${head.split("\r\n")[0]}: ${answer}`));
  }

  private settle(e?: Error, answer = ""): void {
    const p = this.pending;
    this.pending = null;
    if (e) p?.reject(e);
    else p?.resolve(answer);
  }
}
