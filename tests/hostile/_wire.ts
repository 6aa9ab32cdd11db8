/**
 * Wire helpers for hostile peers: payload builders written from the spec tables (not from the
 * codec, so a codec bug cannot hide in them), a sendmsg that attaches any number of fds (the
 * ffi layer refuses more than 8, which is exactly what a hostile peer must be able to do), and
 * a seeded PRNG so that every random case reproduces.
 *
 * @module
 */

import type { OwnedFd } from "../../ffi/fd.ts";
import { addressOf, C, errno, libc, setPointer } from "../../ffi/libc.ts";
import { Errno, SystemError } from "../../ffi/errors.ts";
import { createMemfd } from "../../ffi/pipe.ts";
import { createEventFd, POLLOUT, PollSet } from "../../ffi/poll.ts";

export { frame, readU64, u64 } from "../support/scripted_peer.ts";

/** Header flags as QEMU sends them. */
export const REQ = 0x1;
/** A request with NEED_REPLY. */
export const NEED_REPLY = 0x9;
/** A reply (QEMU accepts exactly this). */
export const REPLY = 0x5;

/** Protocol feature bits used by the tests (spec §1.3.2). */
export const PF = {
  MQ: 1n << 0n,
  LOG_SHMFD: 1n << 1n,
  REPLY_ACK: 1n << 3n,
  BACKEND_REQ: 1n << 5n,
  CONFIG: 1n << 9n,
  BACKEND_SEND_FD: 1n << 10n,
  HOST_NOTIFIER: 1n << 11n,
  INFLIGHT_SHMFD: 1n << 12n,
  CONFIGURE_MEM_SLOTS: 1n << 15n,
  STATUS: 1n << 16n,
  SHARED_OBJECT: 1n << 18n,
  DEVICE_STATE: 1n << 19n,
  GET_VRING_BASE_INFLIGHT: 1n << 20n,
  GPA_ADDRESSES: 1n << 21n,
  SHMEM: 1n << 22n,
  GET_VRING_BASE_SKIP_DRAIN: 1n << 23n,
  PAGEFAULT: 1n << 8n,
} as const;

/** Virtio features a back-end offers in the tests: VERSION_1 and PROTOCOL_FEATURES (bit 30). */
export const VIRTIO_FEATURES = (1n << 32n) | (1n << 30n);

function buffer(n: number): [Uint8Array, DataView] {
  const b = new Uint8Array(new ArrayBuffer(n));
  return [b, new DataView(b.buffer)];
}

/** `struct vhost_vring_state`: index, num (8 bytes). */
export function vringState(index: number, num: number): Uint8Array {
  const [b, v] = buffer(8);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return b;
}

/** SET_VRING_KICK/CALL/ERR payload: index in bits 0–7, NOFD in bit 8. */
export function vringFile(index: number, noFd: boolean): Uint8Array {
  const [b, v] = buffer(8);
  v.setBigUint64(0, BigInt(index & 0xff) | (noFd ? 0x100n : 0n), true);
  return b;
}

/** `struct vhost_vring_addr` (40 bytes); defaults are aligned as rust-vmm requires. */
export function vringAddr(
  o: { index?: number; flags?: number; desc?: bigint; used?: bigint; avail?: bigint } = {},
): Uint8Array {
  const [b, v] = buffer(40);
  v.setUint32(0, o.index ?? 0, true);
  v.setUint32(4, o.flags ?? 0, true);
  v.setBigUint64(8, o.desc ?? 0x1000n, true);
  v.setBigUint64(16, o.used ?? 0x2000n, true);
  v.setBigUint64(24, o.avail ?? 0x3000n, true);
  v.setBigUint64(32, 0n, true);
  return b;
}

/** `struct vhost_iotlb_msg` (32 bytes); type 1 = miss, perm 3 = RW. */
export function iotlb(iova: bigint, o: { size?: bigint; perm?: number; type?: number } = {}) {
  const [b, v] = buffer(32);
  v.setBigUint64(0, iova, true);
  v.setBigUint64(8, o.size ?? 0x1000n, true);
  v.setBigUint64(16, 0x7f00_0000_0000n + iova, true);
  v.setUint8(24, o.perm ?? 3);
  v.setUint8(25, o.type ?? 1);
  return b;
}

/** One 32-byte memory region (spec §1.4.1). */
export interface Region {
  gpa: bigint;
  size: bigint;
  uaddr: bigint;
  offset?: bigint;
}

/** A plain region `i`: 4 KiB at 4 KiB × i. */
export function region(i: number): Region {
  return {
    gpa: BigInt(i) * 0x1000n,
    size: 0x1000n,
    uaddr: 0x7f00_0000_0000n + BigInt(i) * 0x1000n,
  };
}

/**
 * `VhostUserMemory`: nregions (may lie, for hostile cases), padding, then the regions given.
 */
export function memTable(regions: Region[], o: { nregions?: number; padding?: number } = {}) {
  const [b, v] = buffer(8 + 32 * regions.length);
  v.setUint32(0, o.nregions ?? regions.length, true);
  v.setUint32(4, o.padding ?? 0, true);
  regions.forEach((r, i) => {
    v.setBigUint64(8 + 32 * i, r.gpa, true);
    v.setBigUint64(16 + 32 * i, r.size, true);
    v.setBigUint64(24 + 32 * i, r.uaddr, true);
    v.setBigUint64(32 + 32 * i, r.offset ?? 0n, true);
  });
  return b;
}

