/**
 * libc through Deno FFI: the symbols the proxy needs and nothing else.
 *
 * Every symbol is synchronous. errno is only meaningful right after a synchronous call on the
 * same thread (docs/ffi-notes.md §1.4): a `nonblocking: true` call runs on a pool thread and its errno is
 * lost, so the proxy never uses one. `ssize_t` results are declared `i32`: on x86_64 that reads
 * the low half of rax, exact for -1 and any transfer below 2 GiB, and avoids a BigInt per call.
 *
 * @module
 */

const symbols = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  splice: {
    parameters: ["i32", "pointer", "i32", "pointer", "usize", "u32"],
    result: "i32",
  },
  tee: { parameters: ["i32", "i32", "usize", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  dup: { parameters: ["i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
  gettid: { parameters: [], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened libc with typed symbols. */
export const libc: Deno.DynamicLibrary<typeof symbols>["symbols"] = Deno.dlopen(
  "libc.so.6",
  symbols,
).symbols;

let errnoView: Deno.UnsafePointerView | undefined;

/**
 * The calling thread's errno. Read it immediately after the failing call: any other FFI call in
 * between may overwrite it. The slot address is per thread and constant, so it is cached per
 * module instance (each Worker evaluates its own).
 */
export function errno(): number {
  if (errnoView === undefined) {
    const slot = libc.__errno_location();
    if (slot === null) throw new Error("Cannot locate errno: __errno_location returned NULL");
    errnoView = new Deno.UnsafePointerView(slot);
  }
  return errnoView.getInt32(0);
}

const bufferAddresses = new WeakMap<ArrayBufferLike, number>();

/**
 * Address of an ArrayBuffer-backed view, as a number (addresses are below 2^53). The base
 * address of each buffer is cached: backing stores never move, and asking V8 each time costs a
 * pointer object and a BigInt on the relay's hot path.
 */
export function addressOf(view: Uint8Array): number {
  let base = bufferAddresses.get(view.buffer);
  if (base === undefined) {
    const whole = new Uint8Array(view.buffer as ArrayBuffer);
    base = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(whole)));
    bufferAddresses.set(view.buffer, base);
  }
  return base + view.byteOffset;
}

/**
 * A count for a 64-bit parameter (`usize`, `u64`). Deno's FFI accepts a plain number there
 * (docs/ffi-notes.md §1.1); the type declarations say bigint, and converting would allocate a BigInt
 * on every call of the hot path.
 */
export function size64(n: number): bigint {
  return n as unknown as bigint;
}

/** Writes a pointer-sized value as two u32 halves, avoiding a BigInt per call. */
export function setPointer(view: DataView, offset: number, address: number): void {
  view.setUint32(offset, address % 2 ** 32, true);
  view.setUint32(offset + 4, Math.floor(address / 2 ** 32), true);
}

/** Reads a size_t written by the kernel (always small here). */
export function getSize(view: DataView, offset: number): number {
  return view.getUint32(offset, true) + view.getUint32(offset + 4, true) * 2 ** 32;
}

/** Constants from Linux x86_64 headers used across ffi/. */
export const C = {
  AF_UNIX: 1,
  SOCK_STREAM: 1,
  SOCK_NONBLOCK: 0o4000,
  SOCK_CLOEXEC: 0o2000000,
  SHUT_RD: 0,
  SHUT_WR: 1,
  SHUT_RDWR: 2,
  SOL_SOCKET: 1,
  SCM_RIGHTS: 1,
  SO_PEERCRED: 17,
  MSG_CTRUNC: 0x8,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  O_NONBLOCK: 0o4000,
  O_CLOEXEC: 0o2000000,
  F_GETFD: 1,
  F_SETFD: 2,
  F_GETFL: 3,
  F_SETFL: 4,
  FD_CLOEXEC: 1,
  F_SETPIPE_SZ: 1031,
  F_GETPIPE_SZ: 1032,
  POLLIN: 0x1,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  POLLRDHUP: 0x2000,
  EFD_NONBLOCK: 0o4000,
  EFD_CLOEXEC: 0o2000000,
  MFD_CLOEXEC: 1,
  SPLICE_F_MOVE: 1,
  SPLICE_F_NONBLOCK: 2,
  SPLICE_F_MORE: 4,
} as const;
