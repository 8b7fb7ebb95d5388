// The same file operations through lib/fileio.ts, lib/files.ts and lib/lock.ts in a scratch
// directory, their outcomes as plain data: test/lib/fileio.test.ts runs it in-process (koffi, Node)
// and under Bun (bun:ffi, what the compiled plugins use) and compares. `bun test/helpers/fileio-probe-main.ts DIR`
// prints them as JSON.
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { libc } from "../../lib/ffi/libc";
import {
  appendTextFile,
  closeFile,
  exists,
  filesystemType,
  isExecutable,
  makeDirs,
  openFile,
  readDir,
  readLink,
  readTextFile,
  realPath,
  renameFile,
  statOrUndefined,
  statPath,
  unlinkFile,
  writeAll,
  writeTextFile,
} from "../../lib/fileio";
import { readJsonFile, removeFile, writeFileAtomic } from "../../lib/files";
import { withFileLock } from "../../lib/lock";

// Same values on x86_64 and aarch64.
const O_RDWR = 2;
const O_NONBLOCK = 0o4000;

type Outcome = { ok: unknown } | { error: { name: string; code: unknown; message: string } };

function attempt(fn: () => unknown): Outcome {
  try {
    return { ok: fn() ?? null };
  } catch (e) {
    const err = e as Error & { code?: unknown };
    return { error: { name: err.name, code: err.code, message: err.message } };
  }
}

