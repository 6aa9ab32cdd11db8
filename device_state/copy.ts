/**
 * Streams a device-state blob from one fd to another inside the relay's poll loop, counting
 * bytes and time and fingerprinting it (device_state/fingerprint.ts) on the way, never blocking the loop.
 *
 * Three ways to move the bytes, chosen by what the transfer needs:
 * - `splice`: when both ends are pipes and nothing rewrites the bytes, the data is moved by
 *   splice(2) and a tee(2) copy feeds the hash, so the payload itself never enters user space
 *   (docs/ffi-notes.md §3.3: 2–3× the throughput of read/write at a fraction of the CPU);
 * - `copy`: read/write through a 1 MiB buffer, for sockets or when a fault rewrites bytes;
 * - `buffer`: read everything first, validate, then deliver (`--state-buffer`).
 *
 * The writer signals the end by closing its fd; the copy then closes the reader's fd so that
 * the reader sees EOF (QEMU's read loop and virtiofsd's read_to_end wait for exactly that).
 *
 * @module
 */

import type { OwnedFd } from "../ffi/fd.ts";
import { DEFAULT_FINGERPRINT, type FingerprintAlgorithm, hashesInline } from "./fingerprint.ts";
import { SystemError } from "../ffi/errors.ts";
import { isPipe } from "../ffi/fdinfo.ts";
import {
  bytesReadable,
  createPipe,
  readFd,
  setPipeSize,
  spliceFd,
  teeFd,
  writeFd,
} from "../ffi/pipe.ts";
import { POLLERR, POLLHUP, POLLIN, POLLOUT } from "../ffi/poll.ts";
import type { Reactor, Timer, Watch } from "../ffi/reactor.ts";
import { BufferPool } from "../ffi/buffer_pool.ts";
import {
  InlineHash,
  type PendingDigest,
  type StreamHash,
  type TrailingHasher,
} from "./stream_hash.ts";

/** How the bytes moved. */
export type CopyMode = "splice" | "copy" | "buffer";

/** Faults injected into the stream (see `--fault`). */
export interface StreamFaults {
  /**
   * Flip bytes (every 4096th, from stream offset 1) so that a parser rejects the blob. Offset 1
   * rather than 0 keeps a format's leading tag intact (virtiofsd's version variant), so the
   * blob is still recognised, and then found corrupt, by whoever validates it.
   */
  corrupt?: boolean;
  /** Deliver only this many bytes, then close both ends. */
  truncateAt?: number;
  /** Wait this long before moving the first byte. */
  delayMs?: number;
}

/** Options of one transfer. */
export interface StateCopyOptions {
  /** Write every byte that passes (after faults) to this file too. */
  dumpPath?: string;
  /** Read all first, validate, then deliver. */
  buffer?: boolean;
  /** With `buffer`: returns an error sentence to refuse the blob before the reader sees a byte. */
  validate?: (blob: Uint8Array) => string | undefined;
  faults?: StreamFaults;
  /**
   * Compute a fingerprint (default true). Off, a pipe-to-pipe transfer is pure splice(2): the
   * bytes never enter user space.
   */
  hash?: boolean;
  /** The fingerprint's algorithm (default xxh3-128, hashed inline). */
  algorithm?: FingerprintAlgorithm;
  /**
   * Hash on this worker's thread instead of inline, for an algorithm that does not keep up with
   * the stream (SHA-256, BLAKE3): the transfer ends without waiting for the digest, which
   * `CopyResult.digest` delivers later. Ignored for one that does (xxh3-128).
   */
  hasher?: TrailingHasher;
  /** Most bytes held in memory in buffer mode. */
  maxBufferBytes?: number;
  /** Called once, when the transfer ended (successfully or not). */
  onDone: (result: CopyResult) => void;
  /** Keep the delivered bytes (up to this many) in `CopyResult.blob`, for decoding. */
  keepUpTo?: number;
}

/** What a transfer did. */
export interface CopyResult {
  ok: boolean;
  mode: CopyMode;
  /** Bytes delivered to the reader. */
  bytes: number;
  /** Bytes taken from the writer (differs from `bytes` when truncated or refused). */
  bytesIn: number;
  /** From the start of the transfer (an injected delay included) to its end. */
  durationMs: number;
  /** The fingerprint of the delivered bytes, known now or later; absent when hashing was off. */
  digest?: PendingDigest;
  /** Why it failed, when it did. */
  error?: string;
  /** A fault cut the stream short. */
  truncated?: boolean;
  /** A fault rewrote bytes. */
  corrupted?: boolean;
  /** The delivered bytes, when `keepUpTo` was set and they fit. */
  blob?: Uint8Array;
}

