/**
 * Owned file descriptors: every fd the proxy touches has exactly one owner, and ownership moves
 * explicitly. A relayed fd is owned by the message carrying it until the send succeeds; then
 * the kernel holds its own reference and the proxy's copy is closed (docs/ffi-notes.md, pitfall 8).
 *
 * @module
 */

import { C, libc } from "./libc.ts";
import { errno } from "./libc.ts";
import { Errno, SystemError } from "./errors.ts";

/** A file descriptor with a single owner. Closing is idempotent. */
export class OwnedFd {
  #fd: number;

  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`Invalid fd: ${fd}`);
    this.#fd = fd;
  }

  /** The raw number, valid while open. */
  get fd(): number {
    if (this.#fd < 0) throw new Error("Use of a closed fd");
    return this.#fd;
  }

  /** True until `close()` or `release()`. */
  get isOpen(): boolean {
    return this.#fd >= 0;
  }

  /** Closes the fd; a second call does nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    // Linux releases the fd even when close reports EINTR, so no retry (it could close a reused number).
    libc.close(fd);
  }

  /** Gives up ownership without closing, for a new owner that will close the raw number. */
  release(): number {
    const fd = this.fd;
    this.#fd = -1;
    return fd;
  }

  /** Moves ownership into a fresh object, leaving this one closed. */
  move(): OwnedFd {
    return new OwnedFd(this.release());
  }

  /** A duplicate with its own ownership (CLOEXEC). */
  dup(): OwnedFd {
    const r = libc.fcntl(this.fd, 1030, /* F_DUPFD_CLOEXEC */ 0n);
    if (r < 0) throw new SystemError("fcntl(F_DUPFD_CLOEXEC)", errno());
    return new OwnedFd(r);
  }

  /** Sets or clears O_NONBLOCK. */
  setNonBlocking(on: boolean): void {
    const flags = libc.fcntl(this.fd, C.F_GETFL, 0n);
    if (flags < 0) throw new SystemError("fcntl(F_GETFL)", errno());
    const next = on ? flags | C.O_NONBLOCK : flags & ~C.O_NONBLOCK;
    if (next !== flags && libc.fcntl(this.fd, C.F_SETFL, BigInt(next)) < 0) {
      throw new SystemError("fcntl(F_SETFL)", errno());
    }
  }

  toString(): string {
    return this.#fd >= 0 ? `fd ${this.#fd}` : "fd (closed)";
  }
}

/** Closes every fd in the list (owned or already closed). */
export function closeAll(fds: Iterable<OwnedFd>): void {
  for (const fd of fds) fd.close();
}

/** Wraps a raw result: -1 becomes a SystemError, anything else an OwnedFd. */
export function ownedOrThrow(result: number, syscall: string, context?: string): OwnedFd {
  if (result < 0) throw new SystemError(syscall, errno(), context);
  return new OwnedFd(result);
}

/** Retries a syscall while it fails with EINTR; returns the final result (errno intact). */
export function retryEintr(call: () => number): number {
  for (;;) {
    const r = call();
    if (r !== -1 || errno() !== Errno.EINTR) return r;
  }
}
