// Helpers for results passed along a plugin chain (prevResult).
import { CniError, CniCode } from "./errors";
import type { CniContext } from "./plugin";
import type { Interface, IpConfig, Result } from "./result";

/**
 * prevResult extended with this plugin's interfaces, ips, routes and dns. Indexes in
 * `next.ips[].interface` refer to `next.interfaces` and are shifted past the previous ones.
 */
export function extendResult(prev: Result | undefined, next: Result): Result {
  if (!prev) return next;
  const offset = prev.interfaces?.length ?? 0;
  const interfaces = [...(prev.interfaces ?? []), ...(next.interfaces ?? [])];
  const ips = [
    ...(prev.ips ?? []),
    ...(next.ips ?? []).map((ip) => (ip.interface === undefined ? ip : { ...ip, interface: ip.interface + offset })),
  ];
  const routes = [...(prev.routes ?? []), ...(next.routes ?? [])];
  const dns = {
    nameservers: union(prev.dns?.nameservers, next.dns?.nameservers),
    domain: next.dns?.domain ?? prev.dns?.domain,
    search: union(prev.dns?.search, next.dns?.search),
    options: union(prev.dns?.options, next.dns?.options),
  };
  return {
    ...(interfaces.length ? { interfaces } : {}),
    ...(ips.length ? { ips } : {}),
    ...(routes.length ? { routes } : {}),
    dns: Object.fromEntries(Object.entries(dns).filter(([, v]) => v !== undefined && (!Array.isArray(v) || v.length))),
  };
}

function union(a?: string[], b?: string[]): string[] | undefined {
  if (!a?.length && !b?.length) return undefined;
  return [...new Set([...(a ?? []), ...(b ?? [])])];
}

/** prevResult, required for CHECK (code 121 when the runtime sent none). */
export function requirePrevResult(ctx: CniContext<unknown>): Result {
  if (!ctx.conf.prevResult) {
    throw new CniError(
      CniCode.PrevResultMissing,
      `${ctx.conf.type}: required prevResult missing`,
      "CHECK compares the pod's interface with the result of ADD; the runtime must pass it as prevResult",
    );
  }
  return ctx.conf.prevResult;
}

/** The interface named ifName inside netns in `result` and its index, if any. */
export function findInterface(result: Result, ifName: string, netns?: string): { index: number; iface: Interface } | undefined {
  const list = result.interfaces ?? [];
  for (let index = 0; index < list.length; index++) {
    const iface = list[index]!;
    if (iface.name === ifName && (netns === undefined || !iface.sandbox || iface.sandbox === netns)) return { index, iface };
  }
  return undefined;
}

/** The ips of `result` that belong to interface ifName (in netns). */
export function ipsForInterface(result: Result, ifName: string, netns?: string): IpConfig[] {
  const found = findInterface(result, ifName, netns);
  if (!found) return [];
  return (result.ips ?? []).filter((ip) => ip.interface === found.index);
}

/** Code 120: what CHECK found differs from prevResult. */
export function mismatch(what: string, fix = "delete and re-create the pod sandbox to repair it"): CniError {
  return new CniError(CniCode.CheckMismatch, what, fix);
}
