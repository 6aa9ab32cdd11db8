/**
 * epoll(7), for a relay with many connections: one kernel-side interest set instead of a
 * pollfd array rebuilt per turn. The reactor uses poll(2) because a proxy serves a handful of
 * sockets at a time (QEMU connects once per device); this is the scaling path, kept tested.
 *
 * `struct epoll_event` is packed on x86_64: 12 bytes, events u32 at 0, data u64 at 4
 * (docs/ffi-notes.md §1.2).
 *
 * @module
 */

import { C, errno, libc } from "./libc.ts";
import { Errno, SystemError } from "./errors.ts";
import { type OwnedFd, ownedOrThrow } from "./fd.ts";

const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EVENT_SIZE = 12;

/** A readiness report: the fd registered and its events. */
export interface EpollReady {
  fd: number;
  events: number;
}

/** An epoll instance owning its fd. */
export class Epoll {
  readonly #ep: OwnedFd;
  readonly #one = new Uint8Array(new ArrayBuffer(EVENT_SIZE));
  #events = new Uint8Array(new ArrayBuffer(EVENT_SIZE * 64));

  constructor() {
    this.#ep = ownedOrThrow(libc.epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
  }

  #ctl(op: number, fd: number, events: number, name: string): void {
    const v = new DataView(this.#one.buffer);
    v.setUint32(0, events, true);
    v.setUint32(4, fd, true); // data: the fd itself
    v.setUint32(8, 0, true);
    if (libc.epoll_ctl(this.#ep.fd, op, fd, this.#one) < 0) {
      throw new SystemError(name, errno(), `fd ${fd}`);
    }
  }

  /** Starts watching `fd` for `events` (POLLIN/POLLOUT values equal EPOLLIN/EPOLLOUT). */
  add(fd: number, events: number): void {
    this.#ctl(EPOLL_CTL_ADD, fd, events, "epoll_ctl(ADD)");
  }

  /** Changes the events of a watched fd. */
  modify(fd: number, events: number): void {
    this.#ctl(EPOLL_CTL_MOD, fd, events, "epoll_ctl(MOD)");
  }

  /** Stops watching `fd`. */
  remove(fd: number): void {
    this.#ctl(EPOLL_CTL_DEL, fd, 0, "epoll_ctl(DEL)");
  }

  /** Waits up to `timeoutMs` (-1 = forever); EINTR gives an empty list. */
  wait(timeoutMs: number): EpollReady[] {
    const max = this.#events.length / EVENT_SIZE;
    const n = libc.epoll_wait(this.#ep.fd, this.#events, max, timeoutMs);
    if (n < 0) {
      const e = errno();
      if (e === Errno.EINTR) return [];
      throw new SystemError("epoll_wait", e);
    }
    const v = new DataView(this.#events.buffer);
    const out: EpollReady[] = [];
    for (let i = 0; i < n; i++) {
      out.push({
        events: v.getUint32(i * EVENT_SIZE, true),
        fd: v.getUint32(i * EVENT_SIZE + 4, true),
      });
    }
    return out;
  }

  close(): void {
    this.#ep.close();
  }
}

/** EPOLLIN / EPOLLOUT / EPOLLHUP share poll's values. */
export const EPOLLIN = C.POLLIN;
export const EPOLLOUT = C.POLLOUT;
export const EPOLLHUP = C.POLLHUP;
