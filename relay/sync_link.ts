/**
 * A blocking, bounded request/reply conversation with one back-end over its main socket: what
 * the proxy uses when it speaks as the front-end itself (restarting a back-end), outside the
 * relay's poll loop. Every wait has a deadline; a peer that does not answer in time, closes, or
 * answers another request is an error that names the request.
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import { POLLIN, POLLOUT, PollSet } from "../ffi/poll.ts";
import { recvWithFds, sendWithFds } from "../ffi/socket.ts";
import type { Dialect } from "../protocol/catalogue.ts";
import {
  createMessage,
  encodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  requestName,
} from "../protocol/codec.ts";
import { type Payload, readPayload } from "../protocol/layouts.ts";

const HEADER = 12;
/** The largest payload in the spec (GET_SHMEM_CONFIG's reply). */
const MAX_PAYLOAD = 2056;

/** A reply as it came off the wire. */
export interface SyncReply {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: OwnedFd[];
}

/** A step of a conversation failed: the request, and why. */
export class LinkError extends Error {
  override name = "LinkError";
  readonly request: string;
  constructor(request: string, detail: string) {
    super(`${request}: ${detail}`);
    this.request = request;
  }
}

/** One back-end's main socket, spoken to synchronously. Does not own the socket. */
export class SyncLink {
  readonly #socket: OwnedFd;
  readonly #dialect: Dialect;
  readonly #timeoutMs: number;
  readonly #buf = new Uint8Array(new ArrayBuffer(HEADER + MAX_PAYLOAD));

  constructor(socket: OwnedFd, options: { dialect: Dialect; timeoutMs: number }) {
    this.#socket = socket;
    this.#dialect = options.dialect;
    this.#timeoutMs = options.timeoutMs;
  }

  /** The name of a main-channel code in this back-end's dialect. */
  nameOf(code: number): string {
    return requestName("main", code, this.#dialect);
  }

  /** Builds a front-end request by name through the catalogue. */
  frame(name: string, payload: Payload = { layout: "empty" }, needReply = false): Uint8Array {
    return encodeMessage(
      createMessage({
        channel: "main",
        sender: "front-end",
        dialect: this.#dialect,
        request: name,
        payload,
        needReply,
      }),
    );
  }

  /** Sends a whole frame with its fds (the caller keeps and closes them). */
  send(frame: Uint8Array, fds: readonly OwnedFd[] = []): void {
    const name = this.nameOf(new DataView(frame.buffer, frame.byteOffset).getUint32(0, true));
    const deadline = performance.now() + this.#timeoutMs;
    let off = 0;
    const raw = fds.map((f) => f.fd);
    while (off < frame.length) {
      let n: number;
      try {
        n = sendWithFds(this.#socket.fd, frame, off, frame.length - off, off === 0 ? raw : []);
      } catch (e) {
        throw new LinkError(name, `sending failed: ${e instanceof Error ? e.message : e}`);
      }
      if (n > 0) {
        off += n;
        continue;
      }
      this.#wait(POLLOUT, deadline, name, "sending");
    }
  }

  /** Reads the next reply and checks that it answers `code`. */
  reply(code: number): SyncReply {
    const name = this.nameOf(code);
    const deadline = performance.now() + this.#timeoutMs;
    const fds: OwnedFd[] = [];
    try {
      this.#readExactly(0, HEADER, fds, deadline, name);
      const v = new DataView(this.#buf.buffer);
      const request = v.getUint32(0, true);
      const flags = v.getUint32(4, true);
      const size = v.getUint32(8, true);
      if (size > MAX_PAYLOAD) throw new LinkError(name, `the reply announces ${size} bytes`);
      this.#readExactly(HEADER, size, fds, deadline, name);
      if ((flags & FLAG_REPLY) === 0) {
        throw new LinkError(name, `the back-end sent request ${this.nameOf(request)} instead`);
      }
      if (request !== code) {
        throw new LinkError(name, `the back-end answered ${this.nameOf(request)} instead`);
      }
      return {
        request,
        flags,
        payload: this.#buf.slice(HEADER, HEADER + size),
        fds: fds.splice(0),
      };
    } finally {
      closeAll(fds);
    }
  }

  /** Sends `frame` and returns its reply. */
  ask(frame: Uint8Array, fds: readonly OwnedFd[] = []): SyncReply {
    this.send(frame, fds);
    return this.reply(new DataView(frame.buffer, frame.byteOffset).getUint32(0, true));
  }

  /**
   * Sends `frame`; with `ack` (REPLY_ACK negotiated) NEED_REPLY is set on it and the ack must
   * come back 0, so that a back-end that refuses a step says so at that step.
   */
  tell(frame: Uint8Array, fds: readonly OwnedFd[], ack: boolean): void {
    if (!ack) {
      this.send(frame, fds);
      return;
    }
    const copy = frame.slice();
    const v = new DataView(copy.buffer);
    v.setUint32(4, v.getUint32(4, true) | FLAG_NEED_REPLY, true);
    const r = this.ask(copy, fds);
    closeAll(r.fds);
    const result = readPayload("result", r.payload).value;
    if (result !== 0n) {
      throw new LinkError(this.nameOf(r.request), `the back-end answered ${result} (failure)`);
    }
  }

  #readExactly(at: number, length: number, fds: OwnedFd[], deadline: number, name: string) {
    let have = 0;
    while (have < length) {
      let r;
      try {
        r = recvWithFds(this.#socket.fd, this.#buf, at + have, length - have);
      } catch (e) {
        throw new LinkError(
          name,
          `reading the reply failed: ${e instanceof Error ? e.message : e}`,
        );
      }
      if (r.kind === "eof") throw new LinkError(name, "the back-end closed the connection");
      if (r.kind === "wouldBlock") {
        this.#wait(POLLIN, deadline, name, "waiting for the reply");
        continue;
      }
      fds.push(...r.fds);
      have += r.bytes;
    }
  }

  #wait(events: number, deadline: number, name: string, what: string): void {
    if (!waitReady(this.#socket, events, deadline)) {
      throw new LinkError(name, `no progress ${what} within ${this.#timeoutMs} ms`);
    }
  }
}

/**
 * Waits (poll) until `fd` may be ready for `events` or `deadline` (performance.now() time)
 * passes; false once it has passed. The caller retries its nonblocking call either way.
 */
export function waitReady(fd: OwnedFd, events: number, deadline: number): boolean {
  const left = Math.ceil(deadline - performance.now());
  if (left <= 0) return false;
  const p = new PollSet();
  p.add(fd.fd, events);
  p.wait(left);
  return true;
}
