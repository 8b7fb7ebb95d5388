// lib/fileio.ts (the plugins' file calls over libc) on real files: errno names and messages,
// partial writes, directories, links, and the durable atomic write of lib/files.ts, through both
// FFI backends: koffi in this process, bun:ffi (what the compiled plugins use) in a Bun child.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as nodePath from "node:path";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { basename, dirname, join as pathsJoin } from "../../lib/paths";
import { probe } from "../helpers/fileio-probe";
import { ROOT } from "../helpers/plugins";

const BUN = join(ROOT, "node_modules/.bin/bun");
const scratch: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "berth-fileio-"));
  scratch.push(d);
  return d;
};
afterAll(() => {
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

type Outcomes = Awaited<ReturnType<typeof probe>>;

/** What differs by engine, not by backend: the pid in temp names, the JSON parser's wording. */
function normalized(o: Outcomes): Outcomes {
  const text = JSON.stringify(o).replace(/\.\d+\.tmp/g, ".PID.tmp");
  const out = JSON.parse(text) as Record<string, { error?: { message: string } }>;
  out.jsonDamaged!.error!.message = out.jsonDamaged!.error!.message.replace(/bad\.json: .*/, "bad.json: <parser>");
  return out as Outcomes;
}

describe("lib/fileio", () => {
  let koffi: Outcomes;

  it("reports failures as SyscallError with the errno name, the call and the path", async () => {
    koffi = await probe(tempDir());
    const err = (k: string) => (koffi[k] as { error: { name: string; code: string; message: string } }).error;
    expect(err("readMissing")).toEqual({
      name: "SyscallError",
      code: "ENOENT",
      message: 'open "<dir>/missing": ENOENT (No such file or directory)',
    });
    expect(err("readDirectory").code).toBe("EISDIR");
    expect(err("readDirMissing").code).toBe("ENOENT");
    expect(err("readDirOfFile").message).toBe('readdir "<dir>/file": ENOTDIR (Not a directory)');
    expect(err("mkdirUnderFile").code).toBe("ENOTDIR");
    expect(err("mkdirOverFile").code).toBe("EEXIST");
    expect(err("unlinkMissing").code).toBe("ENOENT");
    expect(err("unlinkDirectory").code).toBe("EISDIR");
    expect(err("renameMissing").message).toBe('rename "<dir>/missing" to "<dir>/other": ENOENT (No such file or directory)');
    expect(err("readlinkOfFile").code).toBe("EINVAL");
    expect(err("openDirForWrite").code).toBe("EISDIR");
    expect(err("statMissing").code).toBe("ENOENT");
    expect(koffi.statOrUndefinedMissing).toEqual({ ok: "undefined" });
    expect(koffi.existsMissing).toEqual({ ok: false });
    expect(koffi.existsLink).toEqual({ ok: true });
    expect(koffi.mkdirExisting).toEqual({ ok: null });
  });

  it("reads and writes whole files, appends, makes directory trees, lists, stats and resolves links", () => {
    expect(koffi.bigRoundTrip).toEqual({ ok: { equal: true, bytes: 360_000, expected: 360_000 } });
    expect(koffi.append).toEqual({ ok: "one\ntwo\n" });
    expect(koffi.makeDirsNested).toEqual({ ok: ["750", "750", "750"] });
    expect(koffi.stat).toEqual({
      ok: { types: ["file", "file", "symlink", "directory", "other"], sizes: [1, 4], inoMatchesNode: true, devMatchesNode: true },
    });
    expect(koffi.readDirMany).toEqual({ ok: { count: 1500, sameAsNode: true } });
    expect(koffi.readlink).toEqual({ ok: "file" });
    expect(koffi.realpath).toEqual({ ok: true });
    expect(koffi.procType).toEqual({ ok: "9fa0" });
    expect(koffi.executable).toEqual({ ok: [true, false, false] });
  });

  it("writeAll completes over partial writes and EAGAIN (a non-blocking FIFO read by another process)", () => {
    expect(koffi.partialWrites).toEqual({ ok: { firstWriteWasPartial: true } });
    expect(koffi.partialWritesArrived).toEqual({ ok: { status: 0, equal: true } });
  });

  it("state files: atomic replace (0600, no temp file left), JSON errors as OsError, removal, locks", () => {
    expect(koffi.atomic).toEqual({ ok: { text: '{"a":2}\n', mode: "600", files: ["r.json"] } });
    expect((koffi.atomicNoDir as { error: { code: string } }).error.code).toBe("ENOENT");
    expect(koffi.jsonMissing).toEqual({ ok: "undefined" });
    expect(koffi.jsonDamaged).toMatchObject({ error: { name: "OsError", code: "EINVAL" } });
    expect(koffi.jsonDirectory).toEqual({
      error: { name: "OsError", code: "EISDIR", message: 'cannot read state file <dir>/dir: read "<dir>/dir": EISDIR (Is a directory)' },
    });
    expect(koffi.removeMissing).toEqual({ ok: null });
    expect(koffi.removeDirectory).toMatchObject({ error: { code: "EISDIR" } });
    expect(koffi.lockNoDir).toEqual({
      error: {
        name: "OsError",
        code: "ENOENT",
        message: 'cannot open the lock file of the test records: open "<dir>/nodir/x.lock": ENOENT (No such file or directory)',
      },
    });
    expect(koffi.lock).toEqual({ ok: "600" });
  });

  it("bun:ffi (the compiled plugins) behaves exactly as koffi", () => {
    const r = spawnSync(BUN, [join(ROOT, "test/helpers/fileio-probe-main.ts"), tempDir()], { cwd: ROOT, encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(normalized(JSON.parse(r.stdout))).toEqual(normalized(koffi));
  });

  it("writeFileAtomic: temp file, write, fsync, rename, fsync of the directory, in that order (bun:ffi, under strace)", () => {
    const dir = tempDir();
    const target = join(dir, "rec.json");
    const log = join(dir, "trace");
    const code = `import { writeFileAtomic } from "${join(ROOT, "lib/files.ts")}"; writeFileAtomic(${JSON.stringify(target)}, "{}\\n");`;
    execFileSync("strace", ["-f", "-o", log, "-e", "trace=%file,write,fsync,close", BUN, "-e", code], { cwd: ROOT });
    const lines = readFileSync(log, "utf8").split("\n");
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const tmp = `${target}\\.\\d+\\.tmp`;
    const open = at(new RegExp(`openat\\(AT_FDCWD, "${tmp}", O_WRONLY\\|O_CREAT\\|O_TRUNC\\|O_CLOEXEC, 0600\\)\\s+= \\d+`));
    const fd = /= (\d+)$/.exec(lines[open]!)?.[1];
    const write = at(new RegExp(`write\\(${fd}, "\\{\\}\\\\n", 3\\)\\s+= 3`));
    const sync = at(new RegExp(`fsync\\(${fd}\\)\\s+= 0`));
    // rename(2) on x86_64; aarch64 has only renameat/renameat2.
    const rename = at(new RegExp(`rename(?:at2?)?\\((?:AT_FDCWD, )?"${tmp}", (?:AT_FDCWD, )?"${target}"[^)]*\\)\\s+= 0`));
    const openDir = at(new RegExp(`openat\\(AT_FDCWD, "${dir}", O_RDONLY\\|O_CLOEXEC\\)\\s+= \\d+`));
    const dirFd = /= (\d+)$/.exec(lines[openDir]!)?.[1];
    const syncDir = lines.findIndex((l, i) => i > openDir && new RegExp(`fsync\\(${dirFd}\\)\\s+= 0`).test(l));
    expect(
      [open, write, sync, rename, openDir, syncDir].every((i) => i >= 0),
      lines.join("\n"),
    ).toBe(true);
    expect(open < write && write < sync && sync < rename && rename < openDir && openDir < syncDir).toBe(true);
    expect(readFileSync(target, "utf8")).toBe("{}\n");
  });
});

describe("lib/paths", () => {
  it("join, dirname and basename agree with node:path on the plugins' kinds of paths", () => {
    const joins = [
      ["/run/berth", "x.json"],
      ["/run/berth/", "/x.lock"],
      ["/sys", "class/net", "eth0", "device"],
      ["state", "a"],
      ["/a", ".", "b"],
      ["", "/a"],
      ["/"],
    ];
    for (const parts of joins) expect(pathsJoin(...parts), parts.join(" + ")).toBe(nodePath.join(...parts));
    for (const p of ["/a/b", "/a/b/", "/a", "/", "a", "a/b", "/var/log/berth/plugin.log"]) {
      expect(dirname(p), p).toBe(nodePath.dirname(p));
      expect(basename(p), p).toBe(nodePath.basename(p));
    }
  });
});
