/**
 * The scripted peers of the tests: relay/scripted_peer.ts's `ScriptedPeer` (shared with the
 * engine's start-up rehearsal), a listener yielding scripted back-ends, u64 payload helpers.
 *
 * @module
 */

import type { OwnedFd } from "../../ffi/fd.ts";
import { POLLIN } from "../../ffi/poll.ts";
import { acceptConnection, listenUnix } from "../../ffi/socket.ts";
import { ScriptedPeer, waitFor } from "../../relay/scripted_peer.ts";

export { frame, ScriptedPeer, u64, waitFor, type WireMessage } from "../../relay/scripted_peer.ts";

/** Reads a u64 payload. */
export function readU64(payload: Uint8Array): bigint {
  return new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
}

/** A listening socket that a proxy connects to, yielding scripted back-ends. */
export class ScriptedListener {
  readonly path: string;
  readonly #socket: OwnedFd;

  constructor(path: string) {
    this.path = path;
    this.#socket = listenUnix(path);
  }

  /** Waits for the proxy to connect. */
  accept(timeoutMs = 5000): ScriptedPeer {
    if (!waitFor(this.#socket.fd, POLLIN, timeoutMs)) {
      throw new Error(`Nobody connected to ${this.path} within ${timeoutMs} ms`);
    }
    const conn = acceptConnection(this.#socket);
    if (!conn) throw new Error("accept found no connection");
    return new ScriptedPeer(conn);
  }

  close(): void {
    this.#socket.close();
    try {
      Deno.removeSync(this.path);
    } catch {
      // gone
    }
  }
}
