// SO_PEERCRED of a connected unix socket: who is on the other end (pid, uid, gid).
import type { Socket } from "node:net";
import { SOL_SOCKET, SO_PEERCRED, libc } from "../lib/ffi/libc";

export interface PeerCred { pid: number; uid: number; gid: number }

const UCRED_SIZE = 12; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }

/** Returns the peer's credentials, or null when they cannot be read (callers must then deny writes). */
export function peerCred(socket: Socket): PeerCred | null {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return null;
  const buf = Buffer.alloc(UCRED_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(UCRED_SIZE);
  if (libc.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0 || len.readUInt32LE(0) !== UCRED_SIZE) return null;
  return { pid: buf.readInt32LE(0), uid: buf.readUInt32LE(4), gid: buf.readUInt32LE(8) };
}
