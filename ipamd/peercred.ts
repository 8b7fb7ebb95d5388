// SO_PEERCRED of a connected unix socket: who is on the other end (pid, uid, gid).
import type { Socket } from "node:net";
import { koffi } from "../cni/netlink/koffi";

export interface PeerCred { pid: number; uid: number; gid: number }

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const UCRED_SIZE = 12; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }

let getsockopt: ((fd: number, level: number, name: number, val: Buffer, len: number[]) => number) | null = null;

function bind(): typeof getsockopt {
  if (!getsockopt) {
    const libc = koffi.load("libc.so.6");
    getsockopt = libc.func("int getsockopt(int fd, int level, int optname, _Out_ void *optval, _Inout_ uint32_t *optlen)");
  }
  return getsockopt;
}

/** Returns the peer's credentials, or null when they cannot be read (callers must then deny writes). */
export function peerCred(socket: Socket): PeerCred | null {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return null;
  const buf = Buffer.alloc(UCRED_SIZE);
  const len = [UCRED_SIZE];
  if (bind()!(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0 || len[0] !== UCRED_SIZE) return null;
  return { pid: buf.readInt32LE(0), uid: buf.readUInt32LE(4), gid: buf.readUInt32LE(8) };
}
