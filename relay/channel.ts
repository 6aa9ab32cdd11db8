/**
 * Message framing on a nonblocking unix stream socket, in both directions.
 *
 * Reading: exactly the 12-byte header first (a larger read can glue an fd-less message to the
 * next one's fds, docs/ffi-notes.md §1.5), then the payload, which may arrive in a later segment
 * (libvhost-user writes header+fds and payload separately). Both with recvmsg, because a plain
 * read silently drops attached fds. Payload sizes are bounded before anything is allocated.
 *
 * Writing: one sendmsg of header+payload with the fds; on a partial send the rest goes without
 * fds (they rode with the first byte); the proxy's fd copies are closed as soon as the kernel has
 * them. While output is queued the caller stops reading the source (backpressure).
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import { recvWithFds, sendWithFds } from "../ffi/socket.ts";
import { MAX_FDS } from "../protocol/codec.ts";
import { BufferPool } from "../ffi/buffer_pool.ts";

/** Size of the vhost-user header; its u32 at offset 8 is the payload length. */
export const FRAME_HEADER_SIZE = 12;

/** Pooled buffer payload size: channels bounded at or below it share pooled buffers. */
const POOLED_PAYLOAD = 4096;
const framePool = new BufferPool(FRAME_HEADER_SIZE + POOLED_PAYLOAD, 64);

/** A complete message as read from the wire. Buffers are views valid until the next read. */
export interface Frame {
  /** Header + payload, contiguous. */
  bytes: Uint8Array;
  /** Payload only. */
  payload: Uint8Array;
  request: number;
  flags: number;
  size: number;
  /** Attached fds, owned by the receiver of the frame. */
  fds: OwnedFd[];
  /** True when some fds arrived after the first header byte (peers must not do that). */
  lateFds: boolean;
}

/** Why reading stopped. */
export type ReadOutcome =
  | { kind: "frame"; frame: Frame }
  | { kind: "pending" }
  | { kind: "eof"; midMessage: boolean; have: number; header?: FrameHeaderInfo }
  | { kind: "violation"; reason: FramingViolation; header?: FrameHeaderInfo };

/** What is known of a message whose reading failed. */
export interface FrameHeaderInfo {
  request: number;
  flags: number;
  size: number;
}

/** Framing problems found before a message could be decoded. */
export type FramingViolation =
  | { kind: "too-large"; size: number; limit: number }
  | { kind: "fds-truncated"; received: number };

interface Pending {
  bytes: Uint8Array;
  offset: number;
  fds: OwnedFd[];
}

/** One direction-agnostic framed socket. Owns its fd. */
export class MessageChannel {
  readonly socket: OwnedFd;
  readonly maxPayload: number;
  #buf: Uint8Array;
  #view: DataView;
  #have = 0;
  #fds: OwnedFd[] = [];
  #lateFds = false;
  #out: Pending[] = [];
  #outBytes = 0;
  #eof = false;

