// SO_PEERCRED of a connected unix socket: who is on the other end (pid, uid, gid), as the kernel
// recorded it at connect/listen time (it cannot be forged by the peer).
import { SOL_SOCKET, SO_PEERCRED, libc } from "./ffi/libc";

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

const UCRED_SIZE = 12; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }

/** The peer's credentials on socket `fd`, or null when they cannot be read. */
export function peerCredOf(fd: number): PeerCred | null {
  const buf = Buffer.alloc(UCRED_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(UCRED_SIZE);
  if (libc.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0 || len.readUInt32LE(0) !== UCRED_SIZE) return null;
  return { pid: buf.readInt32LE(0), uid: buf.readUInt32LE(4), gid: buf.readUInt32LE(8) };
}

/** The file descriptor of a connected node:net socket (Node and Bun keep it on the handle). */
export function socketFd(socket: unknown): number | undefined {
  const fd = (socket as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}
