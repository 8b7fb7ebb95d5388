// Where ipamd's log lines go (pino's destination). The lines of one turn of the event loop leave in
// one write(2) in libuv's thread pool, and the next write starts when that one is done, so a slow
// reader of the log (journald, a full pipe) never stalls the daemon. pino.destination (sonic-boom
// 4 and 5) measures the byte length of its whole pending chunk at every line: its write path took
// 493 ms of a bench-ipamd CPU profile of 40,000 allocations at 16 clients, this one 17 ms (side by
// side: 2-6% more allocations/s); and its exit flush slept until a full pipe was read, forever.
import { write, writeSync } from "node:fs";

/**
 * What the log may hold in memory while nothing can be written (a reader that stopped); more is dropped, and counted.
 * Counted in characters (the lines are JSON, nearly all ASCII).
 */
const MAX_PENDING_BYTES = 64 << 20;
/** A pipe that is full (EAGAIN) is tried again after this long. */
const RETRY_MS = 10;
/** flushSync (at exit) gives up on a full pipe after this long. */
const EXIT_FLUSH_MS = 2000;

export class LogSink {
  private lines: string[] = [];
  private pendingChars = 0;
  private writing = false;
  private dropped = 0;
  private lost = 0;
  private lastError = "";

  constructor(
    private readonly fd: number,
    private readonly maxPendingBytes = MAX_PENDING_BYTES,
  ) {}

  /** pino's write: one serialised line, with its newline. */
  write(line: string): boolean {
    if (this.pendingChars + line.length > this.maxPendingBytes) {
      this.dropped++;
      return false;
    }
    if (this.dropped) this.queue(this.droppedNote()); // where the gap is: the dropped lines came after what is queued
    this.queue(line);
    return true;
  }

  private queue(line: string): void {
    this.lines.push(line);
    this.pendingChars += line.length;
    if (!this.writing) {
      this.writing = true;
      setImmediate(() => this.drain(this.take(), 0));
    }
  }

  /** Called by pino's logger.flush(): resolves once everything written so far has left. */
  flush(done?: (err?: Error) => void): void {
    if (!this.writing) {
      done?.();
      return;
    }
    setTimeout(() => this.flush(done), 1);
  }

  /**
   * Writes what is still queued, synchronously: before an exit. A chunk already handed to the thread
   * pool is left to it (as sonic-boom does), so no line is written twice.
   */
  flushSync(): void {
    const data = this.take();
    const deadline = Date.now() + EXIT_FLUSH_MS;
    for (let offset = 0; offset < data.length; ) {
      try {
        offset += writeSync(this.fd, data, offset, data.length - offset);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN" || Date.now() > deadline) return;
      }
    }
  }

  /** The queued lines as one buffer, with a line for each gap: what could not be written (before them), dropped (after). */
  private take(): Buffer {
    if (this.dropped) this.lines.push(this.droppedNote());
    if (this.lost && this.lines.length) {
      this.lines.unshift(note(`${this.lost} log lines before this one could not be written (${this.lastError})`));
      this.lost = 0;
    }
    const data = Buffer.from(this.lines.join(""));
    this.lines = [];
    this.pendingChars = 0;
    return data;
  }

  private droppedNote(): string {
    const text = note(`${this.dropped} log lines dropped before this one: the log was not read and ${this.maxPendingBytes} bytes waited`);
    this.dropped = 0;
    return text;
  }

  private drain(data: Buffer, offset: number): void {
    if (offset >= data.length) {
      // Lines lost are reported with the next lines (a log that fails every write would otherwise loop).
      if (this.lines.length === 0 && !this.dropped) {
        this.writing = false;
        return;
      }
      this.drain(this.take(), 0);
      return;
    }
    write(this.fd, data, offset, data.length - offset, null, (err, n) => {
      if (!err) {
        this.drain(data, offset + n);
      } else if (err.code === "EAGAIN") {
        setTimeout(() => this.drain(data, offset), RETRY_MS);
      } else {
        // The log itself fails (EPIPE, ENOSPC, EIO): this chunk is lost; the next one says so if it can be written.
        this.lost += countLines(data, offset);
        this.lastError = err.code ?? err.message;
        this.drain(data, data.length);
      }
    });
  }
}

/** A warning line of ipamd's own about its log, in pino's shape. */
function note(msg: string): string {
  return `${JSON.stringify({ level: 40, time: Date.now(), service: "ipamd", msg })}\n`;
}

function countLines(data: Buffer, from: number): number {
  let n = 0;
  for (let i = data.indexOf(10, from); i >= 0; i = data.indexOf(10, i + 1)) n++;
  return n;
}
