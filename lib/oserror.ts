// A failure of the machine rather than of Berth: a netlink request the kernel refused, a network
// namespace that cannot be entered, a file or lock that cannot be had. It says what was attempted
// (operation), on what (object) and the errno, so that the CNI skeleton can give it the right
// CNI code in one place (cni/skel/errors.ts) instead of "internal error".

type OsErrorKind = "netlink" | "netns" | "file";

export class OsError extends Error {
  constructor(
    message: string,
    readonly kind: OsErrorKind,
    /** errno name, e.g. "ENODEV" ("ETIMEDOUT" for a lock wait that timed out) */
    readonly code: string,
    /** what was attempted, e.g. `RTM_NEWLINK set "eth1" up` */
    readonly operation: string,
    /** the device, namespace or file it was attempted on, when known */
    readonly object?: string,
    /** how to fix it, when the one who raised it knows better than the code does */
    readonly fix?: string,
  ) {
    super(message);
    this.name = "OsError";
  }
}
