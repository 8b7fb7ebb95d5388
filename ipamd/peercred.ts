// SO_PEERCRED of a client connected to the API socket: who may change state.
import type { Socket } from "node:net";
import { type PeerCred, peerCredOf, socketFd } from "../lib/peercred";

export type { PeerCred };

/** Returns the peer's credentials, or null when they cannot be read (callers must then deny writes). */
export function peerCred(socket: Socket): PeerCred | null {
  const fd = socketFd(socket);
  return fd === undefined ? null : peerCredOf(fd);
}