/** `VhostUserMemRegMsg` (40 bytes): padding u64, then one region. */
export function memReg(r: Region): Uint8Array {
  const [b, v] = buffer(40);
  v.setBigUint64(8, r.gpa, true);
  v.setBigUint64(16, r.size, true);
  v.setBigUint64(24, r.uaddr, true);
  v.setBigUint64(32, r.offset ?? 0n, true);
  return b;
}

/** `VhostUserConfig`: offset, size (may lie), flags, then `data`. */
export function config(
  data: Uint8Array,
  o: { offset?: number; size?: number; flags?: number } = {},
) {
  const [b, v] = buffer(12 + data.length);
  v.setUint32(0, o.offset ?? 0, true);
  v.setUint32(4, o.size ?? data.length, true);
  v.setUint32(8, o.flags ?? 0, true);
  b.set(data, 12);
  return b;
}

/** `VhostUserLog` (16 bytes). */
export function logArea(mmapSize: bigint, mmapOffset = 0n): Uint8Array {
  const [b, v] = buffer(16);
  v.setBigUint64(0, mmapSize, true);
  v.setBigUint64(8, mmapOffset, true);
  return b;
}

/** `VhostUserInflight` (24 bytes incl. tail padding). */
export function inflight(o: { mmapSize?: bigint; numQueues?: number; queueSize?: number } = {}) {
  const [b, v] = buffer(24);
  v.setBigUint64(0, o.mmapSize ?? 0n, true);
  v.setUint16(16, o.numQueues ?? 1, true);
  v.setUint16(18, o.queueSize ?? 128, true);
  return b;
}

/** `VhostUserTransferDeviceState` (8 bytes). */
export function deviceStateParams(direction: number, phase: number): Uint8Array {
  return vringState(direction, phase);
}

/** A GET_SHMEM_CONFIG reply: 256 region sizes indexed by region id (spec §1.10). */
export function shmemConfig(sizes: Record<number, bigint>): Uint8Array {
  const [b, v] = buffer(8 + 8 * 256);
  const ids = Object.keys(sizes).map(Number);
  v.setUint32(0, ids.length, true);
  for (const id of ids) v.setBigUint64(8 + 8 * id, sizes[id], true);
  return b;
}

/** A 16-byte UUID payload. */
export function uuid(seed = 1): Uint8Array {
  return new Uint8Array(16).map((_, i) => (seed * 31 + i * 7) & 0xff);
}

/** What kind of fd a hostile message carries. */
export type FdKind = "eventfd" | "memfd";

/** `n` fresh fds of a kind (the caller owns and closes them). */
export function makeFds(n: number, kind: FdKind = "eventfd"): OwnedFd[] {
  const out: OwnedFd[] = [];
  for (let i = 0; i < n; i++) {
    out.push(kind === "memfd" ? createMemfd(`hostile${i}`, 4096) : createEventFd());
  }
  return out;
}

const CMSG_HDR = 16;

/**
 * sendmsg of `bytes[offset…]` with any number of fds attached (the kernel allows 253): the only
 * way to make the proxy's recvmsg see MSG_CTRUNC. Blocks (bounded) while the socket is full.
 * Returns the bytes sent by the first successful call; fds ride with it only.
 */
export function sendmsgFds(fd: number, bytes: Uint8Array, fds: readonly number[]): number {
  const control = fds.length > 0 ? CMSG_HDR + ((4 * fds.length + 7) & ~7) : 0;
  const buf = new Uint8Array(new ArrayBuffer(56 + 16 + control));
  const v = new DataView(buf.buffer);
  const base = addressOf(buf);
  setPointer(v, 16, base + 56); // msg_iov
  setPointer(v, 24, 1); // msg_iovlen
  setPointer(v, 32, control > 0 ? base + 72 : 0); // msg_control
  setPointer(v, 40, control); // msg_controllen
  setPointer(v, 56, addressOf(bytes));
  setPointer(v, 64, bytes.length);
  if (control > 0) {
    setPointer(v, 72, CMSG_HDR + 4 * fds.length); // cmsg_len
    v.setInt32(80, C.SOL_SOCKET, true);
    v.setInt32(84, C.SCM_RIGHTS, true);
    fds.forEach((f, i) => v.setInt32(88 + 4 * i, f, true));
  }
  const poll = new PollSet();
  poll.add(fd, POLLOUT);
  const deadline = performance.now() + 5000;
  for (;;) {
    const n = libc.sendmsg(fd, buf, C.MSG_DONTWAIT | C.MSG_NOSIGNAL);
    if (n >= 0) return n;
    const e = errno();
    if (e === Errno.EINTR) continue;
    if (e !== Errno.EAGAIN || performance.now() > deadline) throw new SystemError("sendmsg", e);
    poll.wait(100);
  }
}

/** Sleeps synchronously (the proxy under test runs in another process). */
export function sleepSync(ms: number): void {
  if (ms <= 0) return;
  const p = new PollSet();
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) p.wait(Math.max(1, Math.ceil(deadline - performance.now())));
}

/**
 * sfc32: a small, fast, seedable PRNG. Every random choice in the hostile suite and the fuzzer
 * comes from one of these, so a seed reproduces a run exactly.
 */
export class Prng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    this.#a = 0x9e3779b9;
    this.#b = 0x243f6a88;
    this.#c = 0xb7e15162;
    this.#d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }

  /** A uniform u32. */
  u32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.u32() / 2 ** 32;
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(new ArrayBuffer(n));
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A u64 as a bigint. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }
}
