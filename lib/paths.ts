// Path helpers for the plugins, on POSIX paths only: node:path costs a compiled plugin ~0.5 ms to
// load. join collapses repeated and trailing slashes and "." parts; ".." is left to the kernel.

/** The parts joined with "/", without empty or "." parts; "." for nothing at all. */
export function join(...parts: string[]): string {
  const absolute = parts.find((p) => p !== "")?.startsWith("/") ?? false;
  const segs = parts.flatMap((p) => p.split("/")).filter((s) => s !== "" && s !== ".");
  const out = segs.join("/");
  return absolute ? `/${out}` : out || ".";
}

/** The directory part, as node:path's dirname: "/a/b" -> "/a", "/a" -> "/", "a" -> ".". */
export function dirname(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  if (trimmed === "") return path.startsWith("/") ? "/" : ".";
  const i = trimmed.lastIndexOf("/");
  if (i < 0) return ".";
  const dir = trimmed.slice(0, i).replace(/\/+$/, "");
  return dir === "" ? "/" : dir;
}

/** The last part, trailing slashes ignored: "/a/b/" -> "b". */
export function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}