const CHUNK = 1 << 20;
const chunkPool = new BufferPool(CHUNK, 4);
/** Most bytes moved per wake-up, so the main channel keeps its turn. */
const PER_TURN = 4 * CHUNK;

/** One transfer in progress. Owns both fds until it ends. */
export class StateCopy {
  readonly mode: CopyMode;
  readonly #reactor: Reactor;
  readonly #src: OwnedFd;
  readonly #dst: OwnedFd;
  readonly #opts: StateCopyOptions;
  readonly #hash: StreamHash | undefined;
  readonly #dump: Deno.FsFile | undefined;
  #buf: Uint8Array | undefined;
  #pendingOff = 0;
  #pendingLen = 0;
  #teeAhead = 0;
  /** Bytes tee'd into the hash pipe and not yet read from it (hashed after the splice). */
  #hashAhead = 0;
  #hashPipe: [OwnedFd, OwnedFd] | undefined;
  #chunks: Uint8Array[] = [];
  /**
   * The bytes kept for `CopyResult.blob`, in one resizable buffer (reserved up to `keepUpTo`,
   * its pages used as it grows): a stream that outgrows it shrinks it to 0, which gives the
   * pages back at once. Slices of each chunk would have waited for a GC instead: 16 MiB of
   * garbage per large transfer, seen as +69 MiB of RSS over four 64 MiB transfers.
   */
  #kept: ArrayBuffer | undefined;
  #keptBytes = 0;
  #keptAll = true;
  /** The hash keeps the bytes for `CopyResult.blob` (it holds them anyway). */
  readonly #hashKeeps: boolean;
  #blob: Uint8Array | undefined;
  #bytesIn = 0;
  #bytesOut = 0;
  #started = 0;
  #srcEof = false;
  /** Splice without hashing: which end the last would-block was waiting on. */
  #blockedOn: "src" | "dst" = "src";
  #done = false;
  #delay: Timer | undefined;
  #truncated = false;
  #corrupted = false;
  readonly #srcWatch: Watch;
  readonly #dstWatch: Watch;

