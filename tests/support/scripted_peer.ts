/**
 * A scripted vhost-user peer for tests: plays QEMU or a back-end message by message over a real
 * unix socket with real fds. Calls block (bounded by a timeout) in poll(); that is fine in tests
 * because the proxy under test runs in its own Worker or process.
 *
 * @module
 */

import type { OwnedFd } from "../../ffi/fd.ts";
import { POLLIN, POLLOUT, PollSet } from "../../ffi/poll.ts";
import { acceptConnection, connectUnix, listenUnix, sendWithFds } from "../../ffi/socket.ts";
import { MessageChannel } from "../../relay/channel.ts";
import { SystemError } from "../../ffi/errors.ts";

/** A message as a test writes or reads it. */
export interface WireMessage {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: OwnedFd[];
}

function waitFor(fd: number, events: number, timeoutMs: number): boolean {
  const p = new PollSet();
  p.add(fd, events);
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const left = Math.max(0, Math.ceil(deadline - performance.now()));
    if (p.wait(left) > 0) return true;
    if (performance.now() >= deadline) return false;
  }
}

/** Encodes a header + payload. */
export function frame(
  request: number,
  flags: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(12 + payload.length));
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.length, true);
  out.set(payload, 12);
  return out;
}

/** A u64 payload. */
export function u64(value: bigint | number): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(8));
  new DataView(out.buffer).setBigUint64(0, BigInt(value), true);
  return out;
}

/** Reads a u64 payload. */
export function readU64(payload: Uint8Array): bigint {
  return new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
}

/** One connected scripted peer. */
export class ScriptedPeer {
  readonly channel: MessageChannel;

  constructor(socket: OwnedFd) {
    this.channel = new MessageChannel(socket, { maxPayload: 1 << 20 });
  }

  /** Connects to `path`, retrying while nobody listens yet. */
  static connect(path: string, timeoutMs = 5000): ScriptedPeer {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        return new ScriptedPeer(connectUnix(path));
      } catch (e) {
        if (!(e instanceof SystemError) || performance.now() > deadline) throw e;
        waitFor(-1, 0, 20);
      }
    }
  }

  get fd(): number {
    return this.channel.socket.fd;
  }

  /** Sends a message (fds are closed here once sent). */
  send(m: { request: number; flags: number; payload?: Uint8Array; fds?: OwnedFd[] }): void {
    this.channel.send(frame(m.request, m.flags, m.payload), m.fds ?? []);
    this.drain();
  }

  /** Sends raw bytes (for malformed input), optionally with fds (raw numbers, not closed). */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    let off = 0;
    let first = true;
    while (off < bytes.length) {
      if (!waitFor(this.fd, POLLOUT, 5000)) throw new Error("Peer socket not writable for 5 s");
      const n = sendWithFds(this.fd, bytes, off, bytes.length - off, first ? fds : []);
      if (n > 0) {
        off += n;
        first = false;
      }
    }
  }

  /** Blocks until queued output is sent. */
  drain(timeoutMs = 5000): void {
    while (!this.channel.flush()) {
      if (!waitFor(this.fd, POLLOUT, timeoutMs)) throw new Error("Peer output stuck for 5 s");
    }
  }

  /** Receives one message; "eof" when the other side closed; throws on timeout. */
  recv(timeoutMs = 5000): WireMessage | "eof" {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const r = this.channel.read();
      if (r.kind === "frame") {
        return {
          request: r.frame.request,
          flags: r.frame.flags,
          payload: r.frame.payload.slice(),
          fds: r.frame.fds,
        };
      }
      if (r.kind === "eof") return "eof";
      if (r.kind === "violation") {
        throw new Error(`Peer received a malformed message: ${r.reason.kind}`);
      }
      const left = deadline - performance.now();
      if (left <= 0 || !waitFor(this.fd, POLLIN, left)) {
        throw new Error(`No message within ${timeoutMs} ms`);
      }
    }
  }

  /** Receives and requires a message (not EOF). */
  expect(timeoutMs = 5000): WireMessage {
    const m = this.recv(timeoutMs);
    if (m === "eof") throw new Error("Expected a message, the other side closed");
    return m;
  }

  /** True when the other side closes within the timeout (pending messages are discarded). */
  closedWithin(timeoutMs: number): boolean {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      let r;
      try {
        r = this.channel.read();
      } catch {
        return true; // ECONNRESET counts as closed
      }
      if (r.kind === "eof") return true;
      if (r.kind === "frame") {
        for (const f of r.frame.fds) f.close();
        continue;
      }
      if (r.kind === "violation") continue;
      const left = deadline - performance.now();
      if (left <= 0 || !waitFor(this.fd, POLLIN, left)) return false;
    }
  }

  close(): void {
    this.channel.close();
  }
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
