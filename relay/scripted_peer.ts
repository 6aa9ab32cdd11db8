/**
 * A scripted vhost-user peer: plays QEMU or a back-end message by message over a real unix socket
 * with real fds. The tests drive proxies with it (`recv`/`expect` block, bounded by a timeout,
 * while the proxy runs in its own Worker or process), and the engine's start-up rehearsal drives a
 * Session on its own thread with it (`poll` and `sendRaw` never wait there: the reactor is turned
 * in between).
 *
 * @module
 */

import type { OwnedFd } from "../ffi/fd.ts";
import { POLLIN, POLLOUT, PollSet } from "../ffi/poll.ts";
import { connectUnix, sendWithFds } from "../ffi/socket.ts";
import { type Frame, MessageChannel } from "./channel.ts";
import { SystemError } from "../ffi/errors.ts";

/** A message as a script writes or reads it. */
export interface WireMessage {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: OwnedFd[];
}

/** Waits until `fd` has `events` (or, with fd -1, just sleeps); false on timeout. */
export function waitFor(fd: number, events: number, timeoutMs: number): boolean {
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

function wireOf(f: Frame): WireMessage {
  return { request: f.request, flags: f.flags, payload: f.payload.slice(), fds: f.fds };
}

/** One connected scripted peer. */
export class ScriptedPeer {
  readonly channel: MessageChannel;

  /** `maxPayload` bounds what it reads (default 1 MiB; up to 4 KiB uses pooled buffers). */
  constructor(socket: OwnedFd, options: { maxPayload?: number } = {}) {
    this.channel = new MessageChannel(socket, { maxPayload: options.maxPayload ?? 1 << 20 });
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

  /** The next whole message if one has arrived, without waiting; throws at EOF. */
  poll(): WireMessage | undefined {
    const r = this.channel.read();
    if (r.kind === "frame") return wireOf(r.frame);
    if (r.kind === "eof") throw new Error("Peer: the other side closed");
    if (r.kind === "violation") {
      throw new Error(`Peer received a malformed message: ${r.reason.kind}`);
    }
    return undefined;
  }

  /** Receives one message; "eof" when the other side closed; throws on timeout. */
  recv(timeoutMs = 5000): WireMessage | "eof" {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const r = this.channel.read();
      if (r.kind === "frame") return wireOf(r.frame);
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