/** Every outcome, keyed by what was tried; paths in messages are relative to `dir` ("<dir>"). */
export async function probe(dir: string): Promise<Record<string, Outcome>> {
  const out: Record<string, Outcome> = {};
  const p = (...parts: string[]) => join(dir, ...parts);
  writeFileSync(p("file"), "x");
  mkdirSync(p("dir"));
  symlinkSync("file", p("link"));

  out.readMissing = attempt(() => readTextFile(p("missing")));
  out.readDirectory = attempt(() => readTextFile(p("dir")));
  out.readDirMissing = attempt(() => readDir(p("missing")));
  out.readDirOfFile = attempt(() => readDir(p("file")));
  out.mkdirUnderFile = attempt(() => makeDirs(p("file", "sub"), 0o700));
  out.mkdirOverFile = attempt(() => makeDirs(p("file"), 0o700));
  out.mkdirExisting = attempt(() => makeDirs(p("dir"), 0o700));
  out.unlinkMissing = attempt(() => unlinkFile(p("missing")));
  out.unlinkDirectory = attempt(() => unlinkFile(p("dir")));
  out.renameMissing = attempt(() => renameFile(p("missing"), p("other")));
  out.readlinkOfFile = attempt(() => readLink(p("file")));
  out.openDirForWrite = attempt(() => openFile(p("dir"), 1));
  out.statMissing = attempt(() => statPath(p("missing")));
  out.statOrUndefinedMissing = attempt(() => statOrUndefined(p("file", "x")) ?? "undefined");
  out.existsMissing = attempt(() => exists(p("missing")));
  out.existsLink = attempt(() => exists(p("link")));

  // Text larger than one read (64 KiB), multi-byte characters across the chunk boundaries.
  const big = "é✓-berth ".repeat(30_000);
  out.bigRoundTrip = attempt(() => {
    writeTextFile(p("big"), big);
    const back = readTextFile(p("big"));
    return { equal: back === big, bytes: statSync(p("big")).size, expected: Buffer.byteLength(big) };
  });
  out.append = attempt(() => {
    appendTextFile(p("x.log"), "one\n");
    appendTextFile(p("x.log"), "two\n");
    return readFileSync(p("x.log"), "utf8");
  });
  out.makeDirsNested = attempt(() => {
    makeDirs(p("a", "b", "c"), 0o750);
    return ["a", "a/b", "a/b/c"].map((d) => (statSync(p(d)).mode & 0o7777).toString(8));
  });
  out.stat = attempt(() => {
    const f = statPath(p("file")),
      l = statPath(p("link"), false),
      d = statPath(p("dir"));
    const n = statSync(p("file"));
    return {
      types: [f.type, statPath(p("link")).type, l.type, d.type, statPath("/dev/null").type],
      sizes: [f.size, l.size],
      inoMatchesNode: f.ino === n.ino,
      devMatchesNode: f.dev === `${(n.dev >>> 8) & 0xfff}:${(n.dev & 0xff) | ((n.dev >>> 12) & 0xfff00)}`,
    };
  });
  out.readDirMany = attempt(() => {
    mkdirSync(p("many"));
    const names = Array.from({ length: 1500 }, (_, i) => `entry-${i}-${"n".repeat(40)}`);
    for (const n of names) writeFileSync(p("many", n), "");
    const got = readDir(p("many"));
    const sorted = (xs: string[]) => JSON.stringify([...xs].sort());
    return { count: got.length, sameAsNode: sorted(got) === sorted(readdirSync(p("many"))) };
  });
  out.readlink = attempt(() => readLink(p("link")));
  out.realpath = attempt(() => realPath(p("link")) === join(realPath(dir), "file"));
  out.procType = attempt(() => filesystemType("/proc").toString(16));
  out.executable = attempt(() => {
    writeFileSync(p("exe"), "#!/bin/sh\n");
    chmodSync(p("exe"), 0o755);
    return [isExecutable(p("exe")), isExecutable(p("file")), isExecutable(p("missing"))];
  });

  out.atomic = attempt(() => {
    mkdirSync(p("state"));
    writeFileAtomic(p("state", "r.json"), '{"a":1}\n');
    writeFileAtomic(p("state", "r.json"), '{"a":2}\n');
    return {
      text: readFileSync(p("state", "r.json"), "utf8"),
      mode: (statSync(p("state", "r.json")).mode & 0o777).toString(8),
      files: readdirSync(p("state")),
    };
  });
  out.atomicNoDir = attempt(() => writeFileAtomic(p("nodir", "r.json"), "{}"));
  out.jsonMissing = attempt(() => readJsonFile(p("missing.json"), "fix it") ?? "undefined");
  out.jsonDamaged = attempt(() => {
    writeFileSync(p("bad.json"), "{not json");
    return readJsonFile(p("bad.json"), "fix it");
  });
  out.jsonDirectory = attempt(() => readJsonFile(p("dir"), "fix it"));
  out.removeMissing = attempt(() => removeFile(p("missing")));
  out.removeDirectory = attempt(() => removeFile(p("dir")));
  out.lockNoDir = attempt(() => withFileLock(p("nodir", "x.lock"), "the test records", () => 1));
  out.lock = attempt(() => withFileLock(p("x.lock"), "the test records", () => (statSync(p("x.lock")).mode & 0o777).toString(8)));

  // Partial writes: a non-blocking FIFO takes at most its 64 KiB buffer per write(2); a reader
  // (cat, another process) drains it while writeAll loops over partial writes and EAGAIN.
  const payload = Buffer.alloc(1 << 20);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 10)) & 0xff;
  execFileSync("mkfifo", [p("fifo")]);
  const reader = spawn("sh", ["-c", `cat "${p("fifo")}" > "${p("fifo.out")}"`], { stdio: "ignore" });
  const done = new Promise<number | null>((r) => reader.once("close", r));
  out.partialWrites = attempt(() => {
    const fd = openFile(p("fifo"), O_RDWR | O_NONBLOCK);
    try {
      const first = libc.write(fd, payload, payload.length);
      writeAll(fd, payload.subarray(first), "the fifo");
      return { firstWriteWasPartial: first > 0 && first < payload.length };
    } finally {
      closeFile(fd);
    }
  });
  const status = await done;
  out.partialWritesArrived = attempt(() => ({ status, equal: readFileSync(p("fifo.out")).equals(payload) }));

  // Paths in messages depend on the scratch directory: name it.
  return JSON.parse(JSON.stringify(out).replaceAll(dir, "<dir>"));
}
