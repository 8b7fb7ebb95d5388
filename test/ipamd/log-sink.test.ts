// ipamd's log destination on real files and pipes: every line arrives, in order; a reader that
// stops reading neither stalls the daemon nor grows its memory without bound; exit writes what waits.
import { execFileSync } from "node:child_process";
import { closeSync, constants, openSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LogSink } from "../../ipamd/log-sink";
import { makeTempDir } from "../helpers/ipamd";

const lines = (n: number, width = 100) =>
  Array.from({ length: n }, (_, i) => `${JSON.stringify({ i, pad: "x".repeat(Math.max(0, width - 20)) })}\n`);
const flushed = (sink: LogSink) => new Promise<void>((r) => sink.flush(() => r()));
const turn = () => new Promise((r) => setImmediate(r));

/** A FIFO opened at both ends without blocking: writes fail with EAGAIN once its 64 KiB are full. */
function fifo(): { reader: number; writer: number; readAll: () => string } {
  const path = join(makeTempDir("berth-logsink-"), "log.fifo");
  execFileSync("mkfifo", [path]);
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  const buf = Buffer.alloc(1 << 16);
  const readAll = () => {
    let out = "";
    for (;;) {
      try {
        const n = readSync(reader, buf, 0, buf.length, null);
        if (n <= 0) return out;
        out += buf.subarray(0, n).toString();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") return out;
        throw e;
      }
    }
  };
  return { reader, writer, readAll };
}

describe("the log sink", () => {
  it("writes every line to a file, in order", async () => {
    const path = join(makeTempDir("berth-logsink-"), "ipamd.log");
    const fd = openSync(path, "a");
    const sink = new LogSink(fd);
    const want = lines(20_000);
    for (const [i, l] of want.entries()) {
      sink.write(l);
      if (i % 1000 === 0) await turn(); // lines arrive over many turns, while earlier writes are in flight
    }
    await flushed(sink);
    closeSync(fd);
    expect(readFileSync(path, "utf8")).toBe(want.join(""));
  });

  it("a reader that stops reading does not stall the writer; the lines arrive in order once it reads", async () => {
    const { reader, writer, readAll } = fifo();
    const sink = new LogSink(writer);
    const want = lines(10_000, 200); // 2 MB: 30 times the pipe's buffer
    for (const l of want) sink.write(l);
    await turn(); // the event loop goes on while the pipe is full (a blocking write would hang this test)
    let got = readAll();
    expect(got.length).toBeGreaterThan(0);
    expect(got.length).toBeLessThan(want.join("").length);
    while (got.length < want.join("").length) {
      await new Promise((r) => setTimeout(r, 15));
      got += readAll();
    }
    await flushed(sink);
    expect(got).toBe(want.join(""));
    closeSync(writer);
    closeSync(reader);
  });

  it("beyond its memory bound it drops lines, and a line says how many", async () => {
    const { reader, writer, readAll } = fifo();
    const sink = new LogSink(writer, 10_000);
    const want = lines(1000); // about 100 bytes each
    let room = 10_000;
    const fit = want.findIndex((l) => (room -= l.length) < 0);
    const accepted = want.map((l) => sink.write(l)).filter(Boolean).length;
    expect(accepted).toBe(fit);
    sink.write(want[0]!); // still full: the first turn has not written anything yet
    let got = "";
    for (let i = 0; i < 100 && !got.includes("dropped"); i++) {
      await new Promise((r) => setTimeout(r, 15));
      got += readAll();
    }
    await flushed(sink);
    got += readAll();
    const out = got.trimEnd().split("\n");
    expect(out.slice(0, fit)).toEqual(want.slice(0, fit).map((l) => l.trimEnd()));
    expect(JSON.parse(out[fit]!).msg).toBe(
      `${want.length - fit + 1} log lines dropped before this one: the log was not read and 10000 bytes waited`,
    );
    closeSync(writer);
    closeSync(reader);
  });

  it("a log that cannot be written loses those lines and the writer goes on", async () => {
    const path = join(makeTempDir("berth-logsink-"), "ipamd.log");
    closeSync(openSync(path, "w"));
    const fd = openSync(path, "r"); // EBADF on every write
    const sink = new LogSink(fd);
    for (const l of lines(100)) sink.write(l);
    await flushed(sink);
    for (const l of lines(10)) expect(sink.write(l)).toBe(true);
    await flushed(sink);
    closeSync(fd);
    expect(readFileSync(path, "utf8")).toBe("");
  });

  it("flushSync writes the waiting lines before it returns (an exit)", () => {
    const path = join(makeTempDir("berth-logsink-"), "ipamd.log");
    const fd = openSync(path, "a");
    const sink = new LogSink(fd);
    const want = lines(500);
    for (const l of want) sink.write(l);
    sink.flushSync();
    expect(readFileSync(path, "utf8")).toBe(want.join(""));
    closeSync(fd);
  });
});
