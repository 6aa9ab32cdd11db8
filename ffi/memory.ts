/**
 * Anonymous memory mapped outside the JavaScript heaps, shared by the threads of the process.
 *
 * A garbage-collected buffer gives its pages back only when both isolates that saw it have
 * collected it, which a quiet relay may never do; a mapping is given back with one madvise.
 * Page faults are dear on these VMs (measured ~14 µs per 4 KiB first touch), so the mapping
 * asks for transparent huge pages where the kernel offers them on request.
 *
 * @module
 */

import { errno, libc } from "./libc.ts";
import { SystemError } from "./errors.ts";

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;
const MADV_DONTNEED = 4;
const MADV_HUGEPAGE = 14;
const HUGE = 2 << 20;

/** A private anonymous mapping: address space only, until its pages are touched. */
export class MappedMemory {
  /** Start address (2 MiB aligned), valid in every thread of the process. */
  readonly address: number;
  readonly bytes: number;
  readonly #pointer: Deno.PointerObject;

  /** Maps `bytes` (rounded up to 2 MiB). */
  constructor(bytes: number) {
    this.bytes = Math.ceil(bytes / HUGE) * HUGE;
    const raw = libc.mmap(
      null,
      BigInt(this.bytes + HUGE),
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
      -1,
      0n,
    );
    const start = Number(Deno.UnsafePointer.value(raw));
    if (raw === null || start === 2 ** 64 - 1 || start === -1) {
      throw new SystemError("mmap", errno(), `${this.bytes} bytes`);
    }
    // The spare 2 MiB lets the start be aligned, so that huge pages can back the whole range.
    this.address = Math.ceil(start / HUGE) * HUGE;
    this.#pointer = Deno.UnsafePointer.create(BigInt(this.address))!;
    libc.madvise(this.#pointer, BigInt(this.bytes), MADV_HUGEPAGE); // optional: EINVAL without THP
  }

  /** A view of the whole mapping; see {@linkcode viewOfMapping} for another thread. */
  view(): Uint8Array {
    return viewOfMapping(this.address, this.bytes);
  }

  /** Gives the pages back to the kernel; the range reads as zeros afterwards. */
  release(): void {
    if (libc.madvise(this.#pointer, BigInt(this.bytes), MADV_DONTNEED) !== 0) {
      throw new SystemError("madvise", errno(), "MADV_DONTNEED");
    }
  }
}

/** A view of a mapping made by another thread of this process. */
export function viewOfMapping(address: number, bytes: number): Uint8Array {
  const pointer = Deno.UnsafePointer.create(BigInt(address))!;
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, bytes));
}

const MAP_SHARED = 0x01;
const PAGE = 4096;

/**
 * Reads a little-endian u16 at `offset` of the file behind `fd` (a guest memory region's memfd)
 * through a one-page shared read-only mapping: how the proxy learns a ring's used index when
 * the back-end that knew it is gone.
 */
export function readU16At(fd: number, offset: bigint): number {
  const pageStart = offset & ~BigInt(PAGE - 1);
  const within = Number(offset - pageStart);
  const span = within + 2 > PAGE ? 2 * PAGE : PAGE;
  const raw = libc.mmap(null, BigInt(span), PROT_READ, MAP_SHARED, fd, pageStart);
  if (raw === null || Deno.UnsafePointer.value(raw) === 0xffffffffffffffffn) {
    throw new SystemError("mmap", errno(), `fd ${fd} at offset ${pageStart}`);
  }
  try {
    return new Deno.UnsafePointerView(raw).getUint16(within);
  } finally {
    libc.munmap(raw, BigInt(span));
  }
}
