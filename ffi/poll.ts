/**
 * poll(2) and eventfd: the readiness primitives of the relay loop.
 *
 * The proxy's I/O runs in a Worker that blocks in a synchronous poll() (docs/ffi-notes.md §2, strategy
 * (c): lowest latency, exact errno, main event loop untouched). An eventfd in the set lets the
 * main thread wake it, because a Worker blocked in FFI cannot be terminated.
 *
 * @module
 */

import { C, errno, libc, size64 } from "./libc.ts";
import { Errno, SystemError } from "./errors.ts";
import { type OwnedFd, ownedOrThrow } from "./fd.ts";

/** A growable pollfd array reused across iterations. */
export class PollSet {
  #bytes = new Uint8Array(new ArrayBuffer(8 * 16));
  #view = new DataView(this.#bytes.buffer);
  #count = 0;

  /** Empties the set (keeps the memory). */
  clear(): void {
    this.#count = 0;
  }

  /** Adds an fd with the events of interest; returns its slot. */
  add(fd: number, events: number): number {
    if ((this.#count + 1) * 8 > this.#bytes.length) {
      const bigger = new Uint8Array(new ArrayBuffer(this.#bytes.length * 2));
      bigger.set(this.#bytes);
      this.#bytes = bigger;
      this.#view = new DataView(bigger.buffer);
    }
    const off = this.#count * 8;
    this.#view.setInt32(off, fd, true);
    this.#view.setInt16(off + 4, events, true);
    this.#view.setInt16(off + 6, 0, true);
    return this.#count++;
  }

  /** Number of slots. */
  get size(): number {
    return this.#count;
  }

  /** The revents of a slot after `wait`. */
  revents(slot: number): number {
    return this.#view.getUint16(slot * 8 + 6, true);
  }

  /** The fd of a slot. */
  fdAt(slot: number): number {
    return this.#view.getInt32(slot * 8, true);
  }

  /**
   * Blocks until something is ready or `timeoutMs` passes (-1 = forever). Returns the number of
   * ready slots; 0 on timeout or EINTR (a signal landed on this thread: just poll again).
   */
  wait(timeoutMs: number): number {
    const r = libc.poll(this.#bytes, size64(this.#count), timeoutMs);
    if (r < 0) {
      const e = errno();
      if (e === Errno.EINTR) return 0;
      throw new SystemError("poll", e);
    }
    return r;
  }
}

/** Readiness flags, re-exported for handlers. */
export const POLLIN = C.POLLIN;
export const POLLOUT = C.POLLOUT;
export const POLLERR = C.POLLERR;
export const POLLHUP = C.POLLHUP;
export const POLLNVAL = C.POLLNVAL;
export const POLLRDHUP = C.POLLRDHUP;

/** Creates a nonblocking, CLOEXEC eventfd. */
export function createEventFd(initial = 0): OwnedFd {
  return ownedOrThrow(libc.eventfd(initial, C.EFD_NONBLOCK | C.EFD_CLOEXEC), "eventfd");
}

const counter = new Uint8Array(new ArrayBuffer(8));

/** Adds `value` to an eventfd's counter (wakes pollers). */
export function signalEventFd(fd: OwnedFd | number, value = 1): void {
  new DataView(counter.buffer).setBigUint64(0, BigInt(value), true);
  const r = libc.write(typeof fd === "number" ? fd : fd.fd, counter, 8n);
  if (r < 0 && errno() !== Errno.EAGAIN) throw new SystemError("write(eventfd)", errno());
}

/** Reads and resets an eventfd's counter; 0 when it was not signalled. */
export function drainEventFd(fd: OwnedFd | number): number {
  const r = libc.read(typeof fd === "number" ? fd : fd.fd, counter, 8n);
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN) return 0;
    throw new SystemError("read(eventfd)", e);
  }
  return Number(new DataView(counter.buffer).getBigUint64(0, true));
}
