/**
 * Pipes, raw read/write, splice and memfd: the byte-stream side of device-state transfer.
 *
 * Results are values (`-1` = would block, `0` = EOF) because a nonblocking copy loop meets both
 * all the time; real failures throw SystemError.
 *
 * @module
 */

import { addressOf, C, errno, libc, size64 } from "./libc.ts";
import { Errno, SystemError } from "./errors.ts";
import { OwnedFd, ownedOrThrow, retryEintr } from "./fd.ts";

/** A pipe as [read end, write end], both CLOEXEC; nonblocking on request. */
export function createPipe(options: { nonBlocking?: boolean } = {}): [OwnedFd, OwnedFd] {
  const out = new Int32Array(new ArrayBuffer(8));
  const flags = C.O_CLOEXEC | (options.nonBlocking ? C.O_NONBLOCK : 0);
  if (libc.pipe2(new Uint8Array(out.buffer), flags) < 0) throw new SystemError("pipe2", errno());
  return [new OwnedFd(out[0]), new OwnedFd(out[1])];
}

/** Sets a pipe's capacity (F_SETPIPE_SZ); returns the size the kernel granted. */
export function setPipeSize(fd: OwnedFd, bytes: number): number {
  const r = libc.fcntl(fd.fd, C.F_SETPIPE_SZ, BigInt(bytes));
  if (r < 0) throw new SystemError("fcntl(F_SETPIPE_SZ)", errno());
  return r;
}

/** Reads into `buf[offset…]`. Returns bytes read, 0 at EOF, -1 when it would block. */
export function readFd(fd: OwnedFd | number, buf: Uint8Array, offset = 0, length?: number): number {
  const raw = typeof fd === "number" ? fd : fd.fd;
  const view = buf.subarray(offset, offset + (length ?? buf.length - offset));
  const r = retryEintr(() => libc.read(raw, view, size64(view.length)));
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN) return -1;
    throw new SystemError("read", e);
  }
  return r;
}

/** Writes from `buf[offset…]`. Returns bytes written, or -1 when it would block. */
export function writeFd(
  fd: OwnedFd | number,
  buf: Uint8Array,
  offset = 0,
  length?: number,
): number {
  const raw = typeof fd === "number" ? fd : fd.fd;
  const view = buf.subarray(offset, offset + (length ?? buf.length - offset));
  const r = retryEintr(() => libc.write(raw, view, size64(view.length)));
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN) return -1;
    throw new SystemError("write", e);
  }
  return r;
}

/** Writes all of `buf` to a blocking fd. */
export function writeAll(fd: OwnedFd | number, buf: Uint8Array): void {
  let off = 0;
  while (off < buf.length) {
    const n = writeFd(fd, buf, off);
    if (n < 0) throw new SystemError("write", Errno.EAGAIN, "writeAll on a nonblocking fd");
    off += n;
  }
}

/**
 * Moves up to `length` bytes between two fds without copying through user space (one of them
 * must be a pipe). Returns bytes moved, 0 at EOF, -1 when it would block; throws EINVAL when the
 * fds cannot be spliced (callers fall back to read/write).
 */
export function spliceFd(from: OwnedFd | number, to: OwnedFd | number, length: number): number {
  const a = typeof from === "number" ? from : from.fd;
  const b = typeof to === "number" ? to : to.fd;
  const r = retryEintr(() =>
    libc.splice(
      a,
      null,
      b,
      null,
      size64(length),
      C.SPLICE_F_MOVE | C.SPLICE_F_NONBLOCK | C.SPLICE_F_MORE,
    )
  );
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN) return -1;
    throw new SystemError("splice", e);
  }
  return r;
}

/**
 * Duplicates up to `length` bytes from the head of pipe `from` into pipe `to` without consuming
 * them. Returns bytes duplicated, 0 when `from` is empty with no writer left (EOF), -1 when it
 * would block (nothing in `from`, or no room in `to`).
 */
export function teeFd(from: OwnedFd | number, to: OwnedFd | number, length: number): number {
  const a = typeof from === "number" ? from : from.fd;
  const b = typeof to === "number" ? to : to.fd;
  const r = retryEintr(() => libc.tee(a, b, size64(length), C.SPLICE_F_NONBLOCK));
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN) return -1;
    throw new SystemError("tee", e);
  }
  return r;
}

const FIONREAD = 0x541b;
const readable = new Uint8Array(new ArrayBuffer(4));

/** Bytes waiting to be read in a pipe or socket (FIONREAD). */
export function bytesReadable(fd: OwnedFd | number): number {
  const raw = typeof fd === "number" ? fd : fd.fd;
  if (libc.ioctl(raw, size64(FIONREAD), readable) < 0) {
    throw new SystemError("ioctl(FIONREAD)", errno());
  }
  return new DataView(readable.buffer).getInt32(0, true);
}

/** An anonymous memory file (memfd), CLOEXEC, sized `bytes`. */
export function createMemfd(name: string, bytes = 0): OwnedFd {
  const fd = ownedOrThrow(
    libc.memfd_create(new TextEncoder().encode(name + "\0"), C.MFD_CLOEXEC),
    "memfd_create",
  );
  if (bytes > 0 && libc.ftruncate(fd.fd, BigInt(bytes)) < 0) {
    const e = errno();
    fd.close();
    throw new SystemError("ftruncate", e);
  }
  return fd;
}

/** Address helper re-exported for tests that need raw pointers. */
export { addressOf };