  /** Starts moving bytes from `src` (the writer's end) to `dst` (the reader's end). */
  constructor(reactor: Reactor, src: OwnedFd, dst: OwnedFd, options: StateCopyOptions) {
    this.#reactor = reactor;
    this.#src = src;
    this.#dst = dst;
    this.#opts = options;
    try {
      this.#dump = options.dumpPath
        ? Deno.openSync(options.dumpPath, { write: true, create: true, truncate: true })
        : undefined;
    } catch (e) {
      // The transfer never starts: both ends are closed, as at any other end.
      src.close();
      dst.close();
      throw new Error(
        `cannot open the dump file "${options.dumpPath}": ${e instanceof Error ? e.message : e}`,
      );
    }
    src.setNonBlocking(true);
    dst.setNonBlocking(true);
    const hashing = options.hash ?? true;
    const algorithm = options.algorithm ?? DEFAULT_FINGERPRINT;
    // Buffer mode hands the whole blob over at once: it is hashed inline; so is a hash that
    // keeps up with the stream.
    const trailing = options.buffer || hashesInline(algorithm) ? undefined : options.hasher;
    this.#hash = hashing ? (trailing?.start(algorithm) ?? new InlineHash(algorithm)) : undefined;
    this.#hashKeeps = (options.keepUpTo ?? 0) > 0 && this.#hash?.retain !== undefined;
    if (this.#hashKeeps) this.#hash!.retain!(options.keepUpTo!);
    const rewrites = options.faults?.corrupt || options.faults?.truncateAt !== undefined;
    this.mode = options.buffer
      ? "buffer"
      : rewrites
      ? "copy"
      : this.#trySplice()
      ? "splice"
      : "copy";
    if (this.mode !== "splice") this.#buf = chunkPool.take();
    this.#srcWatch = {
      fd: src.fd,
      interest: () => this.#srcInterest(),
      // A hang-up on the writer's side is its end of stream, found by the read that returns 0.
      onReady: () => this.#step(0),
    };
    this.#dstWatch = {
      fd: dst.fd,
      interest: () => this.#dstInterest(),
      onReady: (ev) => this.#step(ev),
    };
    this.#started = performance.now();
    const delay = options.faults?.delayMs ?? 0;
    if (delay > 0) {
      this.#delay = reactor.setTimer(delay, () => {
        this.#delay = undefined;
        this.#begin();
      });
    } else {
      this.#begin();
    }
  }

  /** True once the transfer has ended. */
  get done(): boolean {
    return this.#done;
  }

  /** Bytes delivered to the reader so far. */
  get bytesDelivered(): number {
    return this.#bytesOut;
  }

  #begin(): void {
    this.#reactor.add(this.#srcWatch);
    this.#reactor.add(this.#dstWatch);
  }

  /** Both ends pipes? Then splice works; grow the pipes to 1 MiB for fewer wake-ups. */
  #trySplice(): boolean {
    try {
      if (!isPipe(this.#src.fd) || !isPipe(this.#dst.fd)) return false;
      for (const fd of [this.#src, this.#dst]) {
        try {
          setPipeSize(fd, CHUNK);
        } catch {
          // pipe-max-size may be lower for unprivileged users: the default size still works
        }
      }
      if (this.#hash || this.#opts.dumpPath || (this.#opts.keepUpTo ?? 0) > 0) {
        this.#hashPipe = createPipe({ nonBlocking: true });
        setPipeSize(this.#hashPipe[1], CHUNK);
      }
      return true;
    } catch {
      return false;
    }
  }

  #srcInterest(): number {
    if (this.#done || this.#srcEof) return 0;
    if (this.mode === "splice") {
      if (!this.#hashPipe) return this.#blockedOn === "src" ? POLLIN : 0;
      return this.#teeAhead > 0 || !this.#roomToHash() ? 0 : POLLIN;
    }
    if (this.mode === "buffer") return this.#blob ? 0 : POLLIN;
    return this.#pendingLen > 0 || !this.#roomToHash() ? 0 : POLLIN;
  }

  #dstInterest(): number {
    if (this.#done) return 0;
    if (this.mode === "splice") {
      if (!this.#hashPipe) return this.#blockedOn === "dst" ? POLLOUT : 0;
      return this.#teeAhead > 0 ? POLLOUT : 0;
    }
    return this.#pendingLen > 0 ? POLLOUT : 0;
  }

  /** Moves what it can; `readerRevents` are the poll events of the reader's end, if any. */
  #step(readerRevents: number): void {
    if (this.#done) return;
    try {
      if (this.mode === "splice") this.#stepSplice();
      else this.#stepCopy();
    } catch (e) {
      if (e instanceof SystemError && (e.code === "EPIPE" || e.code === "ECONNRESET")) {
        this.#finish(`the reader closed its end after ${this.#bytesOut} bytes`);
      } else {
        this.#finish(e instanceof Error ? e.message : String(e));
      }
      return;
    }
    if (!this.#done && (readerRevents & (POLLERR | POLLHUP)) && this.#dstInterest() !== 0) {
      // The reader vanished while we hold bytes for it: nothing more can be delivered.
      this.#finish(`the reader closed its end after ${this.#bytesOut} bytes`);
    }
  }

  /** Pure splice: nothing to hash, dump or keep, so the pages just move. */
  #stepSpliceOnly(): void {
    let moved = 0;
    while (moved < PER_TURN) {
      const n = spliceFd(this.#src, this.#dst, CHUNK);
      if (n === 0) {
        this.#srcEof = true;
        this.#finish();
        return;
      }
      if (n < 0) {
        // Would block: on an empty writer's pipe, or on a full reader's. FIONREAD says which, so
        // the loop waits on the right end instead of spinning on a readable source.
        this.#blockedOn = bytesReadable(this.#src) > 0 ? "dst" : "src";
        return;
      }
      this.#bytesIn += n;
      this.#bytesOut += n;
      moved += n;
    }
  }

  #stepSplice(): void {
    if (!this.#hashPipe) {
      this.#stepSpliceOnly();
      return;
    }
    const [hashR, hashW] = this.#hashPipe;
    // Each chunk is tee'd, spliced on to the reader, and only then read from the hash pipe and
    // hashed: the reader consumes it and the writer refills its pipe on the other core while
    // this thread hashes (hashing first kept both waiting: 1.38 GB/s, and a third of the two
    // cores idle, measured with 256 MiB SAVEs).
    let moved = 0;
    while (moved < PER_TURN) {
      if (this.#teeAhead > 0) {
        const n = spliceFd(this.#src, this.#dst, this.#teeAhead);
        if (n < 0) {
          // Reader full: hash what it already has meanwhile, then wait for POLLOUT.
          this.#hashTeed(hashR);
          return;
        }
        this.#teeAhead -= n;
        this.#bytesOut += n;
        moved += n;
        continue;
      }
      this.#hashTeed(hashR);
      // A trailing hash too far behind: wait for it, the bytes stay in the writer's pipe.
      if (!this.#roomToHash()) return;
      const n = teeFd(this.#src, hashW, CHUNK);
      if (n < 0) return; // writer has nothing now
      if (n === 0) {
        this.#srcEof = true;
        this.#finish();
        return;
      }
      this.#bytesIn += n;
      this.#teeAhead = n;
      this.#hashAhead = n;
    }
    this.#hashTeed(hashR);
  }

  /** Hashes (dumps, keeps) the bytes tee'd into the hash pipe and not yet read. */
  #hashTeed(hashR: OwnedFd): void {
    if (this.#hashAhead === 0) return;
    const n = this.#hashAhead;
    this.#hashAhead = 0;
    this.#drainHashPipe(hashR, n);
  }

  /** Reads the tee'd copy straight into the hash's buffer, when the hash has one. */
  #drainHashPipe(hashR: OwnedFd, n: number): void {
    let left = n;
    while (left > 0) {
      const scratch = this.#hash?.scratch?.();
      const into = scratch ?? (this.#buf ??= chunkPool.take());
      const r = readFd(hashR, into, 0, Math.min(left, into.length));
      if (r <= 0) throw new Error("The hash pipe lost bytes");
      this.#account(into.subarray(0, r), scratch !== undefined);
      left -= r;
    }
  }

  #stepCopy(): void {
    const buf = this.#buf!;
    let moved = 0;
    while (moved < PER_TURN && !this.#done) {
      if (this.#pendingLen > 0) {
        const n = writeFd(this.#dst, this.#blob ?? buf, this.#pendingOff, this.#pendingLen);
        if (n < 0) return;
        this.#pendingOff += n;
        this.#pendingLen -= n;
        this.#bytesOut += n;
        moved += n;
        if (this.#pendingLen === 0 && this.#blob) {
          this.#finish();
          return;
        }
        if (this.#pendingLen === 0 && this.#truncated) {
          this.#finish();
          return;
        }
        continue;
      }
      if (this.#srcEof || !this.#roomToHash()) return;
      const n = readFd(this.#src, buf, 0, CHUNK);
      if (n < 0) return;
      if (n === 0) {
        this.#srcEof = true;
        if (this.mode === "buffer") this.#deliverBuffered();
        else this.#finish();
        return;
      }
      this.#bytesIn += n;
      if (this.mode === "buffer") {
        this.#collect(buf.subarray(0, n));
        continue;
      }
      const len = this.#applyFaults(buf, this.#bytesIn - n, n);
      this.#account(buf.subarray(0, len));
      this.#pendingOff = 0;
      this.#pendingLen = len;
      if (len === 0) this.#finish();
    }
  }

  #roomToHash(): boolean {
    return this.#hash === undefined || this.#hash.hasRoom();
  }

  /**
   * Dumps, (within the cap) keeps and hashes bytes on their way to the reader; `inScratch`: they
   * were read into the hash's own buffer (last, as the hash may hand it on).
   */
  #account(chunk: Uint8Array, inScratch = false): void {
    if (this.#dump) {
      try {
        writeFileAll(this.#dump, chunk);
      } catch (e) {
        throw new Error(
          `writing the dump "${this.#opts.dumpPath}" failed: ${e instanceof Error ? e.message : e}`,
        );
      }
    }
    const cap = this.#hashKeeps ? 0 : this.#opts.keepUpTo ?? 0;
    if (this.#keptAll && this.#keptBytes + chunk.length <= cap) {
      this.#kept ??= new ArrayBuffer(0, { maxByteLength: cap });
      this.#kept.resize(this.#keptBytes + chunk.length);
      new Uint8Array(this.#kept).set(chunk, this.#keptBytes);
      this.#keptBytes += chunk.length;
    } else if (this.#keptAll) {
      this.#keptAll = false;
      this.#kept?.resize(0);
      this.#kept = undefined;
    }
    if (inScratch) this.#hash!.commit!(chunk.length);
    else this.#hash?.update(chunk);
  }

  /** Applies faults to `buf[0..n)` whose first byte is stream offset `at`; returns bytes to keep. */
  #applyFaults(buf: Uint8Array, at: number, n: number): number {
    const f = this.#opts.faults;
    if (!f) return n;
    let keep = n;
    if (f.truncateAt !== undefined && at + n > f.truncateAt) {
      keep = Math.max(0, f.truncateAt - at);
      this.#truncated = true;
    }
    if (f.corrupt) {
      for (let off = (4097 - (at % 4096)) % 4096; off < keep; off += 4096) {
        buf[off] ^= 0xff;
        this.#corrupted = true;
      }
    }
    return keep;
  }

  #collect(chunk: Uint8Array): void {
    const limit = this.#opts.maxBufferBytes ?? 2 ** 31;
    if (this.#bytesIn > limit) {
      throw new Error(`State exceeds the buffer limit of ${limit} bytes`);
    }
    this.#chunks.push(chunk.slice());
  }

  #deliverBuffered(): void {
    const blob = new Uint8Array(new ArrayBuffer(this.#bytesIn));
    let off = 0;
    for (const c of this.#chunks) {
      blob.set(c, off);
      off += c.length;
    }
    this.#chunks = [];
    const keep = this.#applyFaults(blob, 0, blob.length);
    const out = blob.subarray(0, keep);
    const problem = this.#opts.validate?.(out);
    if (problem !== undefined) {
      this.#finish(`state refused before delivery: ${problem}`);
      return;
    }
    this.#account(out);
    this.#blob = out;
    this.#pendingOff = 0;
    this.#pendingLen = out.length;
    if (out.length === 0) this.#finish();
  }

  /** Stops the transfer (session ending); the reader sees EOF, the writer EPIPE. */
  cancel(reason: string): void {
    this.#finish(reason);
  }

  #finish(error?: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#delay?.cancel();
    this.#reactor.remove(this.#srcWatch);
    this.#reactor.remove(this.#dstWatch);
    if (this.#hashPipe && this.#hashAhead > 0) {
      // Ended with bytes delivered but not yet hashed (the reader went away, a cancel).
      try {
        this.#hashTeed(this.#hashPipe[0]);
      } catch (e) {
        error ??= `hashing the last bytes failed: ${e instanceof Error ? e.message : e}`;
      }
    }
    this.#src.close();
    this.#dst.close();
    if (this.#hashPipe) { for (const fd of this.#hashPipe) fd.close(); }
    this.#dump?.close();
    if (this.#buf) chunkPool.give(this.#buf);
    this.#buf = undefined;
    const result: CopyResult = {
      ok: error === undefined && !this.#truncated,
      mode: this.mode,
      bytes: this.#bytesOut,
      bytesIn: this.#bytesIn,
      durationMs: performance.now() - this.#started,
    };
    if (this.#hash) result.digest = this.#hash.end();
    if (error !== undefined) result.error = error;
    else if (this.#truncated) {
      result.error = `the stream was cut after ${this.#bytesOut} bytes (fault state-truncate)`;
    }
    if (this.#truncated) result.truncated = true;
    if (this.#hashKeeps) {
      const blob = this.#hash!.kept!();
      if (blob) result.blob = blob;
    } else if (this.#keptAll && (this.#opts.keepUpTo ?? 0) > 0) {
      // A plain buffer of its own for the blob; the resizable one gives its pages back.
      result.blob = this.#kept ? new Uint8Array(this.#kept).slice() : new Uint8Array(0);
      this.#kept?.resize(0);
      this.#kept = undefined;
    }
    if (this.#corrupted) result.corrupted = true;
    this.#opts.onDone(result);
  }
}

function writeFileAll(file: Deno.FsFile, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
}