  constructor(socket: OwnedFd, options: { maxPayload: number }) {
    this.socket = socket;
    this.maxPayload = options.maxPayload;
    this.#buf = options.maxPayload <= POOLED_PAYLOAD
      ? framePool.take()
      : new Uint8Array(new ArrayBuffer(FRAME_HEADER_SIZE + options.maxPayload));
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes of the message being read so far (0 between messages). */
  get partialBytes(): number {
    return this.#have;
  }

  /** Bytes queued for sending. */
  get pendingOutput(): number {
    return this.#outBytes;
  }

  /** True once the peer closed its side. */
  get sawEof(): boolean {
    return this.#eof;
  }

  /** Reads until one message is complete or the socket has nothing more now. */
  read(): ReadOutcome {
    for (;;) {
      const inHeader = this.#have < FRAME_HEADER_SIZE;
      const want = inHeader
        ? FRAME_HEADER_SIZE - this.#have
        : FRAME_HEADER_SIZE + this.#size() - this.#have;
      if (!inHeader && want === 0) return { kind: "frame", frame: this.#complete() };
      const r = recvWithFds(this.socket.fd, this.#buf, this.#have, want);
      if (r.kind === "wouldBlock") return { kind: "pending" };
      if (r.kind === "eof") {
        this.#eof = true;
        const mid = this.#have > 0;
        return { kind: "eof", midMessage: mid, have: this.#have, header: this.#headerInfo() };
      }
      if (r.fds.length > 0) {
        if (this.#have > 0) this.#lateFds = true;
        this.#fds.push(...r.fds);
      }
      this.#have += r.bytes;
      if (r.truncated || this.#fds.length > MAX_FDS) {
        // The header usually came with the fds: read it before discarding, so the error can
        // name the message.
        const received = this.#fds.length;
        const header = this.#headerInfo();
        this.#discard();
        return { kind: "violation", reason: { kind: "fds-truncated", received }, header };
      }
      if (this.#have === FRAME_HEADER_SIZE) {
        const size = this.#size();
        if (size > this.maxPayload) {
          const header = this.#headerInfo();
          this.#discard();
          return {
            kind: "violation",
            reason: { kind: "too-large", size, limit: this.maxPayload },
            header,
          };
        }
      }
    }
  }

  #size(): number {
    return this.#view.getUint32(8, true);
  }

  #headerInfo(): FrameHeaderInfo | undefined {
    if (this.#have < FRAME_HEADER_SIZE) return undefined;
    return {
      request: this.#view.getUint32(0, true),
      flags: this.#view.getUint32(4, true),
      size: this.#view.getUint32(8, true),
    };
  }

  #complete(): Frame {
    const size = this.#size();
    const frame: Frame = {
      bytes: this.#buf.subarray(0, FRAME_HEADER_SIZE + size),
      payload: this.#buf.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + size),
      request: this.#view.getUint32(0, true),
      flags: this.#view.getUint32(4, true),
      size,
      fds: this.#fds,
      lateFds: this.#lateFds,
    };
    this.#have = 0;
    this.#fds = [];
    this.#lateFds = false;
    return frame;
  }

  #discard(): void {
    closeAll(this.#fds);
    this.#fds = [];
    this.#have = 0;
  }

  /**
   * Sends a message, taking ownership of `fds` (closed here once the kernel holds them).
   * Bytes that cannot go now are copied and queued; call `flush` when writable.
   * Throws SystemError when the peer is gone (the fds are closed then too).
   */
  send(bytes: Uint8Array, fds: OwnedFd[] = []): void {
    if (this.#out.length === 0) {
      let n: number;
      try {
        n = sendWithFds(this.socket.fd, bytes, 0, bytes.length, fds.map((f) => f.fd));
      } catch (e) {
        closeAll(fds);
        throw e;
      }
      if (n > 0) closeAll(fds);
      if (n === bytes.length) return;
      const sent = Math.max(n, 0);
      this.#out.push({ bytes: bytes.slice(sent), offset: 0, fds: n > 0 ? [] : fds });
      this.#outBytes += bytes.length - sent;
      return;
    }
    this.#out.push({ bytes: bytes.slice(), offset: 0, fds });
    this.#outBytes += bytes.length;
  }

  /** Sends queued output; returns true when the queue is empty. */
  flush(): boolean {
    while (this.#out.length > 0) {
      const p = this.#out[0];
      let n: number;
      try {
        n = sendWithFds(
          this.socket.fd,
          p.bytes,
          p.offset,
          p.bytes.length - p.offset,
          p.fds.map((f) => f.fd),
        );
      } catch (e) {
        this.#dropOutput();
        throw e;
      }
      if (n < 0) return false;
      if (p.fds.length > 0) {
        closeAll(p.fds);
        p.fds = [];
      }
      p.offset += n;
      this.#outBytes -= n;
      if (p.offset < p.bytes.length) return false;
      this.#out.shift();
    }
    return true;
  }

  #dropOutput(): void {
    for (const p of this.#out) closeAll(p.fds);
    this.#out = [];
    this.#outBytes = 0;
  }

  /** Closes the socket and every fd still held (partial input, queued output). */
  close(): void {
    if (!this.socket.isOpen) return;
    this.#discard();
    this.#dropOutput();
    this.socket.close();
    // Frames are only valid until the next read, and a closed channel reads no more.
    framePool.give(this.#buf);
  }
}
